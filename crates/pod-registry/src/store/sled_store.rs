//! The embedded store: sled for the records, a write-ahead log for
//! durability.
//!
//! Layout under the registry's data directory: `sled/` (records under
//! `a/<name>`, and `m/head`: the last commit applied and the next fence)
//! and `wal` (the `wal` crate: a preallocated write-ahead log).
//!
//! A commit is acknowledged once its entry (the commit, whole) is durable
//! in the write-ahead log; its keys go to sled without a flush in
//! [`Store::settle`], which the writer runs after answering, and the next
//! commit or the close runs first if it did not. sled
//! recovers a prefix of its log after a crash (its own crash tests check
//! exactly that), and `m/head` is written after a commit's records, so
//! whatever sled recovered holds every commit up to the one `m/head` names;
//! opening replays the log's later entries. Records are written whole, so
//! applying a commit again changes nothing. A damaged entry with whole
//! ones after it (an acknowledged commit altered on disk) is never taken
//! for the end of the log: the store refuses to open (`registry.corrupt`,
//! naming the commit and where) unless sled holds that commit already.
//!
//! When the log is full, the commit goes to sled as one atomic batch
//! followed by a checkpoint; sled then holds everything, and the log starts
//! a new lap. Opening does the same once it has replayed, since what a
//! killed process left in the page cache is not durable yet. All of that
//! (replay, the refusals, the checkpoint and its syncs) is the commit path
//! the stores share, `crates/durable`; this module says what the registry's
//! records and commits are, and its words for what the path refuses.

use std::path::Path;
use std::time::Duration;

use durable::{Durable, DurableError, Fill, Logged, Options, WalOptions};
use scope::PodName;
use serde::{Deserialize, Serialize};

use super::{Change, Store, Stored};
use crate::answers::{Remembered, StreamId};
use crate::{Allocation, RegistryError};

/// Bumped when the stored encoding of a record or of a commit changes.
const FORMAT: u8 = 1;
const RECORD_PREFIX: &[u8] = b"a/";
/// Remembered answers, one per request stream (`s/<32 hex digits>`).
const ANSWER_PREFIX: &[u8] = b"s/";
/// The last commit sled holds and the next fence number, 8 bytes each.
const HEAD_KEY: &[u8] = b"m/head";
/// sled's page cache; the registry's own state lives in memory anyway.
const CACHE_BYTES: u64 = 16 << 20;
/// Size of the write-ahead log. Commits are a few hundred bytes, so a lap
/// holds thousands of them between two checkpoints of sled, and this
/// bounds what a restart replays. Zero-filled once, when the registry's
/// data directory is created.
pub const WAL_BYTES: u64 = 4 << 20;

pub struct SledStore {
    durable: Durable,
    head: Head,
    /// A commit that is durable in the write-ahead log and not yet written
    /// to sled (see [`Store::settle`]).
    unsettled: Option<(Commit, u64)>,
}

/// What `m/head` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Head {
    /// The last commit applied; 0 before the first.
    seq: u64,
    next_fence: u64,
}

/// One commit, as the write-ahead log holds it.
#[derive(Serialize, Deserialize)]
struct Commit {
    puts: Vec<Allocation>,
    deletes: Vec<PodName>,
    next_fence: u64,
    /// Remembered answers written by this commit (absent in commits
    /// written before request ids existed).
    #[serde(default)]
    answers: Vec<(StreamId, Remembered)>,
    #[serde(default)]
    forgotten: Vec<StreamId>,
}

/// The registry's records as the commit path sees them while it opens:
/// the head sled holds, moved on by each commit put back.
struct Replay {
    head: Head,
}

/// Why an open failed: the registry's own refusal, or the commit path's
/// (put in the registry's words by [`in_registry_words`]).
enum Opening {
    Registry(RegistryError),
    Path(DurableError),
}

impl From<RegistryError> for Opening {
    fn from(e: RegistryError) -> Opening {
        Opening::Registry(e)
    }
}

impl From<DurableError> for Opening {
    fn from(e: DurableError) -> Opening {
        Opening::Path(e)
    }
}

impl durable::Records for Replay {
    type Commit = Commit;
    type Error = Opening;

    fn head(&self, _db: &sled::Db) -> Result<u64, Opening> {
        Ok(self.head.seq)
    }

    fn decode(&self, entry: &durable::Entry) -> Result<(u64, Commit), Opening> {
        let commit = decode_body(&format!("commit {} in the write-ahead log", entry.seq), &entry.payload)?;
        Ok((entry.seq, commit))
    }

