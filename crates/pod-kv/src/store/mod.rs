//! The durable store of one layer: the pure [`Core`] on the shared commit
//! path (`crates/durable`), in the lead Pod's data folder (`kv/`).
//!
//! Why it exists: the core decides, this makes its decisions durable
//! before anyone hears of them. [`KvStore::commit`] plans a group of jobs
//! (requests and events) in order, each against the state the ones before
//! it left, applies them to memory, writes the group as one write-ahead
//! entry (one `fdatasync`), and only then returns the outcomes and the
//! wakes. Reads are jobs too (with nothing to write), so nobody reads what
//! is not durable. How jobs are gathered into groups, how waiting callers
//! are held and when time ticks is the shell's (the Pod process).
//!
//! The layer lives in memory (the core); sled is its checkpoint, not its
//! home. A commit costs its write-ahead entry and nothing else: the groups
//! of the current lap are kept in memory ([`KvStore`]'s `pending`, never
//! more than the lap's [`WAL_BYTES`] of entries hold) and written to sled
//! as one atomic batch only at a checkpoint (a full lap, a clean close).
//! After a crash the open replays the lap over the last checkpoint, so
//! every acknowledged commit is back (`crates/durable`).
//!
//! Files, under the folder given to [`KvStore::open`] (`data/<pod>/kv/`):
//! `sled/` and `wal` (4 MiB, blocks reserved), the folder 0700 and every
//! file 0600 (sled's later files inherit the folder's protection and the
//! Pod process's private umask). Layout in [`records`]. The KV data is not
//! part of the Pod's scope state, its session log or its checkpoints.
//!
//! Retries: a mutation may carry a [`RequestId`] (a client id the caller
//! picks and a sequence number that grows per client). Its outcome is
//! remembered per (caller, client) in the same commit, so a retry of the
//! same seq after a lost answer gets the same outcome and changes nothing
//! (a set is not written twice); an older seq is refused
//! (`kv.request_stale`). Each caller keeps at most
//! [`MAX_STREAMS_PER_CALLER`] clients; a new one replaces that caller's
//! least recently used, never another caller's (so filling the table is no
//! channel between members). A refused mutation plans nothing, and a read
//! changes nothing: neither is remembered.
//!
//! Time: lease deadlines keep their boot id (`/proc/sys/kernel/random/boot_id`)
//! and both clocks ([`now`]): expiry survives a restart and a reboot.

pub mod now;
pub mod records;

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::clock::Now;
use crate::error::KvError;
use crate::ops::{Core, Event, Op, Outcome, Wake};
use crate::state::Layer;
use durable::{Durable, Fill, Logged, Options, WalOptions};
use records::{Group, Remembered, Stream};

/// Size of the write-ahead file: the largest group (a value of 1 MiB and
/// its key, with room) fits, and a lap holds thousands of small commits
/// between two checkpoints of sled.
pub const WAL_BYTES: u64 = 4 << 20;
/// sled's page cache; the layer lives in memory anyway.
const CACHE_BYTES: u64 = 8 << 20;
/// Request streams remembered per caller.
pub const MAX_STREAMS_PER_CALLER: usize = 16;

/// A mutation's place in its client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
}

/// One thing a group commit plans.
#[derive(Debug, Clone)]
pub enum Job {
    Request { caller: Caller, op: Op, id: Option<RequestId> },
    Event(Event),
}

/// What a group commit answers, once durable.
#[derive(Debug, Default)]
pub struct Answered {
    /// One per job, in order (an event's is `Ok(None)`).
    pub answers: Vec<Result<Option<Outcome>, KvError>>,
    /// Waiting callers the group answers.
    pub wakes: Vec<Wake>,
}

/// Where a group is planned: the commit it becomes, and its moment.
struct At<'a> {
    seq: u64,
    now: &'a Now,
}

