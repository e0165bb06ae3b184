//! The Pod's socket: each connection authorizes its requests (who the
//! caller is comes from the kernel, see `caller.rs`; what it may do is
//! `authorize.rs`) and forwards them to the owner task, except log reads,
//! which only read the durable log and so are served here without holding
//! up mutations, and checks past the node's lease deadline, denied here
//! (`lease.rs`) whatever the owner is waiting for. A `Check` is answered
//! for the path as it resolves here (symlinks followed), whatever the
//! caller resolved.

use std::sync::Arc;
use std::time::Duration;

use pod_proto::{Connection, PeerCred, RuntimeDirs, WireError};
use scope::PodName;
use session_log::SessionLog;
use tokio::sync::{mpsc, oneshot, watch};

use crate::process::authorize::{decide, decide_on_tree, Action, Decision, TreeUse};
use crate::process::caller::{identify, Caller, Peer};
use crate::process::lease::LeaseGuard;
use crate::process::owner::{lease_lost_verdict, OwnerMsg};
use crate::process::reads;
use crate::protocol::{PodReply, PodRequest, MAX_LOG_PAGE, MAX_READ_WAIT};
use crate::registry_link::Registry;

/// Longest a `Log` request may wait for new records.
pub const MAX_LOG_WAIT: Duration = Duration::from_secs(30);

/// What every connection task holds: the way to the owner, the log, and
/// the shutdown protocol (a flag to stop reading new requests, and a token
/// whose drop tells the process this task is done).
#[derive(Clone)]
pub struct ConnectionContext {
    pub name: PodName,
    /// The parent this Pod was spawned under (its session log's identity),
    /// which `Whoami` tells this Pod's own workload even while the
    /// parent is down and the registry's record has lost it.
    pub parent: Option<PodName>,
    pub dirs: RuntimeDirs,
    pub registry: Registry,
    /// Checks past the node's lease deadline are denied here, without the
    /// owner (which may be waiting on a frozen registry).
    pub lease: Arc<LeaseGuard>,
    pub owner: mpsc::Sender<OwnerMsg>,
    pub log: Arc<SessionLog>,
    pub closing: watch::Receiver<bool>,
    pub done: mpsc::Sender<()>,
    /// The coordination store of the layer this Pod leads.
    pub kv: crate::process::kv::KvHandle,
}

