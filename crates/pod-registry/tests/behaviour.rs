//! Every behaviour of the flock registry this daemon replaces, against a
//! real daemon process over its real socket.

mod common;

use std::collections::BTreeMap;

use common::*;
use pod_registry::client::Registration;
use pod_registry::AllocState;
use scope::Permission;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_conflicts_are_refused_and_name_the_holder() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&reg("lead", vec![w("/repo")])).await.expect("lead");
    let msg = blamed(c.register(&reg("other", vec![w("/repo/src/lib")])).await.expect_err("conflict"));
    insta::assert_snapshot!(msg);
    assert!(c.get(&n("other")).await.expect("get").is_none(), "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blame_names_the_deepest_owner() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&reg("lead", vec![w("/repo")])).await.expect("lead");
    c.delegate(&n("lead"), &n("helper"), &[w("/repo/src")], &[]).await.expect("helper");
    c.adopt(&n("helper"), std::process::id(), "", "").await.expect("helper started");
    c.delegate(&n("helper"), &n("leaf"), &[w("/repo/src/net")], &[]).await.expect("leaf");
    let msg = blamed(c.register(&reg("x", vec![w("/repo/src/net/tcp")])).await.expect_err("conflict"));
    insta::assert_snapshot!("blame_names_the_deepest_owner_leaf", msg);
    let msg = blamed(c.register(&reg("y", vec![w("/repo/src/fs")])).await.expect_err("conflict"));
    insta::assert_snapshot!("blame_names_the_deepest_owner_helper", msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_pod_with_layers_does_not_claim_its_live_childs_region() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&reg("lead", vec![w("/repo")])).await.expect("lead");
    c.delegate(&n("lead"), &n("child"), &[w("/repo/src")], &[]).await.expect("child");
    c.adopt(&n("child"), std::process::id(), "child-session", "/tmp/child.sock").await.expect("adopt");
    // The lead goes away (crash); the child survives as a top-level Pod.
    let out = c.release(&n("lead")).await.expect("release");
    assert_eq!(survivor_names(&out.reparented), vec![n("child")]);
    // Restored without its layers it would take the child's region back.
    let msg = blamed(c.register(&reg("lead", vec![w("/repo")])).await.expect_err("claims child"));
    insta::assert_snapshot!("claims_child", msg);
    let restored =
        Registration { layers: BTreeMap::from([(n("child"), vec![w("/repo/src")])]), ..reg("lead", vec![w("/repo")]) };
    c.register(&restored).await.expect("restored with layers");
    let child = c.get(&n("child")).await.expect("get").expect("child");
    assert_eq!(child.parent, Some(n("lead")));
    let check = c.check(&n("lead"), &p("/repo/src/main.rs"), Permission::Write).await.expect("check");
    assert!(!check.allowed, "{check:?}");
    insta::assert_snapshot!("decided_by_the_childs_layer", check.decided_by);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_deny_does_not_hide_a_conflict() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    let lead = Registration { deny: vec![w("/repo/vendor")], ..reg("lead", vec![w("/repo")]) };
    c.register(&lead).await.expect("lead");
    c.register(&reg("vendor", vec![w("/repo/vendor/lib")])).await.expect("fully inside the deny");
    let partial = Registration { deny: vec![w("/repo/src")], ..reg("x", vec![w("/repo")]) };
    let msg = blamed(c.register(&partial).await.expect_err("partial deny"));
    insta::assert_snapshot!(msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_must_be_a_subset_and_siblings_must_not_overlap() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&reg("lead", vec![w("/repo")])).await.expect("lead");
    let e = c.delegate(&n("lead"), &n("c1"), &[w("/etc")], &[]).await.expect_err("not a subset");
    assert_eq!(e.code(), "scope.write_outside");
    c.delegate(&n("lead"), &n("c1"), &[w("/repo/src")], &[]).await.expect("c1");
    let e = c.delegate(&n("lead"), &n("c2"), &[w("/repo")], &[]).await.expect_err("sibling overlap");
    assert_eq!(e.code(), "scope.overlaps_layer");
    insta::assert_snapshot!(e.to_string());
    assert!(c.get(&n("c2")).await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_reparents_children_and_the_scope_can_be_registered_again() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&reg("lead", vec![w("/repo")])).await.expect("lead");
    c.delegate(&n("lead"), &n("mid"), &[w("/repo/src")], &[]).await.expect("mid");
    c.adopt(&n("mid"), std::process::id(), "mid-session", "/tmp/mid.sock").await.expect("adopt mid");
    c.delegate(&n("mid"), &n("leaf"), &[w("/repo/src/a")], &[]).await.expect("leaf");
    // Only started (adopted) children survive their parent; a reservation
    // goes with it.
    c.adopt(&n("leaf"), std::process::id(), "leaf-session", "/tmp/leaf.sock").await.expect("adopt leaf");
    let out = c.reclaim(&n("lead"), &n("mid")).await.expect("reclaim mid");
    assert_eq!(survivor_names(&out.reparented), vec![n("leaf")]);
    assert_eq!(c.get(&n("leaf")).await.expect("get").expect("leaf").parent, Some(n("lead")));
    let again = c.reclaim(&n("lead"), &n("mid")).await.expect("idempotent");
    assert!(!again.removed);
    c.release(&n("lead")).await.expect("release lead");
    assert_eq!(c.get(&n("leaf")).await.expect("get").expect("leaf").parent, None);
    c.register(&reg("new", vec![w("/repo/src/b"), w("/repo/docs")])).await.expect("released scope is free");
    let msg = blamed(c.register(&reg("no", vec![w("/repo/src/a/x")])).await.expect_err("leaf holds"));
    insta::assert_snapshot!(msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_rules_never_conflict() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&reg("writer", vec![w("/repo")])).await.expect("writer");
    c.register(&reg("reader", vec![r("/repo"), r("/")])).await.expect("reader");
    c.register(&reg("reader2", vec![r("/repo/src")])).await.expect("reader2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_collision_is_refused() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&Registration { session: "s-1".into(), ..reg("a", vec![w("/a")]) }).await.expect("a");
    let e = c.register(&Registration { session: "s-1".into(), ..reg("b", vec![w("/b")]) }).await.expect_err("taken");
    assert_eq!(e.code(), "registry.session_taken");
    insta::assert_snapshot!(e.to_string());
    assert_eq!(c.by_session("s-1").await.expect("lookup").expect("found").name, n("a"));
    let e = c.register(&reg("a", vec![w("/c")])).await.expect_err("duplicate name");
    assert_eq!(e.code(), "registry.duplicate_name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pid_is_swept_and_survivors_are_reparented() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    let mut lead_proc = Sleeper::start();
    let child_proc = Sleeper::start();
    c.register(&Registration { pid: lead_proc.pid(), ..reg("lead", vec![w("/repo")]) }).await.expect("lead");
    c.delegate(&n("lead"), &n("child"), &[w("/repo/src")], &[]).await.expect("child");
    c.adopt(&n("child"), child_proc.pid(), "", "").await.expect("adopt");
    assert!(c.sweep().await.expect("sweep").is_empty(), "both alive");
    lead_proc.kill();
    // The daemon's own periodic sweep may get there first; either way the
    // lead is gone after an explicit sweep.
    let gone = c.sweep().await.expect("sweep");
    assert!(gone.is_empty() || gone == vec![n("lead")], "{gone:?}");
    assert!(c.get(&n("lead")).await.expect("get").is_none());
    let child = c.get(&n("child")).await.expect("get").expect("child");
    assert_eq!((child.parent, child.state), (None, AllocState::Live));
    c.register(&reg("next", vec![w("/repo/docs")])).await.expect("lead's region is free again");
}

/// The start time that tells a live Pod from a reused pid is the kernel's,
/// read by the registry: a request cannot name one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_times_come_from_the_kernel() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    let live = Sleeper::start();
    let real = pod_registry::proc::start_time(live.pid()).expect("read").expect("running");
    let rec = c.register(&Registration { pid: live.pid(), ..reg("alive", vec![w("/h")]) }).await.expect("registered");
    assert_eq!((rec.pid, rec.start_time), (live.pid(), real));
    let me = c.register(&reg("me", vec![w("/m")])).await.expect("registered");
    assert_eq!(me.start_time, pod_registry::proc::start_time(std::process::id()).expect("read").expect("running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_list_answer_from_the_registry() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&Registration { deny: vec![w("/repo/secret")], ..reg("lead", vec![w("/repo")]) }).await.expect("lead");
    for i in 0..300 {
        c.delegate(&n("lead"), &n(&format!("c{i:03}")), &[w(&format!("/repo/m{i}"))], &[]).await.expect("delegate");
    }
    let all = c.list().await.expect("list");
    assert_eq!(all.len(), 301, "paged past one page");
    let lead = all.iter().find(|a| a.name == n("lead")).expect("lead listed");
    assert_eq!(lead.layers.len(), 300);
    assert_eq!(lead.deny, vec![w("/repo/secret")]);
    assert!(c.check(&n("lead"), &p("/repo/x"), Permission::Write).await.expect("check").allowed);
    assert!(!c.check(&n("lead"), &p("/repo/m7/x"), Permission::Write).await.expect("check").allowed);
    assert!(c.check(&n("lead"), &p("/repo/m7/x"), Permission::Read).await.expect("check").allowed);
    assert!(c.check(&n("c007"), &p("/repo/m7/x"), Permission::Write).await.expect("check").allowed);
    let e = c.check(&n("nobody"), &p("/x"), Permission::Read).await.expect_err("unknown");
    assert_eq!(e.code(), "registry.unknown_pod");
}
