//! The session log proper: sled storage, group commit, readers.
//!
//! Appenders enqueue their batch under one mutex; whoever finds no leader
//! becomes it, assigns sequence numbers and chain links to every queued
//! batch (still under the mutex), writes them all as one write-ahead entry
//! (one `fdatasync`) and wakes the others. So one sync serves many batches,
//! and nobody returns before the sync that covers their batch has returned.
//!
//! Readers only see records up to the last durable one (`durable_seq`):
//! nothing that a crash could still take back is ever shown.
//!
//! Durable means: in the write-ahead log (`wal` in the log directory, the
//! `wal` crate), one `pwrite` and one `fdatasync` per group. The records
//! then go to sled without a flush; sled is flushed and synced only when a
//! lap of the write-ahead log is full, on `checkpoint`, and when the log is
//! opened or closed with anything in the lap, and the write-ahead log then
//! starts a new lap. Opening
//! puts back into sled whatever the write-ahead log holds beyond it (sled
//! recovers a prefix of what it was given, so that is a tail). All of that
//! is the commit path the stores share (`crates/durable`); this module says
//! what a write-ahead entry holds (a group's records) and maps the path's
//! refusals to `log.corrupt`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug_span, info_span};

use crate::chain::Chain;
use crate::envelope::{key, seq_of, Envelope, Hash, GENESIS, MAX_OVERHEAD};
use crate::event::{decode_body, encode_body};
use crate::limits::{
    DEFAULT_CHECKPOINT_EVERY, DEFAULT_WAL_BYTES, MAX_BATCH_EVENTS, MAX_RECORD_BYTES, OPEN_LOCK_WAIT_MS,
};
use crate::{checkpoint, trees, Event, LogError, PodState, Record};
use durable::{Durable, DurableError, Fill, Logged, Options, WalError, WalOptions};

/// sled's page cache per Pod. Small: a log is mostly written, and read back
/// in order once at resume.
const CACHE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Records between automatic checkpoints; 0 turns them off.
    pub checkpoint_every: u64,
    /// Milliseconds since the Unix epoch. Injectable so that tests and
    /// snapshots get fixed timestamps.
    pub clock: fn() -> u64,
    /// Size of the write-ahead file when it is created (an existing one
    /// keeps its size), within `wal::MIN_BYTES..=wal::MAX_BYTES`.
    pub wal_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions { checkpoint_every: DEFAULT_CHECKPOINT_EVERY, clock: system_clock_ms, wal_bytes: DEFAULT_WAL_BYTES }
    }
}

fn system_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The sequence numbers an acknowledged batch got: `first_seq..=last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    pub first_seq: u64,
    pub last_seq: u64,
}

/// How well group commit is doing since this handle was opened: each group
/// is one write-ahead entry and one `fdatasync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub groups: u64,
    pub batches: u64,
}

/// What `verify` walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records 1..=last_seq are all present, intact and chained.
    pub last_seq: u64,
    /// Checkpoints that match the full fold at their record.
    pub checkpoints: Vec<u64>,
    /// Checkpoints that fail their own checks; replay skips them.
    pub ignored_checkpoints: Vec<u64>,
}

pub struct SessionLog {
    records: sled::Tree,
    checkpoints: sled::Tree,
    /// sled behind the write-ahead file. Used by the leader only (and by
    /// `open` and `drop`); the mutex is never contended.
    durable: Mutex<Durable>,
    options: LogOptions,
    commit: Mutex<Commit>,
    /// Signalled whenever a leader finishes or `durable_seq` moves.
    changed: Condvar,
}

