//! A Pod's workload is one unit of processes: whatever it starts (setsid,
//! double-forked) ends with the Pod. Real Pod processes, real workloads,
//! the real kernel's cgroups. Each test needs what it names (root, a
//! cgroup) and skips with the reason without it, unless POD_TEST_REQUIRE
//! names that need.

mod common;

use common::{available, wait_until, Home, Proc};
use insta::assert_snapshot;

/// The machine gives this test a cgroup for its workloads (it then runs as
/// root here, or with a delegated cgroup).
fn cgroup() -> bool {
    let support = pod_sandbox::Support::detect().expect("detect");
    available("cgroup", support.cgroup.is_ok())
}

/// A workload that starts a grandchild in a session of its own, through a
/// subshell that exits at once (so the grandchild is nobody's child of the
/// workload any more), and then sleeps. The grandchild writes its pid to
/// `pidfile` (whole: written aside, then renamed).
fn double_forking_workload(pidfile: &std::path::Path) -> String {
    let f = pidfile.display();
    format!("(setsid sh -c 'echo $$ > {f}.tmp && mv {f}.tmp {f}; exec sleep 1000' &); exec sleep 1000")
}

fn pid_in(file: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn a_setsid_double_forked_grandchild_dies_on_pod_stop() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    let pidfile = h.home.parent().expect("root").join("grandchild.pid");
    h.must(&["start", "lead", "--write", ".", "--", "sh", "-c", &double_forking_workload(&pidfile)]);
    wait_until("the grandchild wrote its pid", || pid_in(&pidfile).is_some());
    let grandchild = Proc::of(pid_in(&pidfile).expect("pid"));
    assert!(grandchild.alive(), "the grandchild is running");
    let stop = h.pod(&["stop", "lead"]);
    assert_snapshot!(h.redact(&format!("{stop:?}")), @r"
    exit 0
    stdout: stopped lead

    stderr:
    ");
    // `pod stop` returned: the whole tree is gone already, no waiting here.
    assert!(!grandchild.alive(), "the grandchild (pid {}) outlived `pod stop`", grandchild.pid);
}

#[test]
fn a_grandchild_left_behind_dies_when_the_workload_exits() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    let pidfile = h.home.parent().expect("root").join("grandchild.pid");
    let f = pidfile.display();
    let script = format!(
        "(setsid sh -c 'echo $$ > {f}.tmp && mv {f}.tmp {f}; exec sleep 1000' &); until [ -e {f} ]; do :; done; exit 3"
    );
    h.must(&["start", "lead", "--write", ".", "--", "sh", "-c", &script]);
    wait_until("the grandchild wrote its pid", || pid_in(&pidfile).is_some());
    let grandchild = Proc::of(pid_in(&pidfile).expect("pid"));
    let wait = h.pod(&["wait", "lead"]);
    assert_snapshot!(h.redact(&format!("{wait:?}")), @r"
    exit 3
    stdout: lead exited(3)

    stderr:
    ");
    wait_until("the grandchild is gone", || !grandchild.alive());
}

#[test]
fn pod_scope_says_how_the_workload_is_contained() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    h.must(&["start", "lead", "--write", ".", "--", "sleep", "1000"]);
    let scope = h.must(&["scope", "lead"]);
    assert_snapshot!(h.redact(&scope.stdout), @r"
    lead (running)
      enforced off
      contained by a cgroup v2
      allow  write [repo]/**
    ");
    let json = h.scope("lead");
    assert_snapshot!(serde_json::to_string(&json["containment"]["mechanism"]).expect("json"), @r#""cgroup""#);
    h.must(&["stop", "lead"]);
}
