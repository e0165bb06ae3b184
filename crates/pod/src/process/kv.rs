//! The coordination store of the layer this Pod leads, in its process:
//! the durable `pod_kv::store::KvStore` behind a group commit, the waiting
//! callers, and the timer that ends waits and leases.
//!
//! Group commit, the registry's way: a request queues its job; the one
//! that finds no leader commits every queued job (up to [`MAX_GROUP`]) on
//! its own worker (`block_in_place`), answers them once the group is
//! durable, and hands leadership to a blocking thread if more queued
//! meanwhile. A thread wake-up costs tens of microseconds on these
//! machines; a lone request pays none.
//!
//! A waiting call (`wait`, `acquire --wait`) gets its wake channel from
//! the leader in the same step that answers it `Waiting`/`Queued`, before
//! any later group can wake it, so no wake is lost. A wake is sent only
//! after the commit that caused it is durable. A grant whose waiter is
//! gone by then is released again by the connection (it passes on).
//!
//! The timer task sleeps until `Core::next_deadline` (or until a commit
//! may have moved it) and commits `Event::Tick`.
//!
//! The rest of the Pod holds the store through a [`KvHandle`]: it opens in
//! the background once the Pod serves, so its open (a sled open and a
//! first commit) is on no launch's path; a call made meanwhile waits for
//! it, and an open that failed is every call's answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pod_kv::store::now::{boot_id, now};
use pod_kv::store::{Job, KvStore};
use pod_kv::{BootId, Event, KvError, Outcome, PodRef, Ticket};
use pod_proto::WireError;
use scope::PodName;
use tokio::sync::{oneshot, watch, Notify};
use tracing::Instrument;

/// The store's folder in the Pod's data folder (`data/pods/<name>/kv/`),
/// removed with it by `pod rm`.
pub const KV_DIR: &str = "kv";
/// Most jobs in one group commit.
pub const MAX_GROUP: usize = 256;
/// Longest the timer sleeps without looking again; also how often the
/// holders and waiters of the store are checked for runs that are over
/// (a grandchild holding a tree-wide lease at the root is nobody's child
/// here, so no reclaim of this Pod reports it).
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(1);

pub type Answer = Result<Option<Outcome>, KvError>;
pub type WakeAnswer = Result<Outcome, KvError>;

/// What a submitted job gets back.
pub struct Reply {
    pub answer: Answer,
    /// For an answer `Waiting`/`Queued`: where its wake comes.
    pub wake: Option<oneshot::Receiver<WakeAnswer>>,
}

struct Queued {
    job: Job,
    reply: oneshot::Sender<Reply>,
}

struct Queue {
    jobs: Vec<Queued>,
    leading: bool,
}

/// The layer's store, being opened or open (see the module's opening).
#[derive(Clone)]
pub struct KvHandle(watch::Receiver<Option<Result<Arc<KvShell>, WireError>>>);

impl KvHandle {
    /// Starts opening the store in `dir` in the background.
    pub fn open(dir: PathBuf) -> KvHandle {
        let (tx, rx) = watch::channel(None);
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            let opened = KvShell::open(&dir).await.map_err(|e| WireError::new(e.code(), e.to_string()));
            match &opened {
                Ok(_) => tracing::info!(ms = started.elapsed().as_secs_f64() * 1e3, "coordination store open"),
                Err(e) => {
                    tracing::error!(code = %e.code, "the coordination store cannot open; every kv call answers so: {}", e.message)
                }
            }
            tx.send_replace(Some(opened));
        });
        KvHandle(rx)
    }

    /// The store, once its open is done (or the reason it failed).
    pub async fn get(&self) -> Result<Arc<KvShell>, WireError> {
        let mut rx = self.0.clone();
        let opened = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| WireError::new("kv.storage", "the coordination store's open was abandoned"))?;
        opened.clone().unwrap_or_else(|| Err(WireError::new("kv.storage", "the coordination store is not open")))
    }

    /// The store if it is open already.
    pub fn now(&self) -> Option<Arc<KvShell>> {
        self.0.borrow().as_ref().and_then(|opened| opened.as_ref().ok()).cloned()
    }
}

