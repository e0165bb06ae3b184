//! Bad input to the `pod` command line: each case gets one clear line on
//! stderr naming what was wrong, a non-zero exit, and no change of state
//! (the registry table, the scopes and the logs are compared before/after).

mod common;

use common::Home;
use serde_json::Value;

/// Everything a bad command must not change.
fn state(h: &Home) -> (Value, Value, usize) {
    (h.json(&["registry", "ls", "--json"]), h.scope("lead"), h.events("lead").len())
}

fn refused(h: &Home, args: &[&str], needle: &str) {
    let before = state(h);
    let run = h.pod(args);
    assert!(!run.ok(), "`pod {}` should fail: {run:?}", args.join(" "));
    assert_ne!(run.code, 1, "exit 1 is reserved for `check` denials: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line expected: {run:?}");
    assert!(run.stderr.contains(needle), "`pod {}`: expected {needle:?} in {run:?}", args.join(" "));
    assert_eq!(state(h), before, "`pod {}` changed state", args.join(" "));
}

fn home() -> Home {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "src", "--write", "docs", "--deny-write", "docs/frozen"]);
    h.must(&["spawn", "one", "--parent", "lead", "--write", "src/one"]);
    h
}

#[test]
fn invalid_and_duplicate_names_are_refused() {
    let h = home();
    refused(&h, &["start", "Bad Name", "--write", "tests"], "only a-z");
    refused(&h, &["start", "_x", "--write", "tests"], "must start with a letter or a digit");
    refused(&h, &["start", "-x", "--write", "tests"], "unexpected argument");
    refused(&h, &["start", &"x".repeat(65), "--write", "tests"], "limit is 64");
    refused(&h, &["spawn", "../etc", "--parent", "lead", "--write", "src/two"], "only a-z");
    refused(&h, &["start", "lead", "--write", "tests"], "already");
    refused(&h, &["spawn", "one", "--parent", "lead", "--write", "src/two"], "one");
}

#[test]
fn escaping_paths_are_refused() {
    let h = home();
    // Relative and escaping: resolves outside the parent's scope.
    refused(&h, &["spawn", "two", "--parent", "lead", "--write", "../../etc"], "not inside");
    refused(&h, &["spawn", "two", "--parent", "lead", "--write", "src/../tests"], "not inside");
    // A symlink inside the scope that points out of it.
    std::os::unix::fs::symlink("/etc", h.repo.join("src/escape")).expect("symlink");
    refused(&h, &["spawn", "two", "--parent", "lead", "--write", "src/escape"], "/etc");
    let check = h.pod(&["check", "lead", "src/escape/passwd", "--write"]);
    assert_eq!(check.code, 1, "a symlink out of scope must not be writable: {check:?}");
}

#[test]
fn spawn_outside_parent_or_overlapping_sibling_is_refused() {
    let h = home();
    refused(&h, &["spawn", "two", "--parent", "lead", "--write", "tests"], "not inside");
    refused(&h, &["spawn", "two", "--parent", "lead", "--write", "src/one/deeper"], "delegated to child one");
    refused(&h, &["spawn", "two", "--parent", "lead", "--write", "docs"], "deny rule");
    refused(&h, &["spawn", "two", "--parent", "lead"], "no rule");
}

#[test]
fn unknown_and_running_pods_are_refused() {
    let h = home();
    refused(&h, &["stop", "ghost"], "no pod named ghost");
    refused(&h, &["resume", "ghost"], "no pod named ghost");
    refused(&h, &["resume", "lead"], "already running");
    refused(&h, &["rm", "lead"], "is running");
    refused(&h, &["spawn", "two", "--parent", "ghost", "--write", "src/two"], "ghost");
    refused(&h, &["scope", "ghost"], "no pod named ghost");
    refused(&h, &["resume", "one"], "already running");
}

#[test]
fn corrupt_manifest_is_refused() {
    let h = home();
    let manifest = h.repo.join("pod.toml");
    for (text, needle) in [
        ("name = \"m\"\n[[allow]]\npath = \"src\"\npermission = \"own\"\n", "unknown variant"),
        ("name = \"m\"\nallow = 3\n", "line 2"),
        ("name = \"M!\"\n", "name:"),
        ("\u{0}\u{1}garbage", "manifest"),
    ] {
        std::fs::write(&manifest, text).expect("write manifest");
        refused(&h, &["start", "--manifest", "pod.toml"], needle);
    }
    refused(&h, &["start", "--manifest", "missing.toml"], "cannot read manifest");
}

#[test]
fn manifest_starts_a_pod() {
    let h = Home::new();
    std::fs::write(
        h.repo.join("pod.toml"),
        "name = \"m\"\n[[allow]]\npath = \"src\"\npermission = \"write\"\n[[deny]]\npath = \"src/gen\"\npermission = \"write\"\nrecursive = false\n",
    )
    .expect("manifest");
    h.must(&["start", "--manifest", "pod.toml"]);
    assert!(h.can_write("m", "src/a.rs"));
    assert!(!h.can_write("m", "src/gen/x.rs"));
    assert!(h.can_write("m", "src/gen/deep/x.rs"), "non-recursive deny covers direct children only");
}
