//! How a layer is kept in sled, and what one write-ahead entry holds.
//!
//! sled (under `kv/sled/`): `c/<partition>` a counter, `e/<key>` an entry,
//! `l/<lease name>` a grant, `r/<caller>/<client>` the last answer of a
//! client's request stream, and `m/head` (the last commit sled holds,
//! 8 bytes big-endian). sled is written only in atomic batches (a
//! checkpoint's groups, or one replayed group), each with its `m/head`,
//! so that whatever sled recovers after a crash holds every commit up to
//! it. Every value is a format byte and rmp-serde; every change is a whole
//! record, so writing a commit again changes nothing.
//!
//! A write-ahead entry is one group: the core's commits in the order they
//! were planned, and the answers they remember, as one [`Group`]. Replay
//! writes its records in that order, which is the fold `Layer::apply`
//! that the core's tests prove equal to applying the plans.

use serde::{Deserialize, Serialize};

use crate::error::KvError;
use crate::key::Partition;
use crate::ops::Outcome;
use crate::state::{Change, Commit, Entry, Grant, Records};
use durable::{DurableError, Entry as WalEntry};

/// Bumped when the stored encoding of a record or of a group changes.
const FORMAT: u8 = 1;
const COUNTER_PREFIX: &[u8] = b"c/";
const ENTRY_PREFIX: &[u8] = b"e/";
const LEASE_PREFIX: &[u8] = b"l/";
const ANSWER_PREFIX: &[u8] = b"r/";
const HEAD_KEY: &[u8] = b"m/head";

/// Whose request stream an answer belongs to: the caller (`operator` or a
/// Pod's name) and the client id it chose.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stream {
    pub caller: String,
    pub client: u64,
}

/// The last answer of a stream: a retry of `seq` gets `outcome` again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub seq: u64,
    pub outcome: Outcome,
    /// The commit that last used the stream (the least recent is the one
    /// a caller's new stream replaces past the bound).
    pub used_at: u64,
}

/// One write-ahead entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Group {
    pub commits: Vec<Commit>,
    /// Streams' answers, set (`Some`) or forgotten (`None`).
    pub answers: Vec<(Stream, Option<Remembered>)>,
}

impl Group {
    pub fn is_empty(&self) -> bool {
        self.commits.iter().all(Commit::is_empty) && self.answers.is_empty()
    }
}

fn corrupt(what: impl std::fmt::Display) -> KvError {
    KvError::Corrupt(what.to_string())
}

pub(crate) fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::Storage(e.to_string())
}