    fn replay(&mut self, db: &sled::Db, seq: u64, commit: Commit) -> Result<(), Opening> {
        // The log holds these until the checkpoint that follows: plain writes.
        self.head = write_commit(db, self.head, &commit, seq, Atomicity::Logged)?;
        Ok(())
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, replays what the
    /// write-ahead log holds beyond sled, and makes all of it durable.
    pub fn open(dir: &Path) -> Result<SledStore, RegistryError> {
        let wal_path = dir.join("wal");
        let options = Options {
            sled_dir: dir.join("sled"),
            wal_path: wal_path.clone(),
            wal: WalOptions { bytes: WAL_BYTES, fill: Fill::Zeros },
            cache_bytes: CACHE_BYTES,
            mode: sled::Mode::LowSpace,
            // The daemon's own lock file keeps a second daemon out.
            lock_wait: Duration::ZERO,
        };
        let (durable, replay, _) = Durable::open(&options, |db| Ok(Replay { head: read_head(db)? }))
            .map_err(|e| in_registry_words(e, &wal_path))?;
        let store = SledStore { durable, head: replay.head, unsettled: None };
        tracing::info!(last_commit = store.head.seq, "registry store open");
        Ok(store)
    }

    fn checkpoint(&mut self) -> Result<(), RegistryError> {
        self.settle()?;
        self.durable.checkpoint(self.head.seq).map_err(RegistryError::from)
    }
}

/// The commit path's refusals in the registry's words (its messages name
/// the registry's files).
fn in_registry_words(e: Opening, wal_path: &Path) -> RegistryError {
    let e = match e {
        Opening::Registry(e) => return e,
        Opening::Path(e) => e,
    };
    let wal = wal_path.display();
    match e {
        DurableError::Behind { have, durable } => {
            RegistryError::Corrupt(format!("sled holds commits up to {have} but {wal} says it held up to {durable}"))
        }
        DurableError::Gap { resumes, have } => {
            RegistryError::Corrupt(format!("{wal} resumes at commit {resumes} but sled holds commits up to {have}"))
        }
        DurableError::Lost { missing, offset, stored, later } => RegistryError::Corrupt(format!(
            "the write-ahead log {wal} is damaged at byte {offset}: commit {missing} is in neither the log nor sled (sled holds commits up to {stored}; whole commits up to {later} follow the damage)"
        )),
        DurableError::Sled { op: "open", dir, source } => {
            RegistryError::Store(format!("cannot open {}: {source}", dir.display()))
        }
        e => RegistryError::from(e),
    }
}

impl Drop for SledStore {
    /// A clean close leaves nothing to replay. If this fails, the next open
    /// replays the log instead, so it only logs.
    fn drop(&mut self) {
        if self.unsettled.is_none() && self.durable.lap_is_empty() {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "could not checkpoint the registry store on close; the next start replays its log");
        }
    }
}

/// How a commit's keys must reach sled.
#[derive(Clone, Copy)]
enum Atomicity {
    /// The write-ahead log holds the commit: plain writes.
    Logged,
    /// Nothing else holds it: all or nothing.
    Batch,
}

