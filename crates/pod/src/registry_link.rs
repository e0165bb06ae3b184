//! The Pod's side of the registry: one [`Link`] (the one call path, which
//! reconnects, restarts the daemon and resends what is safe to resend; see
//! `pod_registry::client`) shared by the owner task, and the translation of
//! registry answers into what the Pod needs, refusing answers that lack it.

use std::sync::Arc;

pub use pod_client::registry::CONNECTION_LOST;
use pod_client::registry::{daemon_command, get_on, list_on, to_wire, unexpected};
use pod_proto::{RuntimeDirs, WireError};
use pod_registry::client::{DaemonCommand, Link};
use pod_registry::wire::Survivor;
use pod_registry::{Allocation, LeaseView, Reclaimed, Reply, Request, WireRule};
use scope::{PodName, ScopeRule, ScopeSnapshot};
use tokio::sync::Mutex;

/// A grandchild the registry reparented to us when its parent was
/// reclaimed: what we need to take it in as a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub name: PodName,
    pub rules: Vec<ScopeRule>,
    pub socket: String,
    pub pid: u32,
    pub start_time: u64,
}

/// Most registry connections one batch of reclaims uses at once.
pub const RECLAIM_CONNECTIONS: usize = 16;

#[derive(Clone)]
pub struct Registry {
    dirs: RuntimeDirs,
    daemon: DaemonCommand,
    link: Arc<Mutex<Link>>,
}

/// The registry reported a survivor without what adopting it takes.
pub const BAD_ANSWER: &str = "registry.bad_answer";

fn wire(rules: &[ScopeRule]) -> Vec<WireRule> {
    rules.iter().map(WireRule::from).collect()
}

/// What adopting a survivor takes; an answer without it is refused, never
/// read as an empty layer or a process that started at 0.
fn orphan(child: &PodName, s: Survivor) -> Result<Orphan, WireError> {
    if s.rules.is_empty() {
        return Err(WireError::new(
            BAD_ANSWER,
            format!("the registry reported {} (reparented from {child}) without its rules", s.name),
        ));
    }
    if s.pid == 0 || s.start_time == 0 {
        return Err(WireError::new(
            BAD_ANSWER,
            format!("the registry reported {} (reparented from {child}) without its process", s.name),
        ));
    }
    Ok(Orphan { name: s.name, rules: s.rules, socket: s.socket, pid: s.pid, start_time: s.start_time })
}

/// Reclaims that were answered, and the error that stopped the rest.
#[derive(Debug, Default)]
pub struct ReclaimOutcome {
    /// Per child, the grandchildren the registry reparented to the parent.
    pub done: Vec<(PodName, Vec<Orphan>)>,
    /// Why the children not in `done` were not reclaimed.
    pub failed: Option<WireError>,
}

impl Registry {
    /// Connects (starting the daemon if none answers).
    pub async fn connect(dirs: &RuntimeDirs) -> Result<Registry, WireError> {
        let daemon = daemon_command()?;
        let mut link = Link::new(dirs, daemon.clone()).map_err(to_wire)?;
        link.connect().await.map_err(to_wire)?;
        Ok(Registry { dirs: dirs.clone(), daemon, link: Arc::new(Mutex::new(link)) })
    }

    async fn call(&self, request: Request) -> Result<Reply, WireError> {
        self.link.lock().await.call(request).await.map_err(to_wire)
    }

    /// Registers a top-level Pod; on resume `snapshot.layers` are the
    /// children it believes alive, so their regions stay excluded.
    pub async fn register(
        &self,
        name: &PodName,
        pid: u32,
        socket: &str,
        session: &str,
        snapshot: &ScopeSnapshot,
        scratch: &[scope::ScopePath],
    ) -> Result<Allocation, WireError> {
        let request = Request::Register {
            id: None,
            name: name.to_string(),
            pid,
            socket: socket.to_string(),
            session: session.to_string(),
            allow: wire(&snapshot.allow),
            deny: wire(&snapshot.deny),
            layers: snapshot.layers.iter().map(|(c, r)| (c.to_string(), wire(r))).collect(),
            scratch: scratch.iter().map(|p| p.as_str().to_string()).collect(),
        };
        match self.call(request).await? {
            Reply::Allocation(a) => Ok(a),
            _ => Err(unexpected("register")),
        }
    }

