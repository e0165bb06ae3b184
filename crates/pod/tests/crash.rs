//! The crash suite: for every crash point (a failpoint at a step boundary
//! of spawn, of the reclaim operation on each of its paths, of resume, of
//! the registry's store transaction and of the log's flush), run the
//! scenario, abort the process there (a real `abort()`), recover as a user
//! would (`pod resume`; the registry restarts on demand), and check the
//! brief's eight invariants. Then repeat the interrupted command and check
//! that it converges to the state one successful run gives.
//!
//! Needs the `failpoints` feature: `cargo test -p pod --features failpoints
//! --test crash`.
#![cfg(feature = "failpoints")]

use pod_e2e as common;

use std::collections::BTreeSet;

use common::{alive_as, layer_names, wait_until, Home, Proc};
use serde_json::Value;

/// What the crash interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `pod spawn docs --parent lead --write docs`
    Spawn,
    /// `pod stop docs` (StopPod)
    Stop,
    /// docs's workload exits: the ShutDown callback
    Callback,
    /// lead and docs die; `pod resume lead` prunes docs
    Prune,
    /// `pod resume lead` with a live child (tests) and a dead one (docs)
    Resume,
}

struct CrashPoint {
    /// The process that aborts: a Pod's name, or `registry`.
    role: &'static str,
    point: &'static str,
    /// Which hit of the point aborts.
    hit: usize,
    scenario: Scenario,
}

const fn cp(role: &'static str, point: &'static str, hit: usize, scenario: Scenario) -> CrashPoint {
    CrashPoint { role, point, hit, scenario }
}

use Scenario::*;

const POINTS: &[CrashPoint] = &[
    cp("lead", "spawn.before_delegate", 1, Spawn),
    cp("lead", "spawn.after_delegate", 1, Spawn),
    cp("lead", "spawn.after_log", 1, Spawn),
    cp("docs", "spawn.before_adopt", 1, Spawn),
    cp("lead", "spawn.after_child_start", 1, Spawn),
    // lead's appends: 1 = created, 2 = the spawn batch.
    cp("lead", "log.before_write", 2, Spawn),
    cp("lead", "log.before_flush", 2, Spawn),
    cp("lead", "log.after_flush", 2, Spawn),
    // registry mutations: 1 = register lead, 2 = delegate docs.
    cp("registry", "registry.before_commit", 2, Spawn),
    cp("registry", "registry.after_commit", 2, Spawn),
    cp("lead", "reclaim.before_registry", 1, Stop),
    cp("lead", "reclaim.after_registry", 1, Stop),
    cp("lead", "reclaim.after_log", 1, Stop),
    cp("lead", "reclaim.after_mirror", 1, Stop),
    // registry mutations: register, delegate, adopt, then the reclaim.
    cp("registry", "registry.before_commit", 4, Stop),
    cp("registry", "registry.after_commit", 4, Stop),
    cp("lead", "reclaim.before_registry", 1, Callback),
    cp("lead", "reclaim.after_registry", 1, Callback),
    cp("lead", "reclaim.after_log", 1, Callback),
    cp("lead", "reclaim.after_mirror", 1, Callback),
    cp("lead", "reclaim.before_registry", 1, Prune),
    cp("lead", "reclaim.after_registry", 1, Prune),
    cp("lead", "reclaim.after_log", 1, Prune),
    cp("lead", "reclaim.after_mirror", 1, Prune),
    cp("lead", "resume.after_replay", 1, Resume),
    cp("lead", "resume.after_register", 1, Resume),
    cp("lead", "resume.during_prune", 1, Resume),
    // the resumed lead's appends: 1 = the prune batch.
    cp("lead", "log.after_flush", 1, Resume),
];

const SAMPLE: [&str; 7] = ["docs/a", "docs/x/y", "tests/t", "src/s", "a/b", "secrets/k", "README"];

fn spec(p: &CrashPoint) -> String {
    format!("{}:{}@{}", p.role, p.point, p.hit)
}

/// Live Pods and their allocations, from the registry.
fn allocations(h: &Home) -> Vec<Value> {
    h.json(&["registry", "ls", "--json"]).as_array().expect("list").clone()
}

fn live(h: &Home) -> Vec<Value> {
    allocations(h)
        .into_iter()
        .filter(|a| match (a["pid"].as_u64(), a["start_time"].as_u64()) {
            (Some(pid), Some(start)) => alive_as(pid as u32, start),
            _ => false,
        })
        .collect()
}

