//! The runtime's own files and the names users choose never share a name
//! space (Pods under `run/pods/`, `data/pods/`; the registry under
//! `run/registry/`, `data/registry/`), a POD_HOME of the old layout is moved
//! (never read as empty) or refused while it runs, and everything the
//! runtime creates is owner-only, in folders nobody else can write.

use pod_e2e as common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{wait_until, Home, Proc};

fn registry_names(h: &Home) -> Vec<String> {
    let all = h.json(&["registry", "ls", "--json"]);
    all.as_array().expect("list").iter().map(|a| a["name"].as_str().expect("name").to_string()).collect()
}

/// Pods named after the registry's files live, stop and are removed like
/// any other, and the registry keeps serving with its table intact.
#[test]
fn pods_named_like_the_registry_s_files_cannot_hurt_it() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "src"]);
    let names = ["registry", "registry.sock", "registry.lock", "registry.log", "pods", "lock", "sock"];
    for (i, name) in names.iter().enumerate() {
        let dir = format!("a/x/{i}");
        std::fs::create_dir_all(h.repo.join(&dir)).expect("dir");
        h.must(&["start", name, "--write", &dir]);
    }
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).chain(["lead".to_string()]).collect();
    expected.sort();
    assert_eq!(registry_names(&h), expected);
    for name in names {
        h.must(&["stop", name]);
        h.must(&["rm", name]);
    }
    // The registry's files are where they were, and it still answers.
    for file in ["run/registry/sock", "run/registry/lock", "run/registry/log", "data/registry/wal"] {
        assert!(h.home.join(file).exists(), "{file} is gone");
    }
    assert_eq!(registry_names(&h), vec!["lead"]);
    assert!(!h.can_write("lead", "docs/x") && h.can_write("lead", "src/x"));
    h.must(&["spawn", "one", "--parent", "lead", "--write", "src/one"]);
}

fn mv(h: &Home, from: &str, to: &str) {
    std::fs::rename(h.home.join(from), h.home.join(to)).unwrap_or_else(|e| panic!("mv {from} {to}: {e}"));
}

/// Stops the registry daemon (SIGTERM) and waits until it is gone.
fn stop_registry(h: &Home) {
    let daemon = Proc::of(h.registry_pid().expect("registry pid"));
    common::signal(daemon.pid, rustix::process::Signal::TERM);
    wait_until("registry gone", || !daemon.alive());
}

/// A home as the layout before this one had it: Pods `lead` (with child
/// `docs`, stopped) and `registry` (whose log shared the registry's data
/// folder) directly under `run/` and `data/`, the daemon's files in `run/`.
fn old_layout_home() -> Home {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "docs", "--write", "src"]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    h.must(&["start", "registry", "--write", "a/b"]);
    h.must(&["stop", "lead"]);
    h.must(&["stop", "registry"]);
    stop_registry(&h);
    mv(&h, "run/registry/log", "run/registry.log");
    mv(&h, "run/registry/lock", "run/registry.lock");
    std::fs::remove_dir(h.home.join("run/registry")).expect("empty after a clean stop");
    for pod in ["lead", "docs"] {
        mv(&h, &format!("run/pods/{pod}"), &format!("run/{pod}"));
        mv(&h, &format!("data/pods/{pod}"), &format!("data/{pod}"));
    }
    mv(&h, "run/pods/registry", "run/registry");
    mv(&h, "data/pods/registry/log", "data/registry/log");
    // The old layout had no coordination store.
    std::fs::remove_dir_all(h.home.join("data/pods/registry/kv")).expect("the pod's kv store");
    std::fs::remove_dir(h.home.join("data/pods/registry")).expect("empty");
    std::fs::remove_dir(h.home.join("run/pods")).expect("empty");
    std::fs::remove_dir(h.home.join("data/pods")).expect("empty");
    h
}

#[test]
fn the_old_layout_is_moved_once_nothing_of_it_runs() {
    let h = old_layout_home();
    let ls = h.pod(&["ls", "--json"]);
    assert!(ls.ok(), "{ls:?}");
    insta::assert_snapshot!(h.redact(ls.stderr.trim_end()));
    let listed: serde_json::Value = serde_json::from_str(&ls.stdout).expect("json");
    let states: Vec<(String, String)> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|p| (p["name"].as_str().expect("n").to_string(), p["state"].as_str().expect("s").to_string()))
        .collect();
    assert_eq!(
        states,
        [("docs", "stopped"), ("lead", "stopped"), ("registry", "stopped")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec()
    );
    for gone in ["run/lead", "data/lead", "run/registry.log", "run/registry.lock", "data/registry/log"] {
        assert!(!h.home.join(gone).exists(), "{gone} was not moved");
    }
    assert!(h.home.join("run/registry/log").exists(), "the daemon's log moved with it");
    assert!(h.home.join("data/pods/registry/log").exists());
    // The histories are whole: lead resumes with docs's removal on record,
    // and the registry's own data was never touched.
    h.must(&["resume", "lead"]);
    let kinds: Vec<String> = h.events("lead").iter().map(|e| e["kind"].as_str().expect("k").to_string()).collect();
    assert!(kinds.contains(&"child.removed".to_string()), "{kinds:?}");
    assert!(h.can_write("lead", "docs/a"));
    assert_eq!(h.events("registry").last().map(|e| e["kind"].clone()), Some("pod.stopped".into()));
}

