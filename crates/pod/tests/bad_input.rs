//! Bad input to the `pod` command line and to a Pod's socket: each case gets
//! one clear line naming what was wrong, a non-zero exit, and no change of
//! state (the registry table, the scopes and the logs are compared
//! before/after). Every line is checked whole (snapshots in
//! `tests/snapshots/`, test folders and pids replaced by placeholders).
//! Manifests are read bounded, from regular files only; empty paths are
//! refused wherever a path is taken; control characters never reach an
//! output unescaped; what an error echoes is cut.

use pod_e2e as common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Home, POD};
use pod::protocol::{PodReply, PodRequest};
use pod_proto::{Connection, ProtoError, WireError};
use scope::Permission;
use serde::Serialize;
use serde_json::Value;

/// Everything a bad command must not change.
fn state(h: &Home) -> (Value, Value, usize) {
    (h.json(&["registry", "ls", "--json"]), h.scope("lead"), h.events("lead").len())
}

/// Runs a command that must be refused and returns its one line, redacted.
fn refused(h: &Home, args: &[&str]) -> String {
    let before = state(h);
    let run = h.pod(args);
    assert!(!run.ok(), "`pod {}` should fail: {run:?}", args.join(" "));
    assert_ne!(run.code, 1, "exit 1 is reserved for `check` denials: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line expected: {run:?}");
    assert_eq!(state(h), before, "`pod {}` changed state", args.join(" "));
    h.redact(run.stderr.trim_end())
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
    let long = "x".repeat(65);
    let lines: Vec<String> = [
        vec!["start", "Bad Name", "--write", "tests"],
        vec!["start", "_x", "--write", "tests"],
        vec!["start", "-x", "--write", "tests"],
        vec!["start", &long, "--write", "tests"],
        vec!["start", "self", "--write", "tests"],
        vec!["start", "operator", "--write", "tests"],
        vec!["spawn", "operator", "--parent", "lead", "--write", "src/two"],
        vec!["spawn", "../etc", "--parent", "lead", "--write", "src/two"],
        vec!["start", "lead", "--write", "tests"],
        vec!["spawn", "one", "--parent", "lead", "--write", "src/two"],
    ]
    .iter()
    .map(|args| refused(&h, args))
    .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn escaping_paths_are_refused() {
    let h = home();
    // A symlink inside the scope that points out of it.
    std::os::unix::fs::symlink("/etc", h.repo.join("src/escape")).expect("symlink");
    let lines: Vec<String> = [
        // Relative and escaping: resolves outside the parent's scope.
        vec!["spawn", "two", "--parent", "lead", "--write", "../../etc"],
        vec!["spawn", "two", "--parent", "lead", "--write", "src/../tests"],
        vec!["spawn", "two", "--parent", "lead", "--write", "src/escape"],
    ]
    .iter()
    .map(|args| refused(&h, args))
    .collect();
    insta::assert_snapshot!(lines.join("\n"));
    let check = h.pod(&["check", "lead", "src/escape/passwd", "--write"]);
    assert_eq!(check.code, 1, "a symlink out of scope must not be writable: {check:?}");
    assert_eq!(check.stdout, "denied: lead write /etc/passwd (no rule covers this path)\n");
}

#[test]
fn spawn_outside_parent_or_overlapping_sibling_is_refused() {
    let h = home();
    let lines: Vec<String> = [
        vec!["spawn", "two", "--parent", "lead", "--write", "tests"],
        vec!["spawn", "two", "--parent", "lead", "--write", "src/one/deeper"],
        vec!["spawn", "two", "--parent", "lead", "--write", "docs"],
        vec!["spawn", "two", "--parent", "lead"],
    ]
    .iter()
    .map(|args| refused(&h, args))
    .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn unknown_and_running_pods_are_refused() {
    let h = home();
    let lines: Vec<String> = [
        vec!["stop", "ghost"],
        vec!["resume", "ghost"],
        vec!["resume", "lead"],
        vec!["rm", "lead"],
        vec!["spawn", "two", "--parent", "ghost", "--write", "src/two"],
        vec!["scope", "ghost"],
        vec!["resume", "one"],
    ]
    .iter()
    .map(|args| refused(&h, args))
    .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn corrupt_manifest_is_refused() {
    let h = home();
    let manifest = h.repo.join("pod.toml");
    let mut lines = Vec::new();
    for text in [
        "name = \"m\"\n[[allow]]\npath = \"src\"\npermission = \"own\"\n",
        "name = \"m\"\nallow = 3\n",
        "name = \"M!\"\n",
        "\u{0}\u{1}garbage",
        "name = \"m\"\n[[allow]]\npath = \"\"\npermission = \"write\"\n",
        "name = \"m\"\n[[allow]]\npath = \"src/a\\nb\"\npermission = \"write\"\n",
    ] {
        std::fs::write(&manifest, text).expect("write manifest");
        lines.push(refused(&h, &["start", "--manifest", "pod.toml"]));
    }
    std::fs::write(&manifest, [0xff, 0xfe, b'x']).expect("write manifest");
    lines.push(refused(&h, &["start", "--manifest", "pod.toml"]));
    lines.push(refused(&h, &["start", "--manifest", "missing.toml"]));
    insta::assert_snapshot!(lines.join("\n"));
}

/// The variable that makes [`measured_child`] run: the arguments of the
/// `pod` command it measures, joined by U+001F.
const MEASURE_ARGS: &str = "POD_TEST_MEASURE_ARGS";

/// Exit code, peak memory (KiB), stderr and time of `pod ARGS`. The peak
/// comes from `wait4` on the `pod` process, started by a fresh copy of this
/// test binary ([`measured_child`]): a process forked from this big, busy
/// test process would count this one's memory as its own until it execs.
fn run_measured(h: &Home, args: &[&str]) -> (i32, u64, String, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "measured_child", "--nocapture", "--test-threads=1", "--quiet"])
        .env(MEASURE_ARGS, args.join("\u{1f}"))
        .env("POD_HOME", &h.home)
        .env_remove("POD_NAME")
        .current_dir(&h.repo)
        .output()
        .expect("start the measuring child");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().find_map(|l| l.strip_prefix("measured ")).unwrap_or_else(|| panic!("no measure: {out:?}"));
    let mut words = line.split_whitespace();
    let code = words.next().and_then(|w| w.parse().ok()).expect("code");
    let peak = words.next().and_then(|w| w.parse().ok()).expect("peak");
    (code, peak, String::from_utf8_lossy(&out.stderr).into_owned(), took)
}

/// Runs `pod` with the arguments in [`MEASURE_ARGS`] (its stderr passed
/// through) and prints `measured CODE PEAK_KIB`.
#[test]
#[ignore = "the child process of manifests_that_are_not_small_regular_files_are_refused_at_once"]
fn measured_child() {
    let args = std::env::var(MEASURE_ARGS)
        .unwrap_or_else(|_| panic!("{MEASURE_ARGS} is not set: this test is the child process of another"));
    // Reaped by wait4 below, not by std's handle (which would not give the
    // rusage).
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(POD).args(args.split('\u{1f}')).spawn().expect("start pod");
    let (status, rusage) = wait4(child.id() as libc::pid_t);
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    println!("measured {code} {}", rusage.ru_maxrss);
}

#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t) -> (libc::c_int, libc::rusage) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct;
    // wait4 writes both out-parameters, which live for the whole call; the
    // pid is our own unreaped child (std's handle is not used to wait).
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    (status, rusage)
}