/// The brief's invariants, as far as a user can observe them.
fn check_invariants(h: &Home, what: &str, before_crash: &BTreeSet<String>) {
    let live = live(h);
    let names: Vec<String> = live.iter().map(|a| a["name"].as_str().expect("name").to_string()).collect();
    // 1. At every path, at most one live Pod has effective write.
    for path in SAMPLE {
        let writers: Vec<&String> = names.iter().filter(|n| h.can_write(n, path)).collect();
        assert!(writers.len() <= 1, "[{what}] invariant 1: {path} writable by {writers:?}");
    }
    // 2. A child's rules lie inside its parent's base write and outside its denies.
    for child in live.iter().filter(|a| a["parent"].is_string()) {
        let parent = live.iter().find(|a| a["name"] == child["parent"]);
        let Some(parent) = parent else { continue };
        for rule in child["allow"].as_array().expect("allow") {
            let t = rule["target"].as_str().expect("target");
            let inside = parent["allow"]
                .as_array()
                .expect("allow")
                .iter()
                .any(|a| t.starts_with(a["target"].as_str().expect("t")));
            assert!(inside, "[{what}] invariant 2: {t} of {} outside its parent", child["name"]);
        }
    }
    // 3. Base deny exactly as given.
    let scope = h.scope("lead");
    let deny: Vec<&str> =
        scope["deny"].as_array().expect("deny").iter().map(|r| r["target"].as_str().expect("t")).collect();
    assert_eq!(deny, vec![h.path("secrets").as_str()], "[{what}] invariant 3");
    // 4. lead's layers are exactly its live children.
    let mut live_children: Vec<String> =
        live.iter().filter(|a| a["parent"] == "lead").map(|a| a["name"].as_str().expect("n").to_string()).collect();
    live_children.sort();
    assert_eq!(layer_names(&scope), live_children, "[{what}] invariant 4: layers vs live children");
    // 5. The registry's record of lead equals lead's scope.
    let alloc = live.iter().find(|a| a["name"] == "lead").expect("lead registered");
    assert_eq!(alloc["layers"], scope["layers"], "[{what}] invariant 5: layers");
    assert_eq!(alloc["allow"], scope["allow"], "[{what}] invariant 5: allow");
    assert_eq!(alloc["deny"], scope["deny"], "[{what}] invariant 5: deny");
    // 6. spawned_pods.json equals the durable children.
    let mut mirrored: Vec<String> = h
        .mirror("lead")
        .as_array()
        .expect("mirror")
        .iter()
        .map(|c| c["name"].as_str().expect("n").to_string())
        .collect();
    mirrored.sort();
    assert_eq!(mirrored, layer_names(&scope), "[{what}] invariant 6");
    // 7 and 8. Children acknowledged before the crash are still children, or
    // their removal is on record; nothing appears from nowhere.
    let events = h.events("lead");
    for child in before_crash {
        let kept = layer_names(&scope).contains(child);
        let removed = events.iter().any(|e| e["kind"] == "child.removed" && e["name"] == child.as_str());
        assert!(kept || removed, "[{what}] invariant 7/8: acknowledged child {child} vanished without a record");
    }
}

/// Runs `pod ARGS` with the crash armed (the env reaches every process this
/// command starts: the Pod, its children, the registry on demand).
fn armed(h: &Home, p: &CrashPoint, args: &[&str]) -> common::Run {
    h.pod_env(args, &[("POD_FAILPOINTS", &spec(p))])
}

fn lead_proc(h: &Home) -> Option<Proc> {
    common::pid_in(&h.run_dir("lead").join("pid")).map(Proc::of)
}

fn registry_proc(h: &Home) -> Option<Proc> {
    h.registry_pid().map(Proc::of)
}

/// After the crash: bring back what died, as a user would.
fn recover(h: &Home, what: &str) {
    // Whether lead's process still exists is its lock's answer (pids wrap in
    // a suite that starts this many processes).
    if !running(h) {
        let run = h.pod(&["resume", "lead"]);
        assert!(run.ok() || run.stderr == ALREADY_RUNNING, "[{what}] resume after crash: {run:?}");
    }
    if !common::poll_until(|| running(h)) {
        let log = std::fs::read_to_string(h.run_dir("lead").join("pod.log")).unwrap_or_default();
        let scope = h.pod(&["scope", "lead", "--json"]);
        panic!("[{what}] lead does not serve after recovery: {scope:?}\nlead's log:\n{log}");
    }
}

/// The line `pod resume lead` prints when lead already runs.
const ALREADY_RUNNING: &str = "pod: pod lead is already running [pod.running]\n";

fn running(h: &Home) -> bool {
    let scope = h.pod(&["scope", "lead", "--json"]);
    scope.ok() && serde_json::from_str::<Value>(&scope.stdout).is_ok_and(|v| v["running"] == true)
}

