//! A write-ahead log that makes an entry durable with one `pwrite` and one
//! `fdatasync`, in front of a store whose own durable write costs more.
//!
//! Why it exists: both of our sled stores (the registry's table and each
//! Pod's session log) must not acknowledge a write before it is fsynced.
//! sled 0.34's flush waits for its own device write (`sync_file_range`),
//! which survives a killed process but not a power loss, so an `fdatasync`
//! has to follow: two dependent disk round trips per commit, where a plain
//! file append costs one. Here an entry goes into a file whose blocks are
//! allocated up front, so the sync has no file size to record.
//!
//! The owner writes each commit here first and then into its store without
//! flushing it. When the log is full ([`Appended::Full`]) or at a clean
//! close, the owner makes its store durable by its own means and calls
//! [`Wal::stored_through`]; the log then starts a new lap. After a crash,
//! [`Wal::open`] returns the entries written since the store was last made
//! durable, and the owner applies them again; entries must therefore be
//! idempotent (whole records, not deltas).
//!
//! File layout (all integers little-endian):
//! - two header slots of [`HEADER_SLOT`] bytes at offsets 0 and 4096, each
//!   `magic | generation: u64 | stored_through: u64 | crc32`; the valid
//!   slot with the higher generation is current, and a new header always
//!   goes to the other slot, so a torn header write loses nothing;
//! - entries from offset [`ENTRIES_START`]:
//!   `len: u32 | crc32(seq ‖ payload): u32 | seq: u64 | payload`.
//!
//! Reading stops at the first entry that is torn, fails its checksum, or
//! does not carry a higher `seq` than the one before it (the first: higher
//! than `stored_through`). A new lap overwrites the last one from the start
//! and every `seq` in it is above the last lap's, so leftovers of the last
//! lap are never read as current, with no need to erase them.
//!
//! Where reading stopped, a torn write (the last entry of a crash) and a
//! damaged entry (a flipped byte in an entry that was acknowledged) look
//! the same. They are told apart by what follows: nothing is ever written
//! after a torn entry (the owner starts a new lap when it reopens), so a
//! whole entry with a higher `seq` further on proves that an acknowledged
//! entry before it was damaged. [`Wal::open`] looks for one and reports it
//! as [`Damage`], with every entry it finds after the damage, so the owner
//! can tell what is lost. A damaged last entry cannot be told from a torn
//! one and is taken for torn.
//!
//! Deliberately absent: any knowledge of what a payload means, threads,
//! and buffering. A call returns when its bytes are durable or failed.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes reserved for each of the two header slots.
pub const HEADER_SLOT: u64 = 4096;
/// Where entries start.
pub const ENTRIES_START: u64 = 2 * HEADER_SLOT;
/// Bytes an entry takes besides its payload.
pub const ENTRY_OVERHEAD: u64 = 16;
/// The smallest log [`Wal::open`] accepts: room for one small entry.
pub const MIN_BYTES: u64 = ENTRIES_START + 4096;
/// The largest: the whole file is read back at open.
pub const MAX_BYTES: u64 = 1 << 30;

const MAGIC: &[u8; 8] = b"PODWAL01";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4;
/// Zeros written per call while filling a new file.
const FILL_CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: cannot {what}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("write-ahead log {path} is damaged: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("write-ahead log {path}: size {bytes} is outside {MIN_BYTES}..={MAX_BYTES}")]
    BadSize { path: PathBuf, bytes: u64 },
}

/// How a new log file gets its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Written with zeros and synced: every later write is an overwrite of
    /// a block that exists, the cheapest sync there is. Costs one write of
    /// the whole file when the log is created.
    Zeros,
    /// Reserved with `fallocate` (zeros where that is not supported):
    /// instant, and no write can fail for lack of space later, but the
    /// first lap pays for marking each block written, about what an append
    /// to a plain file pays.
    Reserve,
}

#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Size of the file, headers included.
    pub bytes: u64,
    pub fill: Fill,
}

/// What [`Wal::append`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written and durable.
    Durable,
    /// Not written: the entry does not fit in the rest of this lap (or in
    /// an empty lap). Nothing changed.
    Full,
}

/// One entry read back at open.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What [`Wal::open`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The store was durable through this `seq` when the lap began.
    pub stored_through: u64,
    /// The entries written since, in order, up to the first one that is
    /// torn or damaged; their `seq`s are all higher.
    pub entries: Vec<Entry>,
    /// An entry of this lap that is damaged although a later one is whole.
    pub damage: Option<Damage>,
}

/// A damaged entry in the middle of a lap (see the module comment).
#[derive(Debug, PartialEq, Eq)]
pub struct Damage {
    /// Where the damaged entry starts in the file.
    pub offset: u64,
    /// The whole entries found after it (each run in order), all with a
    /// higher `seq` than the last entry before the damage.
    pub later: Vec<Entry>,
}

