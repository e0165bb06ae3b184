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
//! followed by sled's flush and an `fdatasync` (sled's flush alone ends in
//! `sync_file_range`, which neither flushes the device's write cache nor
//! file metadata); sled then holds everything, and the log starts a new
//! lap. Opening does the same once it has replayed, since what a killed
//! process left in the page cache is not durable yet.

use std::fs::File;
use std::path::Path;

use scope::PodName;
use serde::{Deserialize, Serialize};

use super::{Change, Store, Stored};
use crate::answers::{Remembered, StreamId};
use crate::{Allocation, RegistryError};
use wal::{Appended, Fill, Wal, WalOptions};

/// Bumped when the stored encoding of a record or of a commit changes.
const FORMAT: u8 = 1;
const RECORD_PREFIX: &[u8] = b"a/";
/// Remembered answers, one per request stream (`s/<32 hex digits>`).
const ANSWER_PREFIX: &[u8] = b"s/";
/// The last commit sled holds and the next fence number, 8 bytes each.
const HEAD_KEY: &[u8] = b"m/head";
/// The file sled 0.34 keeps its log (and so every write) in.
const SLED_LOG_FILE: &str = "db";
/// The directory sled 0.34 writes large pages to, one file each.
const SLED_BLOBS_DIR: &str = "blobs";
/// sled's page cache; the registry's own state lives in memory anyway.
const CACHE_BYTES: u64 = 16 << 20;
/// Size of the write-ahead log. Commits are a few hundred bytes, so a lap
/// holds thousands of them between two checkpoints of sled, and this
/// bounds what a restart replays. Zero-filled once, when the registry's
/// data directory is created.
pub const WAL_BYTES: u64 = 4 << 20;

pub struct SledStore {
    db: sled::Db,
    sled_dir: std::path::PathBuf,
    /// sled's log file, synced by us after sled's flush.
    sled_log: File,
    wal: Wal,
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

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, replays what the
    /// write-ahead log holds beyond sled, and makes all of it durable.
    pub fn open(dir: &Path) -> Result<SledStore, RegistryError> {
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open()
            .map_err(|e| RegistryError::Store(format!("cannot open {}: {e}", sled_dir.display())))?;
        let log_path = sled_dir.join(SLED_LOG_FILE);
        let sled_log = File::open(&log_path)
            .map_err(|e| RegistryError::Store(format!("cannot open sled's log {}: {e}", log_path.display())))?;
        let wal_path = dir.join("wal");
        let (wal, recovered) = Wal::open(&wal_path, WalOptions { bytes: WAL_BYTES, fill: Fill::Zeros })?;
        let head = read_head(&db)?;
        if head.seq < recovered.stored_through {
            return Err(RegistryError::Corrupt(format!(
                "sled holds commits up to {} but {} says it held up to {}",
                head.seq,
                wal_path.display(),
                recovered.stored_through
            )));
        }
        let damaged = recovered.damage.is_some();
        let pending = commits_to_replay(&wal_path, head.seq, recovered)?;
        let mut store = SledStore { db, sled_dir, sled_log, wal, head, unsettled: None };
        // The log holds these until the checkpoint below: plain writes.
        for entry in pending {
            let commit: Commit = decode_body(&format!("commit {} in the write-ahead log", entry.seq), &entry.payload)?;
            store.apply(&commit, entry.seq, Atomicity::Logged)?;
        }
        // With an empty lap sled holds nothing the header does not vouch
        // for already; otherwise what a killed daemon left in the page
        // cache, and what was just replayed, must be made durable before a
        // new lap can overwrite the entries that hold it.
        // After damage the lap must start again even if nothing was
        // replayed: appends would otherwise land before whole entries of
        // the old lap, which a later open would take for new ones.
        if !store.wal.lap_is_empty() || damaged {
            store.checkpoint()?;
        }
        tracing::info!(last_commit = store.head.seq, "registry store open");
        Ok(store)
    }

