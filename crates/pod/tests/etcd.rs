//! Pods on a registry shared through a real three-member etcd cluster on
//! loopback: several POD_HOMEs on this machine, each its own node (its own
//! POD_NODE, its own daemon, started on demand by the `pod` command with
//! POD_ETCD, POD_NODE and POD_LEASE_TTL in its environment), real Pod
//! processes, real SIGSTOP and SIGCONT of a node's registry.
//!
//! Skipped, with the reason printed, when there is no etcd binary, unless
//! POD_TEST_REQUIRE names `etcd`.
#![cfg(feature = "etcd")]

use pod_e2e as common;

use std::time::{Duration, Instant};

use common::*;
use pod_registry::conflict::{self, Claim};
use pod_registry::store::etcd::{boottime_ms, cluster::Cluster};
use pod_registry::Allocation;
use serde_json::Value;

/// The etcd cluster of one test, or `None` (skipped, reason printed).
fn cluster(dir: &std::path::Path) -> Option<Cluster> {
    if let Err(why) = pod_registry::store::etcd::cluster::binary() {
        available("etcd", false);
        println!("skipped: {why}");
        return None;
    }
    Some(Cluster::start(dir).expect("etcd cluster"))
}

/// One node: its own POD_HOME, and the settings its `pod` commands carry
/// (the daemon they start on demand inherits them).
struct Node {
    home: Home,
    env: Vec<(String, String)>,
}

impl Node {
    fn new(name: &str, cluster: &Cluster, ttl: u64) -> Node {
        let env = vec![
            ("POD_ETCD".to_string(), cluster.endpoints().join(",")),
            ("POD_NODE".to_string(), name.to_string()),
            ("POD_LEASE_TTL".to_string(), ttl.to_string()),
        ];
        Node { home: Home::new(), env }
    }

    fn pod(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.home.pod_env(args, &env)
    }

    fn must(&self, args: &[&str]) -> Run {
        let run = self.pod(args);
        assert!(run.ok(), "`pod {}` failed: {run:?}", args.join(" "));
        run
    }

    fn json(&self, args: &[&str]) -> Value {
        let run = self.must(args);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("`pod {}`: no JSON ({e}): {run:?}", args.join(" ")))
    }

    fn table(&self) -> Vec<Allocation> {
        serde_json::from_value(self.json(&["registry", "ls", "--json"])).expect("allocations")
    }

    /// `pod check POD PATH --write`: allowed, and the line it printed.
    fn check_write(&self, pod: &str, path: &str) -> (bool, String) {
        let run = self.pod(&["check", pod, path, "--write"]);
        assert!(run.code == 0 || run.code == 1, "check failed: {run:?}");
        (run.code == 0, run.stdout.trim_end().to_string())
    }

    fn fenced_events(&self, pod: &str) -> Vec<Value> {
        self.events(pod, "pod.fenced")
    }

    /// The events of kind `kind` in `pod`'s session log.
    fn events(&self, pod: &str, kind: &str) -> Vec<Value> {
        let run = self.must(&["log", pod, "--json"]);
        run.stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("log line")["event"].clone())
            .filter(|e| e["kind"] == kind)
            .collect()
    }
}

/// At every path at most one Pod of the whole table has effective write.
fn check_one_writer(table: &[Allocation], what: &str) {
    let next = table.iter().map(|a| a.fence).max().unwrap_or(0) + 1;
    let state = pod_registry::state::State::from_records(table.to_vec(), next).expect("a consistent table");
    for held in state.iter() {
        let claim =
            Claim { name: &held.rec.name, allow: &held.rec.allow, caps: held.rec.write_caps().collect(), skip: None };
        if let Err(e) = conflict::check(&state, &claim) {
            panic!("{what}: two writers: {e}");
        }
    }
}

/// `pod scope NAME` on `node`, redacted, without its level's line.
fn shown_scope(node: &Node, name: &str) -> String {
    redact_ms(&node.home.redact(&without_level_line(&node.must(&["scope", name]).stdout)))
}

