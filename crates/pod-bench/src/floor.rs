//! Same-run physical floors. A figure like "append takes 900 us" means little
//! alone; "append takes 1.1 x one fdatasync on this disk, measured in the
//! same run" holds on any machine.
//!
//! On a shared machine the disk and the scheduler change speed from one
//! second to the next, so suites take floor samples between the operations
//! they time (a probe is kept open for that), not in a block before them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats::quantile;

/// A plain file in the measured directory; each sample is a 256-byte append
/// and an `fdatasync`.
pub struct FsyncProbe {
    file: File,
    path: PathBuf,
}

impl FsyncProbe {
    pub fn open(dir: &Path) -> Result<FsyncProbe, String> {
        let path = dir.join("floor-fsync.bin");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(FsyncProbe { file, path })
    }

    /// One sample, in microseconds.
    pub fn sample(&mut self) -> Result<u64, String> {
        let block = [0xA5u8; 256];
        let start = Instant::now();
        self.file.write_all(&block).map_err(|e| format!("floor write failed: {e}"))?;
        self.file.sync_data().map_err(|e| format!("floor fdatasync failed: {e}"))?;
        Ok(start.elapsed().as_micros() as u64)
    }
}

impl Drop for FsyncProbe {
    fn drop(&mut self) {
        // Best effort: the file lives in the suite's temporary directory.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Median and p99 (microseconds) of `rounds` samples of an [`FsyncProbe`].
pub fn fsync_us(dir: &Path, rounds: usize) -> Result<(u64, u64), String> {
    let mut probe = FsyncProbe::open(dir)?;
    let mut samples = (0..rounds.max(1)).map(|_| probe.sample()).collect::<Result<Vec<_>, _>>()?;
    Ok((quantile(&mut samples, 0.50), quantile(&mut samples, 0.99)))
}

/// Median and p99 (microseconds) of `rounds` fdatasyncs of an overwrite:
/// a file filled with zeros and synced first, then 256 bytes at a time
/// written over it from the start, each followed by an `fdatasync`. That
/// is what a write-ahead entry costs once its file's blocks exist (no
/// size or extent to record), unlike [`FsyncProbe`]'s appends.
pub fn fsync_overwrite_us(dir: &Path, rounds: usize) -> Result<(u64, u64), String> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 256;
    let path = dir.join("floor-overwrite.bin");
    let fail = |what: &str, e: std::io::Error| format!("floor {what} of {} failed: {e}", path.display());
    let rounds = rounds.max(1);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| fail("open", e))?;
    file.write_all(&vec![0u8; rounds * BLOCK]).map_err(|e| fail("fill", e))?;
    file.sync_all().map_err(|e| fail("sync", e))?;
    let block = [0xA5u8; BLOCK];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let start = Instant::now();
        file.write_all_at(&block, (i * BLOCK) as u64).map_err(|e| fail("write", e))?;
        file.sync_data().map_err(|e| fail("fdatasync", e))?;
        samples.push(start.elapsed().as_micros() as u64);
    }
    drop(file);
    // Best effort: the file lives in the suite's temporary directory.
    let _ = std::fs::remove_file(&path);
    Ok((quantile(&mut samples, 0.50), quantile(&mut samples, 0.99)))
}

/// Median and p99 (microseconds) of `rounds` creations of a new empty file
/// in a new folder beside the measured one: what each file and folder a
/// Pod makes costs the filesystem to allocate (a spawn makes about twenty,
/// about ten of them one after another). Far from constant on some
/// filesystems: ext4 without a journal passes over every inode freed in the
/// last minutes, one buffer lookup each, so on a machine that has just
/// removed many files (a test suite, the previous run of this bench) each
/// new one costs many times more.
pub fn create_us(dir: &Path, rounds: usize) -> Result<(u64, u64), String> {
    let folder = dir.join("floor-create");
    std::fs::create_dir(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let rounds = rounds.max(1);
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let path = folder.join(format!("f{i}"));
        let start = Instant::now();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("floor create of {} failed: {e}", path.display()))?;
        samples.push(start.elapsed().as_micros() as u64);
    }
    // Best effort: the folder lives in the suite's temporary directory.
    let _ = std::fs::remove_dir_all(&folder);
    Ok((quantile(&mut samples, 0.50), quantile(&mut samples, 0.99)))
}

