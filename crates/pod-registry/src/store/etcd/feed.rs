//! The change feed: every node's changes (and etcd's expiry deletes) into
//! this node's view.
//!
//! One watch over the registry's prefix from the revision the view is
//! complete through. Events are applied one revision at a time
//! (`State::apply_remote`), each key only if it is newer than what is held,
//! so the node's own commits (applied when they commit) arriving again
//! change nothing. Each response moves the view's revision to the
//! response's header revision (etcd sends a watcher every event up to it).
//!
//! A watch that fails, ends, or is cancelled because the revision it needs
//! was compacted away is not given up: the feed reads the whole table at a
//! fresh revision (`State::resync`: records the read lacks are deleted, so
//! no delete is lost, whatever the watch missed) and watches again from the
//! next revision. The periodic reconcile pass does the same every
//! [`RECONCILE_EVERY`], catching anything missed some other way.
//!
//! The node's own records deleted behind its back (only its lease expiring
//! does that) are fenced: the Pods keep failing closed and requests about
//! them say why.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use scope::PodName;
use tokio::sync::{watch, Notify, RwLock};

use super::{decode_answer, decode_record, etcd_error, keys, EtcdConfig};
use crate::state::{Applied, Remote, State};
use crate::RegistryError;

/// How often the whole table is read again and compared.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// Pause before watching again after a failure (doubled up to 2 s).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub struct Feed {
    client: Client,
    config: EtcdConfig,
    /// The revision the view is complete through.
    through: u64,
    published: watch::Sender<u64>,
    /// The writer asks for a progress report (to learn that nothing it
    /// waits for is missing).
    progress: Arc<Notify>,
    own_deletes: super::OwnDeletes,
}

/// Why the watch loop stopped.
enum Resume {
    /// Read the table again, then watch from the next revision.
    Resync(String),
}

impl Feed {
    pub(super) fn new(
        client: Client,
        config: EtcdConfig,
        through: u64,
        published: watch::Sender<u64>,
        progress: Arc<Notify>,
        own_deletes: super::OwnDeletes,
    ) -> Feed {
        Feed { client, config, through, published, progress, own_deletes }
    }