struct Commit {
    queue: Vec<Pending>,
    leader: bool,
    next_ticket: u64,
    done: HashMap<u64, Result<AppendReceipt, LogError>>,
    durable_seq: u64,
    /// Loaded by the first leader, owned by the current leader while it
    /// works, `None` until then.
    head: Option<Head>,
    /// Batches in the last group, and how long its flush took: the next
    /// leader waits (at most one flush) for that many to gather.
    last_group: usize,
    stats: CommitStats,
    last_sync: Duration,
    /// Set when a write or flush failed: what is on disk is then unknown, so
    /// this handle refuses everything and the log must be reopened.
    failed: Option<String>,
}

struct Pending {
    ticket: u64,
    events: Vec<Event>,
    bodies: Vec<Vec<u8>>,
}

/// What the next append builds on.
struct Head {
    state: PodState,
    /// Checksum of the last record.
    hash: Hash,
    timestamp_ms: u64,
    checkpoint_seq: u64,
}

/// The result of folding stored records.
struct Folded {
    state: PodState,
    hash: Hash,
    timestamp_ms: u64,
    checkpoint_seq: u64,
}

impl SessionLog {
    /// Opens (creating if needed) the log stored in `dir`. Does not read the
    /// records: a corrupt log still opens, so that `verify` can name the bad
    /// record; `append` and `replay` refuse it.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<SessionLog, LogError> {
        let dir = dir.as_ref();
        let _span = info_span!("session_log.open", dir = %dir.display()).entered();
        std::fs::create_dir_all(dir).map_err(|e| LogError::storage("create the log directory", e))?;
        let durable_options = Options {
            sled_dir: dir.to_path_buf(),
            wal_path: dir.join("wal"),
            wal: WalOptions { bytes: options.wal_bytes, fill: Fill::Reserve },
            cache_bytes: CACHE_BYTES,
            mode: sled::Mode::HighThroughput,
            lock_wait: Duration::from_millis(OPEN_LOCK_WAIT_MS),
        };
        // What a killed process left in the page cache (sled's, or just
        // restored) is made durable before a new lap can overwrite the
        // entries that hold it; with an empty lap sled holds nothing the
        // header does not already vouch for: a clean open writes nothing.
        let (durable, trees, durable_seq) = Durable::open(&durable_options, |db| {
            let records = db.open_tree(trees::RECORDS).map_err(|e| sled_error("open the records", e))?;
            let checkpoints = db.open_tree(trees::CHECKPOINTS).map_err(|e| sled_error("open the checkpoints", e))?;
            Ok(LogTrees { records, checkpoints })
        })?;
        let LogTrees { records, checkpoints } = trees;
        let log = SessionLog {
            records,
            checkpoints,
            durable: Mutex::new(durable),
            options,
            commit: Mutex::new(Commit {
                queue: Vec::new(),
                leader: false,
                next_ticket: 0,
                done: HashMap::new(),
                durable_seq: 0,
                head: None,
                last_group: 0,
                stats: CommitStats::default(),
                last_sync: Duration::ZERO,
                failed: None,
            }),
            changed: Condvar::new(),
        };
        log.lock().durable_seq = durable_seq;
        Ok(log)
    }

    /// Appends `batch` as consecutive records and returns once they are all
    /// durable. All or nothing: on error none of them is in the log.
    pub fn append(&self, batch: Vec<Event>) -> Result<AppendReceipt, LogError> {
        let _span = debug_span!("session_log.append", events = batch.len()).entered();
        let bodies = prepare(&batch)?;
        let mut g = self.lock();
        if let Some(cause) = &g.failed {
            return Err(LogError::Failed { cause: cause.clone() });
        }
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        g.queue.push(Pending { ticket, events: batch, bodies });
        let mut spin_until: Option<Instant> = None;
        loop {
            if let Some(result) = g.done.remove(&ticket) {
                return result;
            }
            if !g.leader {
                g = self.commit_group(g);
                continue;
            }
            // A follower expects its answer within about one commit; it
            // polls that long (yielding) before sleeping, since a sleeping
            // thread takes tens of microseconds to wake on a virtual machine.
            let until = *spin_until.get_or_insert_with(|| Instant::now() + g.last_sync + g.last_sync / 2);
            if Instant::now() < until {
                drop(g);
                std::thread::yield_now();
                g = self.lock();
            } else {
                g = self.wait(g);
            }
        }
    }

    /// Leads one group commit: everything queued now becomes one
    /// write-ahead entry, one `fdatasync`. Called with no leader; answers
    /// every queued ticket.
    fn commit_group<'a>(&'a self, mut g: MutexGuard<'a, Commit>) -> MutexGuard<'a, Commit> {
        g.leader = true;
        let head = match g.head.take() {
            Some(head) => Ok(head),
            None => {
                drop(g);
                let head = self.load_head();
                g = self.lock();
                head
            }
        };
        let mut head = match head {
            Ok(head) => head,
            Err(e) => {
                for p in std::mem::take(&mut g.queue) {
                    g.done.insert(p.ticket, Err(e.clone()));
                }
                return self.step_down(g);
            }
        };
        g = self.gather(g);
        let group = std::mem::take(&mut g.queue);
        g.last_group = group.len();
        g.stats.groups += 1;
        g.stats.batches += group.len() as u64;
        let (batch, answers, sealed) = seal_group(&mut head, group, (self.options.clock)());
        drop(g);
        let started = Instant::now();
        let written = match sealed {
            Err(e) => Err(e),
            Ok(0) => Ok(()),
            Ok(_) => self.write_group(batch, &mut head),
        };
        let mut g = self.lock();
        g.last_sync = started.elapsed();
        match written {
            Ok(()) => {
                g.durable_seq = head.state.last_seq;
                g.head = Some(head);
                g.done.extend(answers);
            }
            Err(e) => {
                tracing::error!(error = %e, "session-log group commit failed; the handle is now unusable");
                g.failed = Some(e.to_string());
                g.done.extend(answers.into_iter().map(|(t, a)| (t, a.and(Err(e.clone())))));
            }
        }
        self.step_down(g)
    }

    /// Appenders answered by one commit come back at about the same time;
    /// the first of them would otherwise lead a group of one while the rest
    /// queue behind it. So a leader waits for as many batches as the last
    /// group had, but never longer than the last flush took: a lone appender
    /// (last group of one) never waits. It polls, yielding the CPU to the
    /// appenders it waits for, rather than sleeping on a timed wait: arming
    /// and cancelling the kernel timer of a timed wait costs tens of
    /// microseconds on a virtual machine, a good part of a commit; the poll
    /// lasts at most one commit's time and only under concurrency.
    fn gather<'a>(&'a self, mut g: MutexGuard<'a, Commit>) -> MutexGuard<'a, Commit> {
        let deadline = Instant::now() + g.last_sync;
        while g.queue.len() < g.last_group {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            drop(g);
            std::thread::yield_now();
            g = self.lock();
        }
        g
    }

    fn step_down<'a>(&'a self, mut g: MutexGuard<'a, Commit>) -> MutexGuard<'a, Commit> {
        g.leader = false;
        self.changed.notify_all();
        g
    }

    /// Makes the group durable in the write-ahead log, then hands it to
    /// sled. A group that does not fit in the log's lap goes to sled as
    /// atomic batches and sled is made durable instead, which also starts a
    /// new lap.
    fn write_group(&self, batches: Vec<SealedBatch>, head: &mut Head) -> Result<(), LogError> {
        fail::fail_point!("log.before_write");
        let last_seq = head.state.last_seq;
        // A group past the lap goes to sled at once, each batch atomic,
        // with its due checkpoint, before sled is made durable.
        let logged = self.durable().commit(last_seq, &encode_wal_entry(&batches), |_| {
            for batch in &batches {
                write_batch(&self.records, batch)?;
            }
            self.write_due_checkpoint(head)
        })?;
        fail::fail_point!("log.before_flush");
        if logged == Logged::Ahead {
            for (k, v) in batches.into_iter().flatten() {
                self.records.insert(k, v).map_err(|e| LogError::storage("write records", e))?;
            }
            self.write_due_checkpoint(head)?;
        }
        fail::fail_point!("log.after_flush");
        Ok(())
    }

    fn write_due_checkpoint(&self, head: &mut Head) -> Result<(), LogError> {
        let every = self.options.checkpoint_every;
        if every > 0 && head.state.last_seq / every > head.checkpoint_seq / every {
            checkpoint::write(&self.checkpoints, &head.state, head.hash)?;
            head.checkpoint_seq = head.state.last_seq;
        }
        Ok(())
    }

    /// Makes sled durable, holding every record up to `last_seq`, and starts
    /// a new lap of the write-ahead log.
    fn store_all(&self, last_seq: u64) -> Result<(), LogError> {
        self.durable().checkpoint(last_seq).map_err(LogError::from)
    }

    fn durable(&self) -> MutexGuard<'_, Durable> {
        self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a checkpoint of the state as of the last record now (unless
    /// the latest one already is) and returns its sequence number.
    pub fn checkpoint(&self) -> Result<u64, LogError> {
        let _span = info_span!("session_log.checkpoint").entered();
        let mut g = self.lock();
        while g.leader {
            g = self.wait(g);
        }
        if let Some(cause) = &g.failed {
            return Err(LogError::Failed { cause: cause.clone() });
        }
        g.leader = true;
        let head = g.head.take();
        drop(g);
        let loaded = match head {
            Some(head) => Ok(head),
            None => self.load_head(),
        };
        let mut head = match loaded {
            Ok(head) => head,
            Err(e) => {
                drop(self.step_down(self.lock()));
                return Err(e);
            }
        };
        let seq = head.state.last_seq;
        let written = if seq == 0 || head.checkpoint_seq == seq {
            Ok(())
        } else {
            checkpoint::write(&self.checkpoints, &head.state, head.hash).and_then(|()| self.store_all(seq))
        };
        let mut g = self.lock();
        let result = match written {
            Ok(()) => {
                head.checkpoint_seq = seq;
                g.head = Some(head);
                Ok(seq)
            }
            Err(e) => {
                g.failed = Some(e.to_string());
                Err(e)
            }
        };
        drop(self.step_down(g));
        result
    }

    /// Folds the log into the Pod's state: the newest usable checkpoint plus
    /// the records after it. Refuses (naming the record) when a record it
    /// reads is corrupt or the history is impossible.
    pub fn replay(&self) -> Result<PodState, LogError> {
        let _span = info_span!("session_log.replay").entered();
        self.fold(self.last_seq()).map(|f| f.state)
    }

    fn fold(&self, bound: u64) -> Result<Folded, LogError> {
        let start = checkpoint::latest(&self.checkpoints, &self.records, bound)?;
        let checkpoint_seq = start.as_ref().map_or(0, |s| s.state.last_seq);
        let (mut state, mut hash, mut timestamp_ms) = match start {
            Some(s) => (s.state, s.record_hash, s.timestamp_ms),
            None => (PodState::new(), GENESIS, 0),
        };
        for env in Chain::new(&self.records, state.last_seq + 1, Some(hash), bound) {
            let env = env?;
            let event = decode_body(env.seq, &env.body)?;
            state.apply(env.seq, &event).map_err(|source| LogError::ImpossibleHistory { source })?;
            hash = env.checksum;
            timestamp_ms = env.timestamp_ms;
        }
        if state.last_seq != bound {
            return Err(LogError::MissingRecord { seq: state.last_seq + 1 });
        }
        Ok(Folded { state, hash, timestamp_ms, checkpoint_seq })
    }

    fn load_head(&self) -> Result<Head, LogError> {
        let _span = info_span!("session_log.load_head").entered();
        let f = self.fold(self.last_seq())?;
        Ok(Head { state: f.state, hash: f.hash, timestamp_ms: f.timestamp_ms, checkpoint_seq: f.checkpoint_seq })
    }

    /// The durable records from `seq` on (record 1 if `seq` is 0), as far as
    /// they were durable when this was called. The iterator checks every
    /// record and stops after the first error; the first record's link to
    /// its predecessor is not checked (`verify` does that).
    pub fn read_from(&self, seq: u64) -> RecordIter {
        let first = seq.max(1);
        let prev = (first == 1).then_some(GENESIS);
        RecordIter { chain: Chain::new(&self.records, first, prev, self.last_seq()), failed: false }
    }

    pub fn commit_stats(&self) -> CommitStats {
        self.lock().stats
    }

    /// The last durable sequence number; 0 for an empty log.
    pub fn last_seq(&self) -> u64 {
        self.lock().durable_seq
    }

    /// Waits until a record after `after` is durable (`true`) or `timeout`
    /// passed (`false`). For `pod log --follow`.
    pub fn wait_for_seq(&self, after: u64, timeout: Duration) -> Result<bool, LogError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if g.durable_seq > after {
                return Ok(true);
            }
            if let Some(cause) = &g.failed {
                return Err(LogError::Failed { cause: cause.clone() });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            g = self.changed.wait_timeout(g, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Walks the whole log: every record present, intact, linked, and the
    /// history possible; every checkpoint checked against the full fold.
    pub fn verify(&self) -> Result<VerifyReport, LogError> {
        let _span = info_span!("session_log.verify").entered();
        let bound = self.last_seq();
        let mut stored = BTreeMap::new();
        for entry in self.checkpoints.iter() {
            let (k, v) = entry.map_err(|e| LogError::storage("read a checkpoint", e))?;
            stored.insert(k.to_vec(), checkpoint::decode(&k, &v));
        }
        let mut report = VerifyReport { last_seq: bound, checkpoints: Vec::new(), ignored_checkpoints: Vec::new() };
        let mut state = PodState::new();
        for env in Chain::new(&self.records, 1, Some(GENESIS), bound) {
            let env = env?;
            let event = decode_body(env.seq, &env.body)?;
            state.apply(env.seq, &event).map_err(|source| LogError::ImpossibleHistory { source })?;
            match stored.remove(key(env.seq).as_slice()) {
                Some(Ok((_, cp))) if cp.record_hash == env.checksum => {
                    if cp.state != state {
                        return Err(LogError::CheckpointMismatch { seq: env.seq });
                    }
                    report.checkpoints.push(env.seq);
                }
                Some(_) => report.ignored_checkpoints.push(env.seq),
                None => {}
            }
        }
        if state.last_seq != bound {
            return Err(LogError::MissingRecord { seq: state.last_seq + 1 });
        }
        report.ignored_checkpoints.extend(stored.keys().map(|k| seq_of(k).unwrap_or(0)));
        report.ignored_checkpoints.sort_unstable();
        Ok(report)
    }

    fn lock(&self) -> MutexGuard<'_, Commit> {
        // Nothing panics while holding the guard except the invariant asserts
        // of `seal_group`; going on is no worse than refusing every later call.
        self.commit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&'a self, g: MutexGuard<'a, Commit>) -> MutexGuard<'a, Commit> {
        self.changed.wait(g).unwrap_or_else(PoisonError::into_inner)
    }
}

