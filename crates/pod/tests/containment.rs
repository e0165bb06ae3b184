//! A Pod's workload is one unit of processes: whatever it starts (setsid,
//! double-forked) ends with the Pod. Real Pod processes, real workloads,
//! the real kernel's cgroups. Each test needs what it names (root, a
//! cgroup) and skips with the reason without it, unless POD_TEST_REQUIRE
//! names that need.

use pod_e2e as common;

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
    // In the workload's own scope: an enforced workload writes nowhere else.
    let pidfile = h.repo.join("grandchild.pid");
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
    // In the workload's own scope: an enforced workload writes nowhere else.
    let pidfile = h.repo.join("grandchild.pid");
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
    // Containment is the same at every level.
    assert_snapshot!(h.redact(&common::without_level_line(&scope.stdout)), @r"
    lead (running)
      contained by a cgroup v2
      allow  write [repo]/**
    ");
    let json = h.scope("lead");
    assert_snapshot!(serde_json::to_string(&json["containment"]["mechanism"]).expect("json"), @r#""cgroup""#);
    h.must(&["stop", "lead"]);
}

/// A child Pod `helper` of `lead` whose workload left a grandchild behind
/// (setsid, double-forked; `trap` is run in it first, e.g. `trap '' TERM`
/// to make it outlive a SIGTERM); returns the grandchild.
fn child_with_grandchild(h: &Home, trap: &str) -> Proc {
    // In the helper's own scope: an enforced workload writes nowhere else.
    let pidfile = h.repo.join("docs/grandchild.pid");
    let f = pidfile.display();
    let script = format!(
        "(setsid sh -c \"{trap}; echo \\$\\$ > {f}.tmp && mv {f}.tmp {f}; exec sleep 1000\" &); exec sleep 1000"
    );
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "helper", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &script]);
    wait_until("the grandchild wrote its pid", || pid_in(&pidfile).is_some());
    let grandchild = Proc::of(pid_in(&pidfile).expect("pid"));
    assert!(grandchild.alive(), "the grandchild is running");
    grandchild
}

fn lead_holds_a_layer_for_helper(h: &Home) -> bool {
    common::layer_names(&h.scope("lead")).contains(&"helper".to_string())
}

#[test]
fn a_grandchild_dies_on_kill_9_of_its_pod_before_the_parent_regains_the_region() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    let grandchild = child_with_grandchild(&h, "true");
    common::kill9(h.pid("helper"));
    // Every time the parent is seen without the layer, the grandchild must
    // already be gone: the region comes back only after the workload.
    wait_until("lead regains helper's region", || {
        let regained = !lead_holds_a_layer_for_helper(&h);
        assert!(
            !regained || !grandchild.alive(),
            "lead regained the region while the grandchild (pid {}) runs",
            grandchild.pid
        );
        regained
    });
    assert!(!grandchild.alive(), "the grandchild outlived its Pod's reclaim");
    h.must(&["stop", "lead"]);
}

/// `pod ls --json`'s entry for `pod`, with what varies between runs (the
/// process count, the cgroup's folder) replaced by placeholders.
fn ls_entry(h: &Home, pod: &str) -> serde_json::Value {
    let all = h.json(&["ls", "--json"]);
    let mut entry = all.as_array().expect("list").iter().find(|p| p["name"] == pod).cloned().expect("listed");
    if let Some(problem) = entry["problem"].as_str() {
        let redacted =
            match (problem.find(" but "), problem.find(" processes"), problem.find("(cgroup "), problem.find(");")) {
                (Some(a), Some(b), Some(c), Some(d)) if a < b && b < c && c < d => {
                    format!("{} but [n]{}(cgroup [dir]{}", &problem[..a], &problem[b..c], &problem[d..])
                }
                _ => problem.to_string(),
            };
        entry["problem"] = redacted.into();
    }
    entry["pid"] = "[pid]".into();
    entry
}

#[test]
fn a_region_stays_held_while_a_workload_process_may_run() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    // Ignores SIGTERM: it runs on through the grace until it is killed.
    let grandchild = child_with_grandchild(&h, "trap '' TERM");
    common::kill9(h.pid("helper"));
    wait_until("helper is shown held", || ls_entry(&h, "helper")["state"] == "held");
    let entry = ls_entry(&h, "helper");
    assert!(grandchild.alive(), "the grandchild runs through the grace");
    assert!(lead_holds_a_layer_for_helper(&h), "lead does not regain the region while the grandchild runs");
    insta::assert_json_snapshot!(entry, @r#"
    {
      "name": "helper",
      "parent": "lead",
      "pid": "[pid]",
      "problem": "its Pod process is gone but [n] processes of its workload still run (cgroup [dir]); its region stays held until they are ended",
      "state": "held"
    }
    "#);
    wait_until("lead regains helper's region", || !lead_holds_a_layer_for_helper(&h));
    assert!(!grandchild.alive(), "the grandchild was killed before the region came back");
    h.must(&["stop", "lead"]);
}

/// A new Pod's workload is prepared (parked before its exec) while its
/// scope is taken; when the registry refuses that scope, the parked
/// workload is cancelled: it never ran, and no cgroup of it is left.
#[test]
fn a_start_the_registry_refuses_runs_nothing_of_its_workload() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    std::fs::create_dir_all(h.repo.join("shared")).expect("mkdir shared");
    h.must(&["start", "owner", "--write", "shared", "--", "sleep", "1000"]);
    let alloc = h.allocation("owner").expect("owner's allocation");
    let owner_cgroup = std::path::PathBuf::from(alloc["containment"]["cgroups"]["v2"].as_str().expect("a v2 cgroup"));
    let home_cgroups = owner_cgroup.parent().expect("the home's cgroup folder").to_path_buf();
    let marker = h.repo.join("shared/ran");
    let touch = format!("touch {}", marker.display());
    let refused = h.pod(&["start", "intruder", "--write", "shared", "--", "sh", "-c", &touch]);
    assert_snapshot!(h.redact(&format!("{refused:?}")), @r"
    exit 2
    stdout: 
    stderr: pod: write [repo]/shared/** conflicts with pod owner, which holds write [repo]/shared/** (both cover [repo]/shared/**) [registry.write_conflict]
    ");
    assert!(!marker.exists(), "the refused Pod's workload ran");
    let left: Vec<String> = std::fs::read_dir(&home_cgroups)
        .expect("read the home's cgroup folder")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with("intruder@"))
        .collect();
    assert!(left.is_empty(), "cgroups of the refused Pod's workload are left: {left:?}");
    h.must(&["stop", "owner"]);
}

fn pids_controller() -> bool {
    let support = pod_sandbox::Support::detect().expect("detect");
    available("pids", support.pids.is_ok())
}

/// The folder of the cgroup that carries `pod`'s pids limit, from its
/// allocation's containment record.
fn pids_cgroup(h: &Home, pod: &str) -> std::path::PathBuf {
    let alloc = h.allocation(pod).expect("allocation");
    let cgroups = &alloc["containment"]["cgroups"];
    let v1 = cgroups["v1"]
        .as_array()
        .unwrap_or_else(|| panic!("no containment in {alloc}"))
        .iter()
        .find(|c| c["controller"] == "pids");
    let dir = match v1 {
        Some(c) => c["dir"].as_str(),
        None => cgroups["v2"].as_str(),
    };
    std::path::PathBuf::from(dir.expect("a cgroup with the pids limit"))
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_fork_bomb_under_max_pids_50_is_contained() {
    if !cgroup() || !pids_controller() {
        return;
    }
    let h = Home::new();
    // Its main process forks once, then only waits: the bomb cannot end it.
    h.must(&[
        "start",
        "bomb",
        "--write",
        ".",
        "--max-pids",
        "50",
        "--",
        "sh",
        "-c",
        "(b() { b & b & wait; }; b) & exec sleep 1000",
    ]);
    let dir = pids_cgroup(&h, "bomb");
    assert_snapshot!(read(&dir.join("pids.max")).trim(), @"50");
    // The kernel refused forks past the limit: the bomb hit it.
    wait_until("the fork bomb hits its limit", || {
        read(&dir.join("pids.events"))
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    let current: u32 = read(&dir.join("pids.current")).trim().parse().expect("pids.current");
    assert!(current <= 50, "{current} processes under --max-pids 50");
    let members: Vec<Proc> =
        read(&dir.join("cgroup.procs")).lines().filter_map(|l| l.trim().parse().ok()).map(Proc::of).collect();
    let stop = h.pod(&["stop", "bomb"]);
    assert_snapshot!(h.redact(&format!("{stop:?}")), @r"
    exit 0
    stdout: stopped bomb

    stderr:
    ");
    let left: Vec<u32> = members.iter().filter(|p| p.alive()).map(|p| p.pid).collect();
    assert!(left.is_empty(), "processes of the fork bomb outlived `pod stop`: {left:?}");
    assert!(!dir.exists(), "the bomb's cgroup {} was not removed", dir.display());
}

#[test]
fn a_limit_the_machine_cannot_enforce_is_refused_in_one_line() {
    let h = Home::new();
    let run = h.pod_env(
        &["start", "lead", "--write", ".", "--memory", "100000000", "--", "sleep", "1000"],
        &[("POD_SANDBOX_DISABLE", "memory")],
    );
    assert_snapshot!(h.redact(&format!("{run:?}")), @r"
    exit 2
    stdout: 
    stderr: pod: --memory needs the memory controller, which this machine does not offer: disabled by POD_SANDBOX_DISABLE [enforce.unsupported]
    ");
    let ls = h.must(&["ls"]);
    // Nothing was left behind: no allocation, no session log.
    assert_snapshot!(ls.stdout, @"NAME                     STATE            PARENT                   PID");
    let run = h.pod(&["start", "lead", "--write", ".", "--max-pids", "3", "--", "sleep", "1000"]);
    assert_snapshot!(h.redact(&format!("{run:?}")), @r"
    exit 2
    stdout: 
    stderr: pod: --max-pids 3 is below 8, the fewest a workload and its helpers run with [sandbox.bad_request]
    ");
    let run = h.pod(&["start", "lead", "--write", ".", "--max-pids", "50"]);
    assert_snapshot!(h.redact(&format!("{run:?}")), @r"
    exit 2
    stdout: 
    stderr: pod: --max-pids and --memory limit a workload, and this pod runs none (give one after --) [cli.limits_without_workload]
    ");
}

/// Runs `pod ARGS` (home `h`) from a shell that first moves itself into
/// the cgroup `dir`: a process there that no Pod started.
fn pod_from_cgroup(h: &Home, dir: &std::path::Path, args: &str) -> common::Run {
    let script = format!("echo $$ > {}/cgroup.procs && exec {} {args}", dir.display(), common::POD);
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("POD_HOME", &h.home)
        .env_remove("POD_NAME")
        .current_dir(&h.repo)
        .output()
        .expect("run sh");
    common::Run::from_output(out)
}

#[test]
fn a_process_in_a_workloads_cgroup_is_that_pods_caller() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "w", "--parent", "lead", "--write", "a", "--", "sleep", "1000"]);
    let alloc = h.allocation("w").expect("w");
    let dir = std::path::PathBuf::from(alloc["containment"]["cgroups"]["v2"].as_str().expect("w's cgroup"));
    // Not in w's process tree, and without POD_NAME: only the kernel's
    // cgroup says it is w's.
    let run = pod_from_cgroup(&h, &dir, "stop lead");
    assert_snapshot!(h.redact(&format!("{run:?}")), @r"
    exit 2
    stdout: 
    stderr: pod: process [n] runs in pod w's tree; it may stop w and its descendants only, and lead is not one [auth.stop_denied]
    ");
    h.must(&["stop", "lead"]);
}

#[test]
fn the_daemon_is_never_started_inside_a_workload() {
    if !cgroup() {
        return;
    }
    let h = Home::new();
    std::fs::create_dir_all(&h.home).expect("home");
    // A workload's cgroup of this home, as the runtime names it, with no
    // registry daemon running yet.
    let support = pod_sandbox::Support::detect().expect("detect");
    let parent = support.cgroup.as_ref().expect("cgroup").parent.clone();
    let home_dir = parent.join(format!("pod-sandbox.{}", pod_sandbox::cgroup::home_tag(&h.home)));
    let dir = home_dir.join("ghost@1-1");
    std::fs::create_dir_all(&dir).expect("cgroup");
    let run = pod_from_cgroup(&h, &dir, "ls");
    // The shell has exited: the cgroup is empty again.
    std::fs::remove_dir(&dir).expect("rmdir");
    std::fs::remove_dir(&home_dir).expect("rmdir");
    let tag = pod_sandbox::cgroup::home_tag(&h.home);
    assert_snapshot!(h.redact(&format!("{run:?}")).replace(&tag, "[tag]"), @r"
    exit 2
    stdout: 
    stderr: pod: the registry daemon did not start: the registry daemon refuses to start inside the cgroup of pod ghost's workload (/pod-sandbox.[tag]/ghost@1-1): it would end with that workload; start it from outside every workload (any pod command run there starts it) (its log: [home]/run/registry/log) [registry.inside_workload]
    ");
    assert_eq!(h.registry_pid(), None, "no daemon runs");
    // From outside every workload it starts as usual.
    h.must(&["ls"]);
    assert!(h.registry_pid().is_some(), "the daemon runs");
}
