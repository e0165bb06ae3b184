//! One daemon per registry: an exclusive `flock` on `run/registry/lock`.
//!
//! The kernel drops the lock when the holder dies, however it dies, so a
//! crashed daemon never blocks its successor, and two daemons started at
//! once (two clients starting one on demand) end with exactly one serving.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// Held for the daemon's whole life; dropping it releases the lock.
pub struct DaemonLock {
    _file: File,
}

/// Takes the lock, or `Ok(None)` when another daemon holds it. The holder's
/// pid is written into the file for tools and tests.
pub fn try_lock(path: &Path) -> io::Result<Option<DaemonLock>> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(Some(DaemonLock { _file: file }))
}

/// The pid written by the current (or last) lock holder.
pub fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
