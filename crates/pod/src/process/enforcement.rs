//! Where a workload's enforcement is decided: the level it runs at and the
//! plan (Landlock grants, mounts) applied at exec. One function, so that
//! how the level is chosen can change without touching how the workload
//! is started and contained (`workload.rs`).
//!
//! Today every workload runs at level `off`: it is contained (its whole
//! process tree ends with its Pod), and its scope is bookkeeping.

use pod_sandbox::{Level, Plan};

/// The level and the plan a workload is started with.
pub struct Enforcement {
    pub level: Level,
    pub plan: Plan,
}

/// Decides the workload's enforcement.
pub fn decide() -> Enforcement {
    Enforcement { level: Level::Off, plan: Plan::default() }
}
