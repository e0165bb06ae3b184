//! The registry as Pods and the command line use it, when it is restarted,
//! closes idle connections, or is sent frames by a same-uid stranger: real
//! Pod processes, a real daemon started on demand, real SIGKILL.

use pod_e2e as common;

use common::{kill9, wait_until, Home};
use pod_registry::{Client, ClientError};
use scope::{PodName, ScopePath, ScopeRule};

/// kill -9 of the running registry daemon (its pid from its lock file).
/// The Pods' allocation watches start a new daemon as soon as one dies, so
/// the lock may be between holders (truncated, or naming a dead daemon):
/// wait (bounded) until it names a daemon that runs.
fn kill_registry(h: &Home) {
    let lock = h.dirs().registry_lock();
    let mut pid = 0;
    wait_until("a registry daemon runs", || {
        pid = std::fs::read_to_string(&lock).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        // A stale pid may have been reused: only a registry daemon counts.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        pid != 0 && common::Proc::of(pid).alive() && String::from_utf8_lossy(&cmdline).contains("registry")
    });
    kill9(pid);
}

fn n(s: &str) -> PodName {
    PodName::new(s).expect("name")
}

/// kill -9 of the registry under live Pods, then at once a spawn, a stop
/// and a check: each first call succeeds (the request that never reached
/// a daemon is sent again to a new one, started on demand), twenty rounds.
#[test]
fn pods_and_the_cli_survive_kill_9_of_the_registry() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    for round in 0..20 {
        let dir = format!("r{round}");
        std::fs::create_dir_all(h.repo.join(&dir)).expect("dir");
        let child = format!("c{round}");
        kill_registry(&h);
        h.must(&["spawn", &child, "--parent", "lead", "--write", &dir]);
        kill_registry(&h);
        assert!(!h.can_write("lead", &format!("{dir}/x")), "round {round}: lead writes {child}'s region");
        kill_registry(&h);
        h.must(&["stop", &child]);
        kill_registry(&h);
        assert!(h.can_write("lead", &format!("{dir}/x")), "round {round}: lead did not get {dir} back");
    }
    let alloc = h.allocation("lead").expect("lead registered");
    assert_eq!(alloc["layers"], serde_json::json!({}), "a layer was left behind");
}

/// A Pod whose registry connection the daemon closed as idle spawns on its
/// next call without an error (the idle timeout shortened by the documented
/// test-only setting, for the daemon only).
#[test]
fn an_idle_pod_spawns_after_the_registry_closed_its_connection() {
    let h = Home::new();
    // The daemon is started on demand by the lead and inherits this.
    h.pod_env(&["start", "lead", "--write", "."], &[("POD_TEST_IDLE_TIMEOUT_MS", "200")]);
    let log = h.dirs().registry_log();
    wait_until("the registry closes the lead's idle connection", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("closing an idle connection")
    });
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    assert!(!h.can_write("lead", "docs/x"));
    h.must(&["stop", "docs"]);
    assert!(h.can_write("lead", "docs/x"));
}

