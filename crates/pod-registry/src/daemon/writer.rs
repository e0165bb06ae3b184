//! The single writer, with group commit, led by a caller.
//!
//! All mutations are applied in one order, one group at a time. A request
//! queues its job; if no group is being committed, its own task becomes the
//! leader: it takes every queued job (up to `MAX_GROUP`), plans and applies
//! each in turn to the in-memory state (each sees the ones before it),
//! writes all their changes as one store commit, and only then answers
//! them. Many operations share one fsync; none is answered before it is
//! durable; readers never see a change before it is durable because the
//! state lock is held until the commit returned.
//!
//! Why the caller leads instead of a writer thread: waking a sleeping
//! thread costs tens of microseconds on a virtual machine, and a dedicated
//! writer needs two such wake-ups per request (to it and back), more than
//! the rest of the daemon's work. A lone request is committed by its own
//! task, on its own worker (`block_in_place`, so the runtime moves other
//! tasks off that worker meanwhile), and answered as soon as the commit is
//! durable. Leadership then passes to a blocking-pool thread, which lets
//! the store finish what it left for later (`Store::settle`: sled's copy of
//! a commit the write-ahead log already holds) and leads any group that
//! queued meanwhile, until the queue is empty. So a caller never waits for
//! more than its own group.
//!
//! A table shared with other nodes (etcd) is committed differently, one
//! mutation at a time on the caller's own task (see `shared_commit`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustc_hash::FxHashSet;
use scope::PodName;
use tokio::sync::{oneshot, Notify, RwLock};
use tracing::Instrument;

use crate::answers::StreamId;
use crate::limits::MAX_GROUP;
use crate::ops::{self, Op, Submission};
use crate::proc::ProcKernel;
use crate::state::State;
use crate::store::{Change, SharedStore, Store};
use crate::wire::Reply;
use crate::RegistryError;

use super::shared_commit;

pub type Answer = Result<Reply, RegistryError>;

struct Job {
    sub: Submission,
    reply: oneshot::Sender<Answer>,
    span: tracing::Span,
}

pub struct Writer {
    state: Arc<RwLock<State>>,
    inner: Mutex<Inner>,
    /// Signalled when a leader steps down with nothing queued.
    idle: Notify,
    /// Signalled once when a commit failed: the daemon must stop.
    failed: Notify,
    /// Who waits for changes of which allocation (`watch` requests).
    watched: Watched,
    /// A shared store, committed one mutation at a time (`None`: the
    /// store is owned, and led through `inner`); emptied at close.
    shared: Option<tokio::sync::Mutex<Option<Box<dyn SharedStore>>>>,
}

/// One signal per watched allocation, so that a commit wakes only the
/// watchers of the records it changed.
#[derive(Default)]
pub struct Watched {
    senders: Mutex<rustc_hash::FxHashMap<PodName, tokio::sync::watch::Sender<()>>>,
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, rustc_hash::FxHashMap<PodName, tokio::sync::watch::Sender<()>>> {
        self.senders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that sees a change each time `name`'s record is committed.
    pub fn subscribe(&self, name: &PodName) -> tokio::sync::watch::Receiver<()> {
        self.lock().entry(name.clone()).or_insert_with(|| tokio::sync::watch::Sender::new(())).subscribe()
    }

    /// Forgets `name`'s signal once nobody waits on it (call after dropping
    /// the receiver).
    pub fn release(&self, name: &PodName) {
        let mut g = self.lock();
        if g.get(name).is_some_and(|s| s.receiver_count() == 0) {
            g.remove(name);
        }
    }

    /// Wakes the watchers of `names` (the writer's commits, and changes
    /// a shared store's feed brings).
    pub fn notify(&self, names: &[PodName]) {
        let g = self.lock();
        if g.is_empty() {
            return;
        }
        for name in names {
            if let Some(s) = g.get(name) {
                s.send_replace(());
            }
        }
    }
}

/// What the writer commits to.
pub enum Backend {
    /// A store this daemon owns alone: a group shares one commit.
    Owned(Box<dyn Store>),
    /// A table shared with other nodes: each mutation is its own guarded
    /// transaction, planned again when another node changed what it read.
    Shared(Box<dyn SharedStore>),
}

struct Inner {
    queue: Vec<Job>,
    /// An owned store, held here while nobody commits; the leader takes it.
    store: Option<Box<dyn Store>>,
    leading: bool,
    /// Why new jobs are refused: shutting down, or a commit failed (memory
    /// is then ahead of the disk; a restart reloads what is durable).
    closed: Option<RegistryError>,
}

impl Writer {
    pub fn new(state: Arc<RwLock<State>>, store: Backend) -> Writer {
        let (owned, shared) = match store {
            Backend::Owned(store) => (Some(store), None),
            Backend::Shared(store) => (None, Some(tokio::sync::Mutex::new(Some(store)))),
        };
        Writer {
            state,
            inner: Mutex::new(Inner { queue: Vec::new(), store: owned, leading: false, closed: None }),
            idle: Notify::new(),
            failed: Notify::new(),
            watched: Watched::default(),
            shared,
        }
    }