    /// Returns the parent's fence after the delegation.
    pub async fn delegate(&self, parent: &PodName, child: &PodName, rules: &[ScopeRule]) -> Result<u64, WireError> {
        let request = Request::Delegate {
            id: None,
            parent: parent.to_string(),
            child: child.to_string(),
            rules: wire(rules),
            deny: Vec::new(),
        };
        match self.call(request).await? {
            Reply::Delegated { parent_fence, .. } => Ok(parent_fence),
            _ => Err(unexpected("delegate")),
        }
    }

    pub async fn adopt(
        &self,
        name: &PodName,
        pid: u32,
        session: &str,
        socket: &str,
        scratch: &[scope::ScopePath],
    ) -> Result<Allocation, WireError> {
        let request = Request::Adopt {
            id: None,
            name: name.to_string(),
            pid,
            session: session.to_string(),
            socket: socket.to_string(),
            scratch: scratch.iter().map(|p| p.as_str().to_string()).collect(),
        };
        match self.call(request).await? {
            Reply::Allocation(a) => Ok(a),
            _ => Err(unexpected("adopt")),
        }
    }

    /// Records this Pod's workload containment in its allocation (durable
    /// once answered), so that the sweep or a parent's reclaim can end the
    /// workload if this process dies.
    pub async fn contain(&self, name: &PodName, record: &pod_sandbox::ContainmentRecord) -> Result<(), WireError> {
        let request =
            Request::Contain { id: None, name: name.to_string(), pid: std::process::id(), containment: record.clone() };
        match self.call(request).await? {
            Reply::Allocation(_) => Ok(()),
            _ => Err(unexpected("contain")),
        }
    }