pub struct KvStore {
    durable: Durable,
    core: Core,
    head: u64,
    streams: BTreeMap<Stream, Remembered>,
    /// The groups of this lap (durable in the write-ahead file), in order,
    /// written to sled at the next checkpoint.
    pending: Vec<Group>,
    /// Set when a write failed: memory is then ahead of the disk, and this
    /// handle refuses everything (a restart of the store reloads).
    failed: Option<String>,
}

impl KvStore {
    /// Opens (creating if needed) the store in `dir`, rebuilds the layer
    /// from sled and the write-ahead file, and commits [`Event::Rebase`]
    /// (deadlines into this boot, leases that passed meanwhile freed).
    /// The shell then reports the parties that are gone
    /// ([`Core::parties`], [`Event::HolderGone`]).
    pub fn open(dir: &Path, now: &Now) -> Result<KvStore, KvError> {
        let _span = tracing::info_span!("kv.open", dir = %dir.display()).entered();
        private_dir(dir)?;
        let options = Options {
            sled_dir: dir.join("sled"),
            wal_path: dir.join("wal"),
            wal: WalOptions { bytes: WAL_BYTES, fill: Fill::Reserve },
            cache_bytes: CACHE_BYTES,
            mode: sled::Mode::HighThroughput,
            lock_wait: Duration::from_secs(2),
        };
        let (durable, _, head) = Durable::open(&options, |_| Ok(records::Replay))?;
        private_files(dir)?;
        let (stored, answers) = records::load(durable.db())?;
        let core = Core::new(Layer::restore(stored)?);
        let streams = answers.into_iter().collect();
        let mut store = KvStore { durable, core, head, streams, pending: Vec::new(), failed: None };
        store.commit(&[Job::Event(Event::Rebase)], now)?;
        Ok(store)
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The last durable commit.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Plans `jobs` in order, makes them durable as one entry, and returns
    /// their answers and the wakes. A job's refusal is its own answer; an
    /// error of the store (`kv.storage`, `kv.corrupt`) fails the group and
    /// this handle.
    pub fn commit(&mut self, jobs: &[Job], now: &Now) -> Result<Answered, KvError> {
        if let Some(cause) = &self.failed {
            return Err(KvError::Storage(format!("an earlier write failed ({cause}); the store must be reopened")));
        }
        let seq = self.head + 1;
        let mut group = Group::default();
        let mut answered = Answered::default();
        for job in jobs {
            let answer = match job {
                Job::Event(event) => {
                    let plan = self.core.plan_event(event, now);
                    self.core.apply(&plan);
                    answered.wakes.extend(plan.wakes.iter().cloned());
                    group.commits.push(plan.commit);
                    Ok(None)
                }
                Job::Request { caller, op, id } => {
                    let _span = tracing::debug_span!("kv.request", caller = %caller, op = op_name(op)).entered();
                    let at = At { seq, now };
                    self.request(caller, op, *id, &at, &mut group, &mut answered.wakes).map(Some)
                }
            };
            answered.answers.push(answer);
        }
        if group.is_empty() {
            return Ok(answered);
        }
        if let Err(e) = self.write(group, seq) {
            self.failed = Some(e.to_string());
            tracing::error!(error = %e, "kv commit failed; the store refuses everything until reopened");
            return Err(e);
        }
        Ok(answered)
    }

    fn request(
        &mut self,
        caller: &Caller,
        op: &Op,
        id: Option<RequestId>,
        at: &At<'_>,
        group: &mut Group,
        wakes: &mut Vec<Wake>,
    ) -> Result<Outcome, KvError> {
        let stream = id.map(|id| (Stream { caller: caller_name(caller), client: id.client }, id.seq));
        if let Some((stream, request)) = &stream {
            if let Some(last) = self.streams.get(stream) {
                if last.seq == *request {
                    return Ok(last.outcome.clone());
                }
                if last.seq > *request {
                    return Err(KvError::RequestStale { seq: *request, last: last.seq });
                }
            }
        }
        let (plan, outcome) = self.core.plan(caller, op, at.now)?;
        self.core.apply(&plan);
        wakes.extend(plan.wakes.iter().cloned());
        let changed = !plan.commit.is_empty();
        group.commits.push(plan.commit);
        if let (Some((stream, request)), true) = (stream, changed) {
            self.remember(stream, request, &outcome, at.seq, group);
        }
        Ok(outcome)
    }

    /// Records a stream's answer in this group; past the caller's bound,
    /// forgets its least recently used stream.
    fn remember(&mut self, stream: Stream, request: u64, outcome: &Outcome, seq: u64, group: &mut Group) {
        if !self.streams.contains_key(&stream) {
            let own = self.streams.iter().filter(|(s, _)| s.caller == stream.caller);
            if own.clone().count() >= MAX_STREAMS_PER_CALLER {
                let oldest = own.min_by_key(|(_, r)| r.used_at).map(|(s, _)| s.clone());
                if let Some(oldest) = oldest {
                    self.streams.remove(&oldest);
                    group.answers.retain(|(s, _)| s != &oldest);
                    group.answers.push((oldest, None));
                }
            }
        }
        let remembered = Remembered { seq: request, outcome: outcome.clone(), used_at: seq };
        self.streams.insert(stream.clone(), remembered.clone());
        group.answers.retain(|(s, _)| s != &stream);
        group.answers.push((stream, Some(remembered)));
    }

    /// Makes `group` durable as commit `seq`. If it does not fit in the
    /// lap, the lap's groups and it go to sled as one batch and a
    /// checkpoint follows.
    fn write(&mut self, group: Group, seq: u64) -> Result<(), KvError> {
        let entry = records::encode(&group)?;
        let mut group = Some(group);
        let pending = &mut self.pending;
        let logged = self.durable.commit(seq, &entry, |db| {
            pending.extend(group.take());
            records::write(db, pending, seq)
        })?;
        self.head = seq;
        match logged {
            Logged::Ahead => self.pending.extend(group),
            Logged::Stored => self.pending.clear(),
        }
        Ok(())
    }

    /// The groups of this lap written to sled and made durable there, so
    /// that the next open replays nothing.
    fn close(&mut self) -> Result<(), KvError> {
        if !self.pending.is_empty() {
            records::write(self.durable.db(), &self.pending, self.head)?;
            self.pending.clear();
        }
        self.durable.close(self.head).map_err(KvError::from)
    }
}

impl Drop for KvStore {
    /// A clean close leaves nothing to replay; a failed handle, or a close
    /// that fails, leaves the write-ahead file to the next open.
    fn drop(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "could not checkpoint the kv store on close; the next open replays it");
        }
    }
}