/// Serves one connection until the peer closes it or the Pod shuts down.
/// A request already read is always answered, even during shutdown, so a
/// caller of `Shutdown` or `StopChild` gets its reply before the exit.
pub async fn handle_connection(mut conn: Connection, cred: PeerCred, ctx: ConnectionContext) {
    // Right after the accept and handshake, while the connecting process is
    // the one the kernel named (a pid is an identity only with its start
    // time).
    let peer = Peer::from_cred(cred);
    let ConnectionContext { name, parent, dirs, registry, lease, owner, log, mut closing, done: _done, kv } = ctx;
    let mut gate = Gate { name, dirs, registry, peer, caller: None };
    let mut standing = crate::process::kv::Standing::default();
    loop {
        let next = tokio::select! {
            next = conn.read_frame::<PodRequest>() => next,
            _ = closing.wait_for(|c| *c) => return,
        };
        let request = match next {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                // A decoder's words are bounded and escaped where they are
                // made (`ProtoError::bad_frame`), on every server.
                tracing::info!(error = %e, code = e.code(), "bad request frame; closing");
                conn.refuse(&e).await;
                return;
            }
        };
        // The coordination store decides its own rights, on the kernel's
        // identity of the caller (`pod_kv::role`).
        let request = match request {
            PodRequest::Kv { reach, op, id } => {
                #[cfg(feature = "failpoints")]
                let has_id = id.is_some();
                let store = match gate.caller() {
                    Ok(caller) => kv.get().await.map(|store| (caller, store)),
                    Err(e) => Err(e),
                };
                let answer = match store {
                    Ok((caller, store)) => {
                        let call = crate::process::kv::Call { reach, op, id };
                        let closed = conn.closed();
                        crate::process::kv::call(
                            &store,
                            &gate.name,
                            &gate.registry,
                            &caller,
                            &mut standing,
                            call,
                            closed,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                // The lost-answer test kills the lead here: committed, not
                // answered.
                #[cfg(feature = "failpoints")]
                if has_id {
                    fail::fail_point!("kv.before_reply");
                }
                if let Err(e) = conn.write_frame(&answer).await {
                    tracing::debug!(error = %e, "kv reply not delivered");
                    if let Some(store) = kv.now() {
                        release_undelivered(&store, &gate, &answer).await;
                    }
                    return;
                }
                continue;
            }
            PodRequest::Whoami => {
                let answer = match gate.caller() {
                    Ok(caller) => {
                        let own = (&gate.name, parent.as_ref());
                        crate::process::kv::whoami(&gate.registry, &caller, own).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = conn.write_frame(&answer).await {
                    tracing::debug!(error = %e, "whoami reply not delivered");
                    return;
                }
                continue;
            }
            request => request,
        };
        let request = match gate.admit(request).await {
            Ok(request) => request,
            Err(refusal) => {
                tracing::info!(code = %refusal.code, peer_pid = peer.pid, "{}", refusal.message);
                if let Err(e) = conn.write_frame(&Err::<PodReply, _>(refusal)).await {
                    tracing::debug!(error = %e, "refusal not delivered");
                    return;
                }
                continue;
            }
        };
        let answer = match request {
            // A long-poll must not hold the Pod's exit: on shutdown it ends
            // early with what is there (the caller then reads the rest from
            // the log itself).
            PodRequest::Log { from_seq, wait_ms } => tokio::select! {
                answer = read_log(&log, from_seq, wait_ms) => answer,
                _ = closing.wait_for(|c| *c) => Ok(PodReply::Log { records: Vec::new(), next_seq: from_seq.max(1) }),
            },
            PodRequest::Remove { name: target } => match gate.tree_target(TreeUse::Remove, &target).await {
                Ok(()) => pod_client::Client::new(gate.dirs.clone()).rm(&target).await.map(|_| PodReply::Removed),
                Err(e) => Err(e),
            },
            PodRequest::Ended { name: target, wait_ms } => match gate.tree_target(TreeUse::Read, &target).await {
                Ok(()) => tokio::select! {
                    answer = reads::ended(&gate.dirs, &target, wait_ms) => answer,
                    _ = closing.wait_for(|c| *c) => Ok(PodReply::Ended(None)),
                },
                Err(e) => Err(e),
            },
            PodRequest::Output { name: target, from } => match gate.tree_target(TreeUse::Read, &target).await {
                Ok(()) => reads::output(&gate.dirs, &target, from).await,
                Err(e) => Err(e),
            },
            PodRequest::LogOf { name: target, from_seq, wait_ms } => {
                match gate.tree_target(TreeUse::Read, &target).await {
                    Ok(()) if target == gate.name => {
                        let wait_ms = wait_ms.min(MAX_READ_WAIT.as_millis() as u64);
                        tokio::select! {
                            page = read_log(&log, from_seq, wait_ms) => page.and_then(|p| reads::own_log(p, from_seq)),
                            _ = closing.wait_for(|c| *c) => {
                                Ok(PodReply::LogOf { records: Vec::new(), next_seq: from_seq.max(1), running: true })
                            }
                        }
                    }
                    Ok(()) => tokio::select! {
                        answer = reads::log_of(&gate.dirs, &target, from_seq, wait_ms) => answer,
                        _ = closing.wait_for(|c| *c) => {
                            Ok(PodReply::LogOf { records: Vec::new(), next_seq: from_seq.max(1), running: true })
                        }
                    },
                    Err(e) => Err(e),
                }
            }
            PodRequest::Check { .. } if lease.check().is_err() => {
                Ok(lease_lost_verdict(lease.check().err().unwrap_or_default()))
            }
            request => {
                let (tx, rx) = oneshot::channel();
                if owner.send(OwnerMsg::Request { request, peer, reply: tx }).await.is_err() {
                    Err(WireError::new("pod.shutting_down", "the pod is shutting down"))
                } else {
                    rx.await.unwrap_or_else(|_| Err(WireError::new("pod.shutting_down", "the pod is shutting down")))
                }
            }
        };
        if let Err(e) = conn.write_frame(&answer).await {
            tracing::debug!(error = %e, "reply not delivered");
            return;
        }
    }
}

/// A connection's authorization: its caller, identified once (on the
/// first request that needs it), and the decision for each request.
struct Gate {
    name: PodName,
    dirs: RuntimeDirs,
    registry: Registry,
    peer: Peer,
    caller: Option<Caller>,
}

impl Gate {
    /// The request if its caller may make it (a `Check` with its path
    /// resolved here), else the refusal.
    async fn admit(&mut self, request: PodRequest) -> Result<PodRequest, WireError> {
        let action = match &request {
            PodRequest::Ping => Action::Ping,
            PodRequest::Status | PodRequest::Check { .. } | PodRequest::Log { .. } => Action::Inspect,
            // The target is decided apart, in `tree_target`.
            PodRequest::Ended { .. }
            | PodRequest::Output { .. }
            | PodRequest::LogOf { .. }
            | PodRequest::Remove { .. } => Action::Inspect,
            PodRequest::Spawn(_) => Action::Spawn,
            PodRequest::StopChild { child, .. } => Action::StopChild(child),
            // Signalling the workload ends it, and the Pod: a stop's right.
            PodRequest::Shutdown { .. } | PodRequest::Signal { .. } => Action::Shutdown,
            PodRequest::ChildShutDown { .. } => Action::ChildShutDown,
            PodRequest::Kv { .. } | PodRequest::Whoami => {
                return Err(WireError::new("pod.internal", "a store call reached the pod's own authorization"))
            }
        };
        // A test holds a callback here (off the runtime's workers, which
        // must go on serving) to force it after a racing StopPod.
        #[cfg(feature = "failpoints")]
        if action == Action::ChildShutDown {
            let _ = tokio::task::spawn_blocking(|| fail::fail_point!("callback.received")).await;
        }
        if !matches!(action, Action::Ping | Action::ChildShutDown) {
            let caller = self.caller()?;
            let mut decision = decide(&caller, action, &self.name, None, self.peer.pid);
            if decision == Decision::NeedAncestors {
                let ancestors = match (&caller, self.peer_is_os_parent()) {
                    // The Pod process that started this one (the kernel says
                    // so: it is our parent process) is an ancestor: no need
                    // to ask the registry (which a stopping tree may not
                    // reach).
                    (Caller::Pod(parent), true) => vec![parent.clone()],
                    _ => ancestors(&self.registry, &self.name).await?,
                };
                decision = decide(&caller, action, &self.name, Some(&ancestors), self.peer.pid);
            }
            match decision {
                Decision::Allowed => {}
                Decision::Refused(e) => return Err(e),
                Decision::NeedAncestors => {
                    return Err(WireError::new("pod.internal", "authorization asked for ancestors twice"))
                }
            }
        }
        match request {
            PodRequest::Check { path, permission } => Ok(PodRequest::Check { path: resolve(path).await?, permission }),
            other => Ok(other),
        }
    }
}

impl Gate {
    /// May the caller `what` `target` through this Pod? Itself and its
    /// descendants only (`decide_on_tree`).
    async fn tree_target(&mut self, what: TreeUse, target: &PodName) -> Result<(), WireError> {
        let caller = self.caller()?;
        let mut decision = decide_on_tree(&caller, what, target, None, self.peer.pid);
        if decision == Decision::NeedAncestors {
            let lineage = reads::lineage(&self.registry, &self.dirs, target).await?;
            decision = decide_on_tree(&caller, what, target, Some(&lineage), self.peer.pid);
        }
        match decision {
            Decision::Allowed => Ok(()),
            Decision::Refused(e) => {
                tracing::info!(code = %e.code, peer_pid = self.peer.pid, "{}", e.message);
                Err(e)
            }
            Decision::NeedAncestors => Err(WireError::new("pod.internal", "a read asked for ancestors twice")),
        }
    }

    /// The connection's caller, identified once, from the kernel.
    fn caller(&mut self) -> Result<Caller, WireError> {
        if let Some(c) = &self.caller {
            return Ok(c.clone());
        }
        let c = identify(&self.peer, &self.dirs)?;
        tracing::debug!(peer_pid = self.peer.pid, caller = ?c, "caller identified");
        Ok(self.caller.insert(c).clone())
    }

    /// Is the caller the very process that started this Pod process?
    fn peer_is_os_parent(&self) -> bool {
        let Some(ppid) = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) else { return false };
        crate::process::watch::start_time_of(ppid).is_some_and(|start| self.peer.is(ppid, start))
    }
}

/// A lease granted to a caller that is gone before it heard of it is
/// released again, so that it passes on instead of waiting out its TTL.
async fn release_undelivered(kv: &Arc<crate::process::kv::KvShell>, gate: &Gate, answer: &Result<PodReply, WireError>) {
    let Ok(PodReply::Kv(pod_kv::Outcome::Granted(grant))) = answer else { return };
    let Some(caller) = gate.caller.clone() else { return };
    let mut standing = crate::process::kv::Standing::default();
    let op = pod_kv::Op::Release { name: grant.name.to_string(), token: Some(grant.token), overriding: false };
    // A tree-wide grant is at a root; the release names the same reach.
    for reach in [pod_kv::Reach::Layer, pod_kv::Reach::Tree] {
        let released = crate::process::kv::call(
            kv,
            &gate.name,
            &gate.registry,
            &caller,
            &mut standing,
            crate::process::kv::Call { reach, op: op.clone(), id: None },
            std::future::pending(),
        )
        .await;
        if released.is_ok() {
            return;
        }
    }
    tracing::warn!(lease = %grant.name, "a lease granted to a caller that went away could not be released; it ends with its TTL");
}

/// This Pod's ancestors, nearest first, as the registry records them now
/// (a reparented Pod's adoptive parent included).
async fn ancestors(registry: &Registry, me: &PodName) -> Result<Vec<PodName>, WireError> {
    let unknown = |e: WireError| {
        WireError::new(
            "auth.lineage_unknown",
            format!("cannot tell {me}'s ancestors to decide this request: {}", e.message),
        )
    };
    let mut out: Vec<PodName> = Vec::new();
    let mut current = me.clone();
    while out.len() < scope::limits::MAX_LAYERS {
        let Some(parent) = registry.get(&current).await.map_err(unknown)?.and_then(|a| a.parent) else { break };
        if parent == *me || out.contains(&parent) {
            break;
        }
        out.push(parent.clone());
        current = parent;
    }
    Ok(out)
}

/// The path a `Check` names, resolved through symlinks here, as the CLI
/// resolves it: a raw request answers for where the path really points.
async fn resolve(path: scope::ScopePath) -> Result<scope::ScopePath, WireError> {
    tokio::task::spawn_blocking(move || scope::resolve(std::path::Path::new(path.as_str())))
        .await
        .map_err(|e| WireError::new("pod.internal", format!("path resolution failed: {e}")))?
        .map_err(|e| WireError::new(e.code(), e.to_string()))
}

/// Most `Log` long-polls waiting at once; more wait for a slot (without
/// holding a thread).
pub const MAX_LOG_WAITERS: usize = 64;

/// Slots for log long-polls. A long-poll blocks a thread for up to
/// [`MAX_LOG_WAIT`]; it gets a thread of its own, never one of tokio's
/// blocking pool, which the log appends of spawns and reclaims need.
fn log_waiters() -> &'static Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOG_WAITERS)))
}

async fn read_log(log: &Arc<SessionLog>, from_seq: u64, wait_ms: u64) -> Result<PodReply, WireError> {
    let log = Arc::clone(log);
    let wait = Duration::from_millis(wait_ms).min(MAX_LOG_WAIT);
    let read = move || {
        let from = from_seq.max(1);
        if wait > Duration::ZERO {
            log.wait_for_seq(from.saturating_sub(1), wait).map_err(|e| WireError::new(e.code(), e.to_string()))?;
        }
        let mut records = Vec::new();
        for record in log.read_from(from).take(MAX_LOG_PAGE) {
            records.push(record.map_err(|e| WireError::new(e.code(), e.to_string()))?);
        }
        let next_seq = records.last().map_or(from, |r| r.seq + 1);
        Ok(PodReply::Log { records, next_seq })
    };
    let failed = |e: &dyn std::fmt::Display| WireError::new("pod.internal", format!("log reader failed: {e}"));
    if wait == Duration::ZERO {
        return tokio::task::spawn_blocking(read).await.map_err(|e| failed(&e))?;
    }
    let slot = Arc::clone(log_waiters()).acquire_owned().await.map_err(|e| failed(&e))?;
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("pod-log-wait".into())
        .spawn(move || {
            let _slot = slot;
            // The connection may be gone by now; nothing to tell it then.
            let _ = tx.send(read());
        })
        .map_err(|e| failed(&e))?;
    rx.await.map_err(|e| failed(&e))?
}
