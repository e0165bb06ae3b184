//! Typed errors. Callers (the `pod` CLI, the Pod's IPC replies) match on
//! `code()`, which is stable; the messages are for humans and may improve.
//! Every error about a stored record carries the first bad sequence number.

use scope::PodName;
use thiserror::Error;

/// A history the fold refuses: it cannot have been written by a correct Pod.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FoldError {
    #[error("record {found} follows record {} (expected {expected}): the history has a gap", expected - 1)]
    SeqGap { expected: u64, found: u64 },
    #[error("record {seq} is a `{kind}` event but the Pod was not created yet (no `pod.created` before it)")]
    BeforeCreated { seq: u64, kind: String },
    #[error("record {seq} creates the Pod a second time")]
    AlreadyCreated { seq: u64 },
    #[error("record {seq} creates the Pod with delegation layers in its base; a base has none")]
    BaseHasLayers { seq: u64 },
    #[error("record {seq} changes the Pod's base allow/deny rules, which never change after creation")]
    BaseChanged { seq: u64 },
    #[error("record {seq} adds child `{name}`, which is already a child")]
    DuplicateChild { seq: u64, name: PodName },
    #[error("record {seq} removes child `{name}`, which is not a child")]
    UnknownChild { seq: u64, name: PodName },
}

impl FoldError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            FoldError::SeqGap { .. } => "fold.seq_gap",
            FoldError::BeforeCreated { .. } => "fold.before_created",
            FoldError::AlreadyCreated { .. } => "fold.already_created",
            FoldError::BaseHasLayers { .. } => "fold.base_has_layers",
            FoldError::BaseChanged { .. } => "fold.base_changed",
            FoldError::DuplicateChild { .. } => "fold.duplicate_child",
            FoldError::UnknownChild { .. } => "fold.unknown_child",
        }
    }

    /// The sequence number of the offending record.
    pub fn seq(&self) -> u64 {
        match self {
            FoldError::SeqGap { expected, .. } => *expected,
            FoldError::BeforeCreated { seq, .. }
            | FoldError::AlreadyCreated { seq }
            | FoldError::BaseHasLayers { seq }
            | FoldError::BaseChanged { seq }
            | FoldError::DuplicateChild { seq, .. }
            | FoldError::UnknownChild { seq, .. } => *seq,
        }
    }
}