const FRAME: usize = 64;

/// A connection to an echo server on its own thread and runtime, over a
/// filesystem-path interprocess local socket; each sample is one round trip
/// of a 64-byte frame (4-byte length prefix, as the wire protocol uses):
/// the least any request over the registry or a Pod socket can cost.
/// Samples are taken on the caller's runtime, as the measured client's are.
pub struct IpcProbe {
    conn: Stream,
    server: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl IpcProbe {
    pub async fn open(dir: &Path) -> Result<IpcProbe, String> {
        let path = dir.join("floor-ipc.sock");
        let name =
            path.as_path().to_fs_name::<GenericFilePath>().map_err(|e| format!("socket name: {e}"))?.into_owned();
        let listen_name = name.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        // The echo server gets its own runtime on its own thread: the
        // caller's runtime cannot start another one from inside it.
        let server = std::thread::spawn(move || {
            let server_rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("floor runtime: {e}"))?;
            server_rt.block_on(async move {
                let listener = match ListenerOptions::new().name(listen_name).create_tokio() {
                    Ok(listener) => {
                        let _ = ready_tx.send(Ok(()));
                        listener
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot listen: {e}")));
                        return Ok(());
                    }
                };
                let mut conn = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                let mut buf = [0u8; FRAME];
                loop {
                    match conn.read_exact(&mut buf).await {
                        Ok(_) => conn.write_all(&buf).await.map_err(|e| format!("echo: {e}"))?,
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(format!("echo read: {e}")),
                    }
                }
            })
        });
        // A short, bounded wait: the server thread only binds a socket.
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| format!("echo server did not start: {e}"))?
            .map_err(|e| format!("{e} on {}", path.display()))?;
        let conn = Stream::connect(name).await.map_err(|e| format!("connect: {e}"))?;
        Ok(IpcProbe { conn, server: Some(server) })
    }

    /// One round trip, in microseconds.
    pub async fn sample(&mut self) -> Result<u64, String> {
        let mut frame = [0x5Au8; FRAME];
        frame[..4].copy_from_slice(&((FRAME - 4) as u32).to_be_bytes());
        let mut back = [0u8; FRAME];
        let start = Instant::now();
        self.conn.write_all(&frame).await.map_err(|e| format!("ping: {e}"))?;
        self.conn.read_exact(&mut back).await.map_err(|e| format!("pong: {e}"))?;
        Ok(start.elapsed().as_micros() as u64)
    }

    /// Closes the connection and waits for the echo server to finish (the
    /// listener removes its socket file when dropped).
    pub fn close(mut self) -> Result<(), String> {
        let server = self.server.take();
        drop(self);
        match server {
            Some(server) => server.join().map_err(|_| "echo server panicked".to_string())?,
            None => Ok(()),
        }
    }
}

/// Median and p99 (microseconds) of `rounds` samples of an [`IpcProbe`].
pub fn ipc_rtt_us(dir: &Path, rounds: usize) -> Result<(u64, u64), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("floor runtime: {e}"))?;
    let mut samples = rt.block_on(async {
        let mut probe = IpcProbe::open(dir).await?;
        let mut samples = Vec::with_capacity(rounds.max(1));
        for _ in 0..rounds.max(1) {
            samples.push(probe.sample().await?);
        }
        probe.close()?;
        Ok::<_, String>(samples)
    })?;
    Ok((quantile(&mut samples, 0.50), quantile(&mut samples, 0.99)))
}
