//! The writer's path on a table shared with other nodes (etcd): each
//! mutation its own guarded transaction, awaited on the caller's task.
//!
//! Why not the group commit of an owned store: a shared store's commit is a
//! network round trip guarded by what the plan read, so jobs cannot share
//! one, and blocking a worker for it (`block_in_place`, then a blocking-pool
//! thread to lead the next group) costs thread hand-offs on every request
//! that the round trip itself does not need. Here a commit is a plain
//! future: the caller's task plans, sends the transaction, and applies it.
//!
//! Mutations still commit one at a time (the store sits behind an async
//! mutex), so plans never race each other. Planning holds the state's read
//! lock only while it plans: the transaction's guards carry what the plan
//! read, so the view may move on while etcd commits, and the change feed
//! (which takes the write lock for the very revision being committed) is
//! not made to queue behind the commit and then ahead of the writer.
//! `State::apply_committed` keeps whatever the feed brought that is newer.

use crate::ops::{self, Submission};
use crate::proc::ProcKernel;
use crate::state::State;
use crate::store::{Mutation, Outcome, SharedStore};
use crate::{Allocation, RegistryError};
use scope::PodName;
use tokio::sync::RwLock;

use super::writer::{Answer, Watched};

/// Most times one mutation is planned again because another node changed
/// what it read meanwhile (each time the view caught up first).
const MAX_REPLANS: usize = 16;

/// Commits one submission: plans it on the node's view, commits it as one
/// guarded transaction, applies it once etcd has it (so readers never see
/// a change before it is durable). A plan whose guards fail is made again
/// once the feed has caught up with the revision the store had reached; a
/// refusal is answered only on a view at least as new as the store's newest
/// revision (the node's view may lag a moment behind the other nodes'
/// commits). Errors are the job's own: the daemon goes on.
pub async fn commit_one(
    state: &RwLock<State>,
    store: &mut dyn SharedStore,
    sub: &Submission,
    watched: &Watched,
) -> Answer {
    let mut confirmed = false;
    let started = std::time::Instant::now();
    for _ in 0..MAX_REPLANS {
        let guard = state.read().await;
        let (plan, mut reply) = match ops::plan_submission(&guard, sub, &ProcKernel) {
            Ok(planned) => planned,
            Err(e) if confirmed || !depends_on_the_view(&e) => return Err(e),
            Err(_) => {
                drop(guard);
                let newest = store.current_revision().await?;
                store.wait_through(newest).await?;
                confirmed = true;
                continue;
            }
        };
        if plan.puts.is_empty() && plan.deletes.is_empty() && plan.answers.is_empty() {
            return Ok(reply);
        }
        let preconditions = crate::preconditions::of(&guard, &plan);
        let deleted: Vec<Allocation> =
            plan.deletes.iter().filter_map(|n| guard.get(n)).map(|h| h.rec.clone()).collect();
        drop(guard);
        let mutation = Mutation {
            puts: plan.puts.iter().map(|h| &h.rec).collect(),
            deletes: deleted.iter().collect(),
            answers: &plan.answers,
            preconditions: &preconditions,
            fences: plan.first_fence..plan.next_fence,
        };
        fail::fail_point!("registry.before_commit");
        let planned = started.elapsed();
        let outcome = store.commit_guarded(&mutation).await?;
        let sent = started.elapsed();
        fail::fail_point!("registry.after_commit");
        drop(mutation);
        match outcome {
            Outcome::Committed { revision } => {
                let (from, to) = (plan.first_fence, plan.next_fence);
                reply.map_fences(|f| if (from..to).contains(&f) { revision } else { f });
                let touched: Vec<PodName> =
                    plan.deletes.iter().cloned().chain(plan.puts.iter().map(|h| h.rec.name.clone())).collect();
                state.write().await.apply_committed(plan, revision);
                watched.notify(&touched);
                // Where a commit's time goes (the bench's question): the
                // plan, etcd's round trip, the state lock and the apply.
                tracing::debug!(
                    revision,
                    planned_us = planned.as_micros() as u64,
                    etcd_us = (sent - planned).as_micros() as u64,
                    applied_us = (started.elapsed() - sent).as_micros() as u64,
                    "committed"
                );
                return Ok(reply);
            }
            Outcome::Stale { revision } => store.wait_through(revision).await?,
        }
    }
    Err(RegistryError::EtcdUnavailable(format!(
        "other nodes kept changing what this request depends on; gave up after {MAX_REPLANS} plans"
    )))
}

/// Refusals that another node's recent commit could make wrong (checked
/// again on a view as new as the store before they are answered).
fn depends_on_the_view(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::WriteConflict { .. }
            | RegistryError::NodeConflict(_)
            | RegistryError::DuplicateName(_)
            | RegistryError::UnknownPod(_)
            | RegistryError::SessionTaken { .. }
            | RegistryError::OtherNode { .. }
            | RegistryError::NotParent { .. }
    )
}
