//! Reading processes from `/proc`: start times (a pid plus its start time
//! is a process's identity), parents, descendants, namespaces. Every read
//! is bounded; a process that vanished mid-read is simply not there.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Longest `/proc` file read (stat, status, cgroup, fdinfo lines).
const MAX_PROC_FILE: u64 = 64 * 1024;
/// Most processes a scan of `/proc` looks at.
pub const MAX_PROCESSES: usize = 1 << 20;

pub(crate) fn read_small(path: &Path) -> Option<String> {
    read_bounded(path, MAX_PROC_FILE)
}

/// Reads at most `max` bytes of a text file.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(max).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = read_small(Path::new(&format!("/proc/{pid}/stat")))?;
    let close = text.rfind(')')?;
    Some(text[close + 1..].split_whitespace().map(str::to_string).collect())
}

/// Start time (clock ticks since boot) of a live, not-yet-exited process.
pub fn start_time(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    let state = fields.first()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Parent pid of a process (0 when unknown).
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Is `pid` still the process that started at `start`?
pub fn is_same(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// Every pid in `/proc` with its parent.
pub fn parents() -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Some(ppid) = parent(pid) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// Every descendant of `root` (not `root` itself), parents before children.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents = parents();
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (pid, ppid) in &parents {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if *c != root && out.len() < MAX_PROCESSES {
                out.push(*c);
                stack.push(*c);
            }
        }
    }
    out
}

/// The inode of a process's PID namespace (`/proc/<pid>/ns/pid`).
pub fn pid_namespace(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// The v2 cgroup path of a process (`0::/path` in `/proc/<pid>/cgroup`).
pub fn cgroup_v2_path(pid: u32) -> Option<String> {
    let text = read_small(Path::new(&format!("/proc/{pid}/cgroup")))?;
    crate::detect::v2_path(&crate::detect::parse_proc_cgroup(&text)).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_process_and_its_parent() {
        let me = std::process::id();
        let start = start_time(me).expect("running");
        assert!(is_same(me, start));
        assert!(!is_same(me, start + 1));
        assert!(parent(me).is_some_and(|p| p > 0));
        assert!(pid_namespace(me).is_some());
    }

    #[test]
    fn a_child_is_a_descendant() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let found = descendants(std::process::id()).contains(&child.id());
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(found);
    }
}