pub struct KvShell {
    boot: BootId,
    store: Mutex<KvStore>,
    queue: Mutex<Queue>,
    waiting: Mutex<HashMap<Ticket, oneshot::Sender<WakeAnswer>>>,
    /// Told after every group: the next deadline may have moved.
    rearm: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KvShell {
    /// Opens the store in `dir` (blocking), then reports every party of
    /// its leases and waits whose run is over (the lead's own previous run
    /// among them) as gone, and starts the timer.
    pub async fn open(dir: &Path) -> Result<Arc<KvShell>, KvError> {
        let dir = dir.to_path_buf();
        let (boot, store) = tokio::task::spawn_blocking(move || {
            let boot = boot_id()?;
            KvStore::open(&dir, &now(boot)).map(|s| (boot, s))
        })
        .await
        .map_err(|e| KvError::Storage(format!("the store's open failed: {e}")))??;
        let gone: Vec<Job> = store
            .core()
            .parties()
            .into_iter()
            .filter(|p| !alive(p))
            .map(|p| Job::Event(Event::HolderGone(p)))
            .collect();
        let shell = Arc::new(KvShell {
            boot,
            store: Mutex::new(store),
            queue: Mutex::new(Queue { jobs: Vec::new(), leading: false }),
            waiting: Mutex::new(HashMap::new()),
            rearm: Notify::new(),
        });
        for job in gone {
            shell.submit(job).await.answer?;
        }
        tokio::spawn(Arc::clone(&shell).run_timer());
        Ok(shell)
    }

    /// Commits `job` (with whatever queued beside it) and answers once it
    /// is durable.
    pub async fn submit(self: &Arc<Self>, job: Job) -> Reply {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut q = lock(&self.queue);
            q.jobs.push(Queued { job, reply: tx });
            !std::mem::replace(&mut q.leading, true)
        };
        if lead {
            tokio::task::block_in_place(|| self.commit_next());
            let shell = Arc::clone(self);
            tokio::task::spawn_blocking(move || shell.lead_until_idle());
        }
        rx.await.unwrap_or(Reply { answer: Err(KvError::Storage("the store's writer went away".into())), wake: None })
    }

    /// Answers a read (`get`, `ls`, `lease ls`) at once; `None` for any
    /// other call.
    pub fn read(&self, caller: &pod_kv::Caller, op: &pod_kv::Op) -> Option<Result<Outcome, KvError>> {
        use pod_kv::Op;
        if !matches!(op, Op::Get { .. } | Op::List { .. } | Op::Leases) {
            return None;
        }
        let store = lock(&self.store);
        Some(store.core().plan(caller, op, &now(self.boot)).map(|(plan, outcome)| {
            debug_assert!(plan.is_empty(), "a read planned a change");
            outcome
        }))
    }

    /// Gives up the wait of `ticket` (its caller went away): it leaves its
    /// queue, and no wake will come for it.
    pub async fn cancel(self: &Arc<Self>, ticket: Ticket) {
        if let Err(e) = self.submit(Job::Event(Event::Cancel(ticket))).await.answer {
            tracing::error!(error = %e, "cannot cancel a wait whose caller went away");
        }
        lock(&self.waiting).remove(&ticket);
    }