#[test]
fn the_old_layout_is_refused_while_a_pod_of_it_runs() {
    let h = old_layout_home();
    // A process of the old build still holds lead's lock.
    let lock = std::fs::OpenOptions::new().write(true).open(h.home.join("run/lead/lock")).expect("lock");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).expect("flock");
    let run = h.pod(&["ls"]);
    assert_eq!(run.code, 2, "{run:?}");
    insta::assert_snapshot!(h.redact(run.stderr.trim_end()));
    assert!(h.home.join("run/lead").exists() && h.home.join("data/lead").exists(), "nothing moves");
    assert!(!h.home.join("run/pods").exists());
    // The registry daemon, given the folders as clients give them, refuses
    // the old layout as well (it never moves anything itself).
    let (run_dir, data_dir) = (h.home.join("run"), h.home.join("data"));
    let serve = h.pod(&[
        "registry",
        "serve",
        "--run-dir",
        run_dir.to_str().expect("utf8"),
        "--data-dir",
        data_dir.to_str().expect("utf8"),
    ]);
    assert_eq!(serve.code, 2, "{serve:?}");
    insta::assert_snapshot!("daemon_refuses_old_layout", h.redact(serve.stderr.trim_end()));
    drop(lock);
    h.must(&["ls"]);
    assert!(h.home.join("run/pods/lead").exists());
}

/// Every folder and file under `dir`, with its mode and kind.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32, bool)>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let meta = entry.path().symlink_metadata().expect("meta");
        out.push((entry.path(), meta.mode() & 0o7777, meta.is_dir()));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

/// After a start (with a workload that writes output), a spawn, a stop, a
/// kill -9 and a resume, and the registry serving throughout: every folder
/// under POD_HOME is 0700 and everything else (files, sockets, sled's and
/// the write-ahead logs included) 0600, whatever this test's umask.
#[test]
fn everything_created_is_owner_only() {
    let h = Home::new();
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    h.must(&["start", "lead", "--write", ".", "--", "sh", "-c", "echo hello; exec sleep 60"]);
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--", "sh", "-c", "echo hi >&2; exec sleep 60"]);
    h.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"]);
    h.must(&["stop", "tests"]);
    h.kill9("lead");
    h.must(&["resume", "lead"]);
    h.must(&["registry", "ls"]);
    let mut entries = Vec::new();
    walk(&h.home, &mut entries);
    assert!(entries.len() > 30, "too little was created to prove anything: {entries:?}");
    let wrong: Vec<String> = entries
        .iter()
        .filter(|(_, mode, dir)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, mode, _)| format!("{} {mode:o}", h.redact(&p.to_string_lossy())))
        .collect();
    assert!(wrong.is_empty(), "not owner-only: {wrong:#?}");
    let home_mode = std::fs::metadata(&h.home).expect("home").mode() & 0o777;
    assert_eq!(home_mode, 0o700);
}

#[test]
fn a_pod_home_others_can_write_is_refused() {
    let h = Home::new();
    h.must(&["ls"]);
    let chmod =
        |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let mut lines = Vec::new();
    chmod(&h.home, 0o777);
    lines.push(h.pod(&["ls"]));
    chmod(&h.home, 0o755);
    h.must(&["ls"]);
    chmod(&h.home.join("run"), 0o750);
    lines.push(h.pod(&["ls"]));
    chmod(&h.home.join("run"), 0o700);
    chmod(&h.home.join("data/pods"), 0o701);
    lines.push(h.pod(&["start", "lead", "--write", "."]));
    let text: Vec<String> = lines
        .iter()
        .map(|run| {
            assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "{run:?}");
            h.redact(run.stderr.trim_end())
        })
        .collect();
    insta::assert_snapshot!(text.join("\n"));
}

/// Needs root, to give a folder to another user.
#[test]
fn folders_of_another_user_are_refused() {
    if !common::available("root", common::is_root()) {
        return;
    }
    let h = Home::new();
    h.must(&["ls"]);
    let nobody = Some(rustix::fs::Uid::from_raw(65534));
    rustix::fs::chown(h.home.join("data"), nobody, None).expect("chown");
    let run = h.pod(&["ls"]);
    assert_eq!(run.code, 2, "{run:?}");
    insta::assert_snapshot!(h.redact(run.stderr.trim_end()));
}
