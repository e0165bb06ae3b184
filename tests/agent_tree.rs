//! A lead script's view of its tree (issue 12), with real processes: how
//! each helper ended reaches `pod ls`, `pod wait` and the parent's log;
//! `pod wait` on several helpers and its timeout; `pod logs --follow`
//! streams a helper's lines as it writes them; `--env` reaches the
//! workload and is written nowhere. Workloads hold on a flag file the test
//! creates, so every order asserted here is forced.

use pod_e2e as common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{wait_until, Home, POD};
use serde_json::Value;

/// A workload that waits for `flag` (in the repository), then runs `then`.
fn held(h: &Home, flag: &str, then: &str) -> String {
    format!("while [ ! -e {} ]; do sleep 0.01; done; {then}", h.repo.join(flag).display())
}

fn touch(h: &Home, flag: &str) {
    std::fs::write(h.repo.join(flag), b"").expect("flag");
}

fn child_removals(h: &Home, pod: &str) -> Vec<Value> {
    let mut removed: Vec<Value> = h.events(pod).into_iter().filter(|e| e["kind"] == "child.removed").collect();
    removed.sort_by_key(|e| e["name"].as_str().map(str::to_string));
    removed
}

#[test]
fn exit_code_3_and_sigkill_reach_ls_wait_and_the_parents_log() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "three", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &held(&h, "go", "exit 3")]);
    h.must(&["spawn", "nine", "--parent", "lead", "--write", "src", "--", "sh", "-c", &held(&h, "go", "kill -9 $$")]);
    touch(&h, "go");
    let both = h.pod(&["wait", "three", "nine"]);
    assert_eq!(
        (both.code, both.stdout.as_str(), both.stderr.as_str()),
        (1, "three exited(3)\nnine killed(SIGKILL)\n", "")
    );
    assert_eq!(h.pod(&["wait", "three"]).code, 3);
    assert_eq!(h.pod(&["wait", "nine"]).code, 128 + 9);
    // The same outcome objects as `pod wait --json`'s (pids left out:
    // they change from run to run).
    let mut ls = h.json(&["ls", "--json"]);
    for pod in ls.as_array_mut().expect("ls") {
        pod.as_object_mut().expect("a pod").remove("pid");
    }
    insta::assert_json_snapshot!(ls);
    let table = h.must(&["ls"]).stdout;
    insta::assert_snapshot!(common::redact_numbers_after(&table, &["running          -                        "]));
    // The parent recorded how each child's workload ended.
    insta::assert_json_snapshot!(child_removals(&h, "lead"));
    // And each child recorded it as its own last event.
    let last = |pod: &str| h.events(pod).last().cloned().expect("events");
    insta::assert_json_snapshot!((last("three"), last("nine")));
}

#[test]
fn wait_on_two_helpers_returns_their_outcomes_and_times_out() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "h1", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &held(&h, "one", "exit 0")]);
    h.must(&["spawn", "h2", "--parent", "lead", "--write", "src", "--", "sh", "-c", &held(&h, "two", "exit 5")]);
    let timed_out = h.pod(&["wait", "h1", "h2", "--timeout", "1"]);
    assert_eq!(timed_out.code, 124, "{timed_out:?}");
    insta::assert_snapshot!("timed_out", format!("{}{}", timed_out.stdout, timed_out.stderr));
    touch(&h, "one");
    // h1 has ended, h2 still holds: the wait is for every named Pod.
    let one = h.pod(&["wait", "h1", "h2", "--timeout", "1", "--json"]);
    assert_eq!(one.code, 124, "{one:?}");
    insta::assert_snapshot!("one_of_two", one.stdout);
    touch(&h, "two");
    let both = h.pod(&["wait", "h1", "h2", "--json"]);
    assert_eq!(both.code, 1, "{both:?}");
    insta::assert_snapshot!("both", both.stdout);
    // A Pod that stopped long ago answers from its log.
    assert_eq!(h.pod(&["wait", "h1"]).code, 0);
    let unknown = h.pod(&["wait", "h1", "nobody"]);
    assert_eq!((unknown.code, unknown.stderr.as_str()), (2, "pod: no pod named nobody here [pod.unknown]\n"));
}