    /// The watchers' signals.
    pub fn watched(&self) -> &Watched {
        &self.watched
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a client's mutation and returns its answer once it is durable.
    pub async fn submit(self: &Arc<Self>, sub: Submission) -> Answer {
        self.submit_each(vec![sub]).await.pop().unwrap_or(Err(RegistryError::ShuttingDown))
    }

    /// Queues the daemon's own ops at once (so they can share one commit)
    /// and returns their answers in order.
    pub async fn submit_all(self: &Arc<Self>, ops: Vec<Op>) -> Vec<Answer> {
        self.submit_each(ops.into_iter().map(|op| Submission { op, id: None, caller: None }).collect()).await
    }

    async fn submit_each(self: &Arc<Self>, ops: Vec<Submission>) -> Vec<Answer> {
        let span = tracing::Span::current();
        if self.shared.is_some() {
            // Its own task, so that a caller that goes away (its connection
            // closed) cannot cut a commit short between etcd and memory.
            let writer = Arc::clone(self);
            let committing = tokio::spawn(async move { writer.commit_shared(ops).await }.instrument(span));
            return committing.await.unwrap_or_else(|e| {
                vec![Err(RegistryError::Store(format!("the writer panicked during a commit: {e}")))]
            });
        }
        let mut receivers = Vec::with_capacity(ops.len());
        let lead = {
            let mut g = self.lock();
            if let Some(e) = &g.closed {
                return ops.iter().map(|_| Err(e.clone())).collect();
            }
            for sub in ops {
                let (reply, rx) = oneshot::channel();
                g.queue.push(Job { sub, reply, span: span.clone() });
                receivers.push(rx);
            }
            !std::mem::replace(&mut g.leading, true)
        };
        if lead {
            let runtime = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| self.commit_next());
            // The group is durable and answered. What the store left for
            // later, and any group that queued meanwhile, is done off this
            // request's path.
            let writer = Arc::clone(self);
            runtime.spawn_blocking(move || writer.lead_until_idle());
        }
        let mut answers = Vec::with_capacity(receivers.len());
        for rx in receivers {
            answers.push(rx.await.unwrap_or(Err(RegistryError::ShuttingDown)));
        }
        answers
    }

    /// Commits each of `subs` in turn on the shared store.
    async fn commit_shared(&self, subs: Vec<Submission>) -> Vec<Answer> {
        let Some(shared) = &self.shared else { return Vec::new() };
        let mut answers = Vec::with_capacity(subs.len());
        for sub in subs {
            if let Some(e) = &self.lock().closed {
                answers.push(Err(e.clone()));
                continue;
            }
            let mut slot = shared.lock().await;
            let Some(store) = slot.as_mut() else {
                answers.push(Err(RegistryError::ShuttingDown));
                continue;
            };
            let answer = shared_commit::commit_one(&self.state, store.as_mut(), &sub, &self.watched).await;
            if let Err(e) = &answer {
                tracing::info!(code = e.code(), error = %e, "refused");
            }
            answers.push(answer);
        }
        answers
    }

    /// Settles the store after each group and commits every group that
    /// queued meanwhile, then steps down. Leader only.
    fn lead_until_idle(&self) {
        loop {
            self.settle();
            let mut g = self.lock();
            if g.queue.is_empty() {
                g.leading = false;
                self.idle.notify_waiters();
                return;
            }
            drop(g);
            self.commit_next();
        }
    }

    /// Lets the store finish what its last commit left for later (see
    /// `Store::settle`). Leader only. After a failed commit what is on disk
    /// is unknown, so that is left to the restart.
    fn settle(&self) {
        let failed = self.lock().closed.as_ref().is_some_and(|e| !matches!(e, RegistryError::ShuttingDown));
        if !failed {
            self.with_store("settling a commit", |store| store.settle());
        }
    }

    /// Commits the next group (up to `MAX_GROUP` queued jobs) and answers
    /// it. Leader only; the caller stays the leader.
    fn commit_next(&self) {
        let jobs: Vec<Job> = {
            let mut g = self.lock();
            let take = g.queue.len().min(MAX_GROUP);
            g.queue.drain(..take).collect()
        };
        self.with_store("commit", |store| commit_group(&self.state, store.as_mut(), jobs, &self.watched));
    }