/// Checks a batch against the limits and encodes its bodies, before any
/// lock is taken or sequence number assigned.
fn prepare(batch: &[Event]) -> Result<Vec<Vec<u8>>, LogError> {
    if batch.is_empty() {
        return Err(LogError::EmptyBatch);
    }
    if batch.len() > MAX_BATCH_EVENTS {
        return Err(LogError::BatchTooLarge { events: batch.len(), max: MAX_BATCH_EVENTS });
    }
    batch
        .iter()
        .enumerate()
        .map(|(index, event)| {
            if let Event::Unknown { kind } = event {
                return Err(LogError::UnknownEvent { index, kind: kind.clone() });
            }
            let body = encode_body(event)?;
            let bytes = body.len() + MAX_OVERHEAD;
            if bytes > MAX_RECORD_BYTES {
                return Err(LogError::RecordTooLarge { index, bytes, max: MAX_RECORD_BYTES });
            }
            Ok(body)
        })
        .collect()
}

type Answers = Vec<(u64, Result<AppendReceipt, LogError>)>;

/// Assigns sequence numbers, timestamps and chain links to a group, folding
/// each batch into `head` first: a batch the fold refuses is answered with
/// the refusal and takes no sequence numbers. Returns each batch's records, the
/// answers, and how many records were sealed.
fn seal_group(
    head: &mut Head,
    group: Vec<Pending>,
    now_ms: u64,
) -> (Vec<SealedBatch>, Answers, Result<usize, LogError>) {
    // Timestamps never go backwards along the chain, whatever the clock does.
    let timestamp_ms = now_ms.max(head.timestamp_ms);
    let mut batches = Vec::with_capacity(group.len());
    let mut answers = Vec::with_capacity(group.len());
    let mut sealed = 0;
    for p in group {
        let first_seq = head.state.last_seq + 1;
        if let Err(source) = head.state.apply_batch(first_seq, &p.events) {
            answers.push((p.ticket, Err(LogError::Refused { source })));
            continue;
        }
        let mut batch = Vec::with_capacity(p.bodies.len());
        for (seq, body) in (first_seq..).zip(p.bodies) {
            let env = Envelope::seal(seq, timestamp_ms, head.hash, body);
            let bytes = match env.encode() {
                Ok(bytes) => bytes,
                Err(e) => return (batches, answers, Err(e)),
            };
            assert!(bytes.len() <= MAX_RECORD_BYTES, "record {seq} outgrew the size checked before sealing");
            batch.push((key(seq), bytes));
            head.hash = env.checksum;
            sealed += 1;
        }
        batches.push(batch);
        assert_eq!(first_seq + p.events.len() as u64 - 1, head.state.last_seq, "fold and seal disagree on seq");
        answers.push((p.ticket, Ok(AppendReceipt { first_seq, last_seq: head.state.last_seq })));
    }
    head.timestamp_ms = timestamp_ms;
    (batches, answers, Ok(sealed))
}

