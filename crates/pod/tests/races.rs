//! Interleavings forced with held points (`role:point!hold` in
//! `POD_FAILPOINTS`: the process waits at the point until the test releases
//! it), each asserting which of two racing paths ran:
//! - StopPod against the child's ShutDown callback, in both orders;
//! - a Pod answering ping, status and check while a spawn waits for its
//!   child to be ready;
//! - the Pod's allocation watch reporting a spawn's delegate before the
//!   child's layer is in the Pod's scope, and while a child launches: the
//!   Pod explains the change and does not fail closed.
//!
//! Needs the `failpoints` feature: `cargo test -p pod --features failpoints
//! --test races`.
#![cfg(feature = "failpoints")]

use pod_e2e as common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{wait_until, Home};
use serde_json::Value;

/// `pod ARGS` started in the background with `POD_FAILPOINTS=spec`.
fn background(h: &Home, args: &[&str], spec: &str) -> Child {
    h.spawn_env(args, &[("POD_FAILPOINTS", spec)])
}

fn finish(child: Child) -> common::Run {
    common::Run::from_output(child.wait_with_output().expect("wait"))
}

fn marker(h: &Home, role: &str, point: &str, what: &str) -> std::path::PathBuf {
    h.home.join("run/failpoints").join(format!("{role}.{point}.{what}"))
}

fn wait_held(h: &Home, role: &str, point: &str) {
    let held = marker(h, role, point, "held");
    wait_until(&format!("{role} held at {point}"), || held.exists());
}

fn release(h: &Home, role: &str, point: &str) {
    std::fs::write(marker(h, role, point, "release"), b"").expect("release");
}

/// The reasons `lead` recorded for removing `child`.
fn removals(h: &Home, child: &str) -> Vec<String> {
    h.events("lead")
        .iter()
        .filter(|e| e["kind"] == "child.removed" && e["name"] == child)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn start_with_flagged_child(h: &Home, lead_env: &[(&str, &str)]) -> std::path::PathBuf {
    let started = h.pod_env(&["start", "lead", "--write", "."], lead_env);
    assert!(started.ok(), "{started:?}");
    let flag = h.repo.join("docs/.done");
    let script = format!("while [ ! -e {} ]; do sleep 0.01; done", flag.display());
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &script]);
    flag
}

/// The callback wins: `pod stop docs` has looked docs up (its parent is
/// lead) and is held there; docs's workload exits, docs calls back, lead
/// reclaims it (`shut_down`); then the held StopPod reaches lead, which
/// finds docs gone and reclaims nothing.
#[test]
fn stop_after_the_callback_finds_the_child_reclaimed() {
    let h = Home::new();
    let flag = start_with_flagged_child(&h, &[]);
    let stop = background(&h, &["stop", "docs"], "cli:stop.after_lookup!hold");
    wait_held(&h, "cli", "stop.after_lookup");
    std::fs::write(&flag, b"").expect("flag");
    wait_until("lead reclaims docs on its callback", || !removals(&h, "docs").is_empty());
    release(&h, "cli", "stop.after_lookup");
    let stop = finish(stop);
    assert!(stop.ok(), "{stop:?}");
    assert_eq!(stop.stdout, "docs had already stopped; lead has its scope back\n");
    assert_eq!(removals(&h, "docs"), vec!["shut_down"], "the callback's reclaim ran, once");
    assert!(h.can_write("lead", "docs/a"));
}

/// The StopPod wins: docs's callback is held as lead receives it; the
/// StopPod reclaims docs (`stopped`) once docs, its callback unanswered,
/// exits; the callback, released, finds docs gone.
#[test]
fn the_callback_after_a_stop_finds_the_child_reclaimed() {
    let h = Home::new();
    let flag = start_with_flagged_child(&h, &[("POD_FAILPOINTS", "lead:callback.received!hold")]);
    std::fs::write(&flag, b"").expect("flag");
    wait_held(&h, "lead", "callback.received");
    let stop = h.pod(&["stop", "docs"]);
    assert!(stop.ok(), "{stop:?}");
    assert_eq!(stop.stdout, "stopped docs; lead has its scope back\n");
    assert_eq!(removals(&h, "docs"), vec!["stopped"], "the StopPod's reclaim ran");
    release(&h, "lead", "callback.received");
    // The late callback changes nothing: lead still answers, docs is
    // removed once.
    wait_until("lead serves after the late callback", || h.can_write("lead", "docs/a"));
    assert_eq!(removals(&h, "docs"), vec!["stopped"]);
}

