//! The one commit path of our sled stores (the session log, the registry's
//! embedded table, the coordination store): sled behind the write-ahead
//! file of the `wal` crate.
//!
//! Why it exists: each of these stores must not acknowledge a commit before
//! it is fsynced, and sled 0.34 cannot do that in one disk round trip (its
//! flush ends in `sync_file_range`, which a power loss does not survive, so
//! an `fdatasync` has to follow; it never syncs the files it writes large
//! pages to at all). So a commit is made durable as one write-ahead entry
//! (one `pwrite`, one `fdatasync`) and its records go to sled unflushed;
//! sled itself is made durable only at a checkpoint. Every store did this
//! alike, with its own copy of the subtle parts (what to replay after a
//! crash, when a damaged entry is a lost commit, which of sled's files to
//! sync); this crate is the one copy.
//!
//! What it does, for a store that says what its records are ([`Records`]):
//! - **open**: a lock on sled's directory (an `flock` of the directory
//!   itself), held while the store is open (so the snapshots a killed open
//!   of sled left unfinished, which sled 0.34 would refuse as corruption
//!   forever after, can be removed first),
//!   sled with automatic flushes off, the write-ahead file, the
//!   store's durable head read from sled; a sled behind what the file's
//!   header vouches for is refused ([`DurableError::Behind`]); the entries
//!   beyond the head are decoded (all of them, before anything is written)
//!   and put back into sled; a commit that is in neither place (a gap, or a
//!   damaged entry followed by whole ones) is refused by name
//!   ([`DurableError::Gap`], [`DurableError::Lost`]); and if the lap is not
//!   empty, or was damaged, a checkpoint, since what a killed process left
//!   in the page cache is not durable yet;
//! - **commit** ([`Durable::commit`]): one entry, durable on return; the
//!   store then writes the records to sled, plain writes, whenever it likes
//!   before the next commit (the entry covers them). A commit that does not
//!   fit in the lap is written to sled at once as one atomic batch (by the
//!   store) and followed by a checkpoint;
//! - **checkpoint** ([`Durable::checkpoint`]): sled's flush, `fdatasync` of
//!   its `db` file and of every new file in `blobs/` (and of the directory
//!   when names appeared), then the header's `stored_through`, which starts
//!   a new lap. On open (non-empty lap), on a full lap, and on close
//!   ([`Durable::close`]).
//!
//! What stays with each store: what a record is and how it is keyed and
//! encoded, what a write-ahead entry holds, the fold and its validation,
//! its error codes and messages (each maps [`DurableError`] to its own),
//! the size of its write-ahead file, and how callers are grouped into one
//! commit (the session log's synchronous appenders and the registry's
//! writer lead a group commit each in their own way).
//!
//! Deliberately absent: threads, locks beyond the open lock, buffering, any
//! meaning of records.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wal::{Appended, Recovered, Wal};
pub use wal::{Entry, Fill, WalError, WalOptions};

/// The file sled 0.34 keeps its log (and so every write) in.
const SLED_LOG_FILE: &str = "db";
/// The directory sled 0.34 writes large pages to, one file each.
const SLED_BLOBS_DIR: &str = "blobs";
/// The suffix sled 0.34 gives a snapshot until it is whole.
const SNAPSHOT_IN_PROGRESS: &str = ".generating";

/// Where a store lives and how its files are shaped.
#[derive(Debug, Clone)]
pub struct Options {
    /// sled's directory.
    pub sled_dir: PathBuf,
    /// The write-ahead file.
    pub wal_path: PathBuf,
    /// Shape of a new write-ahead file (an existing one keeps its size).
    pub wal: WalOptions,
    /// sled's page cache.
    pub cache_bytes: u64,
    pub mode: sled::Mode,
    /// How long open waits for sled's file lock, which sled 0.34's
    /// background threads keep a moment after the last handle of the same
    /// process is dropped (a resume in the same process, tests). A store
    /// really open elsewhere still fails, after the wait.
    pub lock_wait: Duration,
}

/// What a store tells the commit path about its records.
pub trait Records {
    /// One write-ahead entry, decoded.
    type Commit;
    type Error: From<DurableError>;

    /// The seq of the last commit whose records sled holds (0: none). The
    /// store writes it (or what it derives from) last in each commit, so
    /// that what sled recovers after a crash holds every commit up to it.
    fn head(&self, db: &sled::Db) -> Result<u64, Self::Error>;

