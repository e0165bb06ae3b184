//! The registry's write-ahead log: what makes a commit durable.
//!
//! Why not sled's flush: in sled 0.34 a flush waits for its own device
//! write (`sync_file_range`), and that does not survive power loss, so an
//! `fdatasync` has to follow: two dependent disk round trips per commit.
//! Here a commit is one `pwrite` into a file whose blocks all exist already
//! (written with zeros when it was created) and one `fdatasync`: no block
//! allocation and no size change, so the filesystem has no metadata to
//! journal and the sync is one data write and a cache flush.
//!
//! The file is a ring of one lap: entries are written from offset 0 on; an
//! entry that does not fit in what is left is refused ([`Appended::Full`]),
//! and the owner then makes its store durable by other means and calls
//! [`Wal::reset`], after which writing starts again at 0. Entries carry
//! consecutive sequence numbers and a checksum, so reading stops at the
//! first torn entry or at the first leftover of an earlier lap (its number
//! is lower), without any header to keep in step.
//!
//! Entry: `len: u32 LE | crc32(seq ‖ payload): u32 LE | seq: u64 LE | payload`.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::RegistryError;

/// Size of the log file. Commits are a few hundred bytes, so this holds
/// thousands of them between two checkpoints of the store, and bounds
/// what a restart has to replay.
pub const WAL_BYTES: u64 = 4 << 20;
const HEADER: usize = 16;
/// Zeros written per call while creating the file.
const FILL_CHUNK: usize = 1 << 20;

pub struct Wal {
    file: File,
    /// Where the next entry goes.
    end: u64,
    /// Sequence number of the last entry written in this lap, if any.
    last_seq: Option<u64>,
}

/// What [`Wal::append`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written and durable.
    Durable,
    /// Not written: the entry does not fit in the rest of this lap (or in
    /// the whole file). Nothing changed.
    Full,
}

/// One entry read back at open.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub payload: Vec<u8>,
}

fn io<'a>(what: &str, path: &'a Path) -> impl Fn(std::io::Error) -> RegistryError + 'a {
    let what = what.to_string();
    move |e| RegistryError::Store(format!("{what} {}: {e}", path.display()))
}

impl Wal {
    /// Opens the log at `path` (creating it, zero-filled and synced, if it
    /// does not exist) and returns every entry of its current lap, in order.
    /// The caller decides which of them its store already holds, and must
    /// [`Wal::reset`] before appending.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Entry>), RegistryError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(io("cannot open the write-ahead log", path)(e)),
        };
        let len = file.metadata().map_err(io("cannot stat the write-ahead log", path))?.len();
        if len != WAL_BYTES {
            return Err(RegistryError::Corrupt(format!(
                "write-ahead log {} has {len} bytes, not {WAL_BYTES}",
                path.display()
            )));
        }
        let mut bytes = vec![0u8; WAL_BYTES as usize];
        file.read_exact_at(&mut bytes, 0).map_err(io("cannot read the write-ahead log", path))?;
        let entries = parse(&bytes);
        let end = entries.iter().map(|e| (HEADER + e.payload.len()) as u64).sum();
        let last_seq = entries.last().map(|e| e.seq);
        Ok((Wal { file, end, last_seq }, entries))
    }

    /// Starts a new lap at offset 0. Only once everything the log holds is
    /// durable elsewhere: the entries left on disk are then dead, and are
    /// told apart from the new lap's by their lower sequence numbers.
    pub fn reset(&mut self) {
        self.end = 0;
        self.last_seq = None;
    }

    /// Writes one entry and returns once it is durable. `seq` must follow
    /// the lap's last entry; the first entry of a lap may have any number
    /// above every earlier lap's.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<Appended, RegistryError> {
        if let Some(last) = self.last_seq {
            assert_eq!(seq, last + 1, "write-ahead log entries must be consecutive");
        }
        let size = (HEADER + payload.len()) as u64;
        if self.end + size > WAL_BYTES {
            return Ok(Appended::Full);
        }
        let mut entry = Vec::with_capacity(size as usize);
        entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        entry.extend_from_slice(&checksum(seq, payload).to_le_bytes());
        entry.extend_from_slice(&seq.to_le_bytes());
        entry.extend_from_slice(payload);
        let failed =
            |what: &str, e: std::io::Error| RegistryError::Store(format!("write-ahead log {what} failed: {e}"));
        self.file.write_all_at(&entry, self.end).map_err(|e| failed("write", e))?;
        self.file.sync_data().map_err(|e| failed("fdatasync", e))?;
        self.end += size;
        self.last_seq = Some(seq);
        Ok(Appended::Durable)
    }
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The entries of the current lap: from offset 0, while each entry is
/// whole, matches its checksum and follows the previous one's number.
fn parse(bytes: &[u8]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let seq = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14], header[15],
        ]);
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        let follows = entries.last().is_none_or(|last| last.seq.checked_add(1) == Some(seq));
        if len == 0 || !follows || checksum(seq, payload) != crc {
            break;
        }
        entries.push(Entry { seq, payload: payload.to_vec() });
        at += HEADER + len;
    }
    entries
}