/// The commit path's failures: damage is `kv.corrupt`, a failing disk call
/// `kv.storage`.
impl From<DurableError> for KvError {
    fn from(e: DurableError) -> KvError {
        if e.is_damage() {
            corrupt(e)
        } else {
            storage(e)
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, KvError> {
    let mut out = vec![FORMAT];
    rmp_serde::encode::write(&mut out, value).map_err(|e| storage(format!("cannot encode a record: {e}")))?;
    Ok(out)
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(what: &dyn std::fmt::Display, raw: &'a [u8]) -> Result<T, KvError> {
    let (format, body) = raw.split_first().ok_or_else(|| corrupt(format!("{what} is empty")))?;
    if *format != FORMAT {
        return Err(corrupt(format!("{what} has unknown format {format}")));
    }
    rmp_serde::from_slice(body).map_err(|e| corrupt(format!("{what} cannot be decoded: {e}")))
}

fn counter_key(partition: &Partition) -> Result<Vec<u8>, KvError> {
    let mut key = COUNTER_PREFIX.to_vec();
    rmp_serde::encode::write(&mut key, partition)
        .map_err(|e| storage(format!("cannot encode a counter's key: {e}")))?;
    Ok(key)
}

fn answer_key(stream: &Stream) -> Vec<u8> {
    [ANSWER_PREFIX, stream.caller.as_bytes(), b"/", &stream.client.to_be_bytes()].concat()
}

/// One sled write: a key and its new value (`None`: removed).
type Write = (Vec<u8>, Option<Vec<u8>>);

/// The sled writes of a group, in order.
fn writes(group: &Group, out: &mut Vec<Write>) -> Result<(), KvError> {
    for commit in &group.commits {
        for change in &commit.changes {
            out.push(match change {
                Change::Counter { partition, value } => (counter_key(partition)?, Some(encode(&(partition, *value))?)),
                Change::Put { key, entry } => {
                    ([ENTRY_PREFIX, key.as_str().as_bytes()].concat(), Some(encode(&(key, entry))?))
                }
                Change::Delete { key } => ([ENTRY_PREFIX, key.as_str().as_bytes()].concat(), None),
                Change::Grant(grant) => ([LEASE_PREFIX, grant.name.as_str().as_bytes()].concat(), Some(encode(grant)?)),
                Change::Free { name } => ([LEASE_PREFIX, name.as_str().as_bytes()].concat(), None),
            });
        }
    }
    for (stream, remembered) in &group.answers {
        let value = match remembered {
            Some(r) => Some(encode(&(stream, r))?),
            None => None,
        };
        out.push((answer_key(stream), value));
    }
    Ok(())
}

/// Writes `groups` (in order, the last of them commit `head`) to sled as
/// one atomic batch with `m/head`: sled then holds all of them or none
/// (a later write of a key in the batch wins, as it would in sled).
pub(crate) fn write(db: &sled::Db, groups: &[Group], head: u64) -> Result<(), KvError> {
    let mut all = Vec::new();
    for group in groups {
        writes(group, &mut all)?;
    }
    let mut batch = sled::Batch::default();
    for (key, value) in all {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    batch.insert(HEAD_KEY, &head.to_be_bytes());
    db.apply_batch(batch).map_err(storage)
}

pub(crate) fn head(db: &sled::Db) -> Result<u64, KvError> {
    let Some(raw) = db.get(HEAD_KEY).map_err(storage)? else { return Ok(0) };
    let bytes: [u8; 8] =
        raw.as_ref().try_into().map_err(|_| corrupt(format!("m/head has {} bytes, not 8", raw.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Everything sled holds: the layer's records and the streams' answers.
pub(crate) fn load(db: &sled::Db) -> Result<(Records, Vec<(Stream, Remembered)>), KvError> {
    let mut records = Records::default();
    for item in db.scan_prefix(COUNTER_PREFIX) {
        let (key, value) = item.map_err(storage)?;
        let (partition, counter): (Partition, u64) = decode(&"a counter", &value)?;
        if counter_key(&partition)? != key.as_ref() {
            return Err(corrupt(format!("the counter of {partition:?} is stored under another key")));
        }
        records.counters.push((partition, counter));
    }
    for item in db.scan_prefix(ENTRY_PREFIX) {
        let (key, value) = item.map_err(storage)?;
        let shown = String::from_utf8_lossy(&key[ENTRY_PREFIX.len()..]).into_owned();
        let (stored, entry): (crate::key::Key, Entry) = decode(&format_args!("the entry of {shown}"), &value)?;
        if stored.as_str() != shown {
            return Err(corrupt(format!("the entry of {stored} is stored under {shown}")));
        }
        records.entries.push((stored, entry));
    }
    for item in db.scan_prefix(LEASE_PREFIX) {
        let (key, value) = item.map_err(storage)?;
        let shown = String::from_utf8_lossy(&key[LEASE_PREFIX.len()..]).into_owned();
        let grant: Grant = decode(&format_args!("the grant of {shown}"), &value)?;
        if grant.name.as_str() != shown {
            return Err(corrupt(format!("the grant of {} is stored under {shown}", grant.name)));
        }
        records.grants.push(grant);
    }
    let mut answers = Vec::new();
    for item in db.scan_prefix(ANSWER_PREFIX) {
        let (key, value) = item.map_err(storage)?;
        let (stream, remembered): (Stream, Remembered) = decode(&"a remembered answer", &value)?;
        if answer_key(&stream) != key.as_ref() {
            return Err(corrupt("a remembered answer is stored under another stream's key"));
        }
        answers.push((stream, remembered));
    }
    Ok((records, answers))
}

/// The store's records as the commit path sees them while it opens.
pub(crate) struct Replay;

impl durable::Records for Replay {
    type Commit = Group;
    type Error = KvError;

    fn head(&self, db: &sled::Db) -> Result<u64, KvError> {
        head(db)
    }

    fn decode(&self, entry: &WalEntry) -> Result<(u64, Group), KvError> {
        let group = decode(&format_args!("write-ahead entry {}", entry.seq), &entry.payload)?;
        Ok((entry.seq, group))
    }

    fn replay(&mut self, db: &sled::Db, seq: u64, group: Group) -> Result<(), KvError> {
        write(db, std::slice::from_ref(&group), seq)
    }
}
