//! Process identity from `/proc`: a pid alone is not an identity (pids are
//! reused), a pid plus its start time is.
//!
//! This is the one reader of "who is this process" for the registry (its
//! authorization, `auth::Kernel`; liveness for the sweep) and for the Pods
//! (the Pod socket's caller walk, `pod::process::caller`; child watches),
//! so the two never disagree about a process: the same fields, the same
//! zombie rule, the same bounds. A read that fails is an error, never taken
//! for a dead process.

use std::io::{self, Read};

/// Longest `/proc` file read. A stat line is a few hundred bytes; a command
/// line may be long, and only its first words are ever needed.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// What `/proc/<pid>/stat` says about a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The parent's pid (0 for the kernel's own first processes).
    pub ppid: u32,
    /// Clock ticks since boot (field 22).
    pub start_time: u64,
}

/// The process `pid`: `None` when there is no such process or it is a
/// zombie (it has exited and only waits to be reaped).
pub fn stat(pid: u32) -> io::Result<Option<Stat>> {
    let Some(text) = read_bounded(&format!("/proc/{pid}/stat"))? else { return Ok(None) };
    let text = String::from_utf8_lossy(&text);
    parse_stat(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: {e}")))
}

/// Start time of a running process (see [`stat`]).
pub fn start_time(pid: u32) -> io::Result<Option<u64>> {
    Ok(stat(pid)?.map(|s| s.start_time))
}

/// The first [`MAX_PROC_FILE`] bytes of a process's command line (its
/// arguments, each ending in a NUL); `None` when there is no such process.
pub fn cmdline(pid: u32) -> io::Result<Option<Vec<u8>>> {
    read_bounded(&format!("/proc/{pid}/cmdline"))
}

fn read_bounded(path: &str) -> io::Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_PROC_FILE).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Parses a stat line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the
/// last `)`: state is field 3, the parent's pid field 4, the start time
/// field 22.
fn parse_stat(text: &str) -> Result<Option<Stat>, String> {
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied().ok_or(format!("fewer than {n} fields"));
    if matches!(field(3)?, "Z" | "X") {
        return Ok(None);
    }
    let raw_parent = field(4)?;
    let ppid = raw_parent.parse::<u32>().map_err(|e| format!("parent pid {raw_parent:?}: {e}"))?;
    let raw = field(22)?;
    let start_time = raw.parse::<u64>().map_err(|e| format!("start time {raw:?}: {e}"))?;
    Ok(Some(Stat { ppid, start_time }))
}

/// The kernel as the registry's authorization sees it (`auth::Kernel`).
pub struct ProcKernel;

impl crate::auth::Kernel for ProcKernel {
    fn process(&self, pid: u32) -> crate::auth::Seen {
        match stat(pid) {
            Ok(Some(s)) => crate::auth::Seen::Running { start: s.start_time, parent: s.ppid },
            Ok(None) => crate::auth::Seen::Gone,
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot read process facts; counting it as running");
                crate::auth::Seen::Unknown
            }
        }
    }
}

/// The process behind a connection from `pid`, with the one that started
/// it, read from the kernel.
pub fn caller(pid: u32) -> Result<crate::auth::Caller, String> {
    use crate::auth::{Caller, ProcId};
    let me = stat(pid)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("process {pid} exited before it could be identified"))?;
    let parent = match me.ppid {
        0 | 1 => None,
        p => stat(p).ok().flatten().map(|s| ProcId { pid: p, start: s.start_time }),
    };
    Ok(Caller { process: ProcId { pid, start: me.start_time }, parent })
}

/// Is the process `pid` that was started at `start` still running?
/// An unreadable `/proc` entry counts as alive: only evidence of death
/// removes a Pod.
pub fn is_alive(pid: u32, start: u64) -> bool {
    match start_time(pid) {
        Ok(Some(t)) => t == start,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot read process start time; assuming alive");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_name() {
        let line = "42 (a (b) c) S 7 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        assert_eq!(parse_stat(line), Ok(Some(Stat { ppid: 7, start_time: 777 })));
        let zombie = "42 (x) Z 7 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        assert_eq!(parse_stat(zombie), Ok(None));
        assert!(parse_stat("42 (x) S 1 2").is_err());
        assert!(parse_stat("42 x S 1").is_err());
    }

    #[test]
    fn our_own_process_is_alive() {
        let me = std::process::id();
        let start = start_time(me).expect("readable").expect("running");
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
        let parent = stat(me).expect("readable").expect("running").ppid;
        assert_eq!(Some(parent), rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32));
        let args = cmdline(me).expect("readable").expect("running");
        assert!(args.ends_with(b"\0"), "{args:?}");
    }
}
