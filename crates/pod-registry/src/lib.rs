//! pod-registry: the one place on a machine that decides who may write where.
//!
//! For every path at most one live Pod has effective write. Top-level Pods
//! register, parents delegate to children (the child's allocation and the
//! parent's layer appear in one transaction), reclaim removes both in one
//! transaction, and dead Pods are swept.
//!
//! Layout (functional core, imperative shell):
//! - [`record`], [`state`], [`index`], [`conflict`], [`ops`]: pure. Each
//!   operation is a function from the current [`state::State`] and a request
//!   to a [`state::Plan`] (records to write and delete) and a reply. No I/O.
//! - [`store`]: the persistence seam ([`store::Store`]): sled, the embedded
//!   default; etcd (feature `etcd`), a table shared by many nodes.
//! - [`preconditions`]: what a plan read, which guards a shared store's
//!   transaction. Pure.
//! - [`daemon`]: sockets, the group-commit writer, the lock, signals.
//! - [`client`]: what the Pod runtime and the command line call.

pub mod answers;
pub mod auth;
pub mod client;
pub mod config;
pub mod conflict;
pub mod daemon;
pub mod error;
pub mod index;
pub mod ops;
pub mod preconditions;
pub mod proc;
pub mod record;
pub mod scratch;
pub mod state;
pub mod store;
pub mod wire;

pub use client::{Client, ClientError};
pub use error::RegistryError;
pub use record::{AllocState, Allocation, NodeName};
pub use wire::{CheckReply, LeaseView, Reclaimed, Reply, Request, RequestId, StreamId, Survivor, WireRule};

/// Every limit of the registry, in one place so docs and errors agree.
pub mod limits {
    /// Most allocations (Pods, live or reserved) one registry holds.
    pub const MAX_ALLOCATIONS: usize = 100_000;
    /// Deepest parent chain; deeper delegation is refused.
    pub const MAX_DEPTH: usize = 64;
    /// Most mutations applied under one flush (group commit).
    pub const MAX_GROUP: usize = 1024;
    /// Most allocations in one `list` reply page (keeps replies far below
    /// the frame limit).
    pub const MAX_PAGE: usize = 256;
    /// Longest session id and socket path, in bytes.
    pub const MAX_FIELD_BYTES: usize = 4096;
    /// Most scratch paths (`--scratch`) of one Pod.
    pub const MAX_SCRATCH: usize = 64;
    /// How often the daemon sweeps dead Pods on its own.
    pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
    /// How long a client waits for an on-demand daemon to answer.
    pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    /// Longest a `watch` is held before it is answered with no change.
    pub const WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
}
