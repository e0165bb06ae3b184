//! Per-Pod cgroups: the strongest containment Linux offers. Every process a
//! workload forks is born in its cgroup, however it detaches (setsid,
//! double fork); `cgroup.events` says exactly when the last one is gone and
//! `cgroup.kill` ends them all at once, fork bombs included. Limits go into
//! the same cgroup (v2 controllers) or into sibling cgroups of the v1
//! `pids` and `memory` hierarchies that hybrid hosts mount.
//!
//! Layout: `<parent>/pod-sandbox.<home tag>/<pod>@<instance>`, where the tag
//! is a hash of the runtime's home, so parallel `POD_HOME`s never share a
//! cgroup, and `@` (never in a Pod name) keeps Pod cgroups apart from
//! anything else. The runtime's own processes (Pod processes, the registry)
//! are never moved into one: only the helper moves itself in, at exec.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::SandboxError;

/// First part of the per-home directory's name.
pub const HOME_PREFIX: &str = "pod-sandbox.";

/// The tag of a runtime home: 16 hex digits of its path's BLAKE3 hash.
pub fn home_tag(home: &Path) -> String {
    let hash = blake3::hash(home.as_os_str().as_encoded_bytes());
    hash.to_hex()[..16].to_string()
}

/// A Pod cgroup's leaf name.
pub fn leaf_name(pod: &str, instance: &str) -> String {
    format!("{pod}@{instance}")
}

/// Parses a v2 cgroup path into (home tag, pod, instance) of the innermost
/// Pod cgroup on it, if any.
pub fn parse_workload_path(path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    parts.windows(2).rev().find_map(|w| {
        let tag = w[0].strip_prefix(HOME_PREFIX)?;
        let (pod, instance) = w[1].split_once('@')?;
        Some((tag.to_string(), pod.to_string(), instance.to_string()))
    })
}

/// A v1 cgroup that carries a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Cgroup {
    pub controller: String,
    pub dir: PathBuf,
}

/// The cgroups of one Pod's workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSet {
    /// The v2 cgroup (containment); `None` under a supervisor with v1 limits.
    pub v2: Option<PathBuf>,
    pub v1: Vec<V1Cgroup>,
}

impl CgroupSet {
    /// Every `cgroup.procs` file the helper writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.v2.iter().chain(self.v1.iter().map(|c| &c.dir)).map(|d| d.join("cgroup.procs")).collect()
    }
}

/// Where one limit goes.
pub enum LimitAt<'a> {
    V2,
    V1 { parent: &'a Path },
}

/// One limit to write: controller, file, value.
pub struct Limit<'a> {
    pub at: LimitAt<'a>,
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
}

fn write_file(path: &Path, value: &str) -> Result<(), SandboxError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(SandboxError::io(format!("cannot open {}", path.display())))?;
    f.write_all(value.as_bytes()).map_err(SandboxError::io(format!("cannot write {value:?} to {}", path.display())))
}

