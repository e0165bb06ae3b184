//! The single writer, with group commit.
//!
//! All mutations go through one thread so they are applied in one order.
//! The writer takes every queued request (up to `MAX_GROUP`), plans and
//! applies each in turn to the in-memory state (each sees the ones before
//! it), writes all their changes as one store commit with one flush, and
//! only then answers them. Many operations share one fsync; none is
//! answered before it is durable; readers never see a change before it is
//! durable because the state lock is held until the flush returned.

use std::sync::Arc;

use rustc_hash::FxHashSet;
use scope::PodName;
use tokio::sync::{mpsc, oneshot, RwLock};

use crate::limits::MAX_GROUP;
use crate::ops::{self, Op};
use crate::state::State;
use crate::store::{Change, Store};
use crate::wire::Reply;
use crate::RegistryError;

pub type Answer = Result<Reply, RegistryError>;

pub struct Job {
    pub op: Op,
    pub reply: oneshot::Sender<Answer>,
    pub span: tracing::Span,
}

pub enum Msg {
    Job(Box<Job>),
    /// Finish the current group and stop.
    Stop,
}

/// Runs until `Stop` or until every sender is gone. A failed commit is
/// fatal: memory is ahead of the disk, so the daemon must exit and reload
/// (nothing of that group was acknowledged).
pub fn run(
    state: Arc<RwLock<State>>,
    mut store: Box<dyn Store>,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<(), RegistryError> {
    loop {
        let mut jobs = Vec::new();
        let mut stop = false;
        match rx.blocking_recv() {
            Some(Msg::Job(j)) => jobs.push(*j),
            Some(Msg::Stop) | None => return Ok(()),
        }
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(*j),
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit_group(&state, store.as_mut(), jobs)?;
        if stop {
            return Ok(());
        }
    }
}

fn commit_group(state: &RwLock<State>, store: &mut dyn Store, jobs: Vec<Job>) -> Result<(), RegistryError> {
    let mut guard = state.blocking_write();
    // Names touched by the group; what is written for each is its final
    // state in memory (a store batch is last-write-wins per key anyway), so
    // records are not copied just to be written.
    let mut touched: Vec<PodName> = Vec::new();
    let mut seen: FxHashSet<PodName> = FxHashSet::default();
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = {
            let _entered = job.span.enter();
            match ops::plan(&guard, &job.op) {
                Ok((plan, reply)) => {
                    let names = plan.deletes.iter().chain(plan.puts.iter().map(|h| &h.rec.name));
                    for name in names {
                        if seen.insert(name.clone()) {
                            touched.push(name.clone());
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
        .collect();
    if !changes.is_empty() {
        fail::fail_point!("registry.before_commit");
        let committed = store.commit(&changes, guard.next_fence());
        fail::fail_point!("registry.after_commit");
        if let Err(e) = committed {
            tracing::error!(error = %e, "commit failed; stopping so that a restart reloads what is durable");
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
    Ok(())
}
