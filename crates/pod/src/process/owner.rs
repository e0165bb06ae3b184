//! The owner task: the one place a Pod's state changes.
//!
//! Every mutation (spawn, the reclaim operation, shutdown) arrives here as a
//! message and runs to completion before the next one starts, so the scope,
//! the children, the registry, the session log and `spawned_pods.json` are
//! always changed in the same order by the same code. Long waits (a child
//! that is starting or stopping, a process exit, a retry's backoff) happen
//! in helper tasks that report back with a message; the owner itself only
//! awaits short registry calls and durable log appends, so it keeps
//! answering ping, status, check and callbacks meanwhile.
//!
//! Every wait is bounded. A reclaim that fails (the registry is away) is
//! retried with backoff for [`RECLAIM_RETRY_FOR`]; a shutdown ends at the
//! latest [`SHUTDOWN_WAIT`] after it began (plus the workload's stop), and
//! a second SIGTERM ends it at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use pod_proto::WireError;
use rustix::process::Signal;
use scope::{Permission, PodName, Scope};
use session_log::{ChildRecord, Event, Exit, RemovalReason, SessionLog};
use tokio::sync::{mpsc, oneshot, watch as watch_channel};
use tokio::time::Instant;
use tracing::Instrument;

use crate::core::{Adoption, PodCore};
use crate::launch::{Launched, Starting};
use crate::layout::PodPaths;
use crate::mirror::{self, MirroredChild};
use crate::process::caller::Peer;
use crate::process::lease::{LeaseGuard, LEASE_LOST};
use crate::process::watch::{self, PidFd};
use crate::protocol::{ChildStatus, Enforcement, PodReply, PodRequest, PodStatus, SpawnRequest, StopGrace};
use crate::registry_link::Registry;
use pod_client::pod::PodClient;

mod rejoin;

/// How long a stopping Pod process gets for its own bookkeeping (its
/// record, its callback, its reply), past its workload's grace, before its
/// parent kills it and reclaims; and the bounded waits for a workload's exit
/// status after it was killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a failed reclaim is retried before its callers get the error
/// (the child then stays recorded, and a later stop or the prune on resume
/// takes it back).
pub const RECLAIM_RETRY_FOR: Duration = Duration::from_secs(30);
/// Longest a shutdown waits for its children's stops and reclaims and for
/// the registry's release, plus the stop's grace (its children's
/// workloads have it too); the workload's stop (its grace, then at most
/// [`STOP_GRACE`] for its exit status) comes after.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// Longest the ShutDown callback (and the registry lookup of whom to call)
/// may take; past it the parent notices the exit instead.
pub const CALLBACK_WAIT: Duration = Duration::from_secs(5);
/// First and longest pause between reclaim retries.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub type Responder = oneshot::Sender<Result<PodReply, WireError>>;