fn caller_name(caller: &Caller) -> String {
    match caller.pod() {
        None => "operator".to_string(),
        Some(pod) => pod.name.to_string(),
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Get { .. } => "get",
        Op::Set { .. } => "set",
        Op::Delete { .. } => "delete",
        Op::List { .. } => "list",
        Op::Wait { .. } => "wait",
        Op::Acquire { .. } => "acquire",
        Op::Renew { .. } => "renew",
        Op::Release { .. } => "release",
        Op::Leases => "leases",
    }
}

fn private_dir(dir: &Path) -> Result<(), KvError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| records::storage(format!("cannot create {}: {e}", dir.display())))
}

/// Owner-only modes on what sled and the write-ahead file created.
fn private_files(dir: &Path) -> Result<(), KvError> {
    let fail = |p: &Path, e: std::io::Error| records::storage(format!("cannot make {} owner-only: {e}", p.display()));
    let sled_dir = dir.join("sled");
    std::fs::set_permissions(&sled_dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| fail(&sled_dir, e))?;
    std::fs::set_permissions(dir.join("wal"), std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(&dir.join("wal"), e))?;
    let entries = std::fs::read_dir(&sled_dir).map_err(|e| fail(&sled_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| fail(&sled_dir, e))?;
        let mode = if entry.file_type().map_err(|e| fail(&entry.path(), e))?.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail(&entry.path(), e))?;
    }
    Ok(())
}