fn flag_script(h: &Home) -> String {
    format!("while [ ! -e {} ]; do sleep 0.01; done", h.repo.join("docs/.done").display())
}

/// Runs one crash point end to end; returns whether the process aborted.
fn run_point(p: &CrashPoint) -> bool {
    let h = Home::new();
    let what = format!("{} {:?}", spec(p), p.scenario);
    let lead_env_armed = matches!(p.scenario, Spawn | Stop | Callback);
    let start = ["start", "lead", "--write", ".", "--deny-write", "secrets"];
    let started = if lead_env_armed { armed(&h, p, &start) } else { h.pod(&start) };
    assert!(started.ok(), "[{what}] start: {started:?}");
    let registry = registry_proc(&h).expect("registry running");
    let mut before = BTreeSet::new();
    let crashed;
    match p.scenario {
        Spawn => {
            crashed = if p.role == "registry" { Some(registry) } else { lead_proc(&h) };
            let run = h.pod(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
            // A registry that dies mid-commit is restarted by the lead's
            // call path, which sends the delegate again with its request
            // id: the spawn then succeeds.
            assert!(
                !run.ok() || p.role == "docs" || p.role == "registry",
                "[{what}] spawn should have been interrupted: {run:?}"
            );
        }
        Stop => {
            h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
            before.insert("docs".to_string());
            crashed = if p.role == "registry" { Some(registry) } else { lead_proc(&h) };
            let _ = h.pod(&["stop", "docs"]);
        }
        Callback => {
            h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &flag_script(&h)]);
            before.insert("docs".to_string());
            crashed = lead_proc(&h);
            std::fs::write(h.repo.join("docs/.done"), b"").expect("flag");
        }
        Prune | Resume => {
            h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
            h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
            before.extend(["docs".to_string(), "tests".to_string()]);
            h.kill9("lead");
            h.kill9("docs");
            let run = armed(&h, p, &["resume", "lead"]);
            crashed = if run.ok() { lead_proc(&h) } else { None };
            assert!(!run.ok() || p.point.starts_with("reclaim") || p.point.starts_with("log"), "[{what}] {run:?}");
        }
    }
    if let Some(proc) = crashed {
        wait_until(&format!("[{what}] the crash"), || !proc.alive() || p.role == "docs");
    }
    // The marker proves the point fired (and aborted: it is written just
    // before the abort); the process must be gone.
    let fired = h.home.join("run/failpoints").join(format!("{}.{}.fired", p.role, p.point)).exists();
    if !fired {
        let log = std::fs::read_to_string(h.run_dir("lead").join("pod.log")).unwrap_or_default();
        eprintln!("[{what}] the point did not fire; lead's log:\n{log}");
    }
    let gone = match p.role {
        "registry" => !registry.alive(),
        "docs" => true,
        _ => crashed.is_none_or(|proc| !proc.alive()),
    };
    let aborted = fired && gone;
    recover(&h, &what);
    // Let background reclaims (a child exit noticed) finish.
    wait_until(&format!("[{what}] settle"), || {
        let scope = h.scope("lead");
        let live: Vec<String> = live(&h)
            .iter()
            .filter(|a| a["parent"] == "lead")
            .map(|a| a["name"].as_str().unwrap_or("").to_string())
            .collect();
        let mut live = live;
        live.sort();
        layer_names(&scope) == live
    });
    check_invariants(&h, &format!("{what} after recovery"), &before);
    // Repeat the interrupted command; it converges to one successful run.
    match p.scenario {
        Spawn => {
            let again = h.pod(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
            let duplicate = "pod: child docs already holds a delegation layer; names of live children are unique [scope.duplicate_child]\n";
            assert!(again.ok() || again.stderr == duplicate, "[{what}] repeat spawn: {again:?}");
            assert_eq!(layer_names(&h.scope("lead")), vec!["docs"], "[{what}] repeat spawn converges");
        }
        Stop | Callback => {
            let again = h.pod(&["stop", "docs"]);
            let gone = [
                "pod: no pod named docs here [pod.unknown]\n",
                "pod: pod docs is not running; it was a child of lead (`pod spawn docs --parent lead` starts it again) [pod.not_running]\n",
            ];
            assert!(again.ok() || gone.contains(&again.stderr.as_str()), "[{what}] repeat stop: {again:?}");
            wait_until(&format!("[{what}] docs reclaimed"), || h.can_write("lead", "docs/a"));
            assert!(layer_names(&h.scope("lead")).is_empty(), "[{what}] repeat stop converges");
        }
        Prune | Resume => {
            let again = h.pod(&["resume", "lead"]);
            assert!(again.ok() || again.stderr == ALREADY_RUNNING, "[{what}] repeat resume: {again:?}");
            assert_eq!(layer_names(&h.scope("lead")), vec!["tests"], "[{what}] repeat resume converges");
        }
    }
    check_invariants(&h, &format!("{what} after repeat"), &before);
    aborted
}