/// Creates the file under a temporary name, fills it with zeros, syncs it
/// and renames it into place, so that a crash never leaves a short log.
fn create(path: &Path) -> Result<File, RegistryError> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("cannot create the write-ahead log", &tmp))?;
    let zeros = vec![0u8; FILL_CHUNK];
    let mut left = WAL_BYTES as usize;
    while left > 0 {
        let n = left.min(FILL_CHUNK);
        file.write_all(&zeros[..n]).map_err(io("cannot fill the write-ahead log", &tmp))?;
        left -= n;
    }
    file.sync_all().map_err(io("cannot sync the write-ahead log", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("cannot move the write-ahead log into place", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("cannot sync the directory", dir))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Wal, Vec<Entry>) {
        Wal::open(&dir.join("wal")).expect("open")
    }

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn entries_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, entries) = open(dir.path());
        assert!(entries.is_empty());
        for seq in 1..=3 {
            assert_eq!(wal.append(seq, format!("commit {seq}").as_bytes()).expect("append"), Appended::Durable);
        }
        drop(wal);
        let (_, entries) = open(dir.path());
        assert_eq!(seqs(&entries), [1, 2, 3]);
        assert_eq!(entries[1].payload, b"commit 2");
    }

    #[test]
    fn a_new_lap_hides_the_leftovers_of_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path());
        for seq in 1..=5 {
            wal.append(seq, &[seq as u8; 100]).expect("append");
        }
        wal.reset();
        // Shorter than the old first entry: the old bytes after it are torn
        // leftovers, the old entries after that have lower numbers.
        wal.append(6, &[6; 10]).expect("append");
        wal.append(7, &[7; 10]).expect("append");
        drop(wal);
        let (_, entries) = open(dir.path());
        assert_eq!(seqs(&entries), [6, 7]);
    }

    #[test]
    fn a_reset_with_nothing_written_after_it_reads_the_old_lap() {
        // The owner only resets once the store holds all of it, so reading
        // it again is harmless; the owner skips what its store has.
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path());
        wal.append(1, b"one").expect("append");
        wal.reset();
        drop(wal);
        assert_eq!(seqs(&open(dir.path()).1), [1]);
    }

    #[test]
    fn a_torn_or_corrupt_entry_ends_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path());
        for seq in 1..=3 {
            wal.append(seq, &[0xAB; 64]).expect("append");
        }
        drop(wal);
        let path = dir.path().join("wal");
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        // One byte inside the second entry's payload.
        file.write_all_at(&[0xAC], (HEADER + 64 + HEADER + 10) as u64).expect("flip");
        drop(file);
        assert_eq!(seqs(&open(dir.path()).1), [1]);
    }

    #[test]
    fn an_entry_that_does_not_fit_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path());
        let big = vec![1u8; (WAL_BYTES as usize) / 2];
        assert_eq!(wal.append(1, &big).expect("append"), Appended::Durable);
        assert_eq!(wal.append(2, &big).expect("append"), Appended::Full);
        wal.reset();
        assert_eq!(wal.append(2, &big).expect("append"), Appended::Durable);
        let whole = vec![1u8; WAL_BYTES as usize];
        assert_eq!(wal.append(3, &whole).expect("append"), Appended::Full);
        drop(wal);
        assert_eq!(seqs(&open(dir.path()).1), [2]);
    }

    #[test]
    fn a_log_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("wal"), b"short").expect("write");
        let err = Wal::open(&dir.path().join("wal")).err().expect("refused");
        assert!(err.to_string().contains("not 4194304"), "{err}");
    }
}
