//! Whole-tree containment with real processes: setsid and double-forked
//! descendants, fork bombs, the supervisor fallbacks, a Pod process killed
//! with SIGKILL, and identity from the kernel.

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use pod_sandbox::detect::Feature;
use pod_sandbox::{workload_of, Containment, ContainmentRecord, Level, Limits, Mechanism, ProcessId};

/// A main process that starts a double-forked, setsid grandchild, says so,
/// and stays.
const ESCAPER: &str = r#"
( setsid sh -c 'echo up > "$T/sync"; exec sleep 1000' & )
exec sleep 1000
"#;

fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    stat[close + 1..].split_whitespace().nth(3)?.parse().ok()
}

fn escaper_is_ended(disable: &[Feature], mechanism: Mechanism) {
    let fx = Fixture::new();
    let run = start(&fx, "escaper", Level::Landlock, &fx.policy(vec![]), disable, Limits::default(), ESCAPER);
    assert_eq!(run.containment.mechanism(), mechanism);
    assert_eq!(synced(&fx), "up");
    let members: Vec<ProcessId> = run.containment.members().into_iter().filter_map(ProcessId::of).collect();
    let main_session = session_of(run.workload.pid()).expect("main runs");
    let escaped: Vec<&ProcessId> =
        members.iter().filter(|p| session_of(p.pid).is_some_and(|s| s != main_session && s == p.pid)).collect();
    assert_eq!(escaped.len(), 1, "one setsid grandchild among {members:?}");
    // Identity comes from the kernel, for the main process and the escaper.
    let records = [run.containment.record().clone()];
    let tag = run.containment.record().home_tag.clone();
    for p in [ProcessId::of(run.workload.pid()).expect("main"), *escaped[0]] {
        let id = workload_of(p.pid, p.start_time, &tag, &records).expect("a workload process");
        assert_eq!((id.pod.as_str(), id.instance.as_str()), ("escaper", "t1"));
    }
    let me = ProcessId::of(std::process::id()).expect("me");
    assert_eq!(workload_of(me.pid, me.start_time, &tag, &records), None, "the test is the operator");

    run.containment.terminate(Duration::from_millis(500)).expect("terminate");
    assert!(members.iter().all(|p| !p.is_alive()), "every process of the tree is gone");
    assert!(!run.containment.is_populated().expect("populated"));
    let _ = run.workload.reap();
    run.containment.remove().expect("remove");
}

#[test]
fn a_setsid_double_forked_grandchild_is_ended_with_its_cgroup() {
    if require(&["landlock", "cgroup"]) {
        escaper_is_ended(&[], Mechanism::Cgroup);
    }
}

#[test]
fn without_a_cgroup_the_pid_namespace_supervisor_ends_the_tree() {
    if require(&["landlock", "pidns"]) {
        escaper_is_ended(&[Feature::Cgroup], Mechanism::PidNamespace);
    }
}

#[test]
fn without_a_cgroup_or_pid_namespace_the_subreaper_ends_the_tree() {
    if require(&["landlock"]) {
        escaper_is_ended(&[Feature::Cgroup, Feature::Pidns], Mechanism::Subreaper);
    }
}

#[test]
fn a_fork_bomb_under_max_pids_50_is_contained() {
    if !require(&["cgroup", "pids"]) {
        return;
    }
    let fx = Fixture::new();
    let limits = Limits { max_pids: Some(50), memory_bytes: None };
    let bomb = "f() { f & f & wait; }; f";
    let run = start(&fx, "bomb", Level::Landlock, &fx.policy(vec![]), &[], limits, bomb);
    let record = run.containment.record().clone();
    let pids_dir = match record.cgroups.v1.iter().find(|c| c.controller == "pids") {
        Some(v1) => v1.dir.clone(),
        None => record.cgroups.v2.clone().expect("v2 cgroup"),
    };
    let read = |f: &str| std::fs::read_to_string(pids_dir.join(f)).unwrap_or_default();
    // The bomb hits the limit: forks start failing.
    assert!(until(Duration::from_secs(20), || read("pids.events").trim() != "max 0"), "{}", read("pids.events"));
    let current: u32 = read("pids.current").trim().parse().expect("count");
    assert!(current <= 50, "{current} processes under a limit of 50");
    // The machine is fine: this process still forks.
    assert!(std::process::Command::new("true").status().expect("fork").success());
    finish(run);
    assert_eq!(read("pids.current").trim(), "");
}

/// Starts a stand-in Pod process that launches `script` and prints its
/// containment record; returns it and the record.
fn stand_in(fx: &Fixture, disable: &[Feature], script: &str) -> (std::process::Child, ContainmentRecord) {
    stand_in_as(fx, disable, script, "landlock", None)
}

