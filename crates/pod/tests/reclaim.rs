//! Every path to the one reclaim operation, with real processes: StopPod,
//! the ShutDown callback, a child's death noticed by its parent (as OS parent
//! and, after a resume, through a pidfd), and the prune on resume. Each test
//! checks the parent's write coming back and the state staying consistent in
//! the scope, the registry, the session log and spawned_pods.json.

use pod_e2e as common;

use common::{layer_names, wait_until, Home};
use serde_json::Value;

fn start_lead(h: &Home) {
    h.must(&["start", "lead", "--write", ".", "--deny-write", "secrets", "--deny-read", "a/x"]);
}

/// Invariants 3-6 for `pod` (a running Pod): base deny exactly as given,
/// registry record equal to the Pod's scope, mirror equal to the children.
fn assert_consistent(h: &Home, pod: &str) {
    let scope = h.scope(pod);
    let deny = scope["deny"].as_array().expect("deny").clone();
    let targets: Vec<&str> = deny.iter().map(|r| r["target"].as_str().expect("target")).collect();
    if pod == "lead" {
        assert_eq!(targets, vec![h.path("secrets"), h.path("a/x")], "base deny changed");
    }
    let alloc = h.allocation(pod).expect("registry record");
    assert_eq!(alloc["allow"], scope["allow"], "registry allow differs from the pod's");
    assert_eq!(alloc["deny"], scope["deny"], "registry deny differs from the pod's");
    assert_eq!(alloc["layers"], scope["layers"], "registry layers differ from the pod's");
    let mut mirrored: Vec<String> = h
        .mirror(pod)
        .as_array()
        .expect("mirror")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect();
    mirrored.sort();
    assert_eq!(mirrored, layer_names(&scope), "spawned_pods.json differs from the children");
}

fn removals(h: &Home, pod: &str, child: &str) -> Vec<String> {
    h.events(pod)
        .iter()
        .filter(|e| e["kind"] == "child.removed" && e["name"] == child)
        .map(|e| e["reason"].as_str().expect("reason").to_string())
        .collect()
}

#[test]
fn stop_restores_parent_write() {
    let h = Home::new();
    start_lead(&h);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    assert!(!h.can_write("lead", "docs/a.md"));
    assert!(h.can_write("docs", "docs/a.md"));
    h.must(&["stop", "docs"]);
    assert!(h.can_write("lead", "docs/a.md"));
    assert!(h.allocation("docs").is_none());
    assert_eq!(removals(&h, "lead", "docs"), vec!["stopped"]);
    assert_consistent(&h, "lead");
}

#[test]
fn shutdown_callback_restores_parent_write() {
    let h = Home::new();
    start_lead(&h);
    let flag = h.repo.join("docs/.done");
    let script = format!("while [ ! -e {} ]; do sleep 0.02; done", flag.display());
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--", "sh", "-c", &script]);
    assert!(!h.can_write("lead", "docs/a.md"));
    std::fs::write(&flag, b"").expect("flag");
    wait_until("lead gets docs back", || h.can_write("lead", "docs/a.md"));
    assert_eq!(removals(&h, "lead", "docs"), vec!["shut_down"]);
    assert_consistent(&h, "lead");
}

#[test]
fn killed_child_is_noticed_and_reclaimed() {
    let h = Home::new();
    start_lead(&h);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    // As the child's OS parent.
    h.kill9("docs");
    wait_until("lead notices docs died", || h.can_write("lead", "docs/a.md"));
    assert_eq!(removals(&h, "lead", "docs"), vec!["lost"]);
    assert_consistent(&h, "lead");
    // After the parent itself was resumed: no longer the OS parent.
    h.kill9("lead");
    h.must(&["resume", "lead"]);
    assert!(!h.can_write("lead", "tests/t.rs"), "a live child's layer must survive the resume");
    h.kill9("tests");
    wait_until("resumed lead notices tests died", || h.can_write("lead", "tests/t.rs"));
    assert_eq!(removals(&h, "lead", "tests"), vec!["lost"]);
    assert_consistent(&h, "lead");
}

