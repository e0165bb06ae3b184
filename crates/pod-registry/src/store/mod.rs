//! Persistence behind a narrow seam.
//!
//! The registry needs exactly three things from storage: read every record
//! at startup, and write a group of changes atomically and durably. The
//! [`Store`] trait is that seam; sled implements it now, etcd (one
//! transaction guarded by revisions) later. Nothing above this module knows
//! which one runs.

mod sled_store;

pub use sled_store::{SledStore, WAL_BYTES};

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