fn make_dir(dir: &Path) -> Result<bool, std::io::Error> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `<parent>/pod-sandbox.<tag>/<leaf>`, enabling `controllers` on the
/// way down. A leftover of the same name is taken over only when empty.
fn create_one(parent: &Path, tag: &str, leaf: &str, v2_controllers: &[&str]) -> Result<PathBuf, SandboxError> {
    let home = parent.join(format!("{HOME_PREFIX}{tag}"));
    let dir = home.join(leaf);
    // A concurrent `remove` of the last Pod of this home may rmdir the home
    // between our two mkdirs; try again (bounded).
    for _ in 0..8 {
        make_dir(&home).map_err(SandboxError::io(format!("cannot create cgroup {}", home.display())))?;
        for c in v2_controllers {
            write_file(&parent.join("cgroup.subtree_control"), &format!("+{c}"))?;
            write_file(&home.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
        match make_dir(&dir) {
            Ok(true) => return Ok(dir),
            Ok(false) => {
                if is_populated_dir(&dir)? {
                    return Err(SandboxError::Held(format!(
                        "cgroup {} already exists and still holds processes (an earlier instance of this Pod?)",
                        dir.display()
                    )));
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SandboxError::Io { what: format!("cannot create cgroup {}", dir.display()), source: e })
            }
        }
    }
    Err(SandboxError::Held(format!("cgroup {} kept vanishing while it was created", home.display())))
}

/// Creates a Pod's cgroups: the v2 one under `v2_parent` (if any) and one
/// in each v1 hierarchy a limit needs, then writes the limits.
pub fn create(
    v2_parent: Option<&Path>,
    tag: &str,
    leaf: &str,
    limits: &[Limit<'_>],
) -> Result<CgroupSet, SandboxError> {
    let v2_controllers: Vec<&str> =
        limits.iter().filter(|l| matches!(l.at, LimitAt::V2)).map(|l| l.controller).collect();
    let v2 = match v2_parent {
        Some(parent) => Some(create_one(parent, tag, leaf, &v2_controllers)?),
        None => None,
    };
    let mut set = CgroupSet { v2, v1: Vec::new() };
    for limit in limits {
        let dir = match (&limit.at, &set.v2) {
            (LimitAt::V2, Some(dir)) => dir.clone(),
            (LimitAt::V2, None) => {
                return Err(SandboxError::Unsupported(format!(
                    "the v2 {} controller needs a v2 cgroup",
                    limit.controller
                )))
            }
            (LimitAt::V1 { parent }, _) => {
                let dir = match create_one(parent, tag, leaf, &[]) {
                    Ok(d) => d,
                    Err(e) => {
                        remove(&set);
                        return Err(e);
                    }
                };
                set.v1.push(V1Cgroup { controller: limit.controller.to_string(), dir: dir.clone() });
                dir
            }
        };
        if let Err(e) = write_file(&dir.join(limit.file), &limit.value) {
            remove(&set);
            return Err(e);
        }
    }
    Ok(set)
}

/// Moves the calling process into every cgroup of `procs_files` (the
/// helper does this first thing, before it forks anything).
pub fn join(procs_files: &[PathBuf]) -> Result<(), SandboxError> {
    let pid = std::process::id().to_string();
    procs_files.iter().try_for_each(|f| write_file(f, &pid))
}

fn is_populated_dir(dir: &Path) -> Result<bool, SandboxError> {
    let path = dir.join("cgroup.events");
    let text = crate::proc::read_small(&path).ok_or_else(|| SandboxError::Io {
        what: format!("cannot read {}", path.display()),
        source: std::io::Error::last_os_error(),
    })?;
    Ok(text.lines().any(|l| l == "populated 1"))
}

/// Does the v2 cgroup (or a descendant) hold a process? A missing cgroup
/// holds none.
pub fn is_populated(dir: &Path) -> Result<bool, SandboxError> {
    if !dir.exists() {
        return Ok(false);
    }
    is_populated_dir(dir)
}

/// Every process in the cgroup and its descendants.
pub fn members(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Some(text) = crate::proc::read_small(&d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        if out.len() >= crate::proc::MAX_PROCESSES {
            break;
        }
    }
    out
}

/// Ends every process in the cgroup (`cgroup.kill`, Linux 5.14).
pub fn kill(dir: &Path) -> Result<(), SandboxError> {
    write_file(&dir.join("cgroup.kill"), "1")
}

/// Waits until the cgroup is empty, woken by `cgroup.events` changes
/// (poll), for at most `timeout`. True when empty.
pub fn wait_empty(dir: &Path, timeout: Duration) -> Result<bool, SandboxError> {
    use rustix::event::{poll, PollFd, PollFlags};
    let deadline = Instant::now() + timeout;
    let path = dir.join("cgroup.events");
    loop {
        // Opened before it is read: a change after the read then wakes the
        // poll below (kernfs compares against the event count seen at open).
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(SandboxError::Io { what: format!("cannot open {}", path.display()), source: e }),
        };
        if !is_populated_dir(dir)? {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [PollFd::new(&file, PollFlags::PRI | PollFlags::ERR)];
        let ts = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec { tv_sec: 1, tv_nsec: 0 });
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(SandboxError::Io { what: format!("cannot poll {}", path.display()), source: e.into() })
            }
        }
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            rmdir_tree(&e.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(dir = %dir.display(), error = %e, "cgroup not removed");
        }
    }
}

/// Removes the Pod's cgroups (they must be empty), and the per-home
/// directories when no other Pod of the home still uses them.
pub fn remove(set: &CgroupSet) {
    for dir in set.v2.iter().chain(set.v1.iter().map(|c| &c.dir)) {
        rmdir_tree(dir);
        if let Some(home) = dir.parent() {
            // Fails (EBUSY/ENOTEMPTY) while another Pod of this home has one.
            let _ = std::fs::remove_dir(home);
        }
    }
}

/// Is `set` gone from the filesystem?
pub fn is_removed(set: &CgroupSet) -> bool {
    set.v2.iter().chain(set.v1.iter().map(|c| &c.dir)).all(|d| !d.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_paths_are_parsed_innermost_first() {
        assert_eq!(
            parse_workload_path("/pod-sandbox.0123456789abcdef/lead@s1"),
            Some(("0123456789abcdef".into(), "lead".into(), "s1".into()))
        );
        assert_eq!(
            parse_workload_path("/pod-sandbox.aa/lead@1/pod-sandbox.bb/helper@2"),
            Some(("bb".into(), "helper".into(), "2".into()))
        );
        assert_eq!(parse_workload_path("/user.slice/session-1.scope"), None);
        assert_eq!(parse_workload_path("/pod-sandbox.aa"), None);
    }

    #[test]
    fn tags_differ_per_home() {
        let a = home_tag(Path::new("/tmp/a"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, home_tag(Path::new("/tmp/b")));
        assert_eq!(a, home_tag(Path::new("/tmp/a")));
    }
}
