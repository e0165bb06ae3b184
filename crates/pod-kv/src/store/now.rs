//! The shell's clocks, read for the core (which never reads one): the
//! wall clock, `CLOCK_BOOTTIME` (monotonic, counting suspended time, so a
//! lease does not outlive a laptop's sleep) and the boot id, so that a
//! deadline written in one boot is judged by the wall clock in the next.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::clock::{BootId, Now};
use crate::error::KvError;

const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// A boot id is 36 characters and a newline; more is not a boot id.
const BOOT_ID_MAX_BYTES: u64 = 64;

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
pub fn boot_id() -> Result<BootId, KvError> {
    use std::io::Read;
    let fail = |why: String| KvError::Storage(format!("cannot read the boot id from {BOOT_ID_PATH}: {why}"));
    let mut text = String::new();
    std::fs::File::open(BOOT_ID_PATH)
        .and_then(|f| f.take(BOOT_ID_MAX_BYTES).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(fail(format!("{:?} is not a boot id", text.trim())));
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| fail(e.to_string()))?;
    }
    Ok(BootId(id))
}

/// Now, in both clocks, in the boot `boot`.
pub fn now(boot: BootId) -> Now {
    let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let mono_ms = (t.tv_sec as u64).saturating_mul(1000).saturating_add(t.tv_nsec as u64 / 1_000_000);
    Now { wall_ms, mono_ms, boot }
}
