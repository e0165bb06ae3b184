//! One client connection: read a request, answer it, repeat.
//!
//! A frame that cannot be read (garbage, truncated, oversized, too slow) is
//! answered with an error frame and ends this connection only; a request
//! that is well framed but refused (bad name, conflict) is answered with its
//! error and the connection stays open.

use std::sync::Arc;

use pod_proto::{Connection, PeerCred, ProtoError, WireError};
use scope::PodName;
use tokio::sync::RwLock;
use tracing::Instrument;

use super::writer::Writer;
use crate::auth::Caller;
use crate::limits::WATCH_WAIT;
use crate::ops::{self, Op, Submission};
use crate::record::AllocState;
use crate::state::State;
use crate::wire::{Command, Reclaimed, Reply, Request};
use crate::{proc, RegistryError};

/// What every connection task shares. The state lock is tokio's, so a read
/// waiting out a group commit yields its worker instead of blocking it.
pub struct Ctx {
    pub state: Arc<RwLock<State>>,
    pub writer: Arc<Writer>,
    /// The node's lease, on a registry shared through etcd.
    pub lease: Option<super::Lease>,
}

impl Ctx {
    /// Runs one request from `caller` (as the kernel identified it when the
    /// connection was accepted; `Err` when it could not).
    pub async fn execute(&self, request: Request, caller: &Result<Caller, String>) -> Result<Reply, RegistryError> {
        let id = request.id();
        let command = request.validate(|pid| match caller {
            Ok(c) => start_time_for(pid, c),
            Err(e) => Err(RegistryError::CallerUnknown(e.clone())),
        })?;
        match command {
            Command::Query(q) => ops::answer(&*self.state.read().await, &q),
            Command::Mutate(op) => {
                let caller = caller.clone().map_err(RegistryError::CallerUnknown)?;
                self.writer.submit(Submission { op, id, caller: Some(caller) }).await
            }
            Command::Sweep => self.sweep().await,
            Command::Watch { name, after_fence, deadline_after: None } => Ok(self.watch(&name, after_fence).await),
            Command::Watch { name, after_fence, deadline_after: Some(deadline) } => {
                Ok(self.watch_lease(&name, after_fence, deadline).await)
            }
        }
    }

    /// Waits (at most `WATCH_WAIT`) until `name`'s record has a fence above
    /// `after_fence` or is gone; answers with the record as it is then.
    async fn watch(&self, name: &PodName, after_fence: u64) -> Reply {
        // Declared first so it runs last: after the receiver is dropped,
        // however this future ends (also when its connection goes away).
        let _release = Release(self.writer.watched(), name);
        let mut changes = self.writer.watched().subscribe(name);
        let deadline = tokio::time::Instant::now() + WATCH_WAIT;
        let reply = loop {
            changes.mark_unchanged();
            let now = self.visible(name).await;
            if now.as_ref().is_none_or(|rec| rec.fence > after_fence) {
                break Reply::Watched(now);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                // Timed out, or the writer is gone (shutting down).
                Ok(Err(_)) | Err(_) => break Reply::Watched(now),
            }
        };
        reply
    }

    /// [`Ctx::watch`], also answered when the node's lease deadline is no
    /// longer `deadline_after` (renewed or lost), with the lease.
    async fn watch_lease(&self, name: &PodName, after_fence: u64, deadline_after: u64) -> Reply {
        let _release = Release(self.writer.watched(), name);
        let mut changes = self.writer.watched().subscribe(name);
        let mut lease = self.lease_changes();
        let deadline = tokio::time::Instant::now() + WATCH_WAIT;
        loop {
            changes.mark_unchanged();
            let view = self.lease_view();
            let now = self.visible(name).await;
            let moved = view.as_ref().is_some_and(|v| v.deadline_ms != deadline_after);
            if moved || now.as_ref().is_none_or(|rec| rec.fence > after_fence) {
                return Reply::WatchedLease { record: now, lease: view };
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, changes.changed()) => match changed {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => return Reply::WatchedLease { record: now, lease: view },
                },
                () = lease.next() => continue,
            }
        }
    }

    /// A record as a watcher of it may see it: a Pod of this node fenced
    /// after a lost lease has none (so it stays failed closed).
    async fn visible(&self, name: &PodName) -> Option<crate::Allocation> {
        let state = self.state.read().await;
        if state.fenced(name).is_some() {
            return None;
        }
        state.get(name).map(|h| h.rec.clone())
    }

    #[cfg(feature = "etcd")]
    fn lease_view(&self) -> Option<crate::LeaseView> {
        self.lease.as_ref().map(|l| l.view())
    }

    #[cfg(not(feature = "etcd"))]
    fn lease_view(&self) -> Option<crate::LeaseView> {
        self.lease.as_ref().map(|never| match *never {})
    }

    #[cfg(feature = "etcd")]
    fn lease_changes(&self) -> LeaseChanges {
        LeaseChanges(self.lease.as_ref().map(|l| l.subscribe()))
    }

    #[cfg(not(feature = "etcd"))]
    fn lease_changes(&self) -> LeaseChanges {
        LeaseChanges(None)
    }

    /// The one operation that visits every allocation: it must look at
    /// every live pid. The scan runs on a copy of (name, pid, start,
    /// containment) taken under the read lock; each removal is a `Forget`
    /// that re-checks the record still names the dead process. A Pod is
    /// live while its process or any process of its workload is: a dead
    /// Pod's workload is ended first (TERM, [`SWEEP_GRACE`], KILL), and a
    /// Pod whose workload cannot be shown gone is kept (its region stays
    /// held; the next sweep tries again).
    pub async fn sweep(&self) -> Result<Reply, RegistryError> {
        let state = self.state.read().await;
        // Another node's Pods live as long as its lease: their pids mean
        // nothing here.
        let live: Vec<(PodName, u32, u64, Option<pod_sandbox::ContainmentRecord>)> = state
            .iter()
            .filter(|h| h.rec.state == AllocState::Live && !state.is_remote(&h.rec))
            .map(|h| (h.rec.name.clone(), h.rec.pid, h.rec.start_time, h.rec.containment.clone()))
            .collect();
        drop(state);
        let dead = tokio::task::spawn_blocking(move || {
            live.into_iter()
                .filter(|(_, pid, start, _)| !proc::is_alive(*pid, *start))
                .filter(|(name, _, _, containment)| workload_ended(name, containment.as_ref()))
                .map(|(name, pid, start, _)| (name, pid, start))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| RegistryError::Store(format!("sweep task failed: {e}")))?;
        let ops = dead.iter().map(|(name, pid, start_time)| Op::Forget {
            name: name.clone(),
            pid: *pid,
            start_time: *start_time,
        });
        let answers = self.writer.submit_all(ops.collect()).await;
        let mut gone = Vec::new();
        for ((name, _, _), answer) in dead.into_iter().zip(answers) {
            if let Reply::Reclaimed(Reclaimed { removed: true, .. }) = answer? {
                tracing::info!(pod = %name, "swept: its process is gone");
                gone.push(name);
            }
        }
        Ok(Reply::Swept { gone })
    }
}

