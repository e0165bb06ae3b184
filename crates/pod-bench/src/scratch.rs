//! Where a suite's throwaway files live, and the registry daemon a suite
//! started on its own POD_HOME. Every suite that runs real Pods or stores
//! sets up and ends the same way; this is that one way.

use std::path::{Path, PathBuf};

/// `DIR/pod-bench-tmp` (DIR: `--dir`, else CARGO_TARGET_DIR, else the
/// system temp dir), created if missing: the disk the floors and the
/// figures share.
pub fn parent_dir(dir: Option<&Path>) -> Result<PathBuf, String> {
    let parent = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os("CARGO_TARGET_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
    }
    .join("pod-bench-tmp");
    std::fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    Ok(parent)
}

/// Stops (SIGTERM) the registry daemon serving `home`, named by its lock
/// file, if one runs: the daemon a suite's Pods started on demand.
pub fn stop_registry(home: &Path) {
    let pid = std::fs::read_to_string(home.join("run/registry/lock"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}