impl Drop for SessionLog {
    /// A clean close leaves nothing to replay. A handle that failed, or a
    /// sync that fails here, leaves the write-ahead log as it is: the next
    /// open replays it. So this only logs.
    fn drop(&mut self) {
        let commit = self.commit.get_mut().unwrap_or_else(PoisonError::into_inner);
        if commit.failed.is_some() {
            return;
        }
        let last_seq = commit.durable_seq;
        let durable = self.durable.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = durable.close(last_seq) {
            tracing::warn!(error = %e, "could not flush the session log on close; the next open replays it");
        }
    }
}

/// The log's trees, as the commit path sees them while it opens.
struct LogTrees {
    records: sled::Tree,
    checkpoints: sled::Tree,
}

impl durable::Records for LogTrees {
    /// A group's records, each with its seq.
    type Commit = Vec<(u64, Vec<u8>)>;
    type Error = LogError;

    fn head(&self, _db: &sled::Db) -> Result<u64, LogError> {
        last_stored_seq(&self.records)
    }

    fn decode(&self, entry: &durable::Entry) -> Result<(u64, Self::Commit), LogError> {
        let records = decode_wal_entry(entry)?;
        let first = records.first().map_or(entry.seq, |(seq, _)| *seq);
        Ok((first, records))
    }