/// How long the sweep lets a dead Pod's workload go after SIGTERM, before
/// it is killed.
pub const SWEEP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends the workload of a Pod whose process is gone; true once none of its
/// processes remains (or it had none).
fn workload_ended(name: &PodName, record: Option<&pod_sandbox::ContainmentRecord>) -> bool {
    let Some(record) = record else { return true };
    let containment = pod_sandbox::Containment::from_record(record.clone());
    match containment.terminate(SWEEP_GRACE).and_then(|()| containment.remove()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "its process is gone but its workload could not be ended; its region stays held");
            false
        }
    }
}

/// The start time of `pid`, which register or adopt names: the caller's own
/// (read when it connected), or that of a process the caller started.
fn start_time_for(pid: u32, caller: &Caller) -> Result<u64, RegistryError> {
    if pid == caller.process.pid {
        return Ok(caller.process.start);
    }
    match proc::stat(pid) {
        Ok(Some(s)) if s.ppid == caller.process.pid => Ok(s.start_time),
        Ok(Some(_)) => Err(RegistryError::PidNotCaller { pid, caller_pid: caller.process.pid }),
        Ok(None) => Err(RegistryError::NoSuchProcess { pid }),
        Err(e) => Err(RegistryError::BadRequest(format!("cannot read the start time of pid {pid}: {e}"))),
    }
}

/// Changes of the node's lease (never, without one).
#[cfg(feature = "etcd")]
struct LeaseChanges(Option<tokio::sync::watch::Receiver<crate::store::etcd::LeaseStatus>>);
#[cfg(not(feature = "etcd"))]
struct LeaseChanges(Option<std::convert::Infallible>);

impl LeaseChanges {
    /// Resolves at the next change.
    async fn next(&mut self) {
        #[cfg(feature = "etcd")]
        if let Some(rx) = &mut self.0 {
            if rx.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Forgets a watched name's signal once its last watcher is gone.
struct Release<'a>(&'a super::writer::Watched, &'a PodName);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

fn kind(request: &Request) -> &'static str {
    match request {
        Request::Register { .. } => "register",
        Request::Delegate { .. } => "delegate",
        Request::Adopt { .. } => "adopt",
        Request::Contain { .. } => "contain",
        Request::Reclaim { .. } => "reclaim",
        Request::Release { .. } => "release",
        Request::Get { .. } => "get",
        Request::List { .. } => "list",
        Request::Check { .. } => "check",
        Request::BySession { .. } => "by_session",
        Request::Sweep => "sweep",
        Request::Watch { .. } => "watch",
        Request::WatchLease { .. } => "watch_lease",
    }
}

pub async fn handle(mut conn: Connection, peer: PeerCred, ctx: Arc<Ctx>) {
    // Who is calling, from the kernel, right after the connection was
    // accepted and before any request: authorization uses nothing else.
    let caller = proc::caller(peer.pid);
    loop {
        let request = match conn.read_frame::<Request>().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(ProtoError::Idle(idle)) => {
                tracing::info!(?idle, "closing an idle connection");
                return;
            }
            Err(e) => {
                tracing::info!(code = e.code(), error = %e, "closing connection after a bad frame");
                conn.refuse(&e).await;
                return;
            }
        };
        // Debug level: at info, formatting the span's fields costs more than the
        // check it wraps; outcomes worth knowing are logged as events.
        let span = tracing::debug_span!("request", op = kind(&request), peer_pid = peer.pid);
        let answer: Result<Reply, WireError> =
            ctx.execute(request, &caller).instrument(span).await.map_err(|e| e.to_wire());
        if let Ok(Reply::Reclaimed(r)) = &answer {
            if !r.reparented.is_empty() {
                // The crash suite loses this answer after its commit.
                fail::fail_point!("registry.before_reparenting_reply");
            }
        }
        match conn.write_frame(&answer).await {
            Ok(()) => {}
            Err(e @ ProtoError::FrameTooLarge { .. }) => conn.refuse(&e).await,
            Err(e) => {
                tracing::info!(error = %e, "cannot answer; closing connection");
                return;
            }
        }
    }
}
