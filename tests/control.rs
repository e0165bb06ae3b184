//! Restarts and control (issue 12): `pod resume` after the runtime folder
//! vanished (a reboot's tmpfs), `pod stop --timeout`, `pod kill`, `pod rm`
//! of several Pods and of every stopped one, readable `pod log`,
//! completions, `--version`.

use pod_e2e as common;

use common::{wait_until, Home};

#[test]
fn resume_after_the_runtime_folder_vanished() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    // A reboot: every process gone, then run/ (a tmpfs) empty.
    for pod in ["docs", "lead"] {
        h.kill9(pod);
    }
    common::kill9(h.registry_pid().expect("the daemon's pid"));
    std::fs::remove_dir_all(h.home.join("run")).expect("remove run/");
    let resumed = h.pod(&["resume", "lead"]);
    assert!(resumed.ok(), "{resumed:?}");
    assert_eq!(h.redact(&resumed.stdout), "resumed lead (pid [n])\n");
    // Its child died with the reboot: pruned, and lead writes docs again.
    assert!(h.can_write("lead", "docs/x"));
    for dir in [h.home.join("run"), h.run_dir("lead")] {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }
}

#[test]
fn kill_signals_the_workload_and_rm_forgets_stopped_pods() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "a", "--parent", "lead", "--write", "docs", "--", "sleep", "600"]);
    h.must(&["spawn", "b", "--parent", "lead", "--write", "src", "--", "true"]);
    let sent = h.must(&["kill", "a", "--signal", "KILL"]);
    assert_eq!(sent.stdout, "sent SIGKILL to a's workload\n");
    assert_eq!(h.pod(&["wait", "a"]).code, 137);
    assert_eq!(h.pod(&["wait", "b"]).code, 0);
    let bad = h.pod(&["kill", "lead", "--signal", "NOPE"]);
    assert_eq!(
        (bad.code, bad.stderr.as_str()),
        (2, "pod: \"NOPE\" is no signal (a name like TERM or KILL, or 1-64) [cli.bad_signal]\n")
    );
    let none = h.pod(&["kill", "lead"]);
    assert_eq!((none.code, none.stderr.as_str()), (2, "pod: lead runs no workload to signal [pod.no_workload]\n"));
    let rm = h.must(&["rm", "--stopped"]);
    assert_eq!(rm.stdout, "removed a\nremoved b\n");
    assert!(!h.data_dir("a").exists() && !h.data_dir("b").exists() && h.data_dir("lead").exists());
    h.must(&["stop", "lead"]);
    h.must(&["start", "other", "--write", "docs"]);
    h.must(&["stop", "other"]);
    assert_eq!(h.must(&["rm", "lead", "other"]).stdout, "removed lead\nremoved other\n");
    wait_until("nothing listed", || h.json(&["ls", "--json"]) == serde_json::json!([]));
}