    /// Decodes an entry: the first seq it covers (the last is
    /// `entry.seq`), and what it holds.
    fn decode(&self, entry: &Entry) -> Result<(u64, Self::Commit), Self::Error>;

    /// Puts a commit back into sled at open: plain writes (the entry holds
    /// the commit until the checkpoint that follows), whole records, so a
    /// commit sled holds a prefix of, or all of, comes out the same.
    fn replay(&mut self, db: &sled::Db, seq: u64, commit: Self::Commit) -> Result<(), Self::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("cannot {op} sled's store in {dir}: {source}")]
    Sled { op: &'static str, dir: PathBuf, source: sled::Error },
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Wal(#[from] WalError),
    /// sled holds commits up to `have`, but the write-ahead header says it
    /// was durable through `durable`.
    #[error("sled holds commits up to {have} but the write-ahead file says it held up to {durable}")]
    Behind { have: u64, durable: u64 },
    /// The write-ahead file resumes at `resumes`, past sled's `have`.
    #[error("the write-ahead file resumes at commit {resumes} but sled holds commits up to {have}")]
    Gap { resumes: u64, have: u64 },
    /// A damaged entry (at byte `offset`) held commit `missing`, which sled
    /// lacks (it holds commits up to `stored`); whole entries up to `later`
    /// follow the damage.
    #[error("the write-ahead file is damaged at byte {offset}: commit {missing} is in neither the write-ahead file nor sled (sled holds commits up to {stored}; whole commits up to {later} follow the damage)")]
    Lost { missing: u64, offset: u64, stored: u64, later: u64 },
}

impl DurableError {
    /// Whether what was stored is damaged (as opposed to a failing disk
    /// call): every store reports these as its own "corrupt" code.
    pub fn is_damage(&self) -> bool {
        match self {
            DurableError::Sled { source, .. } => matches!(source, sled::Error::Corruption { .. }),
            DurableError::Io { .. } | DurableError::Wal(WalError::Io { .. }) => false,
            DurableError::Wal(_)
            | DurableError::Behind { .. }
            | DurableError::Gap { .. }
            | DurableError::Lost { .. } => true,
        }
    }
}

/// What [`Durable::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// The entry is durable; the store writes the records to sled
    /// (unflushed) before its next commit.
    Ahead,
    /// The entry did not fit in the lap: the store wrote the records to
    /// sled as one atomic batch, and sled was made durable.
    Stored,
}

pub struct Durable {
    db: sled::Db,
    /// Held (an exclusive `flock`) until the store is dropped, after `db`.
    _open_lock: File,
    sled_dir: PathBuf,
    /// sled's log file, synced by us after sled's own flush.
    db_file: File,
    /// Blob files synced at an earlier checkpoint (sled writes each once).
    synced_blobs: HashSet<OsString>,
    wal: Wal,
}

