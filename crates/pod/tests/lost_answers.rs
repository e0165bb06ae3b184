//! Answers lost after their commit, forced with the registry's and the
//! lead's failpoints (run with `--features failpoints`): a retried request
//! gets the answer the first one got, so the Pod and the registry stay
//! equal, and a `pod kv set` is not written twice.
#![cfg(feature = "failpoints")]

use pod_e2e as common;

use common::{layer_names, wait_until, Home};

/// lead -> mid -> leaf; mid is killed, lead reclaims it, and the registry
/// (which reparents leaf to lead in that commit) dies before its answer
/// leaves. The lead's retry, on a daemon started again, gets the same
/// answer, leaf included: the lead adopts leaf, and its scope equals the
/// registry's record (leaf's region is excluded in both).
#[test]
fn a_retried_reclaim_with_a_grandchild_keeps_registry_and_scope_equal() {
    let h = Home::new();
    let failpoint = [("POD_FAILPOINTS", "registry:registry.before_reparenting_reply")];
    // The lead starts the daemon on demand, which inherits the failpoint.
    let run = h.pod_env(&["start", "lead", "--write", "."], &failpoint);
    assert!(run.ok(), "{run:?}");
    h.must(&["spawn", "mid", "--parent", "lead", "--write", "a"]);
    h.must(&["spawn", "leaf", "--parent", "mid", "--write", "a/b"]);
    h.kill9("mid");
    wait_until("lead adopts leaf", || layer_names(&h.scope("lead")) == vec!["leaf".to_string()]);
    let log = std::fs::read_to_string(h.dirs().registry_log()).expect("registry log");
    assert!(
        log.contains("failpoint registry.before_reparenting_reply: aborting"),
        "the answer was not lost; registry log:\n{log}"
    );
    let scope = h.scope("lead");
    let alloc = h.allocation("lead").expect("lead's record");
    assert_eq!(alloc["layers"], scope["layers"], "registry and lead disagree on the layers");
    assert_eq!(h.allocation("leaf").expect("leaf's record")["parent"], "lead");
    assert!(h.allocation("mid").is_none());
    assert!(!h.can_write("lead", "a/b/x"), "lead and leaf both write a/b");
    assert!(h.can_write("leaf", "a/b/x"));
    assert!(h.can_write("lead", "a/x"), "lead did not get mid's region back");
    let adopted: Vec<_> = h.events("lead").into_iter().filter(|e| e["kind"] == "child.reparented").collect();
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    assert_eq!((adopted[0]["name"].as_str(), adopted[0]["from"].as_str()), (Some("leaf"), Some("mid")));
}

/// `pod kv set` to a lead that dies after the set's commit, before its
/// answer: the CLI, held at its resend until the lead is resumed, sends
/// the set again with the same request id and is answered from the lead's
/// record of the first (version 1), so the value is written once.
#[test]
fn a_kv_set_whose_answer_was_lost_is_sent_again_and_written_once() {
    let h = Home::new();
    let failpoints = "lead:kv.before_reply;cli:kv.before_resend!hold";
    let started = h.pod_env(&["start", "lead", "--write", "."], &[("POD_FAILPOINTS", failpoints)]);
    assert!(started.ok(), "{started:?}");
    let lead = h.proc("lead");
    let set = h.spawn_env(&["kv", "set", "--layer", "lead", "/shared/x", "one"], &[("POD_FAILPOINTS", failpoints)]);
    let markers = h.home.join("run/failpoints");
    wait_until("the lead dies before the set's answer", || markers.join("lead.kv.before_reply.fired").exists());
    wait_until("the CLI holds its resend", || markers.join("cli.kv.before_resend.held").exists());
    wait_until("the lead is gone", || !lead.alive());
    h.must(&["resume", "lead"]);
    std::fs::write(markers.join("cli.kv.before_resend.release"), b"").expect("release");
    let set = common::Run::from_output(set.wait_with_output().expect("wait"));
    assert!(set.ok(), "{set:?}");
    let got = h.must(&["kv", "get", "--layer", "lead", "/shared/x", "--json"]);
    let got: serde_json::Value = serde_json::from_str(&got.stdout).expect("json");
    let next = h.must(&["kv", "set", "--layer", "lead", "/shared/x", "two"]);
    let transcript = format!(
        "set (answer lost, sent again): {}get: {} v{}\nnext set: {}",
        set.stdout, got["value"], got["version"], next.stdout
    );
    insta::assert_snapshot!(transcript);
    h.must(&["stop", "lead"]);
}