#[test]
fn resume_prunes_unreachable_child_and_restores_write() {
    let h = Home::new();
    start_lead(&h);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    h.kill9("lead");
    h.kill9("docs");
    h.must(&["resume", "lead"]);
    assert!(h.can_write("lead", "docs/a.md"), "pruned child's region must come back");
    assert!(!h.can_write("lead", "tests/t.rs"), "reachable child keeps its layer");
    assert_eq!(removals(&h, "lead", "docs"), vec!["pruned"]);
    assert_eq!(layer_names(&h.scope("lead")), vec!["tests"]);
    assert_consistent(&h, "lead");
}

#[test]
fn scope_snapshot_logged_and_kept_after_re_resume() {
    let h = Home::new();
    start_lead(&h);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    h.kill9("lead");
    h.kill9("docs");
    h.must(&["resume", "lead"]);
    let after_first = h.scope("lead");
    let last = h.events("lead").last().cloned().expect("events");
    assert_eq!(last["kind"], "pod.scope");
    assert_eq!(last["scope"]["layers"], Value::Object(Default::default()));
    h.kill9("lead");
    h.must(&["resume", "lead"]);
    let after_second = h.scope("lead");
    assert_eq!(after_first["layers"], after_second["layers"]);
    assert_eq!(after_first["deny"], after_second["deny"]);
    assert_eq!(removals(&h, "lead", "docs"), vec!["pruned"], "a second resume must not prune again");
    assert_consistent(&h, "lead");
}

#[test]
fn base_deny_survives_every_reclaim_path() {
    let h = Home::new();
    start_lead(&h);
    let denied = |h: &Home| {
        assert!(!h.can_write("lead", "secrets/k"), "write-deny lost");
        assert!(h.pod(&["check", "lead", "secrets/k"]).ok(), "write-deny must leave read");
        assert!(!h.pod(&["check", "lead", "a/x/y"]).ok(), "read-deny lost");
    };
    // stop
    h.must(&["spawn", "c1", "--parent", "lead", "--write", "docs"]);
    h.must(&["stop", "c1"]);
    denied(&h);
    // callback
    h.must(&["spawn", "c2", "--parent", "lead", "--write", "docs", "--", "true"]);
    wait_until("c2 reclaimed", || h.can_write("lead", "docs/a"));
    denied(&h);
    // lost
    h.must(&["spawn", "c3", "--parent", "lead", "--write", "docs"]);
    h.kill9("c3");
    wait_until("c3 reclaimed", || h.can_write("lead", "docs/a"));
    denied(&h);
    // prune
    h.must(&["spawn", "c4", "--parent", "lead", "--write", "docs"]);
    h.kill9("lead");
    h.kill9("c4");
    h.must(&["resume", "lead"]);
    denied(&h);
    assert_consistent(&h, "lead");
}

#[test]
fn registry_layers_match_pod_scope_after_reclaim() {
    let h = Home::new();
    start_lead(&h);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    assert_consistent(&h, "lead");
    h.must(&["stop", "docs"]);
    assert_consistent(&h, "lead");
    let alloc = h.allocation("lead").expect("lead");
    assert_eq!(layer_names(&alloc), vec!["tests"]);
}

#[test]
fn spawned_pods_json_matches_children() {
    let h = Home::new();
    start_lead(&h);
    assert_consistent(&h, "lead");
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    assert_consistent(&h, "lead");
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    let mirror = h.mirror("lead");
    assert_eq!(mirror.as_array().map(Vec::len), Some(2));
    assert_eq!(mirror[0]["socket"], h.run_dir("docs").join("sock").to_string_lossy().as_ref());
    h.must(&["stop", "tests"]);
    assert_consistent(&h, "lead");
}

