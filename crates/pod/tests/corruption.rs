//! A Pod whose session log is damaged is reported as such by every command
//! that reads it (`log.corrupt`, naming the first bad record), never taken
//! for a Pod without history; `pod ls` marks it. A damaged registry store
//! is refused by the daemon (`registry.corrupt`, naming the lost commit),
//! and every command says so at once, never serving a table that lacks
//! acknowledged changes.

use pod_e2e as common;

use std::os::unix::fs::FileExt;

use std::time::{Duration, Instant};

use common::{kill9, signal, wait_until, Home};
use rustix::process::Signal;

/// Where the write-ahead file's entries start, and an entry's header size
/// (`wal::ENTRIES_START`, `wal::ENTRY_OVERHEAD`).
const ENTRIES_START: u64 = 8192;
const ENTRY_OVERHEAD: u64 = 16;

#[test]
fn a_flipped_byte_in_a_session_log_s_write_ahead_file_is_log_corrupt() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    // Killed: every acknowledged batch is in the write-ahead file only.
    h.kill9("lead");
    let wal = h.data_dir("lead").join("log/wal");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&wal).expect("wal");
    let at = ENTRIES_START + ENTRY_OVERHEAD + 5;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).expect("read");
    file.write_all_at(&[byte[0] ^ 0x01], at).expect("flip");
    drop(file);
    let before = std::fs::read(&wal).expect("wal");
    let mut lines = Vec::new();
    for args in [&["resume", "lead"][..], &["log", "lead"], &["scope", "lead"]] {
        let run = h.pod(args);
        assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "{args:?}: {run:?}");
        lines.push(h.redact(run.stderr.trim_end()));
    }
    insta::assert_snapshot!(lines.join("\n"));
    assert_eq!(std::fs::read(&wal).expect("wal"), before, "nothing was rewritten");
    let ls = h.json(&["ls", "--json"]);
    let mut lead = ls.as_array().expect("list").iter().find(|p| p["name"] == "lead").expect("lead listed").clone();
    lead["pid"] = "[pid]".into();
    lead["problem"] = h.redact(lead["problem"].as_str().unwrap_or_default()).into();
    insta::assert_json_snapshot!("ls_marks_it", lead);
}

/// lead and two children make five registry commits; every process is
/// killed, so the commits are in the registry's write-ahead log only (what
/// the killed daemon left of sled is taken away), and a byte of the first
/// one flips. Each command refuses at once (it does not wait the start
/// timeout for a daemon that already said why), naming the lost commit;
/// nothing is rewritten.
#[test]
fn a_flipped_byte_in_the_registry_s_write_ahead_log_is_refused_by_every_command() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    // The daemon is frozen first, so that it commits nothing more (a sweep
    // of the Pods killed next would add commits, and the line names their
    // number) and its open connections keep the Pods' allocation watches
    // from starting a new daemon; then the Pods go, then the daemon.
    let daemon = h.registry_pid().expect("the daemon's pid");
    signal(daemon, Signal::STOP);
    wait_until("the daemon stopped", || process_state(daemon) == Some('T'));
    for pod in ["tests", "docs", "lead"] {
        h.kill9(pod);
    }
    kill9(daemon);
    let data = h.dirs().registry_data();
    std::fs::remove_dir_all(data.join("sled")).expect("remove sled");
    let wal = data.join("wal");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&wal).expect("wal");
    let at = ENTRIES_START + ENTRY_OVERHEAD + 5;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).expect("read");
    file.write_all_at(&[byte[0] ^ 0x01], at).expect("flip");
    drop(file);
    let before = std::fs::read(&wal).expect("wal");
    let mut lines = Vec::new();
    for args in [&["ls"][..], &["resume", "lead"], &["registry", "ls"]] {
        let started = Instant::now();
        let run = h.pod(args);
        assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "{args:?}: {run:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?} waited {:?}", started.elapsed());
        lines.push(h.redact(run.stderr.trim_end()));
    }
    insta::assert_snapshot!(lines.join("\n"));
    assert_eq!(std::fs::read(&wal).expect("wal"), before, "nothing was rewritten");
}

/// The state letter of a process (`T` once a SIGSTOP took effect), from
/// `/proc/PID/stat`: the field after the parenthesized command name.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