/// A spawn waits for its child's readiness outside lead's owner task: while
/// docs is held before it takes its allocation, lead answers status and
/// check at once; the spawn finishes when docs goes on.
#[test]
fn a_pod_answers_while_a_spawn_waits_for_its_child() {
    let h = Home::new();
    // Armed in lead's environment, which docs inherits.
    let started = h.pod_env(&["start", "lead", "--write", "."], &[("POD_FAILPOINTS", "docs:spawn.before_adopt!hold")]);
    assert!(started.ok(), "{started:?}");
    let spawn = background(&h, &["spawn", "docs", "--parent", "lead", "--write", "docs"], "");
    wait_held(&h, "docs", "spawn.before_adopt");
    let started = Instant::now();
    let scope = h.scope("lead");
    assert!(scope["layers"]["docs"].is_array(), "the spawn is recorded: {scope}");
    assert!(!h.can_write("lead", "docs/a"), "docs's region is delegated while it starts");
    assert!(h.can_write("lead", "src/a"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "lead took {:?} to answer while a spawn waited",
        started.elapsed()
    );
    release(&h, "docs", "spawn.before_adopt");
    let spawn = finish(spawn);
    assert!(spawn.ok(), "{spawn:?}");
    assert!(h.allocation("docs").is_some_and(|a| a["state"] == "live"));
}

/// The fences `pod`'s allocation watch reported, from its log (each line is
/// written once the report is queued for the owner, so a request sent
/// after the line is seen is answered after the report was handled).
fn reported_fences(h: &Home, pod: &str) -> Vec<u64> {
    let log = std::fs::read_to_string(h.run_dir(pod).join("pod.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("the registry reports a change of this pod's allocation"))
        .filter_map(|l| l.split("fence=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Waits until `pod`'s watch has reported the registry's current fence of
/// its allocation (or a later one).
fn wait_reported(h: &Home, pod: &str, what: &str) {
    let fence = h.allocation(pod).expect("allocation")["fence"].as_u64().expect("fence");
    wait_until(what, || reported_fences(h, pod).iter().any(|f| *f >= fence));
}

/// lead answers for its scope as an unfenced Pod does: docs's region
/// delegated, the rest its own, and no `pod.fenced` in its log.
fn assert_not_fenced(h: &Home) {
    let check = h.pod(&["check", "lead", "a/x", "--write"]);
    let expected = format!("allowed: lead write {} (allow write {}/**)\n", h.path("a/x"), h.repo.display());
    assert_eq!((check.code, check.stdout.as_str()), (0, expected.as_str()), "{check:?}");
    assert!(!h.can_write("lead", "docs/x"), "docs's region is lead's");
    let kinds: Vec<Value> = h.events("lead").into_iter().map(|e| e["kind"].clone()).collect();
    assert!(!kinds.contains(&Value::from("pod.fenced")), "lead fenced itself: {kinds:?}");
}

/// lead is held right after the registry committed the delegate of docs
/// (the registry's record has docs's layer, lead's scope not yet); the
/// watch reports that change meanwhile. The report waits behind the spawn
/// in lead's owner, which handles it once the layer is in the scope: lead
/// explains it and does not fence.
#[test]
fn a_watch_report_of_a_delegate_ahead_of_the_scope_does_not_fence() {
    let h = Home::new();
    let started =
        h.pod_env(&["start", "lead", "--write", "."], &[("POD_FAILPOINTS", "lead:spawn.after_delegate!hold")]);
    assert!(started.ok(), "{started:?}");
    wait_reported(&h, "lead", "lead's watch reports its registration");
    let spawn = background(&h, &["spawn", "docs", "--parent", "lead", "--write", "docs"], "");
    wait_held(&h, "lead", "spawn.after_delegate");
    let record = h.allocation("lead").expect("lead's record");
    assert!(record["layers"]["docs"].is_array(), "the registry holds docs's layer: {record}");
    wait_reported(&h, "lead", "lead's watch reports the delegate");
    release(&h, "lead", "spawn.after_delegate");
    let spawn = finish(spawn);
    assert!(spawn.ok(), "{spawn:?}");
    assert_not_fenced(&h);
    assert!(h.can_write("docs", "docs/x"));
}

/// docs is held while it launches (lead's layer for it in both the scope
/// and the registry); meanwhile lead spawns src, whose delegate the watch
/// reports and lead's owner checks while docs is still launching: no
/// fence, and docs's spawn finishes when it goes on.
#[test]
fn a_watch_report_while_a_child_launches_does_not_fence() {
    let h = Home::new();
    // Armed in lead's environment, which its children inherit.
    let started = h.pod_env(&["start", "lead", "--write", "."], &[("POD_FAILPOINTS", "docs:spawn.before_adopt!hold")]);
    assert!(started.ok(), "{started:?}");
    let docs = background(&h, &["spawn", "docs", "--parent", "lead", "--write", "docs"], "");
    wait_held(&h, "docs", "spawn.before_adopt");
    h.must(&["spawn", "src", "--parent", "lead", "--write", "src"]);
    wait_reported(&h, "lead", "lead's watch reports src's delegate");
    assert_not_fenced(&h);
    assert!(!h.can_write("lead", "src/x"), "src's region is lead's");
    release(&h, "docs", "spawn.before_adopt");
    let docs = finish(docs);
    assert!(docs.ok(), "{docs:?}");
    assert_not_fenced(&h);
    assert_eq!(common::layer_names(&h.scope("lead")), vec!["docs".to_string(), "src".to_string()]);
}
