//! Persistence behind a narrow seam.
//!
//! The embedded registry needs exactly three things from storage: read
//! every record at startup, and write a group of changes atomically and
//! durably. The [`Store`] trait is that seam; sled implements it.
//!
//! A table shared by several nodes (etcd) needs more, and [`SharedStore`]
//! is that: each mutation commits on its own, guarded by what its plan read
//! ([`Precondition`]s, at the revisions it read them), so that a change
//! another node made meanwhile refuses it ([`Outcome::Stale`]: catch up and
//! plan again) and a node whose claim was replaced is refused for good
//! (`registry.fenced`). Its change feed (other nodes' changes into the
//! state) and its lease (the liveness of every node's Pods) run beside the
//! writer, in the store's own module. Nothing above this module knows which
//! store runs; the writer is given one or the other.

#[cfg(feature = "etcd")]
pub mod etcd;
mod sled_store;

pub use sled_store::{SledStore, WAL_BYTES};

use crate::answers::AnswerChange;
pub use crate::preconditions::{Precondition, Seen};

use scope::PodName;

use crate::answers::{Remembered, StreamId};
use crate::{Allocation, RegistryError};

/// One change of a commit. A commit names each key at most once.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Put(&'a Allocation),
    Delete(&'a PodName),
    /// A request stream's remembered answer (`None`: forgotten), written in
    /// the commit of the change it answers.
    Answer(&'a StreamId, Option<&'a Remembered>),
}

/// What a store holds.
#[derive(Debug, Default)]
pub struct Stored {
    pub records: Vec<Allocation>,
    /// The last answer of each request stream.
    pub answers: Vec<(StreamId, Remembered)>,
    /// The next fence number to hand out; above every stored fence.
    pub next_fence: u64,
}

pub trait Store: Send {
    /// Every record, decoded and individually validated.
    fn load(&self) -> Result<Stored, RegistryError>;
    /// Applies `changes` and the new fence counter as one atomic unit and
    /// returns only once they are durable (fsynced). On error nothing of the
    /// group may be assumed written or not written; the caller must reload.
    fn commit(&mut self, changes: &[Change<'_>], next_fence: u64) -> Result<(), RegistryError>;
    /// Work the last commit left for after it was durable and answered
    /// (sled: writing its keys, which the write-ahead log already covers).
    /// The writer calls it off the requests' path; the next commit and a
    /// close do it first if it was not called.
    fn settle(&mut self) -> Result<(), RegistryError> {
        Ok(())
    }
}

/// One mutation, as a shared store commits it.
#[derive(Debug)]
pub struct Mutation<'a> {
    /// Records as they will be; fences in `fences` are placeholders for
    /// the transaction's revision.
    pub puts: Vec<&'a Allocation>,
    /// Records as they were, to be deleted (with their claims).
    pub deletes: Vec<&'a Allocation>,
    pub answers: &'a [AnswerChange],
    /// What the plan read (a put whose record was read absent is a new
    /// allocation, whose claims are written with it).
    pub preconditions: &'a [Precondition],
    /// The fences the plan handed out.
    pub fences: std::ops::Range<u64>,
}

/// How a guarded commit ended (a refusal for good is an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written, at this revision.
    Committed { revision: u64 },
    /// Something the plan read changed; the store had reached `revision`.
    /// Catch up to it and plan again.
    Stale { revision: u64 },
}

/// What a shared store's calls return: futures, since each is a round trip
/// to the store that the writer awaits on its own task.
pub type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, RegistryError>> + Send + 'a>>;

pub trait SharedStore: Send {
    /// Commits `m` in one transaction if every precondition still holds.
    /// Errors: `registry.fenced` (this node, or a record it would write, was
    /// replaced: never retried), `registry.etcd_unavailable` (the outcome
    /// may be unknown; the feed brings it if it was written).
    fn commit_guarded<'a>(&'a mut self, m: &'a Mutation<'_>) -> StoreFuture<'a, Outcome>;
    /// Waits, bounded, until the change feed has applied everything up to
    /// `revision` (the state lock must not be held).
    fn wait_through(&mut self, revision: u64) -> StoreFuture<'_, ()>;
    /// The store's newest revision, read linearizably: a refusal is
    /// answered only on a view at least that new.
    fn current_revision(&mut self) -> StoreFuture<'_, u64>;
}