/// Most checksum work (bytes) spent looking for whole entries after a bad
/// one; a file this tool wrote never needs more than its own size, and a
/// hostile one cannot make an open slow.
const DAMAGE_SCAN_BYTES: u64 = 64 << 20;

pub struct Wal {
    file: File,
    path: PathBuf,
    bytes: u64,
    generation: u64,
    stored_through: u64,
    /// Where the next entry goes.
    end: u64,
    /// `seq` of the last entry of this lap, or `stored_through`.
    last_seq: u64,
    /// This open created the file (and synced its directory).
    created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    generation: u64,
    stored_through: u64,
}

/// The header of a new log.
const FIRST_HEADER: Header = Header { generation: 1, stored_through: 0 };

impl Header {
    /// Where this generation's header goes: the slots alternate, so a torn
    /// write of one leaves the other whole.
    fn slot(self) -> u64 {
        if self.generation % 2 == 0 {
            0
        } else {
            HEADER_SLOT
        }
    }

    fn encode(self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[..8].copy_from_slice(MAGIC);
        out[8..16].copy_from_slice(&self.generation.to_le_bytes());
        out[16..24].copy_from_slice(&self.stored_through.to_le_bytes());
        let crc = crc32fast::hash(&out[..24]);
        out[24..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Option<Header> {
        let raw = raw.get(..HEADER_BYTES)?;
        let word = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes(raw[24..28].try_into().unwrap_or([0; 4]));
        (&raw[..8] == MAGIC && crc32fast::hash(&raw[..24]) == crc)
            .then(|| Header { generation: word(8), stored_through: word(16) })
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io { what, path: path.to_path_buf(), source }
}

impl Wal {
    /// Opens the log at `path`, creating it (filled as `options` says, with
    /// an empty first lap) if it does not exist, and returns what it holds.
    /// An existing log keeps its size; `options` only shape a new one.
    pub fn open(path: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Wal::new_log(create(path, options)?, path, options))
            }
            Err(e) => return Err(io("open it", path)(e)),
        };
        let bytes = file.metadata().map_err(io("stat it", path))?.len();
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
            return Err(WalError::BadSize { path: path.to_path_buf(), bytes });
        }
        let mut content = vec![0u8; bytes as usize];
        file.read_exact_at(&mut content, 0).map_err(io("read it", path))?;
        let header = [0, HEADER_SLOT]
            .iter()
            .filter_map(|&at| Header::decode(&content[at as usize..]))
            .max_by_key(|h| h.generation)
            .ok_or_else(|| WalError::Corrupt {
                path: path.to_path_buf(),
                why: "neither header slot is valid".into(),
            })?;
        let region = &content[ENTRIES_START as usize..];
        let entries = parse(region, header.stored_through);
        let used = entries.iter().map(|e| ENTRY_OVERHEAD + e.payload.len() as u64).sum::<u64>();
        let end = ENTRIES_START + used;
        let last_seq = entries.last().map_or(header.stored_through, |e| e.seq);
        let later = find_later(region, used as usize, last_seq);
        let damage = (!later.is_empty()).then_some(Damage { offset: end, later });
        let wal = Wal {
            file,
            path: path.to_path_buf(),
            bytes,
            generation: header.generation,
            stored_through: header.stored_through,
            end,
            last_seq,
            created: false,
        };
        Ok((wal, Recovered { stored_through: header.stored_through, entries, damage }))
    }

    /// A log `create` just made and synced: its first header and an empty
    /// lap, known without reading back the whole file (a new store's open
    /// would otherwise read megabytes of zeros).
    fn new_log(file: File, path: &Path, options: WalOptions) -> (Wal, Recovered) {
        let wal = Wal {
            file,
            path: path.to_path_buf(),
            bytes: options.bytes,
            generation: FIRST_HEADER.generation,
            stored_through: FIRST_HEADER.stored_through,
            end: ENTRIES_START,
            last_seq: FIRST_HEADER.stored_through,
            created: true,
        };
        (wal, Recovered { stored_through: FIRST_HEADER.stored_through, entries: Vec::new(), damage: None })
    }

    /// Did this open create the log? Its directory was then synced, which
    /// makes the names of every file in it durable.
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// The `seq` of the last entry written (or the store's durable point if
    /// this lap is empty). The next entry must carry a higher one.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Writes one entry and returns once it is durable.
    ///
    /// # Panics
    /// If `seq` is not above [`Wal::last_seq`] or `payload` is empty: the
    /// entry would then be read back wrongly, so this is a bug in the
    /// caller, not a condition.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<Appended, WalError> {
        assert!(seq > self.last_seq, "write-ahead log seq {seq} does not follow {}", self.last_seq);
        assert!(!payload.is_empty(), "an empty entry cannot be told from unwritten space");
        let size = ENTRY_OVERHEAD + payload.len() as u64;
        if self.end + size > self.bytes {
            return Ok(Appended::Full);
        }
        let len = u32::try_from(payload.len()).map_err(|_| WalError::Corrupt {
            path: self.path.clone(),
            why: format!("an entry of {} bytes cannot be framed", payload.len()),
        })?;
        let mut entry = Vec::with_capacity(size as usize);
        entry.extend_from_slice(&len.to_le_bytes());
        entry.extend_from_slice(&checksum(seq, payload).to_le_bytes());
        entry.extend_from_slice(&seq.to_le_bytes());
        entry.extend_from_slice(payload);
        self.file.write_all_at(&entry, self.end).map_err(io("write an entry", &self.path))?;
        self.file.sync_data().map_err(io("fdatasync an entry", &self.path))?;
        self.end += size;
        self.last_seq = seq;
        Ok(Appended::Durable)
    }

    /// Records that the owner's store is durable through `seq` (which must
    /// cover every entry written) and starts a new lap. Durable on return.
    pub fn stored_through(&mut self, seq: u64) -> Result<(), WalError> {
        assert!(seq >= self.last_seq, "the store must hold every entry: {seq} < {}", self.last_seq);
        let header = Header { generation: self.generation + 1, stored_through: seq };
        self.file.write_all_at(&header.encode(), header.slot()).map_err(io("write a header", &self.path))?;
        self.file.sync_data().map_err(io("fdatasync a header", &self.path))?;
        self.generation = header.generation;
        self.stored_through = seq;
        self.last_seq = seq;
        self.end = ENTRIES_START;
        Ok(())
    }

    /// Whether nothing was written since the lap began: the owner's store
    /// then holds everything, and there is nothing to make durable.
    pub fn lap_is_empty(&self) -> bool {
        self.end == ENTRIES_START
    }

    /// Payload bytes the largest entry that fits in an empty lap may have.
    pub fn max_payload(&self) -> u64 {
        self.bytes - ENTRIES_START - ENTRY_OVERHEAD
    }
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The entries of the current lap; see the module comment for when
/// reading stops.
fn parse(region: &[u8], stored_through: u64) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut last = stored_through;
    let mut at = 0usize;
    while let Some(head) = region.get(at..at + ENTRY_OVERHEAD as usize) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let seq = u64::from_le_bytes([head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15]]);
        let start = at + ENTRY_OVERHEAD as usize;
        let Some(payload) = region.get(start..start + len) else { break };
        if len == 0 || seq <= last || checksum(seq, payload) != crc {
            break;
        }
        entries.push(Entry { seq, payload: payload.to_vec() });
        last = seq;
        at = start + len;
    }
    entries
}