/// Returns once a second signal set the hurry flag; never without one.
async fn hurried(hurry: &mut Option<watch_channel::Receiver<bool>>) {
    match hurry {
        Some(h) => {
            if h.wait_for(|now| *now).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

pub enum OwnerMsg {
    Request {
        request: PodRequest,
        peer: Peer,
        reply: Responder,
    },
    /// A child's launch ended (ready, or failed and reaped).
    Launched {
        name: PodName,
        outcome: Result<Launched, WireError>,
        reply: Responder,
    },
    /// A child process is gone (seen by its OS parent or a pidfd).
    ChildExited {
        name: PodName,
        pid: u32,
    },
    /// A StopPod's grace period ended (the child exited or was killed);
    /// how its workload ended when its reply said so.
    StopFinished {
        name: PodName,
        exit: Option<Exit>,
    },
    /// Time to try the reclaims that failed again.
    RetryReclaims,
    /// The task ending a gone child's workload is done (its reclaim can
    /// go on if nothing of it remains).
    ChildWorkloadEnded {
        name: PodName,
        outcome: Result<(), String>,
    },
    /// The shutdown's bound is reached.
    ShutdownDeadline,
    WorkloadExited {
        exit: Exit,
    },
    /// SIGTERM or SIGINT.
    Terminate,
    /// A second SIGTERM or SIGINT: stop waiting.
    TerminateNow,
    /// The registry changed this Pod's allocation (or it vanished): the
    /// owner compares it with what the Pod holds (see `check_allocation`).
    AllocationChanged,
    /// The Pod stopped granting at its node's lease deadline (or the
    /// daemon said the lease is lost): recorded once as `pod.fenced`.
    LeaseLost {
        reason: String,
    },
    /// The node holds a new lease while this Pod is stopped past the old
    /// one's deadline: the Pod may re-claim its paths (`rejoin`). The
    /// answer says whether to offer again later.
    Rejoin {
        lease: pod_registry::LeaseView,
        again: oneshot::Sender<bool>,
    },
}

/// Who asked this Pod to stop; a Pod told by its parent does not call back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShutdownOrigin {
    Parent,
    User,
    Workload,
    Signal,
}

/// A child being stopped: who waits for its reclaim, and its workloads'
/// grace (that of the first stop asked for).
struct Stopping {
    waiters: Vec<Responder>,
    grace: Duration,
}

/// A child whose process is gone (or was stopped) but whose reclaim
/// failed: retried until it succeeds or [`RECLAIM_RETRY_FOR`] passed.
struct Unreclaimed {
    reason: RemovalReason,
    since: Instant,
    error: WireError,
}

struct Shutdown {
    origin: ShutdownOrigin,
    waiters: Vec<Responder>,
    deadline: Instant,
    /// The workloads' time between SIGTERM and SIGKILL (this Pod's and its
    /// children's): the shortest one asked for.
    grace: Duration,
    /// A second signal: finish without waiting any more.
    now: bool,
}

pub struct Owner {
    pub name: PodName,
    pub parent: Option<PodName>,
    pub workload: Option<Vec<String>>,
    pub paths: PodPaths,
    /// The durable state (scope and children); changed only by adopting a
    /// plan from `core` after its events are logged.
    pub core: PodCore,
    /// Pid and start time of children whose process is known (started
    /// here, seen alive on resume, or adopted); a child without one cannot
    /// call back.
    pids: BTreeMap<PodName, (u32, u64)>,
    log: Arc<SessionLog>,
    registry: Registry,
    tx: mpsc::Sender<OwnerMsg>,
    /// Children whose launch has not ended yet.
    launching: BTreeSet<PodName>,
    /// Gone children whose workload a task is ending before their reclaim.
    ending: BTreeSet<PodName>,
    stopping: BTreeMap<PodName, Stopping>,
    /// Children whose stop task (the request, the grace, the kill) runs:
    /// their exit is reclaimed when it ends (`StopFinished`, with the exit
    /// status their reply gave), not when their process is seen gone.
    stop_tasks: BTreeSet<PodName>,
    unreclaimed: BTreeMap<PodName, Unreclaimed>,
    retry_pending: bool,
    retry_pause: Duration,
    /// A registry call was given up mid-way (the shutdown's bound, a second
    /// signal): the rest of the shutdown does without the registry.
    registry_abandoned: bool,
    shutdown: Option<Shutdown>,
    /// Set by a second signal, so that waits inside the shutdown itself
    /// (the release's retries) end too.
    hurry: Option<watch_channel::Receiver<bool>>,
    /// The workload's process, held from its start.
    workload_process: Option<PidFd>,
    /// The workload's whole process tree, ended at shutdown.
    workload_tree: Option<crate::process::workload::Contained>,
    /// How the workload ended, once it has; and its output's writer.
    workload_exit: Option<watch_channel::Receiver<Option<Exit>>>,
    workload_output: Option<tokio::task::JoinHandle<()>>,
    /// How each child's workload ended, as its shutdown callback said,
    /// until its reclaim records it (`child.removed`).
    child_exits: BTreeMap<PodName, Exit>,
    /// Why this Pod failed closed, once it did: every check is then denied
    /// and spawns are refused.
    fenced: Option<String>,
    /// The layer's coordination store (opening in the background).
    kv: Option<crate::process::kv::KvHandle>,
    /// A Pod process started ahead of the next spawn (after the first),
    /// so that a spawn does not wait for the binary to load.
    standby: Option<pod_client::launch::Standby>,
    /// The node's lease deadline as this Pod holds it (shared with the
    /// socket's check path and the watch; see `lease.rs`).
    lease: Arc<LeaseGuard>,
    /// Children between the registry's delegate and the moment their layer
    /// is in the scope (or the delegate is undone): the registry may hold a
    /// layer for one that the scope does not have yet, which is no reason
    /// to fence. The wait for a child's readiness comes after (the child is
    /// then in `launching`, its layer in both), so it needs no exception.
    spawning: BTreeSet<PodName>,
    /// How the kernel holds this Pod's workload (`None`: a resumed Pod
    /// whose log predates levels); its children are never held less.
    enforcement: Option<Enforcement>,
}

impl Owner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: PodName,
        parent: Option<PodName>,
        workload: Option<Vec<String>>,
        paths: PodPaths,
        scope: Scope,
        children: BTreeMap<PodName, ChildRecord>,
        log: Arc<SessionLog>,
        registry: Registry,
        tx: mpsc::Sender<OwnerMsg>,
    ) -> Owner {
        Owner {
            name,
            parent,
            workload,
            paths,
            core: PodCore::new(scope, children),
            pids: BTreeMap::new(),
            log,
            registry,
            tx,
            launching: BTreeSet::new(),
            ending: BTreeSet::new(),
            stopping: BTreeMap::new(),
            stop_tasks: BTreeSet::new(),
            unreclaimed: BTreeMap::new(),
            retry_pending: false,
            retry_pause: RETRY_FIRST,
            registry_abandoned: false,
            shutdown: None,
            hurry: None,
            workload_process: None,
            workload_tree: None,
            workload_exit: None,
            workload_output: None,
            child_exits: BTreeMap::new(),
            fenced: None,
            lease: LeaseGuard::new(),
            spawning: Default::default(),
            kv: None,
            standby: None,
            enforcement: None,
        }
    }

    /// This Pod's running workload, when it is enforced at `full` (the only
    /// level whose running workload follows delegations).
    fn narrowing_tree(&self) -> Option<&crate::process::workload::Contained> {
        let full = self.enforcement.as_ref().is_some_and(|e| e.level == pod_sandbox::Level::Full);
        self.workload_tree.as_ref().filter(|_| full)
    }

    /// Gives this Pod's workload write back on `child`'s region, then takes
    /// the parts `adopted` grandchildren hold. A failure is logged: the
    /// workload then has less write than its scope, never more.
    async fn widen_for(&self, child: &PodName, adopted: &[crate::registry_link::Orphan]) {
        let Some(tree) = self.narrowing_tree() else { return };
        if let Err(e) = tree.widen(child).await {
            tracing::warn!(%child, error = %e, "cannot give the workload write back on a reclaimed region");
        }
        for orphan in adopted {
            if let Err(e) = tree.narrow(&orphan.name, &orphan.rules).await {
                tracing::error!(grandchild = %orphan.name, error = %e, "cannot take an adopted grandchild's region from the workload");
            }
        }
    }

    pub fn set_enforcement(&mut self, enforcement: Option<Enforcement>) {
        self.enforcement = enforcement;
    }

    pub fn enforcement(&self) -> Option<&Enforcement> {
        self.enforcement.as_ref()
    }

    /// Starts the long-poll on this Pod's allocation and its node's lease
    /// (its own registry connection), after a first answer that gives the
    /// Pod the lease's deadline before it serves; each change reaches the
    /// owner as [`OwnerMsg::AllocationChanged`]. Also starts the watchdog
    /// that reports [`OwnerMsg::LeaseLost`] at the deadline.
    pub async fn start_watching(&self) -> Result<(), WireError> {
        let mut watcher = self.registry.watcher()?;
        let deadline_after = match watcher.next(&self.name, 0, 0).await {
            Ok(first) => first.lease.map_or(0, |view| {
                self.lease.take(&view);
                view.deadline_ms
            }),
            // The loop below asks again; the record was just written, so
            // this is a registry gone away between two calls.
            Err(e) => {
                tracing::warn!(error = %e, "the first allocation watch failed; watching again");
                0
            }
        };
        let (guard, tx) = (Arc::clone(&self.lease), self.tx.clone());
        tokio::spawn(async move {
            let reason = guard.until_lost().await;
            // The owner may be gone already: nothing to record then.
            let _ = tx.send(OwnerMsg::LeaseLost { reason }).await;
        });
        let watch = WatchLoop { watcher, name: self.name.clone(), lease: Arc::clone(&self.lease), tx: self.tx.clone() };
        tokio::spawn(watch.run(deadline_after));
        Ok(())
    }

    pub fn set_workload(&mut self, running: crate::process::workload::Running) {
        self.workload_process = running.process;
        self.workload_tree = Some(running.contained);
        self.workload_exit = Some(running.exit);
        self.workload_output = Some(running.output);
    }

    /// How the workload ended (waited for, bounded, after it was told to
    /// stop), once its output is written (bounded too: a process it left
    /// behind may hold its pipes open).
    async fn workload_ended(&mut self) -> Exit {
        let mut exit = Exit::default();
        if let Some(mut rx) = self.workload_exit.take() {
            match tokio::time::timeout(STOP_GRACE, rx.wait_for(Option::is_some)).await {
                Ok(Ok(seen)) => exit = seen.unwrap_or_default(),
                Ok(Err(_)) | Err(_) => tracing::warn!("the workload's exit status was not seen"),
            }
        }
        if let Some(output) = self.workload_output.take() {
            if tokio::time::timeout(crate::process::output::DRAIN_WAIT, output).await.is_err() {
                tracing::warn!(wait = ?crate::process::output::DRAIN_WAIT, "the workload's output pipes stayed open (a process it left behind?); the rest is not captured");
            }
        }
        exit
    }

    /// The layer's coordination store: a reclaimed child's leases and
    /// waits end there.
    pub fn set_kv(&mut self, kv: crate::process::kv::KvHandle) {
        self.kv = Some(kv);
    }

    /// The flag a second signal sets (see [`OwnerMsg::TerminateNow`]).
    pub fn set_hurry(&mut self, hurry: watch_channel::Receiver<bool>) {
        self.hurry = Some(hurry);
    }

    /// The lease guard the socket's check path shares.
    pub fn lease(&self) -> Arc<LeaseGuard> {
        Arc::clone(&self.lease)
    }

    /// A handle on the registry client this Pod uses.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Records the pid of a child that survived a resume and watches it.
    pub fn watch_existing_child(&mut self, name: &PodName, pid: u32, start_time: u64) {
        if self.core.children.contains_key(name) {
            self.pids.insert(name.clone(), (pid, start_time));
            watch::watch_pid(name.clone(), pid, start_time, self.tx.clone());
        }
    }

    pub fn child_names(&self) -> Vec<PodName> {
        self.core.children.keys().cloned().collect()
    }

    pub fn child_socket(&self, name: &PodName) -> Option<String> {
        self.core.children.get(name).map(|c| c.socket.clone())
    }

    /// Runs until the Pod has shut down.
    pub async fn run(mut self, mut rx: mpsc::Receiver<OwnerMsg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                OwnerMsg::Request { request, peer, reply } => self.handle(request, peer, reply).await,
                OwnerMsg::Launched { name, outcome, reply } => self.launched(name, outcome, reply).await,
                OwnerMsg::ChildExited { name, pid } => {
                    let known_pid = self.pids.get(&name).map(|(pid, _)| *pid);
                    if known_pid == Some(pid) && !self.stop_tasks.contains(&name) {
                        // An exit we asked for is a stop; any other is a loss.
                        let reason = if self.stopping.contains_key(&name) {
                            RemovalReason::Stopped
                        } else {
                            RemovalReason::Lost
                        };
                        self.reclaim_or_retry(&name, reason).await;
                    }
                    self.finish_stop(&name);
                }
                OwnerMsg::StopFinished { name, exit } => {
                    self.stop_tasks.remove(&name);
                    if let Some(exit) = exit.filter(|_| self.core.children.contains_key(&name)) {
                        self.child_exits.insert(name.clone(), exit);
                    }
                    self.reclaim_or_retry(&name, RemovalReason::Stopped).await;
                    self.finish_stop(&name);
                }
                OwnerMsg::RetryReclaims => self.retry_reclaims().await,
                OwnerMsg::ChildWorkloadEnded { name, outcome } => {
                    self.ending.remove(&name);
                    match outcome {
                        Ok(()) => self.retry_reclaims().await,
                        Err(e) => {
                            tracing::error!(child = %name, error = %e, "the workload of a gone child could not be ended; its region stays held")
                        }
                    }
                }
                OwnerMsg::ShutdownDeadline => {
                    tracing::warn!(?SHUTDOWN_WAIT, children = self.core.children.len(), "shutdown bound reached");
                }
                OwnerMsg::WorkloadExited { exit } => {
                    tracing::info!(?exit, "workload exited; the pod shuts down");
                    self.workload_process = None;
                    self.begin_shutdown(ShutdownOrigin::Workload, None, StopGrace::default()).await;
                }
                OwnerMsg::Terminate => self.begin_shutdown(ShutdownOrigin::Signal, None, StopGrace::default()).await,
                OwnerMsg::TerminateNow => {
                    self.begin_shutdown(ShutdownOrigin::Signal, None, StopGrace::default()).await;
                    if let Some(shutdown) = &mut self.shutdown {
                        shutdown.now = true;
                    }
                    self.kill_children();
                }
                OwnerMsg::AllocationChanged => self.check_allocation().await,
                OwnerMsg::LeaseLost { reason } => {
                    if self.fenced.is_none() {
                        self.fence(format!("{LEASE_LOST_REASON}{reason}")).await;
                    }
                }
                OwnerMsg::Rejoin { lease, again } => {
                    let later = self.rejoin(&lease).await;
                    // The watch may be gone (the Pod is shutting down).
                    let _ = again.send(later);
                }
            }
            if let Some(shutdown) = &self.shutdown {
                let give_up = shutdown.now || Instant::now() >= shutdown.deadline;
                if self.core.children.is_empty() || give_up {
                    if !self.core.children.is_empty() {
                        tracing::warn!(
                            children = ?self.child_names(),
                            "shutting down with children not reclaimed; they stay recorded and a resume prunes them"
                        );
                    }
                    self.finish_shutdown().await;
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, request: PodRequest, peer: Peer, reply: Responder) {
        let span = tracing::info_span!("request", pod = %self.name, peer_pid = peer.pid);
        self.answer(request, peer, reply).instrument(span).await
    }

    /// Authorization was decided before the request got here (see
    /// `server.rs`), except the ShutDown callback's, which needs what only
    /// the owner knows: the child's pid and start time.
    async fn answer(&mut self, request: PodRequest, peer: Peer, reply: Responder) {
        let answer = match request {
            PodRequest::Ping => Ok(PodReply::Pong { name: self.name.clone(), pid: std::process::id() }),
            PodRequest::Status => Ok(PodReply::Status(self.status())),
            PodRequest::Check { .. } if self.lease.check().is_err() => {
                Ok(lease_lost_verdict(self.lease.check().err().unwrap_or_default()))
            }
            PodRequest::Check { .. } if self.fenced.is_some() => Ok(PodReply::Verdict {
                allowed: false,
                permission: None,
                decided_by: format!("fenced: {}", self.fenced.as_deref().unwrap_or_default()),
            }),
            PodRequest::Check { path, permission } => {
                let verdict = self.core.scope.permission_at(&path);
                let scratch = self.enforcement.as_ref().and_then(|e| e.scratch_verdict(&path, &verdict.decided_by));
                if let Some(decided_by) = scratch {
                    Ok(PodReply::Verdict { allowed: true, permission: Some(Permission::Write), decided_by })
                } else {
                    Ok(PodReply::Verdict {
                        allowed: verdict.allows(permission),
                        permission: verdict.permission,
                        decided_by: verdict.decided_by.to_string(),
                    })
                }
            }
            PodRequest::Spawn(request) => {
                self.spawn(request, reply).await;
                return;
            }
            PodRequest::StopChild { child, grace } => {
                if !self.core.children.contains_key(&child) {
                    // Not (or no longer) ours: the CLI found it under us in
                    // the registry a moment ago, so another path (its own
                    // callback, a noticed death) reclaimed it meanwhile.
                    Ok(PodReply::Stopped { reclaimed: false })
                } else {
                    self.stop_child(&child, Some(reply), grace.duration()).await;
                    return;
                }
            }
            PodRequest::Signal { signal } => match (&self.workload_process, Signal::from_named_raw(signal)) {
                (Some(workload), Some(sig)) => {
                    workload.signal(sig);
                    Ok(PodReply::Ack)
                }
                (None, _) => Err(WireError::new("pod.no_workload", format!("{} runs no workload to signal", self.name))),
                (_, None) => Err(WireError::new("pod.bad_signal", format!("{signal} is no signal"))),
            },
            PodRequest::Shutdown { grace } => {
                let origin = if self.is_parent(&peer) { ShutdownOrigin::Parent } else { ShutdownOrigin::User };
                self.begin_shutdown(origin, Some(reply), grace).await;
                return;
            }
            PodRequest::ChildShutDown { child, exit } => match self.pids.get(&child).copied() {
                Some((pid, start_time)) if peer.is(pid, start_time) => {
                    self.child_exits.insert(child.clone(), exit);
                    let reclaimed = self.reclaim_or_retry(&child, RemovalReason::ShutDown).await;
                    self.finish_stop(&child);
                    Ok(PodReply::Stopped { reclaimed })
                }
                Some((pid, _)) => Err(WireError::new(
                    "pod.not_the_child",
                    format!(
                        "a shutdown callback for {child} must come from {child}'s own process (pid {pid} as started); the caller is process {}{}",
                        peer.pid,
                        if peer.pid == pid { " with another start time" } else { "" }
                    ),
                )),
                None if self.core.children.contains_key(&child) => Err(WireError::new(
                    "pod.not_the_child",
                    format!("{child}'s process is not known yet; its callback cannot be verified"),
                )),
                None => Ok(PodReply::Stopped { reclaimed: false }),
            },
            PodRequest::Log { .. }
            | PodRequest::Ended { .. }
            | PodRequest::Output { .. }
            | PodRequest::LogOf { .. }
            | PodRequest::Remove { .. } => {
                Err(WireError::new("pod.internal", "reads and removals are served outside the owner"))
            }
            PodRequest::Kv { .. } | PodRequest::Whoami => {
                Err(WireError::new("pod.internal", "store calls are served outside the owner"))
            }
        };
        if reply.send(answer).is_err() {
            tracing::debug!("caller went away before the reply");
        }
    }

    fn is_parent(&self, peer: &Peer) -> bool {
        // Our OS parent is the Pod that spawned us; a Shutdown from it means
        // it reclaims us itself, so no callback. (An adoptive parent is not
        // our OS parent: it gets a callback, which its reclaim absorbs.)
        let Some(ppid) = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) else {
            return false;
        };
        self.parent.is_some() && watch::start_time_of(ppid).is_some_and(|start| peer.is(ppid, start))
    }

    fn status(&self) -> PodStatus {
        PodStatus {
            name: self.name.clone(),
            parent: self.parent.clone(),
            pid: std::process::id(),
            scope: self.core.scope.snapshot().clone(),
            children: self
                .core
                .children
                .iter()
                .map(|(n, c)| ChildStatus {
                    name: n.clone(),
                    socket: c.socket.clone(),
                    pid: self.pids.get(n).map(|(pid, _)| *pid),
                    rules: c.rules.clone(),
                })
                .collect(),
            workload: self.workload.clone(),
            fenced: self.fenced.clone().or_else(|| self.lease.check().err().map(|r| format!("{LEASE_LOST_REASON}{r}"))),
            enforcement: self.enforcement.clone(),
            containment: self.workload_tree.as_ref().map(|tree| tree.view()),
        }
    }

    /// Spawn: local check, registry delegate, one durable log batch, mirror,
    /// start the child. Its readiness is awaited by a helper task, which
    /// reports with [`OwnerMsg::Launched`]; the reply goes out then.
    /// Anything failing after the delegate is undone through the reclaim
    /// operation.
    async fn spawn(&mut self, request: SpawnRequest, reply: Responder) {
        let child = request.child.clone();
        let starting = match self.start_child(request).await {
            Ok(starting) => starting,
            Err(e) => {
                if reply.send(Err(e)).is_err() {
                    tracing::debug!("spawn caller went away");
                }
                return;
            }
        };
        let tx = self.tx.clone();
        let span = tracing::info_span!("launch", pod = %self.name, %child);
        tokio::spawn(
            async move {
                let outcome = starting.ready().await;
                if tx.send(OwnerMsg::Launched { name: child, outcome, reply }).await.is_err() {
                    tracing::debug!("owner gone before a launch ended");
                }
            }
            .instrument(span),
        );
    }

    async fn start_child(&mut self, mut request: SpawnRequest) -> Result<Starting, WireError> {
        if self.shutdown.is_some() {
            return Err(WireError::new("pod.shutting_down", format!("{} is shutting down", self.name)));
        }
        if let Err(reason) = self.lease.check() {
            return Err(WireError::new(
                LEASE_LOST,
                format!("{} stopped granting at its node's lease deadline and spawns nothing: {reason}", self.name),
            ));
        }
        if let Some(reason) = &self.fenced {
            return Err(WireError::new(
                "pod.fenced",
                format!("{} failed closed and spawns nothing: {reason}", self.name),
            ));
        }
        let child = request.child.clone();
        if child == self.name {
            return Err(WireError::new("pod.self_spawn", format!("{child} cannot spawn itself")));
        }
        self.core
            .scope
            .check_delegation(&child, &request.rules)
            .map_err(|e| WireError::new(e.code(), e.to_string()))?;
        // The child's level, decided before the delegate (a refusal changes
        // nothing) and never below this Pod's; the child plans at it.
        let child_scope =
            Scope::new(request.rules.clone(), Vec::new()).map_err(|e| WireError::new(e.code(), e.to_string()))?;
        let (enforced, _choice) = crate::process::enforcement::choose(
            crate::process::enforcement::support()?,
            child_scope.snapshot(),
            &request.enforce,
            self.enforcement.as_ref().map(|e| e.level),
            &self.paths.dirs,
            &child,
        )?;
        request.enforce.level = Some(enforced.level);
        // At `full`, this Pod's own running workload loses write on the
        // region before anything is delegated: a process of it holding a
        // path there refuses the spawn (`enforce.busy`), nothing changed.
        if let Some(tree) = self.narrowing_tree() {
            tree.narrow(&child, &request.rules).await.map_err(|e| WireError::new(e.code(), e.to_string()))?;
        }
        self.spawning.insert(child.clone());
        let spawned = self.spawn_delegated(request).await;
        self.spawning.remove(&child);
        if spawned.is_err() {
            self.widen_for(&child, &[]).await;
        }
        spawned
    }

    async fn spawn_delegated(&mut self, request: SpawnRequest) -> Result<Starting, WireError> {
        let child = request.child.clone();
        let child_paths = PodPaths::new(&self.paths.dirs, &child);
        let socket = child_paths.socket().to_string_lossy().into_owned();
        fail::fail_point!("spawn.before_delegate");
        if let Err(e) = self.registry.delegate(&self.name, &child, &request.rules).await {
            // A lost connection leaves the delegate's fate unknown (the
            // registry may have committed it and died before answering):
            // undo it the idempotent way, so no reservation or layer stays.
            if e.code == crate::registry_link::CONNECTION_LOST {
                tracing::warn!(%child, error = %e, "delegate outcome unknown; reclaiming");
                self.reclaim_logged(&child, RemovalReason::Lost).await;
            }
            return Err(e);
        }
        fail::fail_point!("spawn.after_delegate");
        match self.spawn_after_delegate(&request, &socket, &child_paths).await {
            Ok(starting) => Ok(starting),
            Err(e) => {
                tracing::warn!(%child, error = %e, "spawn failed after delegate; reclaiming");
                self.reclaim_logged(&child, RemovalReason::Lost).await;
                Err(e)
            }
        }
    }

    async fn spawn_after_delegate(
        &mut self,
        request: &SpawnRequest,
        socket: &str,
        child_paths: &PodPaths,
    ) -> Result<Starting, WireError> {
        let child = request.child.clone();
        let callback = self.paths.socket().to_string_lossy().into_owned();
        let plan = self
            .core
            .plan_spawn(&child, &request.rules, socket, &callback)
            .map_err(|e| WireError::new(e.code(), e.to_string()))?;
        self.append(plan.events).await?;
        self.core = plan.next;
        fail::fail_point!("spawn.after_log");
        self.write_mirror()?;
        child_paths.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
        let launch = crate::launch::LaunchRequest {
            name: child.clone(),
            mode: crate::launch::LaunchMode::Child {
                parent: self.name.clone(),
                rules: request.rules.clone(),
                workload: request.workload.clone(),
            },
            cwd: request.cwd.clone(),
            env: request.env.clone(),
            limits: request.limits,
            enforce: request.enforce.clone(),
        };
        let standby = self.standby.take().and_then(|mut s| s.is_waiting().then_some(s));
        let starting = match standby {
            Some(standby) => standby.launch(&launch, &child_paths.pod_log())?,
            None => crate::launch::start(&launch, &child_paths.pod_log())?,
        };
        // Our unreaped child: its pid cannot be reused yet, so this start
        // time is its own, and its callbacks can be recognized from now on.
        // None means it is already gone: the spawn failed (never a start
        // time of 0).
        let pid = starting.pid();
        let Some(start_time) = watch::start_time_of(pid) else {
            starting.abandon().await;
            return Err(WireError::new(
                "launch.exited",
                format!("{child} (pid {pid}) was gone before its start time could be read"),
            ));
        };
        self.pids.insert(child.clone(), (pid, start_time));
        self.launching.insert(child);
        Ok(starting)
    }

    /// The end of a launch: the child serves (it is watched from now on, and
    /// a stop asked for meanwhile starts), or it failed and is reclaimed.
    async fn launched(&mut self, child: PodName, outcome: Result<Launched, WireError>, reply: Responder) {
        self.launching.remove(&child);
        let answer = match outcome {
            Ok(launched) => {
                fail::fail_point!("spawn.after_child_start");
                let pid = launched.pid;
                watch::watch_os_child(child.clone(), pid, launched.child, self.tx.clone());
                if self.stopping.contains_key(&child) && self.core.children.contains_key(&child) {
                    self.begin_stop(&child);
                }
                Ok(PodReply::Spawned { child, pid, socket: launched.socket, enforcement: launched.enforcement })
            }
            Err(e) => {
                tracing::warn!(%child, error = %e, "child did not start; reclaiming");
                self.reclaim_or_retry(&child, RemovalReason::Lost).await;
                self.finish_stop(&child);
                Err(e)
            }
        };
        if reply.send(answer).is_err() {
            tracing::debug!("spawn caller went away");
        }
        // A Pod that spawned once is likely to spawn again: the next spawn's
        // process starts now, after this one's answer went out.
        if self.standby.is_none() && self.shutdown.is_none() {
            match pod_client::launch::Standby::start() {
                Ok(standby) => self.standby = Some(standby),
                Err(e) => tracing::warn!(error = %e, "no standby pod process; the next spawn starts one itself"),
            }
        }
    }

    /// StopPod: tell the child to shut down (it stops its own children
    /// first), give it a bounded time, then reclaim whether or not it
    /// answered. The reply goes out when the reclaim is done. A child still
    /// starting is stopped once its launch ends.
    async fn stop_child(&mut self, child: &PodName, reply: Option<Responder>, grace: Duration) {
        let first = !self.stopping.contains_key(child);
        let stopping = self.stopping.entry(child.clone()).or_insert(Stopping { waiters: Vec::new(), grace });
        stopping.waiters.extend(reply);
        if !first {
            return;
        }
        if !self.core.children.contains_key(child) {
            self.finish_stop(child);
            return;
        }
        if self.unreclaimed.contains_key(child) {
            // Already gone; its reclaim is being retried.
            return;
        }
        if !self.launching.contains(child) {
            self.begin_stop(child);
        }
    }

    fn begin_stop(&mut self, child: &PodName) {
        let Some(record) = self.core.children.get(child) else { return };
        let socket = record.socket.clone();
        let grace = self.stopping.get(child).map_or(StopGrace::default().duration(), |s| s.grace);
        // Whole seconds: a grace asked for is one (see `StopGrace`).
        let request = PodRequest::Shutdown { grace: StopGrace::from_secs(grace.as_secs()).unwrap_or_default() };
        self.stop_tasks.insert(child.clone());
        // Held before asking it to stop: once it exits and is reaped, its
        // pid may name another process, which must never get our SIGKILL.
        let process = self.pids.get(child).and_then(|(pid, start)| PidFd::open(*pid, *start));
        let tx = self.tx.clone();
        let name = child.clone();
        tokio::spawn(async move {
            // The child answers when its own shutdown is done (its workload
            // had `grace`, its bookkeeping gets STOP_GRACE more); past that
            // it is killed (its own children are then noticed and adopted by
            // us, the registry reparenting them).
            let patience = grace + STOP_GRACE;
            let exit = match tokio::time::timeout(patience, PodClient::call_at(&socket, &request)).await {
                Ok(Ok(PodReply::ShuttingDown { exit })) => Some(exit),
                Ok(Ok(other)) => {
                    tracing::warn!(child = %name, reply = ?other, "child answered its shutdown unexpectedly");
                    None
                }
                Ok(Err(e)) => {
                    tracing::info!(child = %name, error = %e, "child did not take the shutdown request");
                    None
                }
                Err(_) => {
                    tracing::warn!(child = %name, ?patience, "child did not finish its shutdown in time");
                    None
                }
            };
            if let Some(process) = process {
                process.wait_or_kill(STOP_GRACE).await;
            }
            if tx.send(OwnerMsg::StopFinished { name, exit }).await.is_err() {
                tracing::debug!("owner gone before a stop finished");
            }
        });
    }

    /// Answers the callers of a stop once the child is reclaimed, or with
    /// the error once its reclaim's retries gave up.
    fn finish_stop(&mut self, child: &PodName) {
        let outcome = if !self.core.children.contains_key(child) {
            Ok(PodReply::Stopped { reclaimed: true })
        } else if let Some(failed) = self.unreclaimed.get(child).filter(|u| u.since.elapsed() >= RECLAIM_RETRY_FOR) {
            Err(WireError::new(
                failed.error.code.clone(),
                format!("{child} stopped but its reclaim failed for {RECLAIM_RETRY_FOR:?} ({}); it stays recorded until a later stop or the prune on resume", failed.error.message),
            ))
        } else {
            return;
        };
        for waiter in self.stopping.remove(child).map(|s| s.waiters).unwrap_or_default() {
            if waiter.send(outcome.clone()).is_err() {
                tracing::debug!("stop caller went away");
            }
        }
    }

    /// Kills every child whose process is known, at once (a second
    /// signal: nobody waits for a grace period any more).
    fn kill_children(&self) {
        for (child, (pid, start)) in &self.pids {
            if let Some(process) = PidFd::open(*pid, *start) {
                tracing::warn!(%child, pid, "second signal: killing the child");
                process.signal(Signal::KILL);
            }
        }
    }

    /// The one reclaim operation, for one child.
    pub async fn reclaim(&mut self, child: &PodName, reason: RemovalReason) -> Result<bool, WireError> {
        Ok(self.reclaim_all(std::slice::from_ref(child), reason).await? > 0)
    }

    /// The one reclaim operation. Idempotent: the registry call succeeds for
    /// an unknown child, and nothing is logged for a child this Pod no longer
    /// records. Order: registry, log (one durable batch for all of
    /// `children`), memory, mirror. Resume prunes many children at once
    /// through here, so their registry calls overlap (and share the
    /// registry's group commits) and their records share one flush.
    /// Returns how many children were removed here.
    pub async fn reclaim_all(&mut self, children: &[PodName], reason: RemovalReason) -> Result<usize, WireError> {
        let span = tracing::info_span!("reclaim", pod = %self.name, count = children.len(), ?reason);
        self.reclaim_all_in_span(children, reason).instrument(span).await
    }

    async fn reclaim_all_in_span(&mut self, children: &[PodName], reason: RemovalReason) -> Result<usize, WireError> {
        fail::fail_point!("reclaim.before_registry");
        let (ended, held) = self.workloads_ended(children).await;
        // Answers that arrived are applied even when others failed: the
        // registry committed them, so the Pod must take them in (and adopt
        // the survivors they report); the rest stay recorded for a later
        // reclaim, and the error is returned after.
        let outcome = self.registry.reclaim_many(&self.name, &ended).await;
        fail::fail_point!("reclaim.after_registry");
        let removed = self.apply_reclaimed(outcome.done, reason).await?;
        match outcome.failed.or(held) {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// A Pod is live while its process or any process of its workload is:
    /// a child's region comes back only once its workload is gone. Returns
    /// the children none of whose workload's processes remain, and the
    /// error for the others, whose workload a task is ending meanwhile
    /// (TERM, [`STOP_GRACE`], KILL; [`OwnerMsg::ChildWorkloadEnded`]) so
    /// that the reclaim's retry finds them gone.
    async fn workloads_ended(&mut self, children: &[PodName]) -> (Vec<PodName>, Option<WireError>) {
        let mut ended = Vec::new();
        let mut held = None;
        for child in children {
            let record = match self.registry.get(child).await {
                Ok(alloc) => alloc.and_then(|a| a.containment),
                Err(e) => {
                    held = Some(e);
                    continue;
                }
            };
            let Some(record) = record else {
                ended.push(child.clone());
                continue;
            };
            let containment = pod_sandbox::Containment::from_record(record);
            match containment.is_populated() {
                Ok(false) => {
                    // Its cgroups go too (a child killed -9 left them).
                    if let Err(e) = containment.remove() {
                        tracing::warn!(%child, error = %e, "cannot remove a gone child's containment");
                    }
                    ended.push(child.clone());
                    continue;
                }
                Ok(true) => {}
                Err(e) => tracing::warn!(%child, error = %e, "cannot tell whether a gone child's workload runs"),
            }
            held = Some(WireError::new(
                "containment.held",
                format!(
                    "{child}'s workload still runs ({}); its region stays held until it is ended",
                    containment.describe()
                ),
            ));
            if self.ending.insert(child.clone()) {
                let (tx, name) = (self.tx.clone(), child.clone());
                tokio::spawn(async move {
                    let ending = tokio::task::spawn_blocking(move || {
                        containment.terminate(STOP_GRACE).and_then(|()| containment.remove()).map_err(|e| e.to_string())
                    });
                    let outcome = ending.await.unwrap_or_else(|e| Err(format!("the task ending it failed: {e}")));
                    if tx.send(OwnerMsg::ChildWorkloadEnded { name, outcome }).await.is_err() {
                        tracing::debug!("owner gone before a child's workload ended");
                    }
                });
            }
        }
        (ended, held)
    }

    /// Takes in what the registry answered for reclaimed children: log,
    /// memory, watches of adopted grandchildren, mirror.
    async fn apply_reclaimed(
        &mut self,
        results: Vec<(PodName, Vec<crate::registry_link::Orphan>)>,
        reason: RemovalReason,
    ) -> Result<usize, WireError> {
        let reclaimed: Vec<(PodName, Vec<Adoption>)> = results
            .iter()
            .map(|(child, orphans)| {
                let adoptions = orphans
                    .iter()
                    .map(|o| Adoption { name: o.name.clone(), rules: o.rules.clone(), socket: o.socket.clone() })
                    .collect();
                (child.clone(), adoptions)
            })
            .collect();
        let Some(plan) =
            self.core.plan_reclaim(&reclaimed, reason).map_err(|e| WireError::new(e.code(), e.to_string()))?
        else {
            return Ok(0);
        };
        let mut events = plan.events;
        for event in &mut events {
            if let Event::ChildRemoved { name, exit, .. } = event {
                *exit = self.child_exits.remove(name).unwrap_or_default();
            }
        }
        self.append(events).await?;
        fail::fail_point!("reclaim.after_log");
        self.core = plan.next;
        let removed = plan.removed;
        for child in &removed {
            self.pids.remove(child);
        }
        // Write comes back to this Pod's workload (the child's containment
        // was ended before its region was given up), except where adopted
        // grandchildren now hold part of it.
        for (child, orphans) in &results {
            if removed.contains(child) {
                self.widen_for(child, orphans).await;
            }
        }
        // Every reclaim path comes here (stop, callback, noticed death,
        // prune on resume): the child's leases pass on, its waits end.
        // A store still opening finds them gone itself: its open, and its
        // timer every second, report every party whose run is over.
        if let Some(kv) = self.kv.as_ref().and_then(crate::process::kv::KvHandle::now) {
            kv.holders_gone(&removed);
        }
        let mut adopted = Vec::new();
        for (child, orphans) in &results {
            if !removed.contains(child) {
                continue;
            }
            for o in orphans {
                self.pids.insert(o.name.clone(), (o.pid, o.start_time));
                watch::watch_pid(o.name.clone(), o.pid, o.start_time, self.tx.clone());
                adopted.push(o.name.clone());
            }
        }
        self.write_mirror()?;
        fail::fail_point!("reclaim.after_mirror");
        tracing::info!(removed = removed.len(), adopted = adopted.len(), "reclaimed");
        // A Pod shutting down stops every child it has, including those it
        // adopts on the way (they were not there when the shutdown began).
        if self.shutdown.is_some() {
            let grace = self.shutdown.as_ref().map_or(StopGrace::default().duration(), |s| s.grace);
            for child in &adopted {
                self.stop_child(child, None, grace).await;
            }
        }
        Ok(removed.len())
    }

    /// Reclaim from a path that has nobody to report an error to: the error
    /// is logged, and the child stays recorded so that a later path (another
    /// reclaim, or the prune on resume) takes it back.
    async fn reclaim_logged(&mut self, child: &PodName, reason: RemovalReason) -> bool {
        match self.reclaim(child, reason).await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::error!(%child, error = %e, "reclaim failed; the child stays recorded until a later reclaim");
                false
            }
        }
    }

    /// Reclaim of a child that is gone: a failure is retried with backoff
    /// (see [`OwnerMsg::RetryReclaims`]), so a stop's callers and a
    /// shutdown are answered when the registry is back, within a bound.
    async fn reclaim_or_retry(&mut self, child: &PodName, reason: RemovalReason) -> bool {
        let outcome = match self.shutdown.as_ref().map(|s| (s.deadline, s.now)) {
            None => self.reclaim(child, reason).await,
            Some((_, true)) => Err(WireError::new("pod.shutting_down", "a second signal: no more reclaims")),
            Some((deadline, false)) => {
                let mut hurry = self.hurry.clone();
                let reclaim = self.reclaim(child, reason);
                tokio::select! {
                    outcome = reclaim => outcome,
                    () = tokio::time::sleep_until(deadline) => Err(WireError::new("pod.shutting_down", "the shutdown's bound passed during the reclaim")),
                    () = hurried(&mut hurry) => Err(WireError::new("pod.shutting_down", "a second signal during the reclaim")),
                }
            }
        };
        if outcome.as_ref().is_err_and(|e| e.code == "pod.shutting_down") {
            // Abandoned mid-call: the registry connection may still carry
            // its answer, so it is not used again by this process.
            self.registry_abandoned = true;
        }
        match outcome {
            Ok(changed) => {
                self.unreclaimed.remove(child);
                changed
            }
            Err(e) => {
                if self.core.children.contains_key(child) {
                    tracing::warn!(%child, error = %e, "reclaim failed; retrying");
                    let since = self.unreclaimed.get(child).map_or_else(Instant::now, |u| u.since);
                    self.unreclaimed.insert(child.clone(), Unreclaimed { reason, since, error: e });
                    self.schedule_retry();
                }
                false
            }
        }
    }

    fn schedule_retry(&mut self) {
        if self.retry_pending {
            return;
        }
        self.retry_pending = true;
        let pause = self.retry_pause;
        self.retry_pause = (pause * 2).min(RETRY_MAX);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            if tx.send(OwnerMsg::RetryReclaims).await.is_err() {
                tracing::debug!("owner gone before a reclaim retry");
            }
        });
    }

    async fn retry_reclaims(&mut self) {
        self.retry_pending = false;
        let due: Vec<(PodName, RemovalReason)> = self.unreclaimed.iter().map(|(n, u)| (n.clone(), u.reason)).collect();
        for (child, reason) in due {
            self.reclaim_or_retry(&child, reason).await;
            if let Some(failed) = self.unreclaimed.get(&child) {
                if failed.since.elapsed() >= RECLAIM_RETRY_FOR {
                    tracing::error!(%child, error = %failed.error, "reclaim retries gave up; the child stays recorded");
                    self.finish_stop(&child);
                    self.unreclaimed.remove(&child);
                }
            } else {
                self.finish_stop(&child);
            }
        }
        if self.unreclaimed.is_empty() {
            self.retry_pause = RETRY_FIRST;
        } else {
            self.schedule_retry();
        }
    }

    async fn begin_shutdown(&mut self, origin: ShutdownOrigin, reply: Option<Responder>, grace: StopGrace) {
        let grace = grace.duration();
        match &mut self.shutdown {
            Some(shutdown) => {
                shutdown.waiters.extend(reply);
                shutdown.grace = shutdown.grace.min(grace);
            }
            None => {
                // The children's workloads have `grace` too.
                let deadline = Instant::now() + SHUTDOWN_WAIT + grace;
                self.shutdown =
                    Some(Shutdown { origin, waiters: reply.into_iter().collect(), deadline, grace, now: false });
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    // The owner may be gone already: nothing to say then.
                    let _ = tx.send(OwnerMsg::ShutdownDeadline).await;
                });
            }
        }
        let grace = self.shutdown.as_ref().map_or(grace, |s| s.grace);
        for child in self.child_names() {
            self.stop_child(&child, None, grace).await;
        }
    }

    async fn finish_shutdown(&mut self) {
        let Some(shutdown) = self.shutdown.take() else { return };
        let span = tracing::info_span!("shutdown", pod = %self.name, origin = ?shutdown.origin);
        self.shut_down(shutdown).instrument(span).await
    }

    async fn shut_down(&mut self, shutdown: Shutdown) {
        let Shutdown { origin, waiters, deadline, grace, now } = shutdown;
        // Its stdin closes: it exits without a word.
        self.standby = None;
        self.workload_process = None;
        if let Some(tree) = self.workload_tree.take() {
            // The whole tree, whatever the main process did: nothing the
            // workload started outlives its Pod.
            let grace = if now { Duration::ZERO } else { grace };
            if let Err(e) = tree.end(grace).await {
                tracing::error!(error = %e, code = e.code(), "the workload's processes could not be shown gone");
            }
        }
        let exit = self.workload_ended().await;
        match &self.parent {
            None => self.release_within(deadline, now).await,
            Some(_) if origin == ShutdownOrigin::Parent => {}
            Some(_) => self.call_back_parent(now, exit).await,
        }
        if let Err(e) = self.append(vec![Event::PodStopped { exit }]).await {
            tracing::error!(error = %e, "could not record pod.stopped");
        }
        for waiter in waiters {
            if waiter.send(Ok(PodReply::ShuttingDown { exit })).is_err() {
                tracing::debug!("shutdown caller went away");
            }
        }
    }

    /// A top-level Pod gives its allocation back, retrying with backoff
    /// until `deadline` (not at all after a second signal). If it never
    /// gets through, the registry's sweep forgets the allocation once this
    /// process is gone.
    async fn release_within(&mut self, deadline: Instant, now: bool) {
        if now || self.registry_abandoned {
            tracing::warn!("shutting down without releasing the allocation; the registry's sweep forgets it once this process is gone");
            return;
        }
        if self.fenced.as_deref().is_some_and(|r| r.starts_with(LEASE_LOST_REASON)) && self.lease.check().is_err() {
            // Its allocation went with the node's lease: nothing to give back.
            tracing::info!("shutting down fenced for the lease; no allocation to release");
            return;
        }
        let mut pause = RETRY_FIRST;
        loop {
            let mut hurry = self.hurry.clone();
            let released = tokio::select! {
                released = self.registry.release(&self.name) => released,
                () = tokio::time::sleep_until(deadline) => Err(WireError::new("pod.shutting_down", "the shutdown's bound passed")),
                () = hurried(&mut hurry) => Err(WireError::new("pod.shutting_down", "a second signal")),
            };
            let Err(e) = released else { return };
            if e.code == "pod.shutting_down" {
                tracing::error!(error = %e, "registry release abandoned; the registry's sweep forgets this pod once it is gone");
                return;
            }
            let hurry = now || self.hurry.as_ref().is_some_and(|h| *h.borrow());
            if hurry || Instant::now() + pause >= deadline {
                tracing::error!(error = %e, "registry release failed; the registry's sweep forgets this pod once it is gone");
                return;
            }
            tracing::warn!(error = %e, ?pause, "registry release failed; retrying");
            let mut hurry = self.hurry.clone();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = hurried(&mut hurry) => {}
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// The ShutDown callback. The parent to call is the registry's current
    /// record (a reparented Pod calls its adoptive parent); if it cannot be
    /// reached, its resume prunes this Pod.
    async fn call_back_parent(&self, now: bool, exit: Exit) {
        let parent = if now || self.registry_abandoned {
            self.parent.clone()
        } else {
            match tokio::time::timeout(CALLBACK_WAIT, self.registry.get(&self.name)).await {
                Ok(Ok(Some(alloc))) => alloc.parent,
                Ok(Ok(None)) => None,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot look up the parent for the callback");
                    self.parent.clone()
                }
                Err(_) => {
                    tracing::warn!(?CALLBACK_WAIT, "the registry did not say who the parent is in time");
                    self.parent.clone()
                }
            }
        };
        let Some(parent) = parent else { return };
        let socket = PodPaths::new(&self.paths.dirs, &parent).socket();
        let request = PodRequest::ChildShutDown { child: self.name.clone(), exit };
        match tokio::time::timeout(CALLBACK_WAIT, PodClient::call_at(&socket.to_string_lossy(), &request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(%parent, error = %e, "shutdown callback not delivered; the parent reclaims on resume or exit")
            }
            Err(_) => {
                tracing::warn!(%parent, ?CALLBACK_WAIT, "shutdown callback not answered in time; the parent reclaims when it notices the exit")
            }
        }
    }

    /// Compares the registry's record of this Pod with what the Pod holds.
    /// Equal: nothing to do. A difference the Pod can explain is one the
    /// registry made when children of this Pod went away without it (a
    /// sweep): their layers are gone from the record, and their survivors'
    /// layers are in it; the Pod then reclaims those children, which takes
    /// the survivors in. Any other difference, or the record vanishing,
    /// makes the Pod fail closed (`fence`).
    async fn check_allocation(&mut self) {
        if self.fenced.is_some() || self.shutdown.is_some() {
            return;
        }
        // A lease lost is the reason, whatever the record says now (the
        // registry drops the records of a node that lost its lease).
        if let Err(reason) = self.lease.check() {
            return self.fence(format!("{LEASE_LOST_REASON}{reason}")).await;
        }
        // A test holds the owner here (off the runtime's workers) to freeze
        // the registry under the read below.
        #[cfg(feature = "failpoints")]
        let _ = tokio::task::spawn_blocking(|| fail::fail_point!("owner.before_allocation_read")).await;
        let missing = match self.explained_allocation("on a change the watch reported").await {
            None => return,
            Some(Err(reason)) => return self.fence(reason).await,
            Some(Ok(missing)) => missing,
        };
        if missing.is_empty() {
            return;
        }
        tracing::info!(?missing, "the registry removed children of this pod; reclaiming them");
        if let Err(e) = self.reclaim_all(&missing, RemovalReason::Lost).await {
            tracing::warn!(error = %e, "reclaim of children the registry removed failed; the next report checks again");
            return;
        }
        match self.explained_allocation("after the reclaim").await {
            None => {}
            Some(Ok(missing)) if missing.is_empty() => {}
            Some(Ok(missing)) => {
                let names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
                self.fence(format!("the registry still lacks the layers of {} after their reclaim", names.join(", ")))
                    .await
            }
            Some(Err(reason)) => self.fence(reason).await,
        }
    }

    /// This Pod's allocation as the registry holds it now, explained
    /// ([`Owner::explain`]): `None` when the registry could not be read
    /// (logged, `step` saying when; the next report checks again);
    /// `Some(Err(reason))` when the Pod must fence: the registry holds what
    /// it cannot explain, or this node's lease lapsed before the registry
    /// answered. A daemon that stopped answering (frozen, cut off) must not
    /// hold the owner past the deadline, where it must fence: it would not
    /// even hear [`OwnerMsg::LeaseLost`] meanwhile. Dropping the unanswered
    /// read changes nothing. On the embedded registry no deadline is held.
    async fn explained_allocation(&self, step: &str) -> Option<Result<Vec<PodName>, String>> {
        let read = async {
            match self.registry.get(&self.name).await {
                Ok(rec) => Some(self.explain(rec.as_ref()).await),
                Err(e) => {
                    tracing::warn!(error = %e, step, "cannot read this pod's allocation; the next report checks again");
                    None
                }
            }
        };
        tokio::select! {
            explained = read => explained,
            reason = self.lease.until_lost() => Some(Err(format!("{LEASE_LOST_REASON}{reason}"))),
        }
    }

    /// The children whose reclaim would make `rec` equal to this Pod's
    /// scope, or why the difference cannot be explained.
    async fn explain(&self, rec: Option<&pod_registry::Allocation>) -> Result<Vec<PodName>, String> {
        let Some(rec) = rec else { return Err(format!("the registry no longer holds {}'s allocation", self.name)) };
        let me = std::process::id();
        let start = watch::start_time_of(me);
        if rec.pid != me || Some(rec.start_time) != start {
            return Err(format!("the registry records {} as process {}, not this one ({me})", self.name, rec.pid));
        }
        let scope = self.core.scope.snapshot();
        if rec.allow != scope.allow || rec.deny != scope.deny {
            return Err(format!("the registry holds other base rules for {} than it has", self.name));
        }
        let missing: Vec<PodName> = scope
            .layers
            .keys()
            .filter(|c| !rec.layers.contains_key(*c) && !self.spawning.contains(*c))
            .cloned()
            .collect();
        if let Some(stranger) = missing.iter().find(|c| !self.core.children.contains_key(*c)) {
            return Err(format!(
                "the registry dropped the layer for {stranger}, which is not a child of {}",
                self.name
            ));
        }
        for (child, rules) in &rec.layers {
            match scope.layers.get(child) {
                Some(ours) if ours == rules => {}
                None if self.spawning.contains(child) => {}
                Some(_) => return Err(format!("the registry holds other rules for {}'s layer {child}", self.name)),
                None => {
                    let moved = self.registry.get(child).await.map_err(|e| e.to_string())?;
                    let explained = moved.as_ref().is_some_and(|m| {
                        m.parent.as_ref() == Some(&self.name)
                            && m.former_parent.as_ref().is_some_and(|f| missing.contains(f))
                    });
                    if !explained {
                        return Err(format!(
                            "the registry gave {} a layer for {child}, which it cannot explain",
                            self.name
                        ));
                    }
                }
            }
        }
        Ok(missing)
    }

    /// Fails closed: logs `pod.fenced {reason}`; from now on every check is
    /// denied, naming the reason, and spawns are refused.
    async fn fence(&mut self, reason: String) {
        tracing::error!(%reason, "pod.fenced: failing closed");
        // The kernel stops the enforced workload's writes (that no longer
        // ask the Pod) before the record below; checks and spawns are
        // refused already (the lease guard and `fenced`).
        if self.fenced.is_none() {
            self.take_write().await;
        }
        if let Err(e) = self.append(vec![Event::PodFenced { reason: reason.clone() }]).await {
            tracing::error!(error = %e, "could not record pod.fenced");
        }
        self.fenced = Some(reason);
    }

    /// A fenced Pod's enforced workload loses write: at `full` its whole
    /// write scope is made read-only by the keeper's live narrowing, until
    /// the re-claim gives it back ([`Owner::give_write_back`]); at
    /// `landlock` (a running workload keeps its exec-time scope), or when
    /// the narrowing fails (a process holds a path there), the workload is
    /// ended: fail closed. At `off` nothing is enforced.
    async fn take_write(&mut self) {
        let Some(tree) = self.workload_tree.clone() else { return };
        let why = match self.enforcement.as_ref().map(|e| e.level) {
            Some(pod_sandbox::Level::Full) => match tree.fence(&self.write_rules()).await {
                Ok(()) => {
                    tracing::warn!("pod.fenced: the workload's write scope is read-only until the re-claim");
                    return;
                }
                Err(e) => format!("its write scope could not be made read-only: {e} [{}]", e.code()),
            },
            Some(pod_sandbox::Level::Landlock) => {
                "at level landlock a running workload cannot lose write (only full narrows it)".to_string()
            }
            Some(pod_sandbox::Level::Off) | None => return,
        };
        tracing::error!(%why, "pod.fenced: ending the workload, which would keep write");
        if let Err(e) = tree.end(Duration::ZERO).await {
            tracing::error!(error = %e, "cannot end the workload of a fenced pod");
        }
    }

    /// The re-claim's counterpart of [`Owner::take_write`]: at `full` the
    /// workload gets its write scope back (its children's regions stay
    /// narrowed, as before the fence).
    pub(super) async fn give_write_back(&self) {
        let Some(tree) = self.narrowing_tree() else { return };
        match tree.unfence().await {
            Ok(()) => tracing::info!("pod.rejoined: the workload writes its scope again"),
            Err(e) => tracing::error!(error = %e, "cannot give the workload of a re-claimed pod write back"),
        }
    }

    /// This Pod's own write rules (its base allow): what a fence takes.
    fn write_rules(&self) -> Vec<scope::ScopeRule> {
        let allow = &self.core.scope.snapshot().allow;
        allow.iter().filter(|r| r.permission == Permission::Write).cloned().collect()
    }

    async fn append(&self, events: Vec<Event>) -> Result<(), WireError> {
        let log = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || log.append(events))
            .await
            .map_err(|e| WireError::new("pod.internal", format!("log task failed: {e}")))?
            .map(drop)
            .map_err(|e| WireError::new(e.code(), e.to_string()))
    }

    pub fn write_mirror(&self) -> Result<(), WireError> {
        let children: BTreeMap<PodName, MirroredChild> = self
            .core
            .children
            .iter()
            .map(|(n, c)| {
                (n.clone(), MirroredChild { name: n.clone(), socket: c.socket.clone(), rules: c.rules.clone() })
            })
            .collect();
        mirror::write(&self.paths.run_dir, &children)
            .map_err(|e| WireError::new("pod.mirror", format!("cannot write spawned_pods.json: {e}")))
    }
}