/// Writes one commit's keys to sled (not yet durable), `m/head` last, and
/// returns the new head.
fn write_commit(
    db: &sled::Db,
    head: Head,
    commit: &Commit,
    seq: u64,
    atomicity: Atomicity,
) -> Result<Head, RegistryError> {
    let head = Head { seq, next_fence: commit.next_fence.max(head.next_fence) };
    let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(commit.puts.len() + commit.deletes.len() + 1);
    for rec in &commit.puts {
        writes.push((record_key(&rec.name), Some(encode(&rec.name, rec)?)));
    }
    for name in &commit.deletes {
        writes.push((record_key(name), None));
    }
    for (stream, rem) in &commit.answers {
        writes.push((answer_key(stream), Some(encode(stream, rem)?)));
    }
    for stream in &commit.forgotten {
        writes.push((answer_key(stream), None));
    }
    writes.push((HEAD_KEY.to_vec(), Some(encode_head(head))));
    match atomicity {
        // The commit is durable in the log already; a prefix of these
        // writes is as good as none.
        Atomicity::Logged => {
            for (key, value) in writes {
                match value {
                    Some(value) => db.insert(key, value)?,
                    None => db.remove(key)?,
                };
            }
        }
        Atomicity::Batch => {
            let mut batch = sled::Batch::default();
            for (key, value) in writes {
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            db.apply_batch(batch)?;
        }
    }
    Ok(head)
}

fn record_key(name: &PodName) -> Vec<u8> {
    [RECORD_PREFIX, name.as_str().as_bytes()].concat()
}

fn answer_key(stream: &StreamId) -> Vec<u8> {
    [ANSWER_PREFIX, stream.to_string().as_bytes()].concat()
}

fn decode_answer(key: &[u8], value: &[u8]) -> Result<(StreamId, Remembered), RegistryError> {
    let text = String::from_utf8_lossy(key);
    let stream = std::str::from_utf8(&key[ANSWER_PREFIX.len()..])
        .ok()
        .and_then(|hex| StreamId::try_from(hex.to_string()).ok())
        .ok_or_else(|| RegistryError::Corrupt(format!("{text}: not a request stream key")))?;
    let rem: Remembered = decode_body(&text, value)?;
    Ok((stream, rem))
}

fn encode<T: Serialize>(what: &dyn std::fmt::Display, value: &T) -> Result<Vec<u8>, RegistryError> {
    // Positional (compact) encoding: records are rewritten on every change
    // of their Pod, so size is write cost; FORMAT versions the layout.
    let mut out = vec![FORMAT];
    rmp_serde::encode::write(&mut out, value).map_err(|e| RegistryError::Store(format!("encode {what}: {e}")))?;
    Ok(out)
}

fn decode_body<'a, T: Deserialize<'a>>(what: &str, value: &'a [u8]) -> Result<T, RegistryError> {
    let (format, body) = value.split_first().ok_or_else(|| RegistryError::Corrupt(format!("{what}: empty value")))?;
    if *format != FORMAT {
        return Err(RegistryError::Corrupt(format!("{what}: unknown format {format}")));
    }
    rmp_serde::from_slice(body).map_err(|e| RegistryError::Corrupt(format!("{what}: cannot decode: {e}")))
}

fn decode_record(key: &[u8], value: &[u8]) -> Result<Allocation, RegistryError> {
    let name = String::from_utf8_lossy(key);
    let rec: Allocation = decode_body(&name, value)?;
    if record_key(&rec.name) != key {
        return Err(RegistryError::Corrupt(format!("{name}: key does not match record {}", rec.name)));
    }
    rec.validate().map_err(RegistryError::Corrupt)?;
    Ok(rec)
}

fn encode_head(head: Head) -> Vec<u8> {
    [head.seq.to_be_bytes(), head.next_fence.to_be_bytes()].concat()
}

fn read_head(db: &sled::Db) -> Result<Head, RegistryError> {
    let Some(raw) = db.get(HEAD_KEY)? else {
        return Ok(Head { seq: 0, next_fence: 1 });
    };
    let bytes: [u8; 16] = raw
        .as_ref()
        .try_into()
        .map_err(|_| RegistryError::Corrupt(format!("m/head has {} bytes, not 16", raw.len())))?;
    let word = |at: usize| u64::from_be_bytes(std::array::from_fn(|i| bytes[at + i]));
    Ok(Head { seq: word(0), next_fence: word(8) })
}

impl Store for SledStore {
    fn load(&self) -> Result<Stored, RegistryError> {
        assert!(self.unsettled.is_none(), "load reads sled, which lacks an unsettled commit");
        let mut records = Vec::new();
        for item in self.durable.db().scan_prefix(RECORD_PREFIX) {
            let (key, value) = item?;
            records.push(decode_record(&key, &value)?);
        }
        let mut answers = Vec::new();
        for item in self.durable.db().scan_prefix(ANSWER_PREFIX) {
            let (key, value) = item?;
            answers.push(decode_answer(&key, &value)?);
        }
        let head = read_head(self.durable.db())?;
        assert_eq!(head, self.head, "sled's m/head differs from the store's own");
        Ok(Stored { records, answers, next_fence: head.next_fence })
    }

    fn commit(&mut self, changes: &[Change<'_>], next_fence: u64) -> Result<(), RegistryError> {
        let mut commit =
            Commit { puts: Vec::new(), deletes: Vec::new(), next_fence, answers: Vec::new(), forgotten: Vec::new() };
        for change in changes {
            match change {
                Change::Put(rec) => {
                    rec.validate().map_err(RegistryError::Corrupt)?;
                    commit.puts.push((*rec).clone());
                }
                Change::Delete(name) => commit.deletes.push((*name).clone()),
                Change::Answer(stream, Some(rem)) => commit.answers.push((**stream, (*rem).clone())),
                Change::Answer(stream, None) => commit.forgotten.push(**stream),
            }
        }
        // Commits reach sled in order.
        self.settle()?;
        let seq = self.head.seq + 1;
        let entry = encode(&format_args!("commit {seq}"), &commit)?;
        let head = self.head;
        let logged =
            self.durable.commit(seq, &entry, |db| write_commit(db, head, &commit, seq, Atomicity::Batch).map(drop))?;
        match logged {
            Logged::Ahead => self.unsettled = Some((commit, seq)),
            Logged::Stored => self.head = Head { seq, next_fence: commit.next_fence.max(head.next_fence) },
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<(), RegistryError> {
        match self.unsettled.take() {
            Some((commit, seq)) => {
                self.head = write_commit(self.durable.db(), self.head, &commit, seq, Atomicity::Logged)?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}