/// A same-uid process that is neither a Pod's process nor its parent's
/// sends the registry mutations about live Pods: each is refused with its
/// own code and a whole line naming why, and nothing changes (no path gets
/// a second writer).
#[test]
fn a_strangers_frames_about_live_pods_are_refused() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", ".", "--deny-write", "secrets"]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    let before = h.json(&["registry", "ls", "--json"]);
    let (lead_pid, docs_pid, me) = (h.pid("lead"), h.pid("docs"), std::process::id());
    let rule = |rel: &str| ScopeRule::write(ScopePath::new(&h.path(rel)).expect("path"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let refusals: Vec<String> = runtime.block_on(async {
        let mut c = Client::connect_running(&h.dirs()).await.expect("connect");
        let stranger = |r: Result<_, ClientError>| match r {
            Ok(answer) => panic!("a stranger's frame was accepted: {answer:?}"),
            Err(ClientError::Refused(w)) => format!("{} [{}]", w.message, w.code),
            Err(e) => panic!("not a refusal: {e}"),
        };
        let other = pod_registry::client::Registration {
            name: Some(n("thief")),
            pid: me,
            allow: vec![rule("docs")],
            ..Default::default()
        };
        let mut layered = other.clone();
        layered.allow = vec![rule("a")];
        layered.layers = [(n("docs"), vec![rule("docs")])].into();
        let mut as_lead = other.clone();
        as_lead.pid = lead_pid;
        as_lead.allow = vec![rule("a")];
        vec![
            stranger(c.release(&n("lead")).await.map(drop)),
            stranger(c.release(&n("docs")).await.map(drop)),
            stranger(c.reclaim(&n("lead"), &n("docs")).await.map(drop)),
            stranger(c.delegate(&n("lead"), &n("mine"), &[rule("src")], &[]).await.map(drop)),
            stranger(c.adopt(&n("docs"), me, "s", "/x").await.map(drop)),
            stranger(c.register(&other).await.map(drop)),
            stranger(c.register(&layered).await.map(drop)),
            stranger(c.register(&as_lead).await.map(drop)),
        ]
    });
    let redacted: Vec<String> = refusals
        .iter()
        .map(|line| {
            line.replace(&h.repo.display().to_string(), "<repo>")
                .replace(&format!("pid {lead_pid}"), "pid <lead>")
                .replace(&format!("pid {docs_pid}"), "pid <docs>")
                .replace(&format!("pid {me}"), "pid <stranger>")
        })
        .collect();
    insta::assert_snapshot!(redacted.join("\n"), @r"
    release changes live pod lead, so it must come from its process (pid <lead>) or the process that started it; the caller is pid <stranger> [registry.not_pod_process]
    release changes live pod docs, so it must come from its process (pid <docs>) or the process that started it; the caller is pid <stranger> [registry.not_pod_process]
    reclaim of docs must come from the process of its parent lead (pid <lead>); the caller is pid <stranger> [registry.not_parent_process]
    delegate changes live pod lead, so it must come from its process (pid <lead>) or the process that started it; the caller is pid <stranger> [registry.not_pod_process]
    docs is already live with another process or session; adopt only takes a reservation [registry.already_live]
    write <repo>/docs/** conflicts with pod docs, which holds write <repo>/docs/** (both cover <repo>/docs/**) [registry.write_conflict]
    docs is not a child of thief (its parent is lead) [registry.not_parent]
    pid <lead> is neither the caller (pid <stranger>) nor a process the caller started [registry.pid_not_caller]
    ");
    assert_eq!(h.json(&["registry", "ls", "--json"]), before, "a refused frame changed the allocation table");
    assert!(h.can_write("docs", "docs/x"));
    assert!(!h.can_write("lead", "docs/x"), "two writers on docs");
    assert!(h.can_write("lead", "src/x"));
}

/// Starts Pod `name` (writing the whole repository) as this test's own
/// child, as `pod start` starts a Pod, so this process is its starter and
/// the registry lets it act for the Pod.
fn start_own_pod(h: &Home, name: &str) -> std::process::Child {
    use std::io::{BufRead, Write};
    std::fs::create_dir_all(&h.home).expect("home");
    let request = pod::launch::LaunchRequest {
        name: n(name),
        mode: pod::launch::LaunchMode::Start {
            allow: vec![ScopeRule::write(ScopePath::new(&h.path(".")).expect("path"))],
            deny: vec![],
            workload: None,
        },
        cwd: None,
        env: Default::default(),
        limits: Default::default(),
        enforce: Default::default(),
    };
    let mut pod = std::process::Command::new(common::POD)
        .args(["__pod", name])
        .env("POD_HOME", &h.home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pod process");
    pod.stdin.take().expect("stdin").write_all(&serde_json::to_vec(&request).expect("json")).expect("launch request");
    let mut ready = String::new();
    std::io::BufReader::new(pod.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready line");
    assert!(ready.contains("Ready"), "{ready}");
    pod
}

fn fenced_events(h: &Home, pod: &str) -> Vec<serde_json::Value> {
    h.events(pod).into_iter().filter(|e| e["kind"] == "pod.fenced").collect()
}

/// A Pod whose allocation the registry drops while it runs (here: the
/// process that started the Pod, which may act for it, releases it) fails
/// closed: every check is denied naming why, spawns are refused, and its
/// log records `pod.fenced`.
#[test]
fn a_pod_whose_allocation_vanishes_fails_closed() {
    let h = Home::new();
    let mut pod = start_own_pod(&h, "lead");
    assert!(h.can_write("lead", "src/x"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut c = Client::connect_running(&h.dirs()).await.expect("connect");
        c.release(&n("lead")).await.expect("the starter may release its pod");
    });
    wait_until("lead fails closed", || !h.can_write("lead", "src/x"));
    let check = h.pod(&["check", "lead", "src/x", "--write"]);
    assert_eq!(check.code, 1, "{check:?}");
    insta::assert_snapshot!(check.stdout.replace(&h.repo.display().to_string(), "<repo>"), @"denied: lead write <repo>/src/x (fenced: the registry no longer holds lead's allocation)");
    let spawn = h.pod(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    insta::assert_snapshot!(spawn.stderr.trim_end(), @"pod: lead failed closed and spawns nothing: the registry no longer holds lead's allocation [pod.fenced]");
    assert_eq!(
        fenced_events(&h, "lead"),
        vec![serde_json::json!({"kind": "pod.fenced", "reason": "the registry no longer holds lead's allocation"})]
    );
    let _ = pod.kill();
    let _ = pod.wait();
}

/// A change of its allocation that the Pod did not make and cannot explain
/// (here its starter delegates part of its region behind its back) makes it
/// fail closed, so the region the registry handed on is not answered
/// "allowed" by two Pods.
#[test]
fn a_pod_given_a_layer_it_cannot_explain_fails_closed() {
    let h = Home::new();
    let mut pod = start_own_pod(&h, "lead");
    let docs = ScopeRule::write(ScopePath::new(&h.path("docs")).expect("path"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut c = Client::connect_running(&h.dirs()).await.expect("connect");
        c.delegate(&n("lead"), &n("ghost"), &[docs], &[]).await.expect("the starter may delegate for its pod");
    });
    wait_until("lead fails closed", || !h.can_write("lead", "src/x"));
    assert!(!h.can_write("lead", "docs/x"), "lead and ghost both hold docs");
    assert_eq!(
        fenced_events(&h, "lead"),
        vec![
            serde_json::json!({"kind": "pod.fenced", "reason": "the registry gave lead a layer for ghost, which it cannot explain"})
        ]
    );
    let _ = pod.kill();
    let _ = pod.wait();
}

/// The registry sweeps a dead child (mid) and reparents its child (leaf)
/// to the lead while the lead is stopped (SIGSTOP), so when it continues
/// the lead has both mid's exit and the watch's report of the reparenting
/// waiting: it reclaims mid, adopts leaf, and the report (which its own
/// reclaim explains) does not make it fail closed.
#[test]
fn a_sweep_behind_the_pods_back_is_explained_not_fenced() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "mid", "--parent", "lead", "--write", "a"]);
    h.must(&["spawn", "leaf", "--parent", "mid", "--write", "a/b"]);
    let lead = h.pid("lead");
    common::signal(lead, rustix::process::Signal::STOP);
    h.kill9("mid");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let gone = runtime.block_on(async {
        let mut c = Client::connect_running(&h.dirs()).await.expect("connect");
        c.sweep().await.expect("sweep")
    });
    // The daemon's own periodic sweep may have got there first.
    assert!(gone.is_empty() || gone == vec![n("mid")], "{gone:?}");
    assert_eq!(h.allocation("leaf").expect("leaf")["parent"], "lead", "the registry reparented leaf");
    common::signal(lead, rustix::process::Signal::CONT);
    wait_until("lead adopts leaf", || common::layer_names(&h.scope("lead")) == vec!["leaf".to_string()]);
    assert_eq!(h.allocation("lead").expect("lead")["layers"], h.scope("lead")["layers"]);
    assert!(!h.can_write("lead", "a/b/x"));
    assert!(h.can_write("lead", "a/x"));
    assert_eq!(fenced_events(&h, "lead"), Vec::<serde_json::Value>::new(), "lead fenced itself");
}
