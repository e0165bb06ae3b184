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

/// Parses a stat line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat(text: &str) -> Result<Option<u64>, String> {
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    let mut fields = text[close + 1..].split_whitespace();
    let state = fields.next().ok_or("no state field")?;
    if state == "Z" || state == "X" {
        return Ok(None);
    }
    // Field 3 is the state; field 22 is 19 fields further.
    let raw = fields.nth(18).ok_or("fewer than 22 fields")?;
    raw.parse::<u64>().map(Some).map_err(|e| format!("start time {raw:?}: {e}"))
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
