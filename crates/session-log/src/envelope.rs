//! The stored form of one record: a MessagePack array
//! `[schema, seq, timestamp_ms, prev, checksum, body]`.
//!
//! `checksum` is a keyed BLAKE3 hash over every other field, body included,
//! so a record checks itself; `prev` is the previous record's checksum, so
//! the records form a chain: altering, dropping or reordering records breaks
//! a link even where each record on its own still checks. Record 1 links to
//! [`GENESIS`].

use serde::{Deserialize, Serialize};

use crate::LogError;

/// The envelope layout this build writes. Readers refuse newer versions
/// instead of guessing.
pub(crate) const SCHEMA_VERSION: u16 = 1;

pub(crate) type Hash = [u8; 32];

/// What record 1 links to.
pub(crate) const GENESIS: Hash = [0; 32];

/// Upper bound of everything an envelope adds around its body, so record
/// size limits can be checked before any sequence number is assigned.
pub(crate) const MAX_OVERHEAD: usize = 128;

const CHECKSUM_CONTEXT: &str = "pod-runtime session-log record v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub schema: u16,
    pub seq: u64,
    pub timestamp_ms: u64,
    #[serde(with = "serde_bytes")]
    pub prev: Hash,
    #[serde(with = "serde_bytes")]
    pub checksum: Hash,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Envelope {
    pub fn seal(seq: u64, timestamp_ms: u64, prev: Hash, body: Vec<u8>) -> Envelope {
        let checksum = checksum(SCHEMA_VERSION, seq, timestamp_ms, &prev, &body);
        Envelope { schema: SCHEMA_VERSION, seq, timestamp_ms, prev, checksum, body }
    }

    pub fn encode(&self) -> Result<Vec<u8>, LogError> {
        rmp_serde::to_vec(self).map_err(|e| LogError::Encode { what: "a record envelope", message: e.to_string() })
    }

    /// Decodes the value stored under key `seq` and checks that it is that
    /// record, intact. Does not check the link to its predecessor.
    pub fn open(seq: u64, bytes: &[u8]) -> Result<Envelope, LogError> {
        let env: Envelope = rmp_serde::from_slice(bytes)
            .map_err(|e| LogError::corrupt(seq, format!("has an envelope that does not decode: {e}")))?;
        if env.schema > SCHEMA_VERSION {
            return Err(LogError::UnsupportedSchema { seq, version: env.schema, supported: SCHEMA_VERSION });
        }
        if env.checksum != checksum(env.schema, env.seq, env.timestamp_ms, &env.prev, &env.body) {
            return Err(LogError::corrupt(seq, "fails its checksum"));
        }
        if env.seq != seq {
            return Err(LogError::corrupt(seq, format!("is stored under key {seq} but holds record {}", env.seq)));
        }
        Ok(env)
    }
}

fn checksum(schema: u16, seq: u64, timestamp_ms: u64, prev: &Hash, body: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(&schema.to_be_bytes());
    h.update(&seq.to_be_bytes());
    h.update(&timestamp_ms.to_be_bytes());
    h.update(prev);
    h.update(body);
    *h.finalize().as_bytes()
}

/// The sled key of record `seq`: big-endian so that key order is seq order.
pub(crate) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number of a stored key, `None` if it is not one.
pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn overhead_bound_holds_at_the_extremes() {
        let env = Envelope::seal(u64::MAX, u64::MAX, [0xff; 32], vec![0xab; 70_000]);
        assert!(env.encode().unwrap().len() <= env.body.len() + MAX_OVERHEAD);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let bytes = Envelope::seal(7, 1_700_000_000_000, [3; 32], b"body".to_vec()).encode().unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Envelope::open(7, &bad).is_err(), "flip at byte {i} went unnoticed");
        }
        assert_eq!(Envelope::open(7, &bytes).unwrap().seq, 7);
    }

    #[test]
    fn a_record_under_the_wrong_key_is_caught() {
        let bytes = Envelope::seal(7, 0, GENESIS, vec![]).encode().unwrap();
        assert_eq!(Envelope::open(8, &bytes).unwrap_err().seq(), Some(8));
    }
}
