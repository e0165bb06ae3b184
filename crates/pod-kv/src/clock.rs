//! Time, as the shell hands it in: the core never reads a clock.
//!
//! A lease deadline must hold across a restart of the lead (same boot: the
//! monotonic clock goes on) and across a reboot (the monotonic clock starts
//! again; only the wall clock relates the two boots). So a deadline is kept
//! in both forms with the boot it was set in: within that boot the
//! monotonic form decides (immune to wall-clock steps); in a later boot the
//! wall-clock form does, never granting more than the TTL from the moment
//! it is first looked at (a wall clock set back must not stretch a lease).
//! [`Deadline::rebased`] moves a deadline into the current boot once, when
//! the store opens.
//!
//! The shell's monotonic clock should count suspended time
//! (`CLOCK_BOOTTIME`), so that a lease does not outlive a laptop's sleep.

use serde::{Deserialize, Serialize};

/// `/proc/sys/kernel/random/boot_id`, as 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BootId(pub [u8; 16]);

/// The moment a call is planned at, in both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Milliseconds of the boot's monotonic clock.
    pub mono_ms: u64,
    pub boot: BootId,
}

/// When a lease ends, durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    pub boot: BootId,
    pub mono_ms: u64,
    pub wall_ms: u64,
}

impl Deadline {
    /// `ttl_ms` from `now`.
    pub fn after(now: &Now, ttl_ms: u64) -> Deadline {
        Deadline {
            boot: now.boot,
            mono_ms: now.mono_ms.saturating_add(ttl_ms),
            wall_ms: now.wall_ms.saturating_add(ttl_ms),
        }
    }

    /// Milliseconds left at `now` (0: passed). `ttl_ms` caps what a
    /// deadline from another boot may still grant.
    pub fn remaining_ms(&self, ttl_ms: u64, now: &Now) -> u64 {
        if self.boot == now.boot {
            self.mono_ms.saturating_sub(now.mono_ms)
        } else {
            self.wall_ms.saturating_sub(now.wall_ms).min(ttl_ms)
        }
    }

    /// This deadline in the boot of `now`, with what remains of it; `None`
    /// when it has passed. Within the same boot it is unchanged.
    pub fn rebased(&self, ttl_ms: u64, now: &Now) -> Option<Deadline> {
        let left = self.remaining_ms(ttl_ms, now);
        if left == 0 {
            return None;
        }
        if self.boot == now.boot {
            return Some(*self);
        }
        Some(Deadline::after(now, left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT_A: BootId = BootId([1; 16]);
    const BOOT_B: BootId = BootId([2; 16]);

    fn now(boot: BootId, wall_ms: u64, mono_ms: u64) -> Now {
        Now { wall_ms, mono_ms, boot }
    }

    #[test]
    fn within_a_boot_the_monotonic_clock_decides() {
        let d = Deadline::after(&now(BOOT_A, 10_000_000, 500), 2_000);
        assert_eq!(d.remaining_ms(2_000, &now(BOOT_A, 10_000_000, 500)), 2_000);
        // The wall clock stepped back an hour, and then forward a day: no
        // effect within the boot.
        assert_eq!(d.remaining_ms(2_000, &now(BOOT_A, 10_000_000 - 3_600_000, 1_500)), 1_000);
        assert_eq!(d.remaining_ms(2_000, &now(BOOT_A, 10_000_000 + 86_400_000, 2_499)), 1);
        assert_eq!(d.remaining_ms(2_000, &now(BOOT_A, 0, 2_500)), 0);
    }

    #[test]
    fn a_restart_in_the_same_boot_keeps_the_deadline() {
        let d = Deadline::after(&now(BOOT_A, 10_000, 100), 5_000);
        assert_eq!(d.rebased(5_000, &now(BOOT_A, 12_000, 2_100)), Some(d));
        assert_eq!(d.rebased(5_000, &now(BOOT_A, 12_000, 5_100)), None);
    }

    #[test]
    fn after_a_reboot_the_wall_clock_decides_and_the_deadline_moves_into_the_new_boot() {
        let d = Deadline::after(&now(BOOT_A, 10_000, 900_000), 5_000);
        // Rebooted 2 s of wall time later; the monotonic clock restarted.
        let later = now(BOOT_B, 12_000, 30);
        assert_eq!(d.remaining_ms(5_000, &later), 3_000);
        let moved = d.rebased(5_000, &later).expect("still running");
        assert_eq!(moved, Deadline { boot: BOOT_B, mono_ms: 3_030, wall_ms: 15_000 });
        assert_eq!(d.rebased(5_000, &now(BOOT_B, 15_000, 30)), None);
    }

    #[test]
    fn a_wall_clock_set_back_across_a_reboot_never_stretches_a_lease_past_its_ttl() {
        let d = Deadline::after(&now(BOOT_A, 100_000_000, 50), 5_000);
        let skewed = now(BOOT_B, 100_000_000 - 86_400_000, 10);
        assert_eq!(d.remaining_ms(5_000, &skewed), 5_000);
        let moved = d.rebased(5_000, &skewed).expect("capped, not passed");
        // Once moved, the new boot's monotonic clock ends it within the TTL.
        assert_eq!(moved.remaining_ms(5_000, &now(BOOT_B, skewed.wall_ms, 5_010)), 0);
    }
}