/// Whole entries after the point `from` where reading stopped, with a
/// `seq` above `last` (so never leftovers of an earlier lap, whose `seq`s
/// are all lower). Every byte offset is tried, since a damaged length says
/// nothing about where the next entry starts.
fn find_later(region: &[u8], from: usize, last: u64) -> Vec<Entry> {
    let overhead = ENTRY_OVERHEAD as usize;
    let mut found: Vec<Entry> = Vec::new();
    let mut budget = DAMAGE_SCAN_BYTES;
    let mut at = from + 1;
    while at + overhead <= region.len() {
        let floor = found.last().map_or(last, |e| e.seq);
        let head = &region[at..at + overhead];
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let seq = u64::from_le_bytes([head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15]]);
        let fits = len > 0 && len <= region.len() - at - overhead;
        if !fits || seq <= floor {
            at += 1;
            continue;
        }
        if budget < len as u64 {
            break;
        }
        budget -= len as u64;
        let payload = &region[at + overhead..at + overhead + len];
        if checksum(seq, payload) != crc {
            at += 1;
            continue;
        }
        // A whole entry: take the run it starts, then look on after it.
        let run = parse(&region[at..], seq - 1);
        let used: usize = run.iter().map(|e| overhead + e.payload.len()).sum();
        found.extend(run);
        at += used.max(1);
    }
    found
}

/// Creates the file under a temporary name, gives it its blocks, writes
/// the first header, syncs, and renames it into place: a crash never
/// leaves a log without a header.
fn create(path: &Path, options: WalOptions) -> Result<File, WalError> {
    if !(MIN_BYTES..=MAX_BYTES).contains(&options.bytes) {
        return Err(WalError::BadSize { path: path.to_path_buf(), bytes: options.bytes });
    }
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create it", &tmp))?;
    let reserved = options.fill == Fill::Reserve
        && rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, options.bytes).is_ok();
    if !reserved {
        let zeros = vec![0u8; FILL_CHUNK];
        let mut left = options.bytes as usize;
        while left > 0 {
            let n = left.min(FILL_CHUNK);
            file.write_all(&zeros[..n]).map_err(io("fill it", &tmp))?;
            left -= n;
        }
    }
    file.write_all_at(&FIRST_HEADER.encode(), FIRST_HEADER.slot()).map_err(io("write its first header", &tmp))?;
    file.sync_all().map_err(io("sync it", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("move it into place", path))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync its directory", dir))?;
    Ok(file)
}

#[cfg(test)]
mod tests;