    /// The leases and waits of every run of `child` end: it was reclaimed
    /// (stopped, died, pruned), so no run of it is left.
    pub fn holders_gone(self: &Arc<Self>, children: &[PodName]) {
        let parties: Vec<PodRef> = {
            let store = lock(&self.store);
            store.core().parties().into_iter().filter(|p| children.contains(&p.name)).collect()
        };
        for party in parties {
            let shell = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = shell.submit(Job::Event(Event::HolderGone(party))).await.answer {
                    tracing::error!(error = %e, "cannot free the leases of a reclaimed child");
                }
            });
        }
    }

    fn lead_until_idle(&self) {
        loop {
            {
                let mut q = lock(&self.queue);
                if q.jobs.is_empty() {
                    q.leading = false;
                    return;
                }
            }
            self.commit_next();
        }
    }

    /// Commits the next group and answers it. Leader only.
    fn commit_next(&self) {
        let group: Vec<Queued> = {
            let mut q = lock(&self.queue);
            let take = q.jobs.len().min(MAX_GROUP);
            q.jobs.drain(..take).collect()
        };
        if group.is_empty() {
            return;
        }
        let jobs: Vec<Job> = group.iter().map(|q| q.job.clone()).collect();
        let committed = lock(&self.store).commit(&jobs, &now(self.boot));
        match committed {
            Err(e) => {
                for q in group {
                    let _ = q.reply.send(Reply { answer: Err(e.clone()), wake: None });
                }
            }
            Ok(answered) => {
                let mut waiting = lock(&self.waiting);
                for (q, answer) in group.into_iter().zip(answered.answers) {
                    let wake = match &answer {
                        Ok(Some(Outcome::Waiting { ticket } | Outcome::Queued { ticket })) => {
                            let (tx, rx) = oneshot::channel();
                            waiting.insert(*ticket, tx);
                            Some(rx)
                        }
                        _ => None,
                    };
                    let _ = q.reply.send(Reply { answer, wake });
                }
                for wake in answered.wakes {
                    if let Some(tx) = waiting.remove(&wake.ticket) {
                        let _ = tx.send(wake.answer);
                    }
                }
            }
        }
        self.rearm.notify_one();
    }

    async fn run_timer(self: Arc<Self>) {
        loop {
            let sleep = {
                let store = lock(&self.store);
                let at = now(self.boot);
                store.core().next_deadline(&at).map(|d| Duration::from_millis(d.saturating_sub(at.mono_ms)))
            };
            let sleep = sleep.unwrap_or(TIMER_MAX_SLEEP).min(TIMER_MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {
                    if let Err(e) = self.submit(Job::Event(Event::Tick)).await.answer {
                        tracing::error!(error = %e, "the kv timer's tick failed");
                    }
                    self.sweep().await;
                }
                _ = self.rearm.notified() => {}
            }
        }
    }
}

impl KvShell {
    /// Reports every party whose run is over (its pid gone, or taken by
    /// another process) as gone.
    async fn sweep(self: &Arc<Self>) {
        let parties = lock(&self.store).core().parties();
        for party in parties.into_iter().filter(|p| !alive(p)) {
            tracing::info!(pod = %party.name, "a lease holder or waiter is gone");
            if let Err(e) = self.submit(Job::Event(Event::HolderGone(party))).await.answer {
                tracing::error!(error = %e, "cannot free the leases of a pod that is gone");
            }
        }
    }
}

/// Whether this run of a Pod is still running (its pid, with the start
/// time it had).
fn alive(pod: &PodRef) -> bool {
    let stat = pod_registry::proc::stat(pod.incarnation.pid).ok().flatten();
    stat.is_some_and(|s| s.start_time == pod.incarnation.start_time)
}

/// One connection's standing with the store, worked out on its first call
/// (from the kernel's identity and the registry's records) and kept for
/// the connection's life.
#[derive(Default)]
pub struct Standing {
    identity: Option<pod_kv::Identity>,
    /// Whether the lead has no parent (tree-wide leases live only there).
    lead_is_root: Option<bool>,
    /// Whether the lead is an ancestor of the caller (for tree-wide calls).
    in_tree: Option<bool>,
}

fn wire(e: &KvError) -> pod_proto::WireError {
    pod_proto::WireError::new(e.code(), e.to_string())
}

/// One `Kv` request as it came over the wire.
pub struct Call {
    pub reach: pod_kv::Reach,
    pub op: pod_kv::Op,
    pub id: Option<pod_kv::store::RequestId>,
}