fn stand_in_as(
    fx: &Fixture,
    disable: &[Feature],
    script: &str,
    level: &str,
    uid: Option<u32>,
) -> (std::process::Child, ContainmentRecord) {
    let body = serde_json::json!({
        "policy": fx.policy(vec![]),
        "level": level,
        "disable": disable,
        "home": fx.home,
        "pod": "orphaned",
        "instance": "t1",
        "program": program(fx, script),
        "log": fx.log,
    });
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pod-sandbox-test"));
    cmd.arg("pod").stdin(Stdio::piped()).stdout(Stdio::piped());
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid);
    }
    let mut pod = cmd.spawn().expect("stand-in");
    {
        use std::io::Write;
        let mut stdin = pod.stdin.take().expect("stdin");
        stdin.write_all(body.to_string().as_bytes()).expect("spec");
    }
    let mut line = String::new();
    std::io::BufReader::new(pod.stdout.take().expect("stdout")).read_line(&mut line).expect("record");
    let record: ContainmentRecord = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (pod, record)
}

fn survives_its_pod_and_is_ended_from_the_record(disable: &[Feature]) {
    let fx = Fixture::new();
    let (mut pod, record) = stand_in(&fx, disable, ESCAPER);
    assert_eq!(synced(&fx), "up");
    pod.kill().expect("kill -9 the Pod process");
    pod.wait().expect("reap");
    // Another process (a parent, the registry's sweep) takes it up.
    let containment = Containment::from_record(record);
    let members: Vec<ProcessId> = containment.members().into_iter().filter_map(ProcessId::of).collect();
    assert!(members.len() >= 3, "keeper, main, grandchild: {members:?}");
    assert!(containment.is_populated().expect("populated"), "live while a workload process is");
    containment.terminate(Duration::from_millis(500)).expect("terminate");
    assert!(members.iter().all(|p| !p.is_alive()));
    assert!(!containment.is_populated().expect("populated"));
    containment.remove().expect("remove");
}

#[test]
fn a_workload_outlives_a_killed_pod_process_until_terminated_cgroup() {
    if require(&["landlock", "cgroup"]) {
        survives_its_pod_and_is_ended_from_the_record(&[]);
    }
}

#[test]
fn a_workload_outlives_a_killed_pod_process_until_terminated_pid_namespace() {
    if require(&["landlock", "pidns"]) {
        survives_its_pod_and_is_ended_from_the_record(&[Feature::Cgroup]);
    }
}

#[test]
fn a_workload_outlives_a_killed_pod_process_until_terminated_subreaper() {
    if require(&["landlock"]) {
        survives_its_pod_and_is_ended_from_the_record(&[Feature::Cgroup, Feature::Pidns]);
    }
}

#[test]
fn the_exit_of_the_main_process_is_reported_with_its_code() {
    if !require(&["cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let run = start(&fx, "short", Level::Off, &fx.policy(vec![]), &[], Limits::default(), "exit 7");
    let exit = run.workload.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!((exit.code, exit.signal, exit.shell_code()), (Some(7), None, 7));
    let status = run.workload.reap().expect("reap");
    assert_eq!(status.code(), Some(7), "the keeper exits with the workload's code");
    finish(run);
}

/// The unprivileged path: a Pod process that is not root gets no cgroup
/// (none is delegated to it here), so a PID-namespace supervisor inside a
/// user namespace, and level `full` through that user namespace.
#[test]
fn an_unprivileged_pod_gets_full_enforcement_through_a_user_namespace() {
    if !require(&["root", "landlock"]) {
        return;
    }
    const NOBODY: u32 = 65534;
    let fx = Fixture::new();
    for entry in walk(fx.dir.path()) {
        std::os::unix::fs::lchown(&entry, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let (mut pod, record) = stand_in_as(&fx, &[], AGENT, "full", Some(NOBODY));
    assert_eq!(record.mechanism, Mechanism::PidNamespace);
    let got = attempts(
        &fx,
        &[
            ("create inside", "echo new > $R/docs/new"),
            ("create outside", "echo new > $O/new"),
            ("read data/", "cat $H/data/store"),
            ("run as", "test $(id -u) = 65534"),
        ],
    );
    quit(&fx);
    assert_eq!(got, "create inside: ok\ncreate outside: denied\nread data/: denied\nrun as: ok\n");
    let containment = Containment::from_record(record);
    containment.terminate(Duration::from_millis(500)).expect("terminate");
    assert!(!containment.is_populated().expect("populated"));
    pod.kill().expect("kill the stand-in");
    pod.wait().expect("reap");
    containment.remove().expect("remove");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