/// `/dev/zero`, a FIFO nobody writes, a directory and a sparse 1 GiB file:
/// each refused by its type or size, within a second and without reading
/// it (peak memory far below what reading would take).
#[test]
fn manifests_that_are_not_small_regular_files_are_refused_at_once() {
    let h = home();
    let fifo = h.repo.join("fifo.toml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    let sparse = h.repo.join("sparse.toml");
    std::fs::File::create(&sparse).and_then(|f| f.set_len(1 << 30)).expect("sparse file");
    std::fs::create_dir(h.repo.join("dir.toml")).expect("dir");
    let mut lines = Vec::new();
    for manifest in ["/dev/zero", fifo.to_str().expect("utf8"), "dir.toml", sparse.to_str().expect("utf8")] {
        let before = state(&h);
        let (code, peak_kib, stderr, took) = run_measured(&h, &["start", "--manifest", manifest]);
        assert_eq!(code, 2, "{manifest}: {stderr}");
        assert!(took < Duration::from_secs(1), "{manifest} took {took:?}");
        // `pod --version` takes about 8 MiB; reading 1 GiB would take 1 GiB.
        assert!(peak_kib < 32 * 1024, "{manifest}: peak RSS {peak_kib} KiB");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(state(&h), before);
        lines.push(h.redact(stderr.trim_end()));
    }
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn empty_paths_are_refused_everywhere_on_the_command_line() {
    let h = home();
    let lines: Vec<String> = [
        vec!["start", "two", "--write", ""],
        vec!["start", "two", "--read", ""],
        vec!["start", "two", "--write", "tests", "--deny-write", ""],
        vec!["start", "two", "--write", "tests", "--deny-read", ""],
        vec!["start", "two", "--manifest", ""],
        vec!["spawn", "two", "--parent", "lead", "--write", ""],
        vec!["check", "lead", ""],
    ]
    .iter()
    .map(|args| refused(&h, args))
    .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

/// A name or path with a newline or an escape sequence is refused, and the
/// line that says so shows it escaped, on one line; a huge input is cut.
#[test]
fn control_characters_and_huge_inputs_are_refused_and_echoed_safely() {
    let h = home();
    let huge_name = "n".repeat(100_000);
    let huge_path = format!("src/{}", "p".repeat(3000));
    let lines: Vec<String> = [
        vec!["start", "two\nthree", "--write", "tests"],
        vec!["start", "two\u{1b}[2J", "--write", "tests"],
        vec!["start", "two", "--write", "tests/a\nb"],
        vec!["spawn", "two", "--parent", "lead", "--write", "src/\u{1b}[31mred"],
        vec!["check", "lead", "src/a\rb"],
        vec!["start", &huge_name, "--write", "tests"],
        vec!["start", "two", "--write", &format!("{huge_path}\n")],
    ]
    .iter()
    .map(|args| refused(&h, args))
    .collect();
    for line in &lines {
        assert!(line.len() < 400, "an error line echoes too much: {} bytes", line.len());
        assert!(!line.chars().any(char::is_control), "a control character reached the output: {line:?}");
    }
    insta::assert_snapshot!(lines.join("\n"));
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

/// The wire shapes of `Check` and `Spawn` with plain strings for paths, so
/// a test can send what the typed messages cannot hold.
#[derive(Serialize)]
enum RawRequest {
    Check { path: String, permission: Permission },
    Spawn(RawSpawn),
}

#[derive(Serialize)]
struct RawSpawn {
    child: String,
    rules: Vec<RawRule>,
    workload: Option<Vec<String>>,
    cwd: Option<String>,
}

#[derive(Serialize)]
struct RawRule {
    target: String,
    permission: Permission,
    recursive: bool,
}

fn raw_call<T: Serialize>(socket: &Path, request: &T) -> Result<PodReply, WireError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut conn = Connection::connect(socket).await.expect("connect");
        conn.client_handshake("test").await.expect("handshake");
        conn.call::<_, PodReply>(request).await.map_err(|e| match e {
            ProtoError::Remote(w) => w,
            other => other.to_wire(),
        })
    })
}

/// A raw request on a Pod's socket gets the same refusals: an empty path
/// does not decode (it is no path), in a check or in a spawn's rules.
#[test]
fn empty_paths_are_refused_on_the_wire() {
    let h = home();
    let socket = h.run_dir("lead").join("sock");
    let before = state(&h);
    let check = raw_call(&socket, &RawRequest::Check { path: String::new(), permission: Permission::Read });
    let spawn = raw_call(
        &socket,
        &RawRequest::Spawn(RawSpawn {
            child: "two".into(),
            rules: vec![RawRule { target: String::new(), permission: Permission::Write, recursive: true }],
            workload: None,
            cwd: None,
        }),
    );
    assert_eq!(state(&h), before);
    let lines: Vec<String> = [check, spawn]
        .into_iter()
        .map(|r| {
            let e = r.expect_err("refused");
            format!("{} [{}]", e.message, e.code)
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

/// A frame that names no request (here an unknown one, with a 100 KB name)
/// gets one bounded line back, with nothing of it unescaped.
#[test]
fn a_garbled_frame_is_refused_in_a_bounded_line() {
    let h = home();
    let socket = h.run_dir("lead").join("sock");
    let name = format!("\u{1b}[2J{}", "A".repeat(100_000));
    let garbled = std::collections::BTreeMap::from([(name, 0u8)]);
    let e = raw_call(&socket, &garbled).expect_err("refused");
    insta::assert_snapshot!(format!("{} [{}]", e.message, e.code));
}

/// `check` sent raw, with a path the caller did not resolve, is answered
/// for where the path really points, as `pod check` answers.
#[test]
fn a_raw_check_answers_for_the_resolved_path() {
    let h = home();
    std::os::unix::fs::symlink("/etc", h.repo.join("src/escape")).expect("symlink");
    let socket = h.run_dir("lead").join("sock");
    let path = h.repo.join("src/escape/passwd").to_string_lossy().into_owned();
    let raw = raw_call(&socket, &RawRequest::Check { path, permission: Permission::Write }).expect("answered");
    let PodReply::Verdict { allowed, decided_by, .. } = raw else { panic!("unexpected {raw:?}") };
    assert!(!allowed, "/etc/passwd is outside lead's scope");
    assert_eq!(decided_by, "no rule covers this path");
    let typed = raw_call(
        &socket,
        &PodRequest::Check {
            path: scope::ScopePath::new(&h.path("src/one/../escape/hosts")).expect("path"),
            permission: Permission::Write,
        },
    )
    .expect("answered");
    assert!(matches!(typed, PodReply::Verdict { allowed: false, .. }), "{typed:?}");
}

/// `pod registry serve` with a bad `--etcd`, `--node` or `--lease-ttl` (or
/// the same in POD_ETCD, POD_NODE, POD_LEASE_TTL) is refused with one line
/// and exit 2 before anything is opened: no registry files appear.
#[test]
fn bad_registry_settings_are_refused_before_the_daemon_starts() {
    let h = Home::new();
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Vec<&str>, Env)> = vec![
        (vec!["--node", "n1"], vec![]),
        (vec!["--etcd", "127.0.0.1:2379", "--node", "N 1"], vec![]),
        (vec!["--etcd", "127.0.0.1:2379", "--node", "n1", "--lease-ttl", "1"], vec![]),
        (vec!["--etcd", "127.0.0.1:2379", "--node", "n1", "--lease-ttl", "ten"], vec![]),
        (vec!["--etcd", "127.0.0.1:2379,", "--node", "n1"], vec![]),
        (vec!["--etcd", "http://user:pw@h:1", "--node", "n1"], vec![]),
        (vec!["--etcd", "https://h:1", "--node", "n1"], vec![]),
        (vec![], vec![("POD_ETCD", "h"), ("POD_NODE", "n1")]),
        (vec![], vec![("POD_ETCD", "h:1"), ("POD_NODE", "n1"), ("POD_LEASE_TTL", "3601")]),
        // A flag wins over the environment, and is checked as strictly.
        (vec!["--lease-ttl", "0"], vec![("POD_ETCD", "h:1"), ("POD_NODE", "n1"), ("POD_LEASE_TTL", "10")]),
    ];
    let mut lines = Vec::new();
    for (flags, env) in cases {
        let args: Vec<&str> = ["registry", "serve"].into_iter().chain(flags).collect();
        let run = h.pod_env(&args, &env);
        assert_eq!(run.code, 2, "`pod {}` with {env:?}: {run:?}", args.join(" "));
        assert_eq!(run.stderr.lines().count(), 1, "one line expected: {run:?}");
        assert!(
            !h.dirs().registry_lock().exists() && !h.dirs().registry_data().exists(),
            "{run:?} opened the registry"
        );
        lines.push(run.stderr.trim_end().to_string());
    }
    insta::assert_snapshot!(lines.join("\n"), @r#"
        pod: bad registry configuration: --node and --lease-ttl (POD_NODE, POD_LEASE_TTL) need --etcd (POD_ETCD) [registry.bad_config]
        pod: bad registry configuration: node name "N 1" is not 1-64 bytes of [a-z0-9._-] starting with a letter or digit [registry.bad_config]
        pod: bad registry configuration: lease TTL 1 s is out of range: 2..=3600 s [registry.bad_config]
        pod: bad registry configuration: lease TTL "ten" is not a whole number of seconds [registry.bad_config]
        pod: bad registry configuration: an empty etcd endpoint in "127.0.0.1:2379," [registry.bad_config]
        pod: bad registry configuration: etcd endpoint "http://user:pw@h:1" carries credentials; they do not belong in a URL on a command line [registry.bad_config]
        pod: bad registry configuration: etcd endpoint https://h:1: TLS is not supported yet; use http:// on a trusted network [registry.bad_config]
        pod: bad registry configuration: etcd endpoint "h" has no port (host:port or http://host:port) [registry.bad_config]
        pod: bad registry configuration: lease TTL 3601 s is out of range: 2..=3600 s [registry.bad_config]
        pod: bad registry configuration: lease TTL 0 s is out of range: 2..=3600 s [registry.bad_config]
    "#);
}
