//! The harness of the Pod runtime's end-to-end tests: a private POD_HOME and
//! repository per test, the real `pod` binary, real Pod processes, a real
//! registry daemon (started on demand, as for a user), real SIGKILL. Waits
//! are on conditions with a bound; nothing sleeps for synchronization.
//! The black-box suite beside it (`tests/*.rs`) and the Pod crate's own
//! tests (`crates/pod/tests`, those needing its failpoints build or its
//! internals) share it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `pod` binary of this build (see `build.rs`): built with the `pod`
/// package, which `cargo test --workspace` builds.
pub const POD: &str = env!("POD_E2E_BINARY");
pub const BOUND: Duration = Duration::from_secs(30);

pub struct Home {
    _tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub repo: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\nstdout: {}\nstderr: {}", self.code, self.stdout, self.stderr)
    }
}

impl Home {
    /// A new private home and repository (temporary folders): made, not a
    /// default value, hence no `Default`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Home {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonical tempdir");
        let home = root.join("home");
        let repo = root.join("repo");
        for d in ["src", "docs", "tests", "secrets", "a/b/c", "a/x"] {
            std::fs::create_dir_all(repo.join(d)).expect("repo dirs");
        }
        Home { _tmp: tmp, home, repo }
    }

    /// Runs `pod ARGS` in the repository, as a user would.
    pub fn pod(&self, args: &[&str]) -> Run {
        self.pod_env(args, &[])
    }

    pub fn pod_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = self.command(args, env).output().unwrap_or_else(|e| cannot_run(e));
        Run::from_output(out)
    }

    /// Starts `pod ARGS` in the background with its output captured, for a
    /// test that acts while the command runs (held at a failpoint, or
    /// waiting): `Run::from_output(child.wait_with_output())` finishes it.
    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.command(args, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| cannot_run(e))
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(POD);
        cmd.args(args).env("POD_HOME", &self.home).env_remove("POD_NAME").current_dir(&self.repo);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `pod ARGS` and insists it succeeds.
    pub fn must(&self, args: &[&str]) -> Run {
        let run = self.pod(args);
        assert!(run.ok(), "`pod {}` failed: {run:?}", args.join(" "));
        run
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let run = self.must(args);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("`pod {}` printed no JSON ({e}): {run:?}", args.join(" ")))
    }

    pub fn path(&self, rel: &str) -> String {
        self.repo.join(rel).to_string_lossy().into_owned()
    }

    /// A directory beside the repository (no Pod's scope overlaps it), for
    /// workloads to leave what a test reads: pass it as `--scratch`, or
    /// an enforced workload may not write it.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.repo.with_file_name("scratch");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    pub fn run_dir(&self, pod: &str) -> PathBuf {
        self.home.join("run/pods").join(pod)
    }

    /// The runtime's two roots in this home (`run/`, `data/`), whose
    /// methods name the registry's files.
    pub fn dirs(&self) -> pod_proto::RuntimeDirs {
        pod_proto::RuntimeDirs { run: self.home.join("run"), data: self.home.join("data") }
    }

    pub fn data_dir(&self, pod: &str) -> PathBuf {
        self.home.join("data/pods").join(pod)
    }

    /// The Pod process's pid, from its pid file (`PID START_TIME`).
    pub fn pid(&self, pod: &str) -> u32 {
        pid_in(&self.run_dir(pod).join("pid")).expect("pid file")
    }

    /// `pod check NAME PATH --write` exits 0.
    pub fn can_write(&self, pod: &str, rel: &str) -> bool {
        let run = self.pod(&["check", pod, rel, "--write"]);
        assert!(run.code == 0 || run.code == 1, "check failed: {run:?}");
        run.code == 0
    }

    pub fn scope(&self, pod: &str) -> Value {
        self.json(&["scope", pod, "--json"])
    }

    /// The registry's record of `pod`, from `pod registry ls --json`.
    pub fn allocation(&self, pod: &str) -> Option<Value> {
        let all = self.json(&["registry", "ls", "--json"]);
        all.as_array().expect("list").iter().find(|a| a["name"] == pod).cloned()
    }

    pub fn mirror(&self, pod: &str) -> Value {
        let text = std::fs::read_to_string(self.run_dir(pod).join("spawned_pods.json")).unwrap_or_else(|_| "[]".into());
        serde_json::from_str(&text).expect("spawned_pods.json")
    }

    /// Kinds (and child names) of the events in a Pod's log.
    pub fn events(&self, pod: &str) -> Vec<Value> {
        let run = self.must(&["log", pod, "--json"]);
        run.stdout.lines().map(|l| serde_json::from_str::<Value>(l).expect("log line")["event"].clone()).collect()
    }

    pub fn kill9(&self, pod: &str) {
        kill9(self.pid(pod));
    }

    /// The Pod's process, as it is now.
    pub fn proc(&self, pod: &str) -> Proc {
        Proc::of(self.pid(pod))
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Leave nothing running: every Pod of this home, what their
        // workloads still run, then its registry.
        let mut killed = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.home.join("run/pods")) {
            for e in entries.flatten() {
                // `PID START_TIME`: only that very process, never a reused pid.
                let record = std::fs::read_to_string(e.path().join("pid")).unwrap_or_default();
                let mut words = record.split_whitespace().map(|w| w.parse::<u64>().ok());
                if let (Some(Some(pid)), Some(Some(start))) = (words.next(), words.next()) {
                    if alive_as(pid as u32, start) {
                        signal(pid as u32, rustix::process::Signal::KILL);
                        killed.push((pid as u32, start));
                    }
                }
            }
        }
        // The lock names the daemon only while a daemon holds it.
        let lock = self.dirs().registry_lock();
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open(&lock)
            .is_ok_and(|f| rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err());
        if held && !killed.is_empty() {
            self.sweep_after(&killed);
        }
        if let Some(pid) = self.registry_pid().filter(|_| held) {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Home {
    /// Once the `killed` Pod processes are gone, has the registry sweep:
    /// it ends what their workloads still run and removes their cgroups,
    /// as its periodic sweep would have (a Pod killed with its registry
    /// would otherwise leave its workload running, and its cgroup behind).
    /// Bounded; a failure only leaves that behind.
    fn sweep_after(&self, killed: &[(u32, u64)]) {
        if !poll_until(|| killed.iter().all(|&(pid, start)| !alive_as(pid, start))) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let dirs = self.dirs();
        runtime.block_on(async {
            let swept = tokio::time::timeout(BOUND, async {
                let mut client = pod_registry::Client::connect_running(&dirs).await?;
                client.sweep().await
            });
            if let Ok(Err(e)) = swept.await {
                eprintln!("harness: the registry's sweep at the end of the test failed: {e}");
            }
        });
    }
}

impl Home {
    /// The registry daemon's pid, from its lock file.
    pub fn registry_pid(&self) -> Option<u32> {
        pid_in(&self.dirs().registry_lock())
    }
}

/// Why a test could not start `pod`, and how to build it.
fn cannot_run(e: std::io::Error) -> ! {
    panic!("cannot run {POD}: {e} (it is built with the pod package: `cargo test --workspace`, or `cargo build -p pod` first)")
}

/// The first word of a pid or lock file.
pub fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.split_whitespace().next()?.parse().ok()
}

pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// A process as identified by its pid and its start time, so that a reused
/// pid (this suite starts many processes; pids wrap) is not taken for it.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: u32,
    start: Option<u64>,
}

impl Proc {
    /// The process that has `pid` now.
    pub fn of(pid: u32) -> Proc {
        Proc { pid, start: start_time(pid) }
    }

    /// Still that very process, and not a zombie.
    pub fn alive(&self) -> bool {
        self.start.is_some() && start_time(self.pid) == self.start
    }
}

/// Start time of a running (not zombie) process, as the registry reads it.
fn start_time(pid: u32) -> Option<u64> {
    pod_registry::proc::start_time(pid).ok().flatten()
}

/// Is the process with this pid and start time still running?
pub fn alive_as(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// SIGKILL and wait (bounded) until the process is gone.
pub fn kill9(pid: u32) {
    let proc = Proc::of(pid);
    signal(pid, rustix::process::Signal::KILL);
    wait_until("process gone", || !proc.alive());
}

/// Polls `cond` until it holds, failing the test after [`BOUND`].
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    assert!(poll_until(cond), "timed out after {BOUND:?} waiting for: {what}");
}

/// Polls `cond` until it holds (`true`) or [`BOUND`] passes (`false`), for
/// callers that explain a timeout themselves.
pub fn poll_until(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    while !cond() {
        if start.elapsed() >= BOUND {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    true
}

impl Home {
    /// `text` with this test's folders and process numbers replaced by
    /// placeholders, so whole messages can be snapshotted.
    pub fn redact(&self, text: &str) -> String {
        let root = self.home.parent().expect("root").to_string_lossy().into_owned();
        let text = text.replace(&self.home.to_string_lossy().into_owned(), "[home]");
        let text = text.replace(&self.repo.to_string_lossy().into_owned(), "[repo]");
        let text = text.replace(&root, "[tmp]");
        redact_numbers_after(&text, &["process ", "pid ", "(pid ", "uid ", "ABI "])
    }
}

/// Replaces the digits following each of `words` with `[n]`.
pub fn redact_numbers_after(text: &str, words: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for w in words {
            if let Some(after) = rest.strip_prefix(w) {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    out.push_str(w);
                    out.push_str("[n]");
                    rest = &after[digits..];
                    continue 'outer;
                }
            }
        }
        let ch = rest.chars().next().expect("non-empty");
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

/// Whether a test that needs `need` (e.g. `root`) can run. Without it the
/// test is skipped with a printed reason, unless `POD_TEST_REQUIRE` names
/// the need (CI sets it for what it provides): then it fails.
pub fn available(need: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let required = std::env::var("POD_TEST_REQUIRE").unwrap_or_default();
    if required.split(',').map(str::trim).any(|r| r == need || r == "all") {
        panic!("this test needs {need}, which POD_TEST_REQUIRE demands, and it is missing");
    }
    eprintln!("skipped: this test needs {need} (set POD_TEST_REQUIRE={need} to make its absence fail)");
    false
}

/// `pod scope` text without its `enforced ...` line: the level is the
/// machine's (tests/enforcement.rs covers that line), the rest is not.
pub fn without_level_line(scope: &str) -> String {
    scope.lines().filter(|l| !l.trim_start().starts_with("enforced")).collect::<Vec<_>>().join("\n")
}

/// The level a Pod gets here by default, as `pod doctor --json` says.
pub fn default_level() -> String {
    let out = Command::new(POD).args(["doctor", "--json"]).output().unwrap_or_else(|e| cannot_run(e));
    let doctor: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("pod doctor printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    doctor["level"].as_str().unwrap_or_default().to_string()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn layer_names(scope: &Value) -> Vec<String> {
    scope["layers"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