/// A StopPod of a child its parent already pruned changes nothing and says
/// so in one line. (StopPod against the ShutDown callback, in each order,
/// is forced in `tests/races.rs`.)
#[test]
fn stopping_a_pruned_child_changes_nothing() {
    let h = Home::new();
    start_lead(&h);
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    h.kill9("lead");
    h.kill9("tests");
    h.must(&["resume", "lead"]);
    let before = (h.scope("lead"), h.events("lead").len());
    let late = h.pod(&["stop", "tests"]);
    assert_eq!(late.code, 2, "stopping a pruned child must fail: {late:?}");
    insta::assert_snapshot!(h.redact(late.stderr.trim_end()));
    assert_eq!((h.scope("lead"), h.events("lead").len()), before);
    assert_eq!(removals(&h, "lead", "tests"), vec!["pruned"]);
}

#[test]
fn spawn_rolls_back_when_child_fails_to_start() {
    let h = Home::new();
    start_lead(&h);
    let before = h.scope("lead");
    let run = h.pod(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--", "/nonexistent/program"]);
    assert!(!run.ok());
    insta::assert_snapshot!("child_fails_to_start", h.redact(run.stderr.trim_end()));
    assert_eq!(h.scope("lead"), before);
    assert!(h.allocation("docs").is_none(), "reservation left behind");
    assert!(h.can_write("lead", "docs/a"));
    assert_consistent(&h, "lead");
    // Nothing of the failed child blocks a retry under the same name.
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    assert!(!h.can_write("lead", "docs/a"));
}

#[test]
fn grandchild_reparented_when_middle_pod_dies() {
    let h = Home::new();
    start_lead(&h);
    h.must(&["spawn", "mid", "--parent", "lead", "--write", "a/b"]);
    h.must(&["spawn", "grand", "--parent", "mid", "--write", "a/b/c"]);
    let tree = h.json(&["tree", "lead", "--json"]);
    assert_eq!(tree[0]["children"][0]["children"][0]["name"], "grand");
    h.kill9("mid");
    wait_until("lead reclaims mid", || h.can_write("lead", "a/b/z"));
    assert!(!h.can_write("lead", "a/b/c/f"), "the adopted grandchild's region must stay excluded");
    assert!(h.can_write("grand", "a/b/c/f"));
    assert_eq!(layer_names(&h.scope("lead")), vec!["grand"]);
    let tree = h.json(&["tree", "lead", "--json"]);
    assert_eq!(tree[0]["children"][0]["name"], "grand");
    assert_consistent(&h, "lead");
    // The adopted grandchild's own exit comes back to its new parent.
    h.must(&["stop", "grand"]);
    assert!(h.can_write("lead", "a/b/c/f"));
    assert_consistent(&h, "lead");
}

#[test]
fn two_trees_never_share_write() {
    let h = Home::new();
    let elsewhere = h.repo.parent().expect("root").join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let elsewhere = elsewhere.to_string_lossy().into_owned();
    start_lead(&h);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    // Overlapping the deepest owner's region: refused, and the error names it.
    let clash = h.pod(&["start", "other", "--write", "docs/sub"]);
    assert_eq!(clash.code, 2, "{clash:?}");
    insta::assert_snapshot!("overlap_names_the_deepest_holder", h.redact(&clash.stderr));
    // A second tree elsewhere is fine, and cannot reach into the first.
    h.must(&["start", "other", "--write", &elsewhere]);
    let reach = h.pod(&["spawn", "thief", "--parent", "other", "--write", "src"]);
    assert!(!reach.ok(), "{reach:?}");
    h.must(&["spawn", "helper", "--parent", "other", "--write", &format!("{elsewhere}/x")]);
    // Invariant 1 at a sample of paths: at most one Pod writes each.
    let pods = ["lead", "docs", "other", "helper"];
    for path in ["docs/a", "src/a", "a/b/c", &format!("{elsewhere}/x/y"), &format!("{elsewhere}/z")] {
        let writers: Vec<&str> = pods.iter().copied().filter(|p| h.can_write(p, path)).collect();
        assert!(writers.len() <= 1, "{path} is writable by {writers:?}");
    }
    h.must(&["stop", "docs"]);
    let still = h.pod(&["start", "third", "--write", "docs"]);
    assert_eq!(still.code, 2, "{still:?}");
    insta::assert_snapshot!("lead_holds_docs_again", h.redact(&still.stderr));
}