/// Answers one `Kv` request of `caller` (the kernel's identity of the
/// connection). A waiting call is answered when its wake comes, or given
/// up when `closed` resolves (the caller closed its connection).
pub async fn call(
    shell: &Arc<KvShell>,
    lead: &PodName,
    registry: &crate::registry_link::Registry,
    caller: &crate::process::caller::Caller,
    standing: &mut Standing,
    request: Call,
    closed: impl std::future::Future<Output = ()>,
) -> Result<crate::protocol::PodReply, pod_proto::WireError> {
    let Call { reach, op, id } = request;
    let identity = match &standing.identity {
        Some(identity) => identity.clone(),
        None => {
            let identity = identity_of(lead, registry, caller).await?;
            standing.identity.insert(identity).clone()
        }
    };
    let lead_is_root = match standing.lead_is_root {
        Some(root) => root,
        None => {
            let root = registry.get(lead).await?.is_none_or(|a| a.parent.is_none());
            *standing.lead_is_root.insert(root)
        }
    };
    // A Pod deeper in the tree counts only for tree-wide calls, and only
    // if this lead is its ancestor.
    let identity = match identity {
        pod_kv::Identity::Pod { pod, relation: pod_kv::Relation::Outside } if reach == pod_kv::Reach::Tree => {
            let in_tree = match standing.in_tree {
                Some(t) => t,
                None => *standing.in_tree.insert(ancestors(registry, &pod.name).await?.contains(lead)),
            };
            let relation = if in_tree { pod_kv::Relation::Descendant } else { pod_kv::Relation::Outside };
            pod_kv::Identity::Pod { pod, relation }
        }
        other => other,
    };
    let role = pod_kv::role(&identity, lead, reach, lead_is_root).map_err(|e| wire(&e))?;
    let span = tracing::info_span!("kv.call", lead = %lead, caller = %role, key = key_of(&op));
    // The span is the future's, entered only while it runs: a guard held
    // across the awaits below would stay entered on whichever worker the
    // call left, piling up on that worker's span stack (whose every enter
    // then walks it: a sixth of the Pod's CPU under 32 clients).
    answer(shell, role, op, id, closed).instrument(span).await
}

/// [`call`] once the caller's standing is known.
async fn answer(
    shell: &Arc<KvShell>,
    role: pod_kv::Caller,
    op: pod_kv::Op,
    id: Option<pod_kv::store::RequestId>,
    closed: impl std::future::Future<Output = ()>,
) -> Result<crate::protocol::PodReply, pod_proto::WireError> {
    use pod_kv::Outcome::{Queued, Waiting};
    // A read plans nothing to write: it is answered here, under the
    // store's lock, which a leader holds until its group is durable, so it
    // never sees what is not.
    if let Some(answer) = shell.read(&role, &op) {
        return answer.map(crate::protocol::PodReply::Kv).map_err(|e| wire(&e));
    }
    let reply = shell.submit(Job::Request { caller: role.clone(), op, id }).await;
    let outcome = match (reply.answer.map_err(|e| wire(&e))?, reply.wake) {
        (waiting, Some(mut wake)) => {
            // The tests force "a write after the wait is in" on this line.
            tracing::info!(outcome = ?waiting, "kv wait registered");
            let answer = tokio::select! {
                answer = &mut wake => answer.unwrap_or_else(|_| Err(KvError::Storage("the store closed while this call waited".into()))),
                () = closed => {
                    // The waiter went away: its place is given up, so it is
                    // neither granted a lease nor holding a slot. A grant
                    // that came before the cancel is released again.
                    if let Some(Waiting { ticket } | Queued { ticket }) = waiting {
                        shell.cancel(ticket).await;
                    }
                    tracing::info!("kv wait cancelled: the caller closed its connection");
                    if let Ok(Ok(pod_kv::Outcome::Granted(grant))) = wake.try_recv() {
                        let op = pod_kv::Op::Release { name: grant.name.to_string(), token: Some(grant.token), overriding: false };
                        if let Err(e) = shell.submit(Job::Request { caller: role.clone(), op, id: None }).await.answer {
                            tracing::error!(error = %e, "cannot release a grant whose waiter went away");
                        }
                    }
                    Err(KvError::Storage("the caller went away while it waited".into()))
                }
            };
            answer.map_err(|e| wire(&e))?
        }
        (Some(outcome), None) => outcome,
        (None, None) => {
            return Err(pod_proto::WireError::new("pod.internal", "the store answered a request as an event"))
        }
    };
    Ok(crate::protocol::PodReply::Kv(outcome))
}