    /// Writes one commit's keys to sled (not yet durable), `m/head` last.
    fn apply(&mut self, commit: &Commit, seq: u64, atomicity: Atomicity) -> Result<(), RegistryError> {
        let head = Head { seq, next_fence: commit.next_fence.max(self.head.next_fence) };
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            Vec::with_capacity(commit.puts.len() + commit.deletes.len() + 1);
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
                        Some(value) => self.db.insert(key, value)?,
                        None => self.db.remove(key)?,
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
                self.db.apply_batch(batch)?;
            }
        }
        self.head = head;
        Ok(())
    }

    /// Makes everything written to sled durable, then starts a new lap of
    /// the write-ahead log, whose entries sled now all holds.
    fn checkpoint(&mut self) -> Result<(), RegistryError> {
        self.settle()?;
        self.db.flush()?;
        sync_blobs(&self.sled_dir.join(SLED_BLOBS_DIR))?;
        self.sled_log.sync_data().map_err(|e| RegistryError::Store(format!("fdatasync of sled's log failed: {e}")))?;
        self.wal.stored_through(self.head.seq)?;
        Ok(())
    }
}

impl Drop for SledStore {
    /// A clean close leaves nothing to replay. If this fails, the next open
    /// replays the log instead, so it only logs.
    fn drop(&mut self) {
        if self.unsettled.is_none() && self.wal.lap_is_empty() {
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

/// sled never syncs the files it writes large pages to; a checkpoint must.
fn sync_blobs(dir: &Path) -> Result<(), RegistryError> {
    let failed =
        |e: std::io::Error| RegistryError::Store(format!("cannot sync sled's blobs in {}: {e}", dir.display()));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    for entry in entries {
        let entry = entry.map_err(failed)?;
        match File::open(entry.path()).and_then(|f| f.sync_data()) {
            // sled deletes blobs it no longer needs, any time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other.map_err(failed)?,
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(failed)
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

/// The commits the write-ahead log holds beyond sled (which holds commits
/// up to `stored`), in order, each one after the other. After a damaged
/// entry, the whole entries found beyond it count only if nothing is
/// missing in between (sled may hold the damaged commit already); a commit
/// that was acknowledged and is in neither place makes the store refuse to
/// open, naming it, before anything is written.
fn commits_to_replay(
    wal_path: &Path,
    stored: u64,
    recovered: wal::Recovered,
) -> Result<Vec<wal::Entry>, RegistryError> {
    let mut have = stored;
    let mut pending = Vec::new();
    for entry in recovered.entries {
        if entry.seq <= have {
            continue;
        }
        if entry.seq != have + 1 {
            return Err(RegistryError::Corrupt(format!(
                "{} resumes at commit {} but sled holds commits up to {}",
                wal_path.display(),
                entry.seq,
                have
            )));
        }
        have = entry.seq;
        pending.push(entry);
    }
    let Some(damage) = recovered.damage else { return Ok(pending) };
    let last_later = damage.later.last().map_or(have, |e| e.seq);
    for entry in damage.later {
        if entry.seq <= have {
            continue;
        }
        if entry.seq != have + 1 {
            return Err(RegistryError::Corrupt(format!(
                "the write-ahead log {} is damaged at byte {}: commit {} is in neither the log nor sled (sled holds commits up to {stored}; whole commits up to {last_later} follow the damage)",
                wal_path.display(),
                damage.offset,
                have + 1,
            )));
        }
        have = entry.seq;
        pending.push(entry);
    }
    tracing::warn!(
        offset = damage.offset,
        "a damaged write-ahead entry held only commits sled has; replaying the whole ones after it"
    );
    Ok(pending)
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
        for item in self.db.scan_prefix(RECORD_PREFIX) {
            let (key, value) = item?;
            records.push(decode_record(&key, &value)?);
        }
        let mut answers = Vec::new();
        for item in self.db.scan_prefix(ANSWER_PREFIX) {
            let (key, value) = item?;
            answers.push(decode_answer(&key, &value)?);
        }
        let head = read_head(&self.db)?;
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
        match self.wal.append(seq, &entry)? {
            Appended::Durable => {
                self.unsettled = Some((commit, seq));
                Ok(())
            }
            Appended::Full => {
                self.apply(&commit, seq, Atomicity::Batch)?;
                self.checkpoint()
            }
        }
    }

    fn settle(&mut self) -> Result<(), RegistryError> {
        match self.unsettled.take() {
            Some((commit, seq)) => self.apply(&commit, seq, Atomicity::Logged),
            None => Ok(()),
        }
    }
}