#[test]
fn every_crash_point_keeps_the_invariants() {
    // POD_CRASH_ONLY=point runs the points of that name only (debugging).
    let only = std::env::var("POD_CRASH_ONLY").ok();
    let chosen: Vec<&CrashPoint> = POINTS.iter().filter(|p| only.as_deref().is_none_or(|o| o == p.point)).collect();
    // Counted from what happened: a point is covered when its marker shows
    // it fired and the process it names is gone.
    let (fired, silent): (Vec<&CrashPoint>, Vec<&CrashPoint>) = chosen.iter().partition(|p| run_point(p));
    let silent: Vec<String> = silent.iter().map(|p| format!("{} {:?}", spec(p), p.scenario)).collect();
    println!("crash points that fired: {} of {}", fired.len(), chosen.len());
    assert!(silent.is_empty(), "these points did not abort their process: {silent:?}");
    if only.is_none() {
        assert_eq!(fired.len(), POINTS.len());
    }
}

/// A Pod killed while it starts its workload (docs, a child of lead),
/// held at `point` and then killed -9: the test forces the Pod to be
/// there while the workload is parked (`workload.before_release`) or
/// already runs (`workload.after_launch`). Returns the home, the file the
/// workload writes its pid to as its first act, and the spawn's outcome.
fn kill_docs_at(point: &str) -> (Home, std::path::PathBuf, common::Run) {
    let h = Home::new();
    let spec = format!("docs:{point}!hold");
    let started = h.pod_env(&["start", "lead", "--write", "."], &[("POD_FAILPOINTS", &spec)]);
    assert!(started.ok(), "start: {started:?}");
    // In docs's own scope: an enforced workload writes nowhere else.
    let pidfile = h.repo.join("docs/workload.pid");
    let f = pidfile.display();
    let script = format!("echo $$ > {f}.tmp && mv {f}.tmp {f}; exec sleep 1000");
    let spawn = h.spawn_env(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &script], &[]);
    let held = h.home.join("run/failpoints").join(format!("docs.{point}.held"));
    wait_until(&format!("docs held at {point}"), || held.exists());
    if point == "workload.after_launch" {
        wait_until("the released workload wrote its pid", || common::pid_in(&pidfile).is_some());
    }
    h.kill9("docs");
    let spawn = common::Run::from_output(spawn.wait_with_output().expect("wait for pod spawn"));
    (h, pidfile, spawn)
}

/// The region comes back to lead only once no process of docs's workload
/// runs (checked at every look), and docs is then gone from the registry.
fn lead_regains_docs_after_the_tree(h: &Home, workload: Option<Proc>) {
    wait_until("lead regains docs's region", || {
        let regained = h.can_write("lead", "docs/a");
        if let (true, Some(w)) = (regained, workload) {
            assert!(!w.alive(), "lead regained docs's region while its workload (pid {}) runs", w.pid);
        }
        regained
    });
    assert!(layer_names(&h.scope("lead")).is_empty(), "lead keeps no layer for docs");
    assert!(h.allocation("docs").is_none(), "docs is gone from the registry");
}

#[test]
fn a_pod_killed_right_after_its_workload_started_has_the_tree_on_record() {
    let (h, pidfile, spawn) = kill_docs_at("workload.after_launch");
    assert!(!spawn.ok(), "the spawn of a Pod killed while starting fails: {spawn:?}");
    let workload = Proc::of(common::pid_in(&pidfile).expect("workload pid"));
    lead_regains_docs_after_the_tree(&h, Some(workload));
    assert!(!workload.alive(), "the workload (pid {}) outlived the reclaim of its Pod", workload.pid);
    h.must(&["stop", "lead"]);
}

#[test]
fn a_pod_killed_before_it_releases_its_parked_workload_leaves_nothing_that_ran() {
    let (h, pidfile, spawn) = kill_docs_at("workload.before_release");
    assert!(!spawn.ok(), "the spawn of a Pod killed while starting fails: {spawn:?}");
    lead_regains_docs_after_the_tree(&h, None);
    // The region came back only once the containment was empty (its
    // record was in the registry): no process of it can write the file now.
    assert!(!pidfile.exists(), "the parked workload ran although its Pod died before releasing it");
    h.must(&["stop", "lead"]);
}
