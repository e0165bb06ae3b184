//! The life of a Pod tree beyond reclaim: stopping a top-level Pod stops its
//! tree bottom-up, SIGTERM is a clean shutdown, a workload sees its Pod in
//! its environment and can spawn helpers, and `pod log --follow` streams.

use pod_e2e as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{signal, wait_until, Home, POD};

#[test]
fn stopping_a_top_level_pod_stops_its_tree_bottom_up() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "mid", "--parent", "lead", "--write", "a/b"]);
    h.must(&["spawn", "grand", "--parent", "mid", "--write", "a/b/c"]);
    let procs = [h.proc("lead"), h.proc("mid"), h.proc("grand")];
    h.must(&["stop", "lead"]);
    for proc in procs {
        assert!(!proc.alive(), "pid {} still running after stopping the tree", proc.pid);
    }
    let table = h.json(&["registry", "ls", "--json"]);
    assert_eq!(table, serde_json::json!([]), "allocations left behind");
    let mid_events = h.events("mid");
    assert!(
        mid_events.iter().any(|e| e["kind"] == "child.removed" && e["name"] == "grand"),
        "mid did not reclaim grand first"
    );
    assert_eq!(mid_events.last().map(|e| e["kind"].clone()), Some("pod.stopped".into()));
    assert_eq!(h.events("lead").last().map(|e| e["kind"].clone()), Some("pod.stopped".into()));
    // Stopped Pods are listed, and can be removed.
    let ls = h.json(&["ls", "--json"]);
    assert!(ls.as_array().expect("ls").iter().all(|p| p["state"] == "stopped"), "{ls}");
    h.must(&["rm", "grand"]);
    assert!(!h.data_dir("grand").exists());
}

#[test]
fn sigterm_is_a_clean_shutdown() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    let child = h.proc("docs");
    signal(child.pid, rustix::process::Signal::TERM);
    wait_until("lead gets docs back after SIGTERM", || h.can_write("lead", "docs/x"));
    // The callback comes before the exit; the exit follows within the bound.
    wait_until("docs exits after its callback", || !child.alive());
    assert_eq!(h.events("docs").last().map(|e| e["kind"].clone()), Some("pod.stopped".into()));
    let lead = h.proc("lead");
    signal(lead.pid, rustix::process::Signal::TERM);
    wait_until("lead exits on SIGTERM", || !lead.alive());
    assert!(h.allocation("lead").is_none(), "a cleanly stopped top-level Pod releases its allocation");
    assert!(!h.run_dir("lead").join("pid").exists());
}

#[test]
fn workload_spawns_helpers_through_its_environment() {
    let h = Home::new();
    // The workload spawns a helper with --parent defaulting to $POD_NAME,
    // then waits for a flag and exits, which stops the lead.
    let flag = h.repo.join(".flag");
    let script = format!("{POD} spawn helper --write docs && while [ ! -e {} ]; do sleep 0.02; done", flag.display());
    h.must(&["start", "lead", "--write", ".", "--", "sh", "-c", &script]);
    wait_until("helper spawned by the workload", || h.allocation("helper").is_some());
    assert!(!h.can_write("lead", "docs/x"));
    let lead = h.proc("lead");
    std::fs::write(&flag, b"").expect("flag");
    wait_until("lead stops when its workload exits", || !lead.alive());
    assert!(h.allocation("lead").is_none() && h.allocation("helper").is_none());
}

#[test]
fn log_follow_streams_new_events() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    let mut follow = Command::new(POD)
        .args(["log", "lead", "--follow", "--json"])
        .env("POD_HOME", &h.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pod log --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    // Each line is one record: `{"seq", "timestamp_ms", "event": {...}}`.
    let mut next_event = || -> serde_json::Value {
        let line = lines.next().expect("a line").expect("read");
        serde_json::from_str::<serde_json::Value>(&line).expect("a JSON record")["event"].clone()
    };
    assert_eq!(next_event()["kind"], "pod.created");
    assert_eq!(next_event()["kind"], "pod.scope");
    assert_eq!(next_event()["kind"], "pod.enforced");
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    let spawned = next_event();
    assert_eq!((spawned["kind"].as_str(), spawned["name"].as_str()), (Some("child.spawned"), Some("docs")));
    h.must(&["stop", "lead"]);
    // The Pod stopped: follow prints its last records and ends by itself.
    let mut kinds = Vec::new();
    loop {
        let event = next_event();
        kinds.push(event["kind"].as_str().expect("kind").to_string());
        if event["kind"] == "pod.stopped" {
            break;
        }
    }
    assert_eq!(kinds, ["pod.scope", "child.removed", "pod.scope", "pod.stopped"]);
    assert!(lines.next().is_none(), "follow ends after the last record");
    let out = follow.wait_with_output().expect("wait");
    assert!(out.status.success(), "follow failed: {}", String::from_utf8_lossy(&out.stderr));
}
