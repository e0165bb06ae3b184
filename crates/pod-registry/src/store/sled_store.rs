//! Persistence behind a narrow seam.
//!
//! The registry needs exactly three things from storage: read every record
//! at startup, and write a group of changes atomically and durably. The
//! [`Store`] trait is that seam; sled implements it now, etcd (one
//! transaction guarded by revisions) later. Nothing above this module knows
//! which one runs.

use std::path::Path;

use scope::PodName;

use crate::{Allocation, RegistryError};

/// One change of a commit. A commit names each key at most once.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Put(&'a Allocation),
    Delete(&'a PodName),
}

/// What a store holds.
#[derive(Debug, Default)]
pub struct Stored {
    pub records: Vec<Allocation>,
    /// The next fence number to hand out; above every stored fence.
    pub next_fence: u64,
}

pub trait Store: Send {
    /// Every record, decoded and individually validated.
    fn load(&self) -> Result<Stored, RegistryError>;
    /// Applies `changes` and the new fence counter as one atomic unit and
    /// returns only once they are durable (fsynced). On error nothing of the
    /// group may be assumed written or not written; the caller must reload.
    fn commit(&mut self, changes: &[Change<'_>], next_fence: u64) -> Result<(), RegistryError>;
}

/// Bumped when the stored encoding of a record changes.
const FORMAT: u8 = 1;
const RECORD_PREFIX: &[u8] = b"a/";
const FENCE_KEY: &[u8] = b"m/next_fence";
/// The file sled 0.34 keeps its log (and so every write) in.
const SLED_LOG_FILE: &str = "db";
/// sled's page cache; the registry's own state lives in memory anyway.
const CACHE_BYTES: u64 = 16 << 20;

/// The sled store: one tree, records under `a/<name>`, the fence counter
/// under `m/next_fence`, so one `apply_batch` covers a whole group.
///
/// sled 0.34's `flush` ends with `sync_file_range`, which survives a killed
/// process but neither flushes the device's write cache nor file metadata.
/// To keep the promise "acknowledged means fsynced", the store also holds
/// its own handle on sled's log file and `fdatasync`s it after each flush
/// (an fsync applies to the file, whichever descriptor asks).
pub struct SledStore {
    db: sled::Db,
    log: std::fs::File,
}

impl SledStore {
    pub fn open(path: &Path) -> Result<SledStore, RegistryError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open()
            .map_err(|e| RegistryError::Store(format!("cannot open {}: {e}", path.display())))?;
        let log_path = path.join(SLED_LOG_FILE);
        let log = std::fs::File::open(&log_path)
            .map_err(|e| RegistryError::Store(format!("cannot open sled's log {}: {e}", log_path.display())))?;
        Ok(SledStore { db, log })
    }
}

fn record_key(name: &PodName) -> Vec<u8> {
    [RECORD_PREFIX, name.as_str().as_bytes()].concat()
}

fn encode(rec: &Allocation) -> Result<Vec<u8>, RegistryError> {
    // Positional (compact) encoding: records are rewritten on every change
    // of their Pod, so size is write cost; FORMAT versions the layout.
    let mut out = vec![FORMAT];
    rmp_serde::encode::write(&mut out, rec).map_err(|e| RegistryError::Store(format!("encode {}: {e}", rec.name)))?;
    Ok(out)
}

fn decode(key: &[u8], value: &[u8]) -> Result<Allocation, RegistryError> {
    let name = String::from_utf8_lossy(key);
    let (format, body) = value.split_first().ok_or_else(|| RegistryError::Corrupt(format!("{name}: empty value")))?;
    if *format != FORMAT {
        return Err(RegistryError::Corrupt(format!("{name}: unknown record format {format}")));
    }
    let rec: Allocation =
        rmp_serde::from_slice(body).map_err(|e| RegistryError::Corrupt(format!("{name}: cannot decode: {e}")))?;
    if record_key(&rec.name) != key {
        return Err(RegistryError::Corrupt(format!("{name}: key does not match record {}", rec.name)));
    }
    rec.validate().map_err(RegistryError::Corrupt)?;
    Ok(rec)
}

impl Store for SledStore {
    fn load(&self) -> Result<Stored, RegistryError> {
        let mut records = Vec::new();
        for item in self.db.scan_prefix(RECORD_PREFIX) {
            let (key, value) = item?;
            records.push(decode(&key, &value)?);
        }
        let next_fence = match self.db.get(FENCE_KEY)? {
            None => 1,
            Some(raw) => {
                let bytes: [u8; 8] = raw
                    .as_ref()
                    .try_into()
                    .map_err(|_| RegistryError::Corrupt(format!("fence counter has {} bytes, not 8", raw.len())))?;
                u64::from_be_bytes(bytes)
            }
        };
        Ok(Stored { records, next_fence })
    }

    fn commit(&mut self, changes: &[Change<'_>], next_fence: u64) -> Result<(), RegistryError> {
        let mut batch = sled::Batch::default();
        for change in changes {
            match change {
                Change::Put(rec) => {
                    rec.validate().map_err(RegistryError::Corrupt)?;
                    batch.insert(record_key(&rec.name), encode(rec)?);
                }
                Change::Delete(name) => batch.remove(record_key(name)),
            }
        }
        batch.insert(FENCE_KEY, &next_fence.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.log.sync_data().map_err(|e| RegistryError::Store(format!("fdatasync of sled's log failed: {e}")))?;
        Ok(())
    }
}
