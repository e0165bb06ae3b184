//! Every limit the session log enforces, in one place so that the docs, the
//! errors and the tests agree. Past a limit the call is refused with a typed
//! error and nothing is written.

/// Largest encoded record (envelope included), in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Most events in one `append` batch.
pub const MAX_BATCH_EVENTS: usize = 4096;

/// Checkpoints kept; older ones are deleted when a new one is written. More
/// than one so that a checkpoint failing its checksum has a fallback.
pub const KEPT_CHECKPOINTS: usize = 3;

/// Default number of records between two automatic checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// How long `open` waits for sled's file lock, in milliseconds, before it
/// reports the log as open elsewhere.
pub const OPEN_LOCK_WAIT_MS: u64 = 2000;

/// Default size of a log's write-ahead file (see the `wal` crate): a lap
/// holds about a thousand records between two flushes of sled, and this
/// bounds what an open after a crash replays. Every Pod has one, with its
/// blocks reserved, so it is kept small: with 1 MiB, a resume of a Pod with
/// 1,000 children took four times as long (1.1 s instead of 0.25 s).
pub const DEFAULT_WAL_BYTES: u64 = 256 << 10;
