//! Checkpoints: the folded state as of record `seq`, so that resume reads the
//! latest checkpoint and the tail after it instead of the whole log.
//!
//! A checkpoint is derived data, never the truth: it carries its own
//! checksum and the checksum of the record it was taken at, and one that
//! fails either check is skipped with a warning (an older one, or a full
//! replay, takes over). The records decide; a checkpoint only saves time.

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::envelope::{key, seq_of, Envelope, Hash};
use crate::limits::KEPT_CHECKPOINTS;
use crate::{LogError, PodState};

/// The checkpoint layout this build writes; others are skipped.
const SCHEMA_VERSION: u16 = 1;

const CHECKSUM_CONTEXT: &str = "pod-runtime session-log checkpoint v1";

#[derive(Serialize, Deserialize)]
struct Stored {
    schema: u16,
    seq: u64,
    #[serde(with = "serde_bytes")]
    record_hash: Hash,
    #[serde(with = "serde_bytes")]
    checksum: Hash,
    /// The `PodState`, MessagePack with named fields.
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
}

/// A checkpoint that passed its own checks.
pub(crate) struct Checkpoint {
    pub record_hash: Hash,
    pub state: PodState,
}

/// A checkpoint that passed its own checks and matches the record it was
/// taken at: a valid starting point for a replay.
pub(crate) struct Start {
    pub state: PodState,
    pub record_hash: Hash,
    pub timestamp_ms: u64,
}

fn checksum(seq: u64, record_hash: &Hash, state: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(&SCHEMA_VERSION.to_be_bytes());
    h.update(&seq.to_be_bytes());
    h.update(record_hash);
    h.update(state);
    *h.finalize().as_bytes()
}

/// Stores a checkpoint of `state` (taken at the record whose checksum is
/// `record_hash`) and deletes all but the newest [`KEPT_CHECKPOINTS`]. Not
/// flushed here: the caller's flush covers it.
pub(crate) fn write(tree: &sled::Tree, state: &PodState, record_hash: Hash) -> Result<(), LogError> {
    let encoded = rmp_serde::to_vec_named(state)
        .map_err(|e| LogError::Encode { what: "a checkpoint", message: e.to_string() })?;
    let seq = state.last_seq;
    let stored = Stored {
        schema: SCHEMA_VERSION,
        seq,
        record_hash,
        checksum: checksum(seq, &record_hash, &encoded),
        state: encoded,
    };
    let bytes =
        rmp_serde::to_vec(&stored).map_err(|e| LogError::Encode { what: "a checkpoint", message: e.to_string() })?;
    let mut batch = sled::Batch::default();
    batch.insert(&key(seq), bytes);
    for old in tree.iter().keys().rev().skip(KEPT_CHECKPOINTS - 1) {
        batch.remove(old.map_err(|e| LogError::storage("list checkpoints", e))?);
    }
    tree.apply_batch(batch).map_err(|e| LogError::storage("write a checkpoint", e))
}

/// Decodes and checks the checkpoint stored under `stored_key`.
pub(crate) fn decode(stored_key: &[u8], bytes: &[u8]) -> Result<(u64, Checkpoint), String> {
    let seq = seq_of(stored_key).ok_or("its key is not a sequence number")?;
    let stored: Stored = rmp_serde::from_slice(bytes).map_err(|e| format!("it does not decode: {e}"))?;
    if stored.schema != SCHEMA_VERSION {
        return Err(format!("it has schema version {}", stored.schema));
    }
    if stored.seq != seq || stored.checksum != checksum(stored.seq, &stored.record_hash, &stored.state) {
        return Err("it fails its checksum".into());
    }
    let state: PodState =
        rmp_serde::from_slice(&stored.state).map_err(|e| format!("its state does not decode: {e}"))?;
    if state.last_seq != seq {
        return Err(format!("its state ends at record {}", state.last_seq));
    }
    Ok((seq, Checkpoint { record_hash: stored.record_hash, state }))
}

/// The newest usable checkpoint at or before record `bound`. A corrupt
/// checkpoint is skipped; a corrupt *record* is an error, as everywhere.
pub(crate) fn latest(checkpoints: &sled::Tree, records: &sled::Tree, bound: u64) -> Result<Option<Start>, LogError> {
    for entry in checkpoints.range(..=key(bound)).rev() {
        let (k, v) = entry.map_err(|e| LogError::storage("read a checkpoint", e))?;
        let (seq, checkpoint) = match decode(&k, &v) {
            Ok(found) => found,
            Err(reason) => {
                warn!(key = ?k, %reason, "ignoring a session-log checkpoint");
                continue;
            }
        };
        let Some(record) = records.get(key(seq)).map_err(|e| LogError::storage("read a record", e))? else {
            warn!(seq, "ignoring a session-log checkpoint: its record is missing");
            continue;
        };
        let record = Envelope::open(seq, &record)?;
        if record.checksum != checkpoint.record_hash {
            warn!(seq, "ignoring a session-log checkpoint: it was taken at another record {seq}");
            continue;
        }
        return Ok(Some(Start {
            state: checkpoint.state,
            record_hash: record.checksum,
            timestamp_ms: record.timestamp_ms,
        }));
    }
    Ok(None)
}