    /// Whole records under their seq: one sled already holds is written
    /// again with the same bytes.
    fn replay(&mut self, _db: &sled::Db, _seq: u64, records: Self::Commit) -> Result<(), LogError> {
        for (seq, bytes) in records {
            self.records
                .insert(key(seq), bytes)
                .map_err(|e| LogError::storage("restore records from the write-ahead log", e))?;
        }
        Ok(())
    }
}

/// The commit path's refusals and failures as the log's own errors: every
/// kind of damage is `log.corrupt`.
impl From<DurableError> for LogError {
    fn from(e: DurableError) -> LogError {
        match e {
            DurableError::Behind { have, durable } => LogError::Truncated { have, durable },
            DurableError::Lost { missing, offset, later, .. } => LogError::WalDamaged { seq: missing, offset, later },
            DurableError::Gap { have, .. } => LogError::MissingRecord { seq: have + 1 },
            DurableError::Wal(e @ WalError::Corrupt { .. }) => {
                LogError::Unreadable { what: "the write-ahead file", message: e.to_string() }
            }
            DurableError::Wal(e) => LogError::storage("write-ahead log", e),
            DurableError::Sled { op, source, .. } => sled_error(op, source),
            DurableError::Io { op, path, source } => LogError::storage(op, format!("{}: {source}", path.display())),
        }
    }
}

