//! Bounded waits when the registry is away: a reclaim that fails is retried
//! with backoff until the registry is back; a Pod's shutdown ends within its
//! stated bound (`SHUTDOWN_WAIT`) even if the registry never answers, and at
//! once on a second SIGTERM; what it could not reclaim stays recorded and
//! the next resume prunes it.

use pod_e2e as common;

use std::time::{Duration, Instant};

use common::{signal, wait_until, Home, Proc};
use pod::process::owner::{SHUTDOWN_WAIT, STOP_GRACE};
use rustix::process::Signal;

fn removals(h: &Home, child: &str) -> Vec<String> {
    h.events("lead")
        .iter()
        .filter(|e| e["kind"] == "child.removed" && e["name"] == child)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// lead (top-level) with child docs, and the registry daemon frozen
/// (SIGSTOP): it accepts connections but never answers.
fn frozen_registry() -> (Home, Proc, Proc, Proc) {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    let registry = Proc::of(h.registry_pid().expect("registry"));
    let (lead, docs) = (h.proc("lead"), h.proc("docs"));
    signal(registry.pid, Signal::STOP);
    (h, registry, lead, docs)
}

/// After the frozen registry thaws: lead resumes, prunes docs (its stop
/// never reached the registry), and has docs's region back.
fn recovers(h: &Home, registry: Proc) {
    signal(registry.pid, Signal::CONT);
    assert_eq!(h.events("lead").last().map(|e| e["kind"].clone()), Some("pod.stopped".into()));
    h.must(&["resume", "lead"]);
    assert_eq!(removals(h, "docs"), vec!["pruned"]);
    assert!(h.can_write("lead", "docs/a"));
}

#[test]
fn a_second_sigterm_stops_waiting() {
    let (h, registry, lead, docs) = frozen_registry();
    signal(lead.pid, Signal::TERM);
    // docs stops without the registry (its parent reclaims it); lead then
    // waits on the registry for docs's reclaim.
    wait_until("docs stopped", || !docs.alive());
    let second = Instant::now();
    signal(lead.pid, Signal::TERM);
    wait_until("lead exits on the second signal", || !lead.alive());
    assert!(second.elapsed() < Duration::from_secs(5), "the second signal took {:?}", second.elapsed());
    recovers(&h, registry);
}

#[test]
fn a_shutdown_ends_within_its_bound_without_the_registry() {
    let (h, registry, lead, _docs) = frozen_registry();
    let started = Instant::now();
    signal(lead.pid, Signal::TERM);
    // Longer than the common bound: this is the bound under test.
    let limit = SHUTDOWN_WAIT + 2 * STOP_GRACE + Duration::from_secs(5);
    while lead.alive() && started.elapsed() < limit + Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    // It waited for the registry (docs's reclaim, then the release) up to
    // the bound, and not longer than the bound plus the workload's stop.
    assert!(took >= SHUTDOWN_WAIT - Duration::from_secs(1), "gave up after {took:?}");
    assert!(!lead.alive() && took <= limit, "took {took:?}");
    recovers(&h, registry);
}

/// The registry dies and cannot start again for a while (its socket's
/// place is taken by a folder) when docs is killed: lead's reclaim of docs
/// fails, is retried, and succeeds once the registry can start.
#[test]
fn a_failed_reclaim_is_retried_until_the_registry_is_back() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    common::kill9(h.registry_pid().expect("registry"));
    let blocker = h.home.join("run/registry/sock");
    let _ = std::fs::remove_file(&blocker);
    std::fs::create_dir(&blocker).expect("block the socket's place");
    h.kill9("docs");
    let pod_log = h.run_dir("lead").join("pod.log");
    wait_until("lead's reclaim of docs failed", || {
        std::fs::read_to_string(&pod_log).unwrap_or_default().contains("reclaim failed; retrying")
    });
    assert!(!h.can_write("lead", "docs/a"), "not reclaimed while the registry is away");
    std::fs::remove_dir(&blocker).expect("unblock");
    wait_until("lead reclaims docs on a retry", || h.can_write("lead", "docs/a"));
    assert_eq!(removals(&h, "docs"), vec!["lost"]);
    assert!(h.allocation("docs").is_none(), "the registry has docs's region back");
}

/// The processes `pid` started that are still its children, with their
/// command lines.
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // The parent is the second field after the command's closing paren.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            out.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string()));
        }
    }
    out
}

/// `lead`'s standby Pod process: its child started as `--standby` that is
/// no Pod yet.
fn standby_of(lead: u32, pods: &[u32]) -> Option<u32> {
    children_of(lead)
        .into_iter()
        .find(|(pid, cmd)| cmd.ends_with("__pod --standby") && !pods.contains(pid))
        .map(|(pid, _)| pid)
}

/// A Pod that has spawned keeps one standby Pod process, the next spawn's
/// child, and a new one after it; its standby goes with it.
#[test]
fn the_next_spawn_is_the_standby_and_the_standby_goes_with_its_pod() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    let lead = h.pid("lead");
    assert_eq!(standby_of(lead, &[]), None, "no standby before the first spawn");
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    let docs = h.pid("docs");
    wait_until("lead starts a standby after its first spawn", || standby_of(lead, &[docs]).is_some());
    let standby = standby_of(lead, &[docs]).expect("standby");
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    assert_eq!(h.pid("tests"), standby, "the second spawn's child is the standby started before it");
    wait_until("lead starts the next standby", || standby_of(lead, &[docs, standby]).is_some());
    let next = Proc::of(standby_of(lead, &[docs, standby]).expect("next standby"));
    h.must(&["stop", "lead"]);
    wait_until("the unused standby exits with its Pod", || !next.alive());
}