#[test]
fn log_shows_one_concise_line_per_event() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", ".", "--deny-read", "secrets"]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--", "sh", "-c", "exit 4"]);
    assert_eq!(h.pod(&["wait", "docs"]).code, 4);
    h.must(&["stop", "lead"]);
    let run = h.pod_env(&["log", "lead"], &[("TZ", "UTC")]);
    // Times are local RFC 3339 (here UTC): replaced to compare whole
    // lines; so is the level, which is this machine's (enforcement.rs
    // shows that line's forms).
    let lines: Vec<String> = run
        .stdout
        .lines()
        .map(|l| {
            let time = l.split_whitespace().nth(1).expect("time");
            assert_eq!((time.len(), &time[23..]), (29, "+00:00"), "{l}");
            let l = l.replacen(time, "[time]", 1);
            let l = match l.split_once("enforced at ") {
                Some((head, _)) => format!("{head}enforced at [level]"),
                None => l,
            };
            h.redact(&l)
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn completions_generate_and_version_is_printed() {
    let h = Home::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = h.must(&["completions", shell]);
        assert!(
            run.stdout.contains("wait") && run.stdout.contains("logs") && run.stdout.len() > 1000,
            "{shell}: {run:?}"
        );
    }
    let bad = h.pod(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    insta::assert_snapshot!(bad.stderr.trim_end());
    let version = h.must(&["--version"]);
    assert_eq!(version.stdout, format!("pod {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn registry_stop_is_refused_with_live_pods_and_leaves_no_daemon_without() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    let refused = h.pod(&["registry", "stop"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    insta::assert_snapshot!("refused", refused.stderr.trim_end());
    let daemon = common::Proc::of(h.registry_pid().expect("daemon"));
    assert!(daemon.alive(), "a refused stop leaves the daemon running");
    let lead = h.proc("lead");
    let all = h.must(&["registry", "stop", "--all"]);
    assert_eq!(h.redact(&all.stdout), "stopped lead\nstopped the registry daemon (pid [n])\n");
    assert!(!daemon.alive() && !lead.alive(), "the Pods and then the daemon are gone");
    assert_eq!(h.must(&["registry", "stop"]).stdout, "no registry daemon runs\n");
    // With no live Pod: the daemon goes at once, and nothing starts another.
    h.must(&["ls"]);
    let daemon = common::Proc::of(h.registry_pid().expect("daemon"));
    let stop = h.must(&["registry", "stop"]);
    assert_eq!(h.redact(&stop.stdout), "stopped the registry daemon (pid [n])\n");
    assert!(!daemon.alive());
    assert_eq!(h.must(&["registry", "stop"]).stdout, "no registry daemon runs\n");
}

#[test]
fn ls_hints_resume_for_a_crashed_pod() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    let pid = h.pid("lead");
    h.kill9("lead");
    // The kernel drops a killed process's lock a moment after it is gone:
    // until then it is `exiting`.
    wait_until("lead's lock released", || h.json(&["ls", "--json"])[0]["state"] != "exiting");
    let ls = h.must(&["ls"]).stdout.replace(&pid.to_string(), "[pid]");
    insta::assert_snapshot!(ls);
    h.must(&["resume", "lead"]);
    assert_eq!(h.json(&["ls", "--json"])[0]["state"], "running");
}

/// A workload that traps SIGTERM (running `on_term` when it comes), says
/// `ready` once the trap is set, and otherwise runs until it is stopped.
/// The trap runs once the current `sleep 0.1` has ended.
fn trapping(on_term: &str) -> String {
    format!("trap '{on_term}' TERM; echo ready; while :; do sleep 0.1; done")
}

/// Waits until `pod`'s workload said `ready` (its trap is set).
fn wait_ready(h: &Home, pod: &str) {
    wait_until("the workload's trap is set", || h.json(&["logs", pod, "--json"])["line"] == "ready");
}

/// The time (ms) of the workload line `line` in `pod logs`.
fn line_time(h: &Home, pod: &str, line: &str) -> i64 {
    let run = h.must(&["logs", pod, "--json"]);
    let lines: Vec<serde_json::Value> =
        run.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let found = lines.iter().find(|l| l["line"] == line).unwrap_or_else(|| panic!("no line {line:?}: {lines:?}"));
    found["timestamp_ms"].as_i64().expect("timestamp_ms")
}

/// The time (ms) of `pod`'s `pod.stopped` event in its session log.
fn stopped_time(h: &Home, pod: &str) -> i64 {
    let run = h.must(&["log", pod, "--json"]);
    let records: Vec<serde_json::Value> =
        run.stdout.lines().map(|l| serde_json::from_str(l).expect("a log line")).collect();
    let stopped = records.iter().find(|r| r["event"]["kind"] == "pod.stopped").expect("pod.stopped");
    stopped["timestamp_ms"].as_i64().expect("timestamp_ms")
}

/// `pod ls --json`, without the pids (which change from run to run).
fn listed(h: &Home) -> serde_json::Value {
    let mut ls = h.json(&["ls", "--json"]);
    for pod in ls.as_array_mut().expect("ls") {
        pod.as_object_mut().expect("a pod").remove("pid");
    }
    ls
}

#[test]
fn stop_timeout_lets_a_term_trapping_workload_exit_and_kills_one_ignoring_term_after_it() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "polite", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &trapping("exit 7")]);
    h.must(&["spawn", "stubborn", "--parent", "lead", "--write", "src", "--", "sh", "-c", &trapping("echo got TERM")]);
    wait_ready(&h, "polite");
    wait_ready(&h, "stubborn");
    // Exits on SIGTERM, well within its timeout: its own exit code.
    let polite = h.must(&["stop", "polite", "--timeout", "30"]);
    assert_eq!(polite.stdout, "stopped polite; lead has its scope back\n");
    // Goes on after SIGTERM: SIGKILL once its timeout (1s) is over.
    let stubborn = h.must(&["stop", "stubborn", "--timeout", "1"]);
    assert_eq!(stubborn.stdout, "stopped stubborn; lead has its scope back\n");
    assert_eq!(
        listed(&h),
        serde_json::json!([
            { "name": "lead", "state": "running", "parent": null },
            { "name": "polite", "state": "exited", "exit_code": 7, "parent": "lead" },
            { "name": "stubborn", "state": "killed", "signal": 9, "parent": "lead" },
        ])
    );
    let table = h.must(&["ls"]).stdout;
    let states: Vec<&str> = table.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(states, ["running", "exited(7)", "killed(SIGKILL)"]);
    // Timed by the Pod's own records: the workload saw SIGTERM (its line,
    // at most one `sleep 0.1` late), then the Pod recorded its stop a full
    // timeout later, and well before the default timeout (5s) would have
    // ended.
    let after_term = stopped_time(&h, "stubborn") - line_time(&h, "stubborn", "got TERM");
    assert!((900..4000).contains(&after_term), "killed {after_term}ms after SIGTERM was seen");
}

#[test]
fn stop_timeout_over_the_limit_is_refused_in_one_line() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    let refused = h.pod(&["stop", "lead", "--timeout", "121"]);
    assert_eq!(
        (refused.code, refused.stderr.as_str()),
        (2, "pod: a stop timeout of 121s is over the limit of 120s [pod.bad_timeout]\n")
    );
    assert_eq!(listed(&h), serde_json::json!([{ "name": "lead", "state": "running", "parent": null }]));
}

#[test]
fn a_child_stopped_by_pod_stop_has_its_exit_status_in_the_parents_log() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "three", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &trapping("exit 3")]);
    h.must(&["spawn", "stubborn", "--parent", "lead", "--write", "src", "--", "sh", "-c", &trapping(":")]);
    h.must(&["spawn", "idle", "--parent", "lead", "--write", "tmp"]);
    wait_ready(&h, "three");
    wait_ready(&h, "stubborn");
    for pod in ["three", "stubborn", "idle"] {
        h.must(&["stop", pod, "--timeout", "1"]);
    }
    let removed: Vec<serde_json::Value> =
        h.events("lead").into_iter().filter(|e| e["kind"] == "child.removed").collect();
    insta::assert_json_snapshot!(removed);
}