impl Durable {
    /// Opens (creating if needed) the store, puts back what the write-ahead
    /// file holds beyond sled, and makes that durable. `records` builds the
    /// store's view of its records from the open sled. Returns the store,
    /// that view, and the durable head.
    pub fn open<R: Records>(
        options: &Options,
        records: impl FnOnce(&sled::Db) -> Result<R, R::Error>,
    ) -> Result<(Durable, R, u64), R::Error> {
        let _span = tracing::info_span!("durable.open", dir = %options.sled_dir.display()).entered();
        let open_lock = lock_for_open(options)?;
        clear_dead_snapshots(&options.sled_dir)?;
        let db = open_db(options)?;
        let sled_dir = options.sled_dir.clone();
        let log_path = sled_dir.join(SLED_LOG_FILE);
        let db_file = File::open(&log_path).map_err(io("open sled's log", &log_path))?;
        let mut records = records(&db)?;
        let (wal, recovered) = Wal::open(&options.wal_path, options.wal).map_err(DurableError::from)?;
        // sled may just have created its files; make their names durable
        // (a write-ahead log just created beside them synced that folder
        // already: one fsync fewer in every new store's open).
        let wal_dir = options.wal_path.parent().unwrap_or(Path::new("."));
        if !(wal.was_created() && wal_dir == sled_dir.as_path()) {
            File::open(&sled_dir).and_then(|d| d.sync_all()).map_err(io("sync the directory", &sled_dir))?;
        }
        // A new store's own folder (the one holding its write-ahead file)
        // is a new name in the folder above: made durable too, or a power
        // loss could lose the whole store on a filesystem that does not
        // persist a name with the first fsync of a file below it.
        if let Some(above) = wal_dir.parent().filter(|p| wal.was_created() && !p.as_os_str().is_empty()) {
            File::open(above).and_then(|d| d.sync_all()).map_err(io("sync the directory", above))?;
        }
        let stored = records.head(&db)?;
        if stored < recovered.stored_through {
            return Err(DurableError::Behind { have: stored, durable: recovered.stored_through }.into());
        }
        let damaged = recovered.damage.is_some();
        let pending = to_replay(&records, stored, recovered)?;
        let mut head = stored;
        for (seq, commit) in pending {
            records.replay(&db, seq, commit)?;
            head = seq;
        }
        let mut durable = Durable { db, _open_lock: open_lock, sled_dir, db_file, synced_blobs: HashSet::new(), wal };
        // With an empty lap sled holds nothing the header does not vouch
        // for already; otherwise what a killed process left in the page
        // cache, and what was just put back, must be made durable before a
        // new lap can overwrite the entries that hold it. After damage the
        // lap must start again even if nothing was put back: commits would
        // otherwise land before whole entries of the old lap, which a later
        // open would take for new ones.
        if !durable.wal.lap_is_empty() || damaged {
            durable.checkpoint(head)?;
        }
        Ok((durable, records, head))
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes one commit durable as the write-ahead entry `payload`, whose
    /// seq (the store's head once the commit is in) must follow the last.
    /// Durable on return. If the entry does not fit in the lap, `store`
    /// writes the commit's records to sled as one atomic batch and a
    /// checkpoint follows ([`Logged::Stored`]).
    pub fn commit<E: From<DurableError>>(
        &mut self,
        seq: u64,
        payload: &[u8],
        store: impl FnOnce(&sled::Db) -> Result<(), E>,
    ) -> Result<Logged, E> {
        match self.wal.append(seq, payload).map_err(DurableError::from)? {
            Appended::Durable => Ok(Logged::Ahead),
            Appended::Full => {
                store(&self.db)?;
                self.checkpoint(seq)?;
                Ok(Logged::Stored)
            }
        }
    }

    /// Makes everything written to sled durable (the store has written
    /// every commit through `head`), then starts a new lap of the
    /// write-ahead file, whose entries sled now all holds. sled 0.34's
    /// flush ends in `sync_file_range` on Linux, which flushes neither the
    /// drive's write cache nor the file size, and it never syncs the files
    /// it writes large pages to ("blobs"): both are done here, so that an
    /// acknowledged commit survives a power loss too, not just a kill.
    pub fn checkpoint(&mut self, head: u64) -> Result<(), DurableError> {
        let _span = tracing::debug_span!("durable.checkpoint", head).entered();
        self.db.flush().map_err(|source| DurableError::Sled { op: "flush", dir: self.sled_dir.clone(), source })?;
        self.sync_blobs()?;
        let log_path = self.sled_dir.join(SLED_LOG_FILE);
        self.db_file.sync_data().map_err(io("fdatasync sled's log", &log_path))?;
        self.wal.stored_through(head)?;
        Ok(())
    }

    /// A clean close: a checkpoint if the lap holds anything, so that the
    /// next open replays nothing. A store whose commit failed must not
    /// call it (what is on disk is then unknown; the next open replays).
    pub fn close(&mut self, head: u64) -> Result<(), DurableError> {
        if self.wal.lap_is_empty() {
            return Ok(());
        }
        self.checkpoint(head)
    }

    /// Whether nothing was committed since the last checkpoint.
    pub fn lap_is_empty(&self) -> bool {
        self.wal.lap_is_empty()
    }

    /// Payload bytes the largest entry that fits in an empty lap may have.
    pub fn max_entry(&self) -> u64 {
        self.wal.max_payload()
    }

    fn sync_blobs(&mut self) -> Result<(), DurableError> {
        let dir = self.sled_dir.join(SLED_BLOBS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("list sled's blobs in", &dir)(e)),
        };
        let mut present = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(io("list sled's blobs in", &dir))?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()).and_then(|f| f.sync_data()) {
                    // sled deletes blobs it no longer needs, any time.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    other => other.map_err(io("sync a sled blob in", &dir))?,
                }
            }
            present.insert(name);
        }
        let new = present.iter().any(|n| !self.synced_blobs.contains(n));
        self.synced_blobs = present;
        if new {
            File::open(&dir).and_then(|d| d.sync_all()).map_err(io("sync sled's blob directory", &dir))?;
        }
        Ok(())
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DurableError + 'a {
    move |source| DurableError::Io { op, path: path.to_path_buf(), source }
}