/// The key (or lease name, or pattern) a call names, for its span; never
/// the value.
fn key_of(op: &pod_kv::Op) -> String {
    use pod_kv::Op;
    match op {
        Op::Get { key } | Op::Set { key, .. } | Op::Delete { key, .. } | Op::Wait { key, .. } => key.clone(),
        Op::List { pattern } => pattern.clone(),
        Op::Acquire { name, .. } | Op::Renew { name, .. } | Op::Release { name, .. } => format!("/leases/{name}"),
        Op::Leases => "/leases".into(),
    }
}

/// The caller as the store sees it: the operator, or a Pod run (from its
/// registry record) and how it relates to this lead.
async fn identity_of(
    lead: &PodName,
    registry: &crate::registry_link::Registry,
    caller: &crate::process::caller::Caller,
) -> Result<pod_kv::Identity, pod_proto::WireError> {
    use crate::process::caller::Caller;
    let name = match caller {
        Caller::Operator => return Ok(pod_kv::Identity::Operator),
        Caller::Pod(name) => name,
    };
    let record = registry.get(name).await?.ok_or_else(|| {
        pod_proto::WireError::new("auth.caller_unknown", format!("the calling pod {name} has no registry record"))
    })?;
    let pod = PodRef {
        name: name.clone(),
        incarnation: pod_kv::Incarnation { pid: record.pid, start_time: record.start_time },
    };
    let relation = if name == lead {
        pod_kv::Relation::Lead
    } else if record.parent.as_ref() == Some(lead) {
        pod_kv::Relation::Child
    } else {
        pod_kv::Relation::Outside
    };
    Ok(pod_kv::Identity::Pod { pod, relation })
}

/// The kernel's view of the caller, for `Whoami`. `own`: this Pod and the
/// parent it was spawned under. A caller of this Pod's own workload is
/// told that parent, not the registry's record of it, which loses the
/// parent while the parent is down (so a member's calls would go to its
/// own layer, and be acknowledged there, until the parent is back).
pub async fn whoami(
    registry: &crate::registry_link::Registry,
    caller: &crate::process::caller::Caller,
    own: (&PodName, Option<&PodName>),
) -> Result<crate::protocol::PodReply, pod_proto::WireError> {
    use crate::process::caller::Caller;
    use crate::protocol::{PodReply, Whoami};
    let name = match caller {
        Caller::Operator => return Ok(PodReply::Whoami(Whoami::Operator)),
        Caller::Pod(name) => name,
    };
    let parent = match own {
        (me, parent) if me == name => parent.cloned(),
        _ => registry.get(name).await?.and_then(|a| a.parent),
    };
    let root = match &parent {
        None => name.clone(),
        Some(parent) => ancestors(registry, parent).await?.last().cloned().unwrap_or_else(|| parent.clone()),
    };
    Ok(PodReply::Whoami(Whoami::Pod { name: name.clone(), parent, root }))
}

/// `me`'s ancestors, nearest first, as the registry records them.
async fn ancestors(
    registry: &crate::registry_link::Registry,
    me: &PodName,
) -> Result<Vec<PodName>, pod_proto::WireError> {
    let mut out: Vec<PodName> = Vec::new();
    let mut current = me.clone();
    while out.len() < scope::limits::MAX_LAYERS {
        let Some(parent) = registry.get(&current).await?.and_then(|a| a.parent) else { break };
        if parent == *me || out.contains(&parent) {
            break;
        }
        out.push(parent.clone());
        current = parent;
    }
    Ok(out)
}