    /// Runs for the daemon's life. `changed` is told the names whose
    /// records changed (to wake their watchers).
    pub async fn run(mut self, state: Arc<RwLock<State>>, changed: impl Fn(&[PodName])) {
        let mut pause = RETRY_PAUSE;
        loop {
            let Resume::Resync(why) = self.watch(&state, &changed).await;
            tracing::warn!(reason = %why, from = self.through, "the watch stopped; reading the table again");
            loop {
                match self.resync(&state, &changed).await {
                    Ok(()) => {
                        pause = RETRY_PAUSE;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the table yet");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    /// Watches from the next revision until the watch fails, ends, is
    /// compacted away, or the reconcile pass is due.
    async fn watch(&mut self, state: &RwLock<State>, changed: &impl Fn(&[PodName])) -> Resume {
        let options = WatchOptions::new().with_prefix().with_start_revision(self.through as i64 + 1);
        let mut stream = match self.client.watch(keys::PREFIX, Some(options)).await {
            Ok(s) => s,
            Err(e) => return Resume::Resync(format!("cannot watch: {e}")),
        };
        let reconciling = self.config.reconcile;
        let reconcile = async move {
            if reconciling {
                tokio::time::sleep(RECONCILE_EVERY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(reconcile);
        loop {
            tokio::select! {
                message = stream.message() => {
                    let resp = match message {
                        Ok(Some(resp)) => resp,
                        Ok(None) => return Resume::Resync("the watch ended".into()),
                        Err(e) => return Resume::Resync(format!("the watch failed: {e}")),
                    };
                    if resp.compact_revision() > 0 {
                        return Resume::Resync(format!(
                            "revision {} was compacted away (compacted through {})",
                            self.through + 1,
                            resp.compact_revision()
                        ));
                    }
                    if resp.canceled() {
                        return Resume::Resync(format!("the watch was cancelled: {}", resp.cancel_reason()));
                    }
                    let header = resp.header().map_or(0, |h| h.revision()) as u64;
                    let batches = self.batches(resp.events());
                    let mut guard = state.write().await;
                    for batch in batches {
                        let revision = batch.revision;
                        let (remote, answers) = batch.split();
                        let applied = guard.apply_remote(remote);
                        for (stream, rem) in answers {
                            guard.adopt_answer(stream, rem);
                        }
                        self.handle(&mut guard, applied, revision, changed);
                    }
                    guard.advance(header);
                    drop(guard);
                    self.publish(header);
                }
                _ = self.progress.notified() => {
                    if let Err(e) = stream.request_progress().await {
                        return Resume::Resync(format!("cannot ask the watch for progress: {e}"));
                    }
                }
                _ = &mut reconcile => return Resume::Resync("the periodic reconcile pass is due".into()),
            }
        }
    }

    /// Groups events by revision (a transaction's events share one).
    fn batches(&self, events: &[etcd_client::Event]) -> Vec<Batch> {
        let mut out: Vec<Batch> = Vec::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision() as u64;
            if out.last().is_none_or(|b| b.revision != revision) {
                out.push(Batch { revision, ..Batch::default() });
            }
            let Some(batch) = out.last_mut() else { continue };
            if let Some(name) = keys::pod_name(kv.key()) {
                match event.event_type() {
                    EventType::Put => match decode_record(kv) {
                        Ok(put) => batch.remote.puts.push(put),
                        Err(e) => tracing::error!(error = %e, "skipping a record that cannot be read"),
                    },
                    EventType::Delete => match PodName::new(name) {
                        Ok(n) => batch.remote.deletes.push(n),
                        Err(e) => tracing::error!(error = %e, "skipping the delete of a key that names no pod"),
                    },
                }
            } else if let Some(stream) = keys::answer_stream(&self.config.node, kv.key()) {
                if event.event_type() == EventType::Put {
                    match decode_answer(kv) {
                        Ok(rem) => batch.answers.push((stream, rem)),
                        Err(e) => tracing::error!(error = %e, "skipping an answer that cannot be read"),
                    }
                }
            }
        }
        out
    }

    /// Reads the whole table at a fresh revision and brings the view in
    /// line with it; the next watch starts after it.
    async fn resync(&mut self, state: &RwLock<State>, changed: &impl Fn(&[PodName])) -> Result<(), RegistryError> {
        let resp = self
            .client
            .get(keys::pods(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd_error("read the table", e))?;
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        let mut records = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            match decode_record(kv) {
                Ok(r) => records.push(r),
                Err(e) => tracing::error!(error = %e, "skipping a record that cannot be read"),
            }
        }
        let mut guard = state.write().await;
        let applied = guard.resync(records, revision);
        self.handle(&mut guard, applied, revision, changed);
        drop(guard);
        self.through = revision;
        self.publish(revision);
        Ok(())
    }

    fn handle(&self, state: &mut State, applied: Applied, revision: u64, changed: &impl Fn(&[PodName])) {
        for bad in &applied.bad {
            tracing::error!(error = %bad, revision, "skipping a record that fails validation");
        }
        let mut own = self.own_deletes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lost: Vec<&crate::Allocation> =
            applied.lost.iter().filter(|r| own.get(&r.name).is_none_or(|at| *at < r.fence)).collect();
        own.retain(|_, at| *at > revision);
        drop(own);
        for rec in lost {
            let reason = format!(
                "its allocation went with node {}'s etcd lease (deleted at revision {revision}); its paths may be another Pod's now",
                self.config.node
            );
            tracing::error!(pod = %rec.name, revision, "a pod of this node lost its allocation with the node's lease");
            state.fence_pod(rec.name.clone(), reason);
        }
        if !applied.changed.is_empty() {
            changed(&applied.changed);
        }
    }

    fn publish(&mut self, revision: u64) {
        self.through = self.through.max(revision);
        self.published.send_if_modified(|t| {
            let moved = revision > *t;
            *t = (*t).max(revision);
            moved
        });
    }
}

/// The changes of one revision.
#[derive(Default)]
struct Batch {
    revision: u64,
    remote: Remote,
    answers: Vec<(crate::answers::StreamId, crate::answers::Remembered)>,
}

impl Batch {
    fn split(mut self) -> (Remote, Vec<(crate::answers::StreamId, crate::answers::Remembered)>) {
        self.remote.revision = self.revision;
        (self.remote, self.answers)
    }
}
