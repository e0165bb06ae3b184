//! A Pod's session log: its event-sourced history, one sled database per Pod.
//!
//! Every state change of a Pod (created, scope changed, child spawned,
//! removed or adopted, stopped) is appended here as an [`Event`] before it is
//! acknowledged, and [`SessionLog::replay`] folds the log back into the Pod's
//! [`PodState`] when the Pod resumes. Three properties carry the design:
//!
//! - **Acknowledged means durable.** [`SessionLog::append`] returns only after
//!   the whole batch is on disk; a batch is all there or not at all.
//!   Concurrent appenders share one flush (group commit).
//! - **Tampering and corruption are found, never folded.** Each record carries
//!   its sequence number, a checksum and the hash of its predecessor; a reader
//!   that meets a bad record names its sequence number and stops.
//! - **The fold is pure.** [`PodState::apply`] knows nothing about storage, so
//!   the history rules (what may follow what) are tested without a disk, and
//!   `append` refuses a batch the fold would refuse: the log never holds a
//!   history it cannot replay.

mod chain;
mod checkpoint;
mod envelope;
mod error;
mod event;
pub mod limits;
mod log;
mod state;

pub use error::{FoldError, LogError};
pub use event::{Enforced, Event, Exit, Record, RemovalReason};
pub use log::{AppendReceipt, CommitStats, LogOptions, RecordIter, SessionLog, VerifyReport};
pub use state::{ChildRecord, PodIdentity, PodState};

/// Names of the sled trees, public so that tools (and the corruption tests)
/// can open a log's database directly.
pub mod trees {
    /// Records, keyed by big-endian `u64` sequence number.
    pub const RECORDS: &str = "records";
    /// Checkpoints of the folded state, keyed by the big-endian sequence
    /// number of the last record they include.
    pub const CHECKPOINTS: &str = "checkpoints";
}
