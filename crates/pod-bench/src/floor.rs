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
