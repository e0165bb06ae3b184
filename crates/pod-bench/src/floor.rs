//! Same-run physical floors. A figure like "append takes 900 us" means little
//! alone; "append takes 1.1 x one fdatasync on this disk, measured in the
//! same run" holds on any machine.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::stats::quantile;

/// Median and p99 (microseconds) of a 256-byte append + `fdatasync` on a
/// plain file in `dir`, over `rounds` rounds.
pub fn fsync_us(dir: &Path, rounds: usize) -> Result<(u64, u64), String> {
    let path = dir.join("floor-fsync.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let block = [0xA5u8; 256];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        file.write_all(&block).map_err(|e| format!("floor write failed: {e}"))?;
        file.sync_data().map_err(|e| format!("floor fdatasync failed: {e}"))?;
        samples.push(start.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    Ok((quantile(&mut samples, 0.50), quantile(&mut samples, 0.99)))
}

/// Median and p99 (microseconds) of one round trip of a 64-byte frame
/// (4-byte length prefix, as the wire protocol uses) over a filesystem-path
/// interprocess local socket in `dir`: the client writes, an echo server on
/// its own thread and runtime reads the whole frame and writes it back.
/// This is the least any request over the registry socket can cost.
pub fn ipc_rtt_us(dir: &Path, rounds: usize) -> Result<(u64, u64), String> {
    use interprocess::local_socket::tokio::prelude::*;
    use interprocess::local_socket::tokio::Stream;
    use interprocess::local_socket::{GenericFilePath, ListenerOptions};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const FRAME: usize = 64;
    let path = dir.join("floor-ipc.sock");
    let rt = || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("floor runtime: {e}"))
    };
    let name = path.as_path().to_fs_name::<GenericFilePath>().map_err(|e| format!("socket name: {e}"))?;
    let server_rt = rt()?;
    let listener = server_rt
        .block_on(async { ListenerOptions::new().name(name.clone()).create_tokio() })
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let server = std::thread::spawn(move || {
        server_rt.block_on(async move {
            let mut conn = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
            let mut buf = [0u8; FRAME];
            loop {
                match conn.read_exact(&mut buf).await {
                    Ok(_) => conn.write_all(&buf).await.map_err(|e| format!("echo: {e}"))?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok::<(), String>(()),
                    Err(e) => return Err(format!("echo read: {e}")),
                }
            }
        })
    });
    let samples = rt()?.block_on(async {
        let mut conn = Stream::connect(name).await.map_err(|e| format!("connect: {e}"))?;
        let mut frame = [0x5Au8; FRAME];
        frame[..4].copy_from_slice(&((FRAME - 4) as u32).to_be_bytes());
        let mut back = [0u8; FRAME];
        let mut samples = Vec::with_capacity(rounds.max(1));
        for _ in 0..rounds.max(1) {
            let start = Instant::now();
            conn.write_all(&frame).await.map_err(|e| format!("ping: {e}"))?;
            conn.read_exact(&mut back).await.map_err(|e| format!("pong: {e}"))?;
            samples.push(start.elapsed().as_micros() as u64);
        }
        Ok::<_, String>(samples)
    });
    let served = server.join().map_err(|_| "echo server panicked".to_string())?;
    let mut samples = samples?;
    served?;
    // The listener removed its socket file when it was dropped.
    Ok((quantile(&mut samples, 0.50), quantile(&mut samples, 0.99)))
}