#[test]
fn logs_follow_streams_a_helpers_lines_as_written() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    let script = format!("echo one; {}", held(&h, "go", "echo two >&2; echo three"));
    h.must(&["spawn", "helper", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &script]);
    let mut follow = Command::new(POD)
        .args(["logs", "helper", "--follow", "--json"])
        .env("POD_HOME", &h.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pod logs --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let mut next = || -> (String, String) {
        let line = lines.next().expect("a line").expect("read");
        let v: Value = serde_json::from_str(&line).expect("a JSON line");
        (v["stream"].as_str().expect("stream").into(), v["line"].as_str().expect("line").into())
    };
    // "one" is read while the workload still holds: streamed, not at exit.
    assert_eq!(next(), ("stdout".into(), "one".into()));
    touch(&h, "go");
    let rest = [next(), next()];
    assert!(
        rest.contains(&("stderr".into(), "two".into())) && rest.contains(&("stdout".into(), "three".into())),
        "{rest:?}"
    );
    let out = follow.wait_with_output().expect("follow ends when the helper stops");
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    // Kept after the Pod stopped, owner-only, with time and stream per line.
    let file = h.data_dir("helper").join("output.log");
    assert_eq!(std::fs::metadata(&file).expect("output").permissions().mode() & 0o777, 0o600);
    let text = h.must(&["logs", "helper", "--tail", "2"]).stdout;
    let shown: Vec<String> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l.to_string(), |(time, rest)| format!("[{}] {rest}", time.len())))
        .collect();
    assert_eq!(shown.len(), 2, "{text}");
    assert!(shown.iter().all(|l| l.starts_with("[29] ")), "RFC 3339 with milliseconds and offset: {text}");
    h.must(&["rm", "helper"]);
    assert!(!file.exists(), "pod rm removes the output");
    let gone = h.pod(&["logs", "helper"]);
    assert_eq!((gone.code, gone.stderr.as_str()), (2, "pod: no pod named helper here [pod.unknown]\n"));
}

#[test]
fn env_reaches_the_workload_and_env_k_takes_the_callers_value() {
    let h = Home::new();
    std::fs::write(h.repo.join("vars.env"), "# for the helper\nFROM_FILE=file\nTASK=overridden\n").expect("env file");
    h.must(&[
        "start",
        "lead",
        "--write",
        ".",
        "--env",
        "LEAD_TASK=lead-task",
        "--",
        "sh",
        "-c",
        &held(&h, "done", "echo lead:$LEAD_TASK"),
    ]);
    // The command is recorded (pod.created): it names no value.
    let script = r#"echo "$TASK $FROM_FILE secret:${#SECRET} $POD_NAME $POD_PARENT""#;
    let spawned = h.pod_env(
        &[
            "spawn",
            "helper",
            "--parent",
            "lead",
            "--write",
            "docs",
            "--env-file",
            "vars.env",
            "--env",
            "TASK=fix-bug",
            "--env",
            "SECRET",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[("SECRET", "hunter2")],
    );
    assert!(spawned.ok(), "{spawned:?}");
    assert_eq!(h.pod(&["wait", "helper"]).code, 0);
    let line = |pod: &str| {
        let out = h.json(&["logs", pod, "--json"]);
        out["line"].as_str().expect("one line").to_string()
    };
    assert_eq!(line("helper"), "fix-bug file secret:7 helper lead");
    touch(&h, "done");
    assert_eq!(h.pod(&["wait", "lead"]).code, 0);
    assert_eq!(line("lead"), "lead:lead-task");
    // The values are in no file of the runtime (the session logs, the
    // mirror, the process logs).
    let mut found = Vec::new();
    for entry in walk(&h.home) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(7).any(|w| w == b"hunter2") || bytes.windows(7).any(|w| w == b"fix-bug") {
            found.push(entry.display().to_string());
        }
    }
    assert_eq!(found, vec![h.data_dir("helper").join("output.log").display().to_string()]);
    wait_until("lead gone", || h.pod(&["wait", "lead"]).code == 0);
}

#[test]
fn bad_env_is_refused_in_one_line() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    let mut lines = Vec::new();
    for env in ["1X=y", "POD_NAME=x", "NOT_SET_ANYWHERE_12", "A-B=c"] {
        let run = h.pod_env(&["spawn", "c", "--parent", "lead", "--write", "docs", "--env", env], &[]);
        assert_eq!(run.code, 2, "{run:?}");
        lines.push(run.stderr.trim_end().to_string());
    }
    std::fs::write(h.repo.join("bad.env"), "OK=1\nno equals sign\n").expect("env file");
    let run = h.pod(&["spawn", "c", "--parent", "lead", "--write", "docs", "--env-file", "bad.env"]);
    lines.push(run.stderr.trim_end().to_string());
    let run = h.pod(&["spawn", "c", "--parent", "lead", "--write", "docs", "--env-file", "/dev/zero"]);
    lines.push(run.stderr.trim_end().to_string());
    insta::assert_snapshot!(lines.join("\n"));
    assert!(h.allocation("c").is_none(), "nothing spawned");
}

/// Every file under `dir` (no symlinks followed).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let kind = entry.file_type().expect("type");
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}