/// Everything the session log can refuse or fail with. `Clone` because one
/// failed group commit answers every appender of the group.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogError {
    #[error("corrupt session log: record {seq} {reason}")]
    CorruptRecord { seq: u64, reason: String },
    #[error("corrupt session log: record {seq} does not link to record {}: a record was altered, removed or reordered", seq - 1)]
    BrokenChain { seq: u64 },
    #[error("corrupt session log: record {seq} is missing")]
    MissingRecord { seq: u64 },
    #[error("corrupt session log: a key is not an 8-byte sequence number (after record {after})")]
    BadKey { after: u64 },
    #[error("record {seq} has schema version {version}; this build reads up to {supported}")]
    UnsupportedSchema { seq: u64, version: u16, supported: u16 },
    #[error("the session log holds an impossible history: {source}")]
    ImpossibleHistory { source: FoldError },
    #[error("corrupt session log: checkpoint at record {seq} passes its checksum but does not match the records it summarizes")]
    CheckpointMismatch { seq: u64 },
    #[error("append refused, nothing written: {source}")]
    Refused { source: FoldError },
    #[error("append refused, nothing written: the batch is empty")]
    EmptyBatch,
    #[error("append refused, nothing written: {events} events in one batch, at most {max}")]
    BatchTooLarge { events: usize, max: usize },
    #[error("append refused, nothing written: event {index} of the batch encodes to {bytes} bytes, at most {max}")]
    RecordTooLarge { index: usize, bytes: usize, max: usize },
    #[error("append refused, nothing written: event {index} of the batch has unknown kind `{kind}`")]
    UnknownEvent { index: usize, kind: String },
    #[error("cannot encode {what}: {message}")]
    Encode { what: &'static str, message: String },
    #[error("session log storage failed ({op}): {message}")]
    Storage { op: &'static str, message: String },
    #[error("this session log handle failed earlier and must be reopened: {cause}")]
    Failed { cause: String },
    #[error("corrupt session log: records {} to {durable} were durable and are gone (the store ends at record {have})", have + 1)]
    Truncated { have: u64, durable: u64 },
    #[error("corrupt session log: record {seq} is lost: the write-ahead entry holding it (at byte {offset} of the write-ahead file) is damaged, and records up to {later} after it survive")]
    WalDamaged { seq: u64, offset: u64, later: u64 },
    #[error("corrupt session log: {what} cannot be read ({message})")]
    Unreadable { what: &'static str, message: String },
}

impl LogError {
    /// Stable machine-readable code. Every kind of damage to what was
    /// stored is `log.corrupt` (the message and [`LogError::damage`] say
    /// which kind); it is never taken for an empty or unknown log.
    pub fn code(&self) -> &'static str {
        match self {
            LogError::CorruptRecord { .. }
            | LogError::BrokenChain { .. }
            | LogError::MissingRecord { .. }
            | LogError::BadKey { .. }
            | LogError::CheckpointMismatch { .. }
            | LogError::Truncated { .. }
            | LogError::WalDamaged { .. }
            | LogError::Unreadable { .. } => "log.corrupt",
            LogError::UnsupportedSchema { .. } => "log.unsupported_schema",
            LogError::ImpossibleHistory { .. } => "log.impossible_history",
            LogError::Refused { .. } => "log.refused",
            LogError::EmptyBatch => "log.empty_batch",
            LogError::BatchTooLarge { .. } => "log.batch_too_large",
            LogError::RecordTooLarge { .. } => "log.record_too_large",
            LogError::UnknownEvent { .. } => "log.unknown_event",
            LogError::Encode { .. } => "log.encode",
            LogError::Storage { .. } => "log.storage",
            LogError::Failed { .. } => "log.failed",
        }
    }

    /// Which kind of damage this is, when the log's stored bytes are
    /// damaged (code `log.corrupt`); `None` for every other error.
    pub fn damage(&self) -> Option<&'static str> {
        Some(match self {
            LogError::CorruptRecord { .. } => "corrupt_record",
            LogError::BrokenChain { .. } => "broken_chain",
            LogError::MissingRecord { .. } => "missing_record",
            LogError::BadKey { .. } => "bad_key",
            LogError::CheckpointMismatch { .. } => "checkpoint_mismatch",
            LogError::Truncated { .. } => "truncated",
            LogError::WalDamaged { .. } => "wal_damaged",
            LogError::Unreadable { .. } => "unreadable",
            _ => return None,
        })
    }

    /// The first bad sequence number, for errors about stored records.
    pub fn seq(&self) -> Option<u64> {
        match self {
            LogError::CorruptRecord { seq, .. }
            | LogError::BrokenChain { seq }
            | LogError::MissingRecord { seq }
            | LogError::UnsupportedSchema { seq, .. }
            | LogError::CheckpointMismatch { seq } => Some(*seq),
            LogError::BadKey { after } => Some(after + 1),
            LogError::Truncated { have, .. } => Some(have + 1),
            LogError::WalDamaged { seq, .. } => Some(*seq),
            LogError::ImpossibleHistory { source } => Some(source.seq()),
            _ => None,
        }
    }

    pub(crate) fn storage(op: &'static str, e: impl std::fmt::Display) -> LogError {
        LogError::Storage { op, message: e.to_string() }
    }

    pub(crate) fn corrupt(seq: u64, reason: impl Into<String>) -> LogError {
        LogError::CorruptRecord { seq, reason: reason.into() }
    }
}