    /// Reclaims every child of `children` (each idempotent, each with its
    /// request id, so a lost answer is asked again and reports the same
    /// survivors). A single child uses the shared link; many are spread
    /// over up to [`RECLAIM_CONNECTIONS`] links (each its own request
    /// stream) so the registry can commit them in groups. Answers that
    /// arrived are kept when another chunk fails.
    pub async fn reclaim_many(&self, parent: &PodName, children: &[PodName]) -> ReclaimOutcome {
        let mut outcome = ReclaimOutcome::default();
        if let [child] = children {
            let request = Request::Reclaim { id: None, parent: parent.to_string(), child: child.to_string() };
            match self.call(request).await.and_then(|reply| survivors("reclaim", child, reply)) {
                Ok(orphans) => outcome.done.push((child.clone(), orphans)),
                Err(e) => outcome.failed = Some(e),
            }
            return outcome;
        }
        let per = children.len().div_ceil(RECLAIM_CONNECTIONS).max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in children.chunks(per) {
            let (dirs, daemon, parent, chunk) =
                (self.dirs.clone(), self.daemon.clone(), parent.clone(), chunk.to_vec());
            tasks.spawn(async move {
                let mut part = ReclaimOutcome::default();
                let mut link = match Link::new(&dirs, daemon) {
                    Ok(l) => l,
                    Err(e) => {
                        part.failed = Some(to_wire(e));
                        return part;
                    }
                };
                for child in chunk {
                    let request = Request::Reclaim { id: None, parent: parent.to_string(), child: child.to_string() };
                    let answer = link.call(request).await.map_err(to_wire);
                    match answer.and_then(|reply| survivors("reclaim", &child, reply)) {
                        Ok(orphans) => part.done.push((child, orphans)),
                        Err(e) => {
                            part.failed = Some(e);
                            break;
                        }
                    }
                }
                part
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(part) => {
                    outcome.done.extend(part.done);
                    if outcome.failed.is_none() {
                        outcome.failed = part.failed;
                    }
                }
                Err(e) => {
                    outcome.failed.get_or_insert(WireError::new("pod.internal", format!("reclaim task failed: {e}")));
                }
            }
        }
        outcome
    }

    pub async fn release(&self, name: &PodName) -> Result<Vec<Orphan>, WireError> {
        let reply = self.call(Request::Release { id: None, name: name.to_string() }).await?;
        survivors("release", name, reply)
    }

    /// Like `release`, for undoing a failed start: errors are only logged.
    pub async fn release_quietly(&self, name: &PodName) {
        if let Err(e) = self.release(name).await {
            tracing::warn!(%name, error = %e, "could not release a half-started pod's allocation");
        }
    }

    pub async fn get(&self, name: &PodName) -> Result<Option<Allocation>, WireError> {
        get_on(&mut *self.link.lock().await, name).await
    }

    /// Forgets allocations whose process is gone (a crashed Pod's own old
    /// record, before it registers again); their live children become
    /// top-level until their parent re-registers with its layers.
    pub async fn sweep(&self) -> Result<Vec<PodName>, WireError> {
        match self.call(Request::Sweep).await? {
            Reply::Swept { gone } => Ok(gone),
            _ => Err(unexpected("sweep")),
        }
    }

    /// Every allocation (the prune on resume): its pages one after the
    /// other on the Pod's link.
    pub async fn list(&self) -> Result<Vec<Allocation>, WireError> {
        list_on(&mut *self.link.lock().await).await
    }

    /// A link of its own for a long-poll (`watch`), so that it never holds
    /// up the Pod's other registry calls.
    pub fn watcher(&self) -> Result<Watcher, WireError> {
        Ok(Watcher { link: Link::new(&self.dirs, self.daemon.clone()).map_err(to_wire)? })
    }
}

/// Survivors of a reclaim or release answer.
fn survivors(request: &str, child: &PodName, reply: Reply) -> Result<Vec<Orphan>, WireError> {
    match reply {
        Reply::Reclaimed(Reclaimed { reparented, .. }) => reparented.into_iter().map(|s| orphan(child, s)).collect(),
        _ => Err(unexpected(request)),
    }
}

/// The Pod's long-poll on its own allocation and its node's lease (see
/// `Request::WatchLease`; the embedded registry answers it without a lease).
pub struct Watcher {
    link: Link,
}

/// One answer of the watch: the allocation now (`None`: gone, or fenced by
/// the registry), and the node's lease (`None`: the embedded registry).
#[derive(Debug, Clone)]
pub struct Watched {
    pub record: Option<Allocation>,
    pub lease: Option<LeaseView>,
}

impl Watcher {
    /// The record once its fence passes `after_fence` or the node's lease
    /// deadline is no longer `deadline_after` (or after the registry's watch
    /// bound).
    pub async fn next(&mut self, name: &PodName, after_fence: u64, deadline_after: u64) -> Result<Watched, WireError> {
        let request = Request::WatchLease { name: name.to_string(), after_fence, deadline_after };
        match self.link.call(request).await.map_err(to_wire)? {
            Reply::WatchedLease { record, lease } => Ok(Watched { record, lease }),
            _ => Err(unexpected("watch")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PodName {
        PodName::new(s).expect("name")
    }

    #[test]
    fn a_survivor_without_rules_or_process_is_refused() {
        let rule = ScopeRule::write(scope::ScopePath::new("/r/g").expect("path"));
        let survivor = |rules: Vec<ScopeRule>, start_time| Survivor {
            name: n("g"),
            rules,
            socket: "/run/g/sock".into(),
            pid: 42,
            start_time,
        };
        let e = orphan(&n("mid"), survivor(vec![], 7)).expect_err("no rules");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (BAD_ANSWER, "the registry reported g (reparented from mid) without its rules")
        );
        let e = orphan(&n("mid"), survivor(vec![rule.clone()], 0)).expect_err("no start time");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (BAD_ANSWER, "the registry reported g (reparented from mid) without its process")
        );
        let ok = orphan(&n("mid"), survivor(vec![rule.clone()], 7)).expect("whole");
        assert_eq!((ok.rules, ok.pid, ok.start_time), (vec![rule], 42, 7));
    }
}