/// `text` with the milliseconds of "N ms ago" replaced by a placeholder.
fn redact_ms(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(" ms ago") {
        let head = &rest[..at];
        let digits = head.bytes().rev().take_while(u8::is_ascii_digit).count();
        out.push_str(&head[..head.len() - digits]);
        out.push_str("[n] ms ago");
        rest = &rest[at + " ms ago".len()..];
    }
    out.push_str(rest);
    out
}

/// Node a's registry frozen past its TTL: a's Pod denies (on its own, the
/// daemon frozen) before node b is granted its path, both instants taken on
/// CLOCK_BOOTTIME; it records `pod.fenced {reason: lease_lost: ...}` once;
/// after SIGCONT it stays fenced (no later answer revives it) and says
/// why, since b holds its path now, and so does its child, while a's other
/// tree (a Pod, its child and grandchild), whose paths nobody took,
/// re-claims them under a's new lease, each Pod granting again, and each
/// records `pod.rejoined` with what was re-claimed and what stayed fenced.
#[test]
fn a_frozen_nodes_pods_deny_before_another_node_gets_their_paths_and_rejoin_only_where_free() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = cluster(tmp.path()) else { return };
    let ttl = 3;
    let (a, b) = (Node::new("a", &etcd, ttl), Node::new("b", &etcd, ttl));
    let shared = a.home.path("src");
    a.must(&["start", "x", "--write", "src"]);
    a.must(&["spawn", "xc", "--parent", "x", "--write", "src/c"]);
    a.must(&["start", "free", "--write", "docs"]);
    a.must(&["spawn", "fc", "--parent", "free", "--write", "docs/c"]);
    a.must(&["spawn", "fcg", "--parent", "fc", "--write", "docs/c/g"]);
    b.must(&["start", "other", "--write", "tests"]);
    let file = a.home.path("src/f");
    assert!(a.check_write("x", &file).0, "x writes src before the freeze");

    // Every node lists every node's allocations, each with its node.
    let nodes: Vec<(String, Option<String>)> =
        b.table().iter().map(|r| (r.name.to_string(), r.node.as_ref().map(|n| n.to_string()))).collect();
    let named = |n: &str, node: &str| (n.to_string(), Some(node.to_string()));
    assert_eq!(
        nodes,
        vec![
            named("fc", "a"),
            named("fcg", "a"),
            named("free", "a"),
            named("other", "b"),
            named("x", "a"),
            named("xc", "a")
        ]
    );
    let text = b.must(&["registry", "ls"]).stdout;
    let columns: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().take(4).collect()).collect();
    assert_eq!(
        columns,
        vec![
            vec!["NAME", "STATE", "PARENT", "NODE"],
            vec!["fc", "live", "free", "a"],
            vec!["fcg", "live", "fc", "a"],
            vec!["free", "live", "-", "a"],
            vec!["other", "live", "-", "b"],
            vec!["x", "live", "-", "a"],
            vec!["xc", "live", "x", "a"],
        ]
    );
    check_one_writer(&b.table(), "before the freeze");

    let registry_a = a.home.registry_pid().expect("a's registry runs");
    signal(registry_a, rustix::process::Signal::STOP);
    let frozen = Instant::now();
    let mut first_denied: Option<(u64, String)> = None;
    let granted_from = loop {
        let (allowed, line) = a.check_write("x", &file);
        let answered = boottime_ms();
        match (&first_denied, allowed) {
            (None, false) => first_denied = Some((answered, line)),
            (Some(_), true) => panic!("x granted again after denying, a still frozen: {line}"),
            _ => {}
        }
        let sent = boottime_ms();
        if b.pod(&["start", "y", "--write", &shared]).ok() {
            break sent;
        }
        assert!(frozen.elapsed() < Duration::from_secs(ttl + 20), "b was never granted a's path");
    };
    // x's denial was answered (`answered`, read before `sent`) no later than
    // b asked for the path, and b's grant came after it asked: the denial
    // came first. (Both in whole milliseconds, so they may be equal.)
    let (denied_at, line) = first_denied.expect("x denied before b was granted its path");
    assert!(denied_at <= granted_from, "x denied at {denied_at} ms, b's grant asked for at {granted_from} ms");
    insta::assert_snapshot!(redact_ms(&a.home.redact(&line)), @"denied: x write [repo]/src/f (registry.lease_lost: node a's etcd lease deadline passed ([n] ms ago on CLOCK_BOOTTIME) with no newer keepalive heard)");
    wait_until("x records pod.fenced", || a.fenced_events("x").len() == 1);
    let reasons: Vec<String> =
        a.fenced_events("x").iter().map(|e| redact_ms(e["reason"].as_str().unwrap_or_default())).collect();
    insta::assert_snapshot!(reasons.join("\n"), @"lease_lost: node a's etcd lease deadline passed ([n] ms ago on CLOCK_BOOTTIME) with no newer keepalive heard");
    check_one_writer(&b.table(), "b granted a's path");
    println!("x denied {} ms before b asked for its path", granted_from - denied_at);

    signal(registry_a, rustix::process::Signal::CONT);
    // free's tree's paths are still free: it re-claims them under a's new
    // lease, from the top (free, then its child fc, then fc's child fcg).
    wait_until("fcg grants again", || a.check_write("fcg", &a.home.path("docs/c/g/z")).0);
    assert!(a.check_write("fc", &a.home.path("docs/c/z")).0, "fc grants again");
    assert!(a.check_write("free", &a.home.path("docs/z")).0, "free grants again");
    // Each keeps only its own part: the children's layers are back.
    assert!(!a.check_write("free", &a.home.path("docs/c/z")).0, "free does not write fc's part");
    assert!(!a.check_write("fc", &a.home.path("docs/c/g/z")).0, "fc does not write fcg's part");
    let rejoined = |pod: &str| -> String {
        let events = a.events(pod, "pod.rejoined");
        serde_json::to_string(&events).map(|t| redact_ms(&a.home.redact(&t))).expect("json")
    };
    insta::assert_snapshot!(rejoined("free"), @r#"[{"fenced":{},"kind":"pod.rejoined","reclaimed":["free","fc"]}]"#);
    insta::assert_snapshot!(rejoined("fc"), @r#"[{"fenced":{},"kind":"pod.rejoined","reclaimed":["fc","fcg"]}]"#);
    insta::assert_snapshot!(rejoined("fcg"), @r#"[{"fenced":{},"kind":"pod.rejoined","reclaimed":["fcg"]}]"#);
    // x's is b's now: x stays fenced and says so.
    wait_until("x says its re-claim was refused", || {
        a.pod(&["scope", "x"]).stdout.contains("re-claim under the new lease refused")
    });
    assert!(!a.check_write("x", &file).0, "x is never revived");
    insta::assert_snapshot!(shown_scope(&a, "x"), @r#"
        x (running)
          fenced lease_lost: node a's etcd lease deadline passed ([n] ms ago on CLOCK_BOOTTIME) with no newer keepalive heard; re-claim under the new lease refused: write [repo]/src/** conflicts with pod y on node b, which holds write [repo]/src/** (both cover [repo]/src/**) [registry.write_conflict]
          allow  write [repo]/src/**
          layer  xc: write [repo]/src/c/**
    "#);
    let listed: Vec<Value> = serde_json::from_value(a.json(&["ls", "--json"])).expect("pods");
    let x = listed.iter().find(|p| p["name"] == "x").expect("x listed");
    assert_eq!(x["state"], "fenced", "{x}");
    let spawn = a.pod(&["spawn", "c", "--parent", "x", "--write", "src/c"]);
    assert_eq!(spawn.code, 2, "{spawn:?}");
    insta::assert_snapshot!(redact_ms(&a.home.redact(spawn.stderr.trim_end())), @"pod: x stopped granting at its node's lease deadline and spawns nothing: node a's etcd lease deadline passed ([n] ms ago on CLOCK_BOOTTIME) with no newer keepalive heard [registry.lease_lost]");
    assert_eq!(a.fenced_events("x").len(), 1, "pod.fenced is recorded once");
    assert_eq!(a.fenced_events("free").len(), 1, "free recorded its stop too");
    wait_until("x records its refused re-claim", || a.events("x", "pod.rejoined").len() == 1);
    insta::assert_snapshot!(rejoined("x"), @r#"[{"fenced":{"x":"re-claim refused: write [repo]/src/** conflicts with pod y on node b, which holds write [repo]/src/** (both cover [repo]/src/**) [registry.write_conflict]","xc":"its parent x's re-claim was refused"},"kind":"pod.rejoined","reclaimed":[]}]"#);
    // x's child waits for x, fenced, and says so.
    assert!(!a.check_write("xc", &a.home.path("src/c/f")).0, "xc is never revived");
    wait_until("xc says it waits for its parent", || a.pod(&["scope", "xc"]).stdout.contains("waits for its parent"));
    insta::assert_snapshot!(shown_scope(&a, "xc"), @r"
    xc (running)
      fenced lease_lost: node a's etcd lease deadline passed ([n] ms ago on CLOCK_BOOTTIME) with no newer keepalive heard; re-claim waits for its parent x, which delegates this pod's part again once its own claim is back
      allow  write [repo]/src/c/**
    ");

    let table = b.table();
    let holders: Vec<(String, Option<String>)> =
        table.iter().map(|r| (r.name.to_string(), r.node.as_ref().map(|n| n.to_string()))).collect();
    assert_eq!(
        holders,
        vec![named("fc", "a"), named("fcg", "a"), named("free", "a"), named("other", "b"), named("y", "b")]
    );
    check_one_writer(&table, "after a woke up");
    wait_until("both nodes see one table", || a.table() == b.table());
}

/// A workload at level `full` that writes, on each path read from the
/// fifo `req`, and answers `W` (written) or `R` (refused) on the fifo
/// `ans`, both in `dir` (its scratch path); returns the arguments that
/// give it to `pod start`.
fn probing_workload(dir: &std::path::Path) -> Vec<String> {
    for fifo in ["req", "ans"] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join(fifo),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
    }
    let probe = r#"while :; do if read -r p < "$REQ"; then if (printf x >> "$p") 2>/dev/null; then r=W; else r=R; fi; echo "$r" > "$ANS"; fi; done"#;
    vec![
        "--scratch".into(),
        dir.to_string_lossy().into_owned(),
        "--env".into(),
        format!("REQ={}", dir.join("req").display()),
        "--env".into(),
        format!("ANS={}", dir.join("ans").display()),
        "--".into(),
        "sh".into(),
        "-c".into(),
        probe.into(),
    ]
}

/// Hands `path` to the probing workload of `dir`; true when the kernel
/// let its write by. Bounded: a workload gone would block the fifo.
fn kernel_writes(dir: &std::path::Path, path: &str) -> bool {
    let (req, ans, line) = (dir.join("req"), dir.join("ans"), format!("{path}\n"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        std::fs::write(&req, line).expect("request");
        let _ = tx.send(std::fs::read_to_string(&ans).expect("answer"));
    });
    let answer = rx.recv_timeout(BOUND).expect("the probing workload answers");
    match answer.trim() {
        "W" => true,
        "R" => false,
        other => panic!("the probe answered {other:?}"),
    }
}

/// `name`'s workload was ended by its Pod's fence (SIGTERM, seen by `pod
/// wait` whole), and its Pod's log says why in each of `reasons`.
fn assert_ended_by_the_fence(a: &Node, name: &str, reasons: &[&str]) {
    let wait = a.pod(&["wait", name, "--timeout", "30"]);
    let log = std::fs::read_to_string(a.home.run_dir(name).join("pod.log")).expect("the Pod's pod.log");
    assert_eq!(
        format!("{wait:?}"),
        format!("exit 143\nstdout: {name} killed(SIGTERM)\n\nstderr: "),
        "{name}'s workload was ended by the fence; its log:\n{log}"
    );
    assert!(
        reasons.iter().all(|r| log.contains(r)),
        "{name}'s log says why its workload was ended ({reasons:?}):\n{log}"
    );
}

/// A fenced Pod's workload loses kernel write, not only its checks: at
/// `full` its write scope is read-only while it is fenced (node a's
/// registry frozen past its TTL) and writable again once it re-claims
/// (`pod.rejoined`); at `landlock`, where a running workload cannot be
/// narrowed, or when the narrowing is busy (a process of the workload
/// holds a path there), the fence ends the workload and the Pod's log says
/// why.
#[test]
fn a_fenced_pods_enforced_workload_loses_write_until_it_rejoins() {
    let support = pod_sandbox::Support::detect().expect("detection");
    if !(available("landlock", support.landlock.is_ok()) && available("mountns", support.mountns.is_ok())) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = cluster(tmp.path()) else { return };
    let a = Node::new("a", &etcd, 3);
    let fifos = a.home.home.parent().expect("root").join("fifos");
    std::fs::create_dir_all(&fifos).expect("fifos");
    // Started from the repository, outside its write scope (docs): a
    // working directory inside the scope would make the narrowing busy.
    let mut args: Vec<String> = ["start", "w", "--write", "docs", "--enforce", "full"].map(String::from).to_vec();
    args.extend(probing_workload(&fifos));
    a.must(&args.iter().map(String::as_str).collect::<Vec<_>>());
    a.must(&["start", "l", "--write", "src", "--enforce", "landlock", "--", "sleep", "1000"]);
    // Its working directory holds its scope: the narrowing is busy.
    a.must(&[
        "start",
        "busy",
        "--write",
        "tests",
        "--enforce",
        "full",
        "--",
        "sh",
        "-c",
        "cd tests && exec sleep 1000",
    ]);
    let file = a.home.path("docs/f");
    assert!(kernel_writes(&fifos, &file), "w's workload writes docs before the fence");

    let registry = a.home.registry_pid().expect("a's registry runs");
    signal(registry, rustix::process::Signal::STOP);
    wait_until("w records pod.fenced", || a.fenced_events("w").len() == 1);
    let (allowed, line) = a.check_write("w", &file);
    assert!(!allowed, "w denies while fenced: {line}");
    assert!(!kernel_writes(&fifos, &file), "the kernel refuses w's workload's write while w is fenced");
    // l's workload cannot be narrowed, busy's holds its scope: both are
    // ended, and both Pods go down.
    assert_ended_by_the_fence(
        &a,
        "l",
        &["at level landlock a running workload cannot lose write (only full narrows it)"],
    );
    assert_ended_by_the_fence(&a, "busy", &["its write scope could not be made read-only", "[enforce.busy]"]);

    signal(registry, rustix::process::Signal::CONT);
    wait_until("w grants again", || a.check_write("w", &file).0);
    assert_eq!(a.events("w", "pod.rejoined").len(), 1, "w recorded its re-claim");
    assert!(kernel_writes(&fifos, &file), "w's workload writes docs again after the re-claim");
    assert_eq!(std::fs::read_to_string(&file).expect("docs/f"), "xx", "two writes landed, the fenced one did not");
    a.must(&["stop", "w"]);
}

/// A Pod whose owner is reading its allocation when the daemon freezes
/// still fences at its lease deadline: the read is given up there. (Left
/// waiting, it held the owner, which never heard of the lapse, and the
/// workload kept its write until the daemon answered.) The owner is held
/// at the point before that read (the first one, on the watch's first
/// answer) while the daemon is frozen, then let go into it.
#[cfg(feature = "failpoints")]
#[test]
fn an_allocation_read_stuck_on_a_frozen_registry_does_not_delay_the_fence() {
    const POINT: &str = "owner.before_allocation_read";
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = cluster(tmp.path()) else { return };
    let ttl_s = 3;
    let mut a = Node::new("a", &etcd, ttl_s);
    a.env.push((pod_proto::failpoints::ENV.to_string(), format!("p:{POINT}!hold")));
    a.must(&["start", "p", "--write", "src"]);
    let markers = a.home.home.join("run").join(pod_proto::failpoints::MARKERS_DIR);
    wait_until("p's owner is held before its allocation read", || markers.join(format!("p.{POINT}.held")).exists());
    let registry = a.home.registry_pid().expect("a's registry runs");
    signal(registry, rustix::process::Signal::STOP);
    let frozen = Instant::now();
    std::fs::write(markers.join(format!("p.{POINT}.release")), b"").expect("release");
    wait_until("p records pod.fenced", || a.fenced_events("p").len() == 1);
    let took = frozen.elapsed();
    signal(registry, rustix::process::Signal::CONT);
    assert!(
        took < Duration::from_secs(ttl_s + 2),
        "p fenced {took:?} after its registry froze, though its deadline was at most {ttl_s} s away"
    );
    a.must(&["stop", "p"]);
}