/// How long the allocation watch waits after a failed long-poll (the
/// registry could not be reached even with the link's own retries).
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// How the reason of a Pod fenced for its lease begins (`pod.fenced
/// {reason: "lease_lost: ..."}`).
pub const LEASE_LOST_REASON: &str = "lease_lost: ";

/// A denied verdict for a Pod past its node's lease deadline.
pub fn lease_lost_verdict(reason: String) -> PodReply {
    PodReply::Verdict { allowed: false, permission: None, decided_by: format!("{LEASE_LOST}: {reason}") }
}

/// The Pod's long-poll on its own allocation and its node's lease: hands
/// every deadline to the lease guard, tells the owner of every change of
/// the record (its fence moved, or the record is gone), and runs until the
/// owner is gone.
struct WatchLoop {
    watcher: crate::registry_link::Watcher,
    name: PodName,
    lease: Arc<LeaseGuard>,
    tx: mpsc::Sender<OwnerMsg>,
}

impl WatchLoop {
    async fn run(mut self, mut deadline_after: u64) {
        let mut after = 0;
        loop {
            let watched = match self.watcher.next(&self.name, after, deadline_after).await {
                Ok(watched) => watched,
                Err(e) => {
                    tracing::warn!(error = %e, "allocation watch failed; watching again");
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            };
            if let Some(view) = &watched.lease {
                self.lease.take(view);
                deadline_after = view.deadline_ms;
            }
            if self.lease.check().is_err() {
                // Stopped past the deadline: nothing the record says matters
                // until the node holds a new lease and the owner re-claims.
                match self.offer_rejoin(watched.lease).await {
                    Offer::Rejoined => after = 0,
                    Offer::Later => tokio::time::sleep(WATCH_RETRY).await,
                    Offer::Never => return,
                }
                continue;
            }
            match watched.record {
                Some(rec) if rec.fence == after => continue,
                rec => {
                    if self.tx.send(OwnerMsg::AllocationChanged).await.is_err() {
                        return;
                    }
                    // Said once the owner has it queued: whatever reaches
                    // the owner after this line is handled after the check.
                    match rec {
                        Some(rec) => {
                            tracing::info!(fence = rec.fence, "the registry reports a change of this pod's allocation");
                            after = rec.fence;
                        }
                        // Gone: the owner fails closed (or is shutting down).
                        None => {
                            tracing::info!("the registry reports this pod's allocation gone");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Offers the owner a re-claim once the node holds a new, live lease.
    async fn offer_rejoin(&self, lease: Option<pod_registry::LeaseView>) -> Offer {
        let Some(view) = lease.filter(|v| v.lost.is_none() && v.deadline_ms > crate::process::lease::boottime_ms())
        else {
            return Offer::Later;
        };
        let (again, answer) = oneshot::channel();
        if self.tx.send(OwnerMsg::Rejoin { lease: view, again }).await.is_err() {
            return Offer::Never;
        }
        match answer.await {
            _ if self.lease.check().is_ok() => Offer::Rejoined,
            Ok(true) => Offer::Later,
            Ok(false) | Err(_) => Offer::Never,
        }
    }
}

enum Offer {
    Rejoined,
    Later,
    Never,
}
