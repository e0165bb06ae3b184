//! Process liveness from `/proc`: a pid alone is not an identity (pids are
//! reused), a pid plus its start time is.

use std::io;

/// Start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) of a
/// running process; `None` when there is no such process or it is a zombie
/// (it has exited and only waits to be reaped).
pub fn start_time(pid: u32) -> io::Result<Option<u64>> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_stat(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: {e}")))
}

/// Start time and parent pid of a running process (not a zombie).
pub fn info(pid: u32) -> io::Result<Option<(u64, u32)>> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_stat_full(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: {e}")))
}

/// Parses a stat line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat(text: &str) -> Result<Option<u64>, String> {
    parse_stat_full(text).map(|found| found.map(|(start, _)| start))
}

/// (start time, parent pid) from a stat line.
fn parse_stat_full(text: &str) -> Result<Option<(u64, u32)>, String> {
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    let mut fields = text[close + 1..].split_whitespace();
    let state = fields.next().ok_or("no state field")?;
    if state == "Z" || state == "X" {
        return Ok(None);
    }
    // Field 3 is the state, field 4 the parent pid; field 22 is 18 further.
    let raw_parent = fields.next().ok_or("no parent pid field")?;
    let parent = raw_parent.parse::<u32>().map_err(|e| format!("parent pid {raw_parent:?}: {e}"))?;
    let raw = fields.nth(17).ok_or("fewer than 22 fields")?;
    let start = raw.parse::<u64>().map_err(|e| format!("start time {raw:?}: {e}"))?;
    Ok(Some((start, parent)))
}

/// The kernel as the registry's authorization sees it (`auth::Kernel`).
pub struct ProcKernel;

impl crate::auth::Kernel for ProcKernel {
    fn process(&self, pid: u32) -> crate::auth::Seen {
        match info(pid) {
            Ok(Some((start, parent))) => crate::auth::Seen::Running { start, parent },
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
    let (start, parent) = info(pid)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("process {pid} exited before it could be identified"))?;
    let parent = match parent {
        0 | 1 => None,
        p => info(p).ok().flatten().map(|(start, _)| ProcId { pid: p, start }),
    };
    Ok(Caller { process: ProcId { pid, start }, parent })
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
    fn parses_names_with_spaces_and_parens() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        assert_eq!(parse_stat(line), Ok(Some(777)));
        let zombie = "42 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        assert_eq!(parse_stat(zombie), Ok(None));
        assert!(parse_stat("42 (x) S 1 2").is_err());
    }

    #[test]
    fn our_own_process_is_alive() {
        let me = std::process::id();
        let start = start_time(me).expect("readable").expect("running");
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
    }
}