/// sled's own word that its files are damaged is `log.corrupt`; other
/// failures are storage errors.
fn sled_error(op: &'static str, e: sled::Error) -> LogError {
    match e {
        sled::Error::Corruption { .. } => LogError::Unreadable { what: "sled's store", message: e.to_string() },
        e => LogError::storage(op, e),
    }
}

fn last_stored_seq(records: &sled::Tree) -> Result<u64, LogError> {
    match records.last().map_err(|e| LogError::storage("read the last record", e))? {
        None => Ok(0),
        Some((k, _)) => seq_of(&k).ok_or(LogError::BadKey { after: 0 }),
    }
}

/// A group's records as one write-ahead entry: `seq: u64 LE | len: u32 LE
/// | record` for each, in order.
fn encode_wal_entry(batches: &[SealedBatch]) -> Vec<u8> {
    let size = batches.iter().flatten().map(|(_, v)| 12 + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (k, v) in batches.iter().flatten() {
        out.extend_from_slice(&u64::from_be_bytes(*k).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn decode_wal_entry(entry: &durable::Entry) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
    let bad = || LogError::storage("read the write-ahead log", format!("entry {} is not a list of records", entry.seq));
    let mut records = Vec::new();
    let mut rest = &entry.payload[..];
    while !rest.is_empty() {
        let (seq, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let (len, tail) = tail.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        let record = tail.get(..len).ok_or_else(bad)?;
        records.push((u64::from_le_bytes(*seq), record.to_vec()));
        rest = &tail[len..];
    }
    Ok(records)
}

/// One appender's records, keyed by sequence number, in order.
type SealedBatch = Vec<([u8; 8], Vec<u8>)>;

/// Writes one appender's records so that a crash keeps all or none of them.
/// A single record is a plain insert: sled recovers a prefix of its log, so
/// one insert is atomic on its own, and a batch would cost a manifest that
/// sled writes and syncs separately (a second disk write per commit).
fn write_batch(records: &sled::Tree, batch: &SealedBatch) -> Result<(), LogError> {
    let written = match batch.as_slice() {
        [(k, v)] => records.insert(k, v.as_slice()).map(drop),
        batch => {
            let mut many = sled::Batch::default();
            for (k, v) in batch {
                many.insert(k, v.as_slice());
            }
            records.apply_batch(many)
        }
    };
    written.map_err(|e| LogError::storage("write records", e))
}

/// The iterator of [`SessionLog::read_from`].
pub struct RecordIter {
    chain: Chain,
    failed: bool,
}

impl Iterator for RecordIter {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.chain.next()?.and_then(|env| {
            let event = decode_body(env.seq, &env.body)?;
            Ok(Record { seq: env.seq, timestamp_ms: env.timestamp_ms, event })
        });
        self.failed = item.is_err();
        Some(item)
    }
}