/// Takes the lock every open of ours holds on sled's directory (created,
/// owner-only, if it is new), waiting for it as long as for sled's own.
/// The lock is an `flock` on the directory itself: a lock file would be
/// one more inode in every new store, and a new inode is what a new store
/// costs most on some filesystems (ext4 without a journal passes over
/// every inode freed in the last minutes).
fn lock_for_open(options: &Options) -> Result<File, DurableError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = &options.sled_dir;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("create", dir))?;
    let path = dir.clone();
    let file = File::open(&path).map_err(io("open", &path))?;
    let deadline = Instant::now() + options.lock_wait;
    let mut pause = Duration::from_millis(1);
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let held = std::io::Error::new(ErrorKind::WouldBlock, "the store is open in another process");
                return Err(DurableError::Io { op: "lock", path, source: held });
            }
            Err(errno) => return Err(DurableError::Io { op: "lock", path, source: errno.into() }),
        }
    }
}

/// Removes the snapshots a killed open of sled left unfinished.
///
/// sled 0.34 writes a snapshot only while it opens, as
/// `snap.<lsn>.generating`, syncs it and renames it to `snap.<lsn>`, and
/// only then removes the older ones. An open killed before the rename
/// leaves the `.generating` file, which sled's next open takes for the
/// newest snapshot (its listing skips no such name) and refuses as corrupt
/// when it is not whole, so the store would never open again. Found by
/// real kill -9 of the registry daemon while it was starting. Under
/// [`lock_for_open`] no open is running, so every such file is a dead
/// open's leftover: the snapshot it was to replace is still there, and
/// recovery from it (and sled's log) is what sled would have done had the
/// file not been named yet.
fn clear_dead_snapshots(sled_dir: &Path) -> Result<(), DurableError> {
    let entries = std::fs::read_dir(sled_dir).map_err(io("list", sled_dir))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(io("list", sled_dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(SNAPSHOT_IN_PROGRESS) {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing a snapshot a killed open of sled left unfinished");
            std::fs::remove_file(&path).map_err(io("remove an unfinished snapshot", &path))?;
            removed = true;
        }
    }
    if removed {
        File::open(sled_dir).and_then(|d| d.sync_all()).map_err(io("sync the directory", sled_dir))?;
    }
    Ok(())
}

fn open_db(options: &Options) -> Result<sled::Db, DurableError> {
    let config = sled::Config::new()
        .path(&options.sled_dir)
        .mode(options.mode)
        .flush_every_ms(None)
        .cache_capacity(options.cache_bytes);
    let deadline = Instant::now() + options.lock_wait;
    let mut pause = Duration::from_millis(1);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => {
                return other.map_err(|source| DurableError::Sled { op: "open", dir: options.sled_dir.clone(), source })
            }
        }
    }
}

/// The commits the write-ahead file holds beyond sled (which holds commits
/// up to `stored`), decoded, in order, each following the one before.
/// After a damaged entry, the whole entries found beyond it count only if
/// nothing is missing in between (sled may hold the damaged commit
/// already); a commit that was acknowledged and is in neither place is
/// refused by name, before anything is written.
fn to_replay<R: Records>(records: &R, stored: u64, recovered: Recovered) -> Result<Vec<(u64, R::Commit)>, R::Error> {
    let mut have = stored;
    let mut pending = Vec::new();
    for entry in &recovered.entries {
        if entry.seq <= have {
            continue;
        }
        let (first, commit) = records.decode(entry)?;
        if first > have + 1 {
            return Err(DurableError::Gap { resumes: first, have }.into());
        }
        have = entry.seq;
        pending.push((entry.seq, commit));
    }
    let Some(damage) = recovered.damage else { return Ok(pending) };
    let later = damage.later.last().map_or(have, |e| e.seq);
    for entry in &damage.later {
        if entry.seq <= have {
            continue;
        }
        let (first, commit) = records.decode(entry)?;
        if first > have + 1 {
            return Err(DurableError::Lost { missing: have + 1, offset: damage.offset, stored, later }.into());
        }
        have = entry.seq;
        pending.push((entry.seq, commit));
    }
    tracing::warn!(offset = damage.offset, "a damaged write-ahead entry held only commits sled has; going on");
    Ok(pending)
}

#[cfg(test)]
mod tests;
