//! Busy detection: before a region is taken from a running workload, find
//! the processes that would keep writing there anyway. A read-only bind
//! changes what paths resolve to, not what is already open: a file opened
//! for writing, a shared writable mapping, a directory held open (an
//! `openat` base) or a working directory inside the region all still reach
//! the old, writable mount. Narrowing is refused while one exists
//! (`enforce.busy`, naming the pid and the path).

use std::path::{Path, PathBuf};

use scope::ScopeRule;

use crate::proc::{read_bounded, read_small};

/// Most descriptors looked at per process.
pub const MAX_FDS_PER_PROCESS: usize = 65_536;
/// Most of `/proc/<pid>/maps` read per process.
pub const MAX_MAPS_BYTES: u64 = 8 << 20;

/// One reason a process holds a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub path: PathBuf,
    pub how: &'static str,
}

fn inside(path: &Path, rules: &[ScopeRule]) -> bool {
    let Some(text) = path.to_str() else { return false };
    let text = text.strip_suffix(" (deleted)").unwrap_or(text);
    let Ok(p) = scope::ScopePath::new(text) else { return false };
    rules.iter().any(|r| r.covers_path(&p))
}

/// Access mode of an open descriptor, from `/proc/<pid>/fdinfo/<fd>`.
fn opened_for_write(pid: u32, fd: &str) -> bool {
    let Some(info) = read_small(Path::new(&format!("/proc/{pid}/fdinfo/{fd}"))) else { return false };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & 0o3 != 0)
}

/// The first way `pid` holds a path the `rules` cover, if any.
pub fn holds(pid: u32, rules: &[ScopeRule]) -> Option<Holder> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    for (link, how) in [("cwd", "its working directory"), ("root", "its root directory")] {
        if let Ok(target) = std::fs::read_link(base.join(link)) {
            if target != Path::new("/") && inside(&target, rules) {
                return Some(Holder { pid, path: target, how });
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
        for entry in fds.flatten().take(MAX_FDS_PER_PROCESS) {
            let Ok(target) = std::fs::read_link(entry.path()) else { continue };
            if !target.is_absolute() || !inside(&target, rules) {
                continue;
            }
            let name = entry.file_name();
            let fd = name.to_string_lossy();
            if opened_for_write(pid, &fd) {
                return Some(Holder { pid, path: target, how: "open for writing" });
            }
            if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                return Some(Holder { pid, path: target, how: "a directory held open" });
            }
        }
    }
    if let Some(maps) = read_bounded(&base.join("maps"), MAX_MAPS_BYTES) {
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let perms = fields.nth(1).unwrap_or("");
            let path = fields.nth(3).map(PathBuf::from);
            if let Some(path) = path {
                if perms.contains('w') && perms.contains('s') && inside(&path, rules) {
                    return Some(Holder { pid, path, how: "a shared writable mapping" });
                }
            }
        }
    }
    None
}

/// The first holder among `pids` (the workload's processes).
pub fn find(pids: &[u32], rules: &[ScopeRule]) -> Option<Holder> {
    pids.iter().find_map(|pid| holds(*pid, rules))
}