    /// Runs `work` on the store, which the leader takes out for it; a
    /// failure (or a panic) fails the writer.
    fn with_store(&self, what: &str, work: impl FnOnce(&mut Box<dyn Store>) -> Result<(), RegistryError>) {
        let leader = PanicGuard(self);
        let mut store = self.lock().store.take().expect("the leader holds the store");
        let done = work(&mut store);
        let mut g = self.lock();
        g.store = Some(store);
        if let Err(e) = done {
            tracing::error!(error = %e, "{what} failed; stopping so that a restart reloads what is durable");
            self.fail(&mut g, e);
        }
        std::mem::forget(leader);
    }

    /// A commit that fails partway leaves memory ahead of the disk: refuse
    /// everything from now on and tell the daemon to stop.
    fn fail(&self, g: &mut Inner, e: RegistryError) {
        g.closed = Some(e.clone());
        for job in g.queue.drain(..) {
            let _ = job.reply.send(Err(e.clone()));
        }
        self.failed.notify_one();
    }

    /// The error that stopped the writer, if a commit failed.
    pub fn failure(&self) -> Option<RegistryError> {
        match &self.lock().closed {
            Some(RegistryError::ShuttingDown) | None => None,
            Some(e) => Some(e.clone()),
        }
    }

    /// Resolves when a commit has failed.
    pub async fn failed(&self) {
        self.failed.notified().await
    }

    /// Refuses new jobs, waits for the jobs already queued to be committed
    /// and answered, and closes the store.
    pub async fn close(&self) {
        if let Some(shared) = &self.shared {
            {
                let mut g = self.lock();
                if g.closed.is_none() {
                    g.closed = Some(RegistryError::ShuttingDown);
                }
            }
            // Waits for the commit in flight, if any.
            drop(shared.lock().await.take());
            return;
        }
        loop {
            let idle = self.idle.notified();
            {
                let mut g = self.lock();
                if g.closed.is_none() {
                    g.closed = Some(RegistryError::ShuttingDown);
                }
                if !g.leading {
                    drop(g.store.take());
                    return;
                }
            }
            idle.await;
        }
    }
}

/// Held by a leader while it works on the store; if that panics, the
/// writer is failed (and its leadership released) instead of hanging every
/// caller.
struct PanicGuard<'a>(&'a Writer);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        self.0.fail(&mut g, RegistryError::Store("the writer panicked during a commit".into()));
        g.leading = false;
        self.0.idle.notify_waiters();
    }
}

fn commit_group(
    state: &RwLock<State>,
    store: &mut dyn Store,
    jobs: Vec<Job>,
    watched: &Watched,
) -> Result<(), RegistryError> {
    let mut guard = state.blocking_write();
    // Names (and answer streams) touched by the group; what is written for
    // each is its final state in memory (a store batch is last-write-wins
    // per key anyway), so records are not copied just to be written.
    let mut touched: Vec<PodName> = Vec::new();
    let mut seen: FxHashSet<PodName> = FxHashSet::default();
    let mut streams: Vec<StreamId> = Vec::new();
    let mut seen_streams: FxHashSet<StreamId> = FxHashSet::default();
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = {
            let _entered = job.span.enter();
            match ops::plan_submission(&guard, &job.sub, &ProcKernel) {
                Ok((plan, reply)) => {
                    let names = plan.deletes.iter().chain(plan.puts.iter().map(|h| &h.rec.name));
                    for name in names {
                        if seen.insert(name.clone()) {
                            touched.push(name.clone());
                        }
                    }
                    for change in &plan.answers {
                        let stream = match change {
                            crate::answers::AnswerChange::Put(s, _) | crate::answers::AnswerChange::Forget(s) => *s,
                        };
                        if seen_streams.insert(stream) {
                            streams.push(stream);
                        }
                    }
                    guard.apply(plan);
                    Ok(reply)
                }
                Err(e) => {
                    tracing::info!(code = e.code(), error = %e, "refused");
                    Err(e)
                }
            }
        };
        answers.push((job.reply, answer));
    }
    let group = answers.len();
    let changes: Vec<Change<'_>> = touched
        .iter()
        .map(|name| match guard.get(name) {
            Some(held) => Change::Put(&held.rec),
            None => Change::Delete(name),
        })
        .chain(streams.iter().map(|stream| Change::Answer(stream, guard.answers().get(stream))))
        .collect();
    if !changes.is_empty() {
        fail::fail_point!("registry.before_commit");
        let committed = store.commit(&changes, guard.next_fence());
        fail::fail_point!("registry.after_commit");
        if let Err(e) = committed {
            for (tx, _) in answers {
                let _ = tx.send(Err(e.clone()));
            }
            return Err(e);
        }
    }
    let written = changes.len();
    drop(changes);
    drop(guard);
    tracing::debug!(group, written, "group committed");
    for (tx, answer) in answers {
        // A caller that went away no longer needs its answer.
        let _ = tx.send(answer);
    }
    watched.notify(&touched);
    Ok(())
}
