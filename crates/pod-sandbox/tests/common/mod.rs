//! Shared harness of the kernel tests: what a test needs (skip with a
//! printed reason, or fail when `POD_TEST_REQUIRE` names the need), a
//! fixture of real directories, and a small "agent" workload that runs one
//! command per request, so a test can make the sandboxed workload itself
//! attempt writes, in order, synchronized by FIFOs (no sleeps).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pod_sandbox::detect::Feature;
use pod_sandbox::{
    choose_containment, choose_level, launch, Containment, ContainmentKey, HelperCommand, LaunchSpec, Level, Limits,
    Policy, Program, Support, Workload,
};
use scope::{PodName, ScopePath, ScopeRule};

/// Names `POD_TEST_REQUIRE` understands (comma-separated): a test whose
/// need is listed there fails instead of skipping.
pub const NEEDS: &[&str] = &["root", "landlock", "cgroup", "mountns", "pidns", "pids"];

/// True when the test may run; false (after printing why) when it must
/// skip; panics when the missing need is required.
pub fn require(needs: &[&str]) -> bool {
    let support = Support::detect().expect("detect");
    let required = std::env::var("POD_TEST_REQUIRE").unwrap_or_default();
    for need in needs {
        assert!(NEEDS.contains(need), "unknown test need {need}");
        let missing = match *need {
            "root" => (!support.root).then(|| "not running as root".to_string()),
            "landlock" => support.landlock.as_ref().err().map(|m| m.reason.clone()),
            "cgroup" => support.cgroup.as_ref().err().map(|m| m.reason.clone()),
            "mountns" => support.mountns.as_ref().err().map(|m| m.reason.clone()),
            "pidns" => support.pidns.as_ref().err().map(|m| m.reason.clone()),
            "pids" => support.pids.as_ref().err().map(|m| m.reason.clone()),
            _ => None,
        };
        if let Some(reason) = missing {
            if required.split(',').any(|r| r.trim() == *need) {
                panic!("POD_TEST_REQUIRE names {need}, but this machine lacks it: {reason}");
            }
            eprintln!("skipped: needs {need}: {reason}");
            return false;
        }
    }
    true
}

pub fn p(path: &Path) -> ScopePath {
    scope::resolve(path).expect("resolve")
}

/// A tree of real directories: `repo/` (the write scope, with `docs/`,
/// `src/`, `secrets/`), `outside/`, a runtime home with `run/` and `data/`,
/// and the workload's TMPDIR holding the agent's FIFOs.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub outside: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub log: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(dir.path()).expect("canonical");
        let repo = base.join("repo");
        for d in ["docs", "src", "secrets", "vendor"] {
            std::fs::create_dir_all(repo.join(d)).expect("mkdir");
        }
        std::fs::write(repo.join("src/main.rs"), "fn main() {}\n").expect("write");
        std::fs::write(repo.join("secrets/key"), "hunter2\n").expect("write");
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("file"), "outside\n").expect("write");
        let home = base.join("home");
        std::fs::create_dir_all(home.join("run")).expect("mkdir");
        std::fs::create_dir_all(home.join("data")).expect("mkdir");
        std::fs::write(home.join("data/store"), "sled bytes\n").expect("write");
        let tmp = base.join("tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        for fifo in ["cmd", "res", "sync"] {
            let status = std::process::Command::new("mkfifo").arg(tmp.join(fifo)).status().expect("mkfifo");
            assert!(status.success());
        }
        let log = base.join("workload.log");
        Fixture { dir, repo, outside, home, tmp, log }
    }

    pub fn policy(&self, deny: Vec<ScopeRule>) -> Policy {
        Policy {
            allow: vec![ScopeRule::write(p(&self.repo)), ScopeRule::read(ScopePath::root())],
            deny,
            layers: BTreeMap::new(),
            scratch: vec![],
            tmpdir: p(&self.tmp),
            runtime_dirs: vec![p(&self.home.join("run"))],
            data_dirs: vec![p(&self.home.join("data"))],
        }
    }

    pub fn key(&self, pod: &str) -> ContainmentKey {
        ContainmentKey { home: self.home.clone(), pod: PodName::new(pod).expect("name"), instance: "t1".into() }
    }
}

pub fn helper() -> HelperCommand {
    HelperCommand { program: PathBuf::from(env!("CARGO_BIN_EXE_pod-sandbox-test")), args: vec![] }
}

/// The agent: reads a shell command line from `$T/cmd`, runs it, answers
/// `ok` or `denied` on `$T/res`; `quit` ends it.
pub const AGENT: &str = r#"
while true; do
  read -r line < "$T/cmd" || exit 0
  [ "$line" = quit ] && exit 0
  if sh -c "$line" >/dev/null 2>&1; then r=ok; else r=denied; fi
  echo "$r" > "$T/res"
done
"#;

pub fn program(fx: &Fixture, script: &str) -> Program {
    Program {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()),
            ("T".into(), fx.tmp.display().to_string()),
            ("R".into(), fx.repo.display().to_string()),
            ("O".into(), fx.outside.display().to_string()),
            ("H".into(), fx.home.display().to_string()),
            ("TMPDIR".into(), fx.tmp.display().to_string()),
        ],
        cwd: fx.tmp.clone(),
    }
}

pub struct Running {
    pub containment: Containment,
    pub workload: Workload,
}

/// Creates the containment and launches `script` at `level` (the support
/// as detected, minus `disable`).
pub fn start(
    fx: &Fixture,
    pod: &str,
    level: Level,
    policy: &Policy,
    disable: &[Feature],
    limits: Limits,
    script: &str,
) -> Running {
    let mut support = Support::detect().expect("detect");
    support.apply_disabled(disable);
    let choice = choose_level(&support, policy, Some(level), None).expect("level");
    let cchoice = choose_containment(&support, &limits).expect("containment");
    let mut containment = Containment::create(&support, &cchoice, &fx.key(pod), &limits).expect("create");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&fx.log).expect("log");
    let spec = LaunchSpec {
        helper: helper(),
        program: program(fx, script),
        level,
        plan: &choice.plan,
        support: &support,
        stdout: log.try_clone().expect("clone").into(),
        stderr: log.into(),
    };
    let workload = launch(&mut containment, spec).and_then(pod_sandbox::Parked::release).expect("launch");
    Running { containment, workload }
}

/// Asks the agent to run `line`; its answer (`ok` / `denied`).
pub fn ask(fx: &Fixture, line: &str) -> String {
    let mut cmd = std::fs::OpenOptions::new().write(true).open(fx.tmp.join("cmd")).expect("cmd fifo");
    writeln!(cmd, "{line}").expect("send");
    drop(cmd);
    let res = std::fs::File::open(fx.tmp.join("res")).expect("res fifo");
    let mut answer = String::new();
    std::io::BufReader::new(res).read_line(&mut answer).expect("answer");
    answer.trim().to_string()
}

/// Tells the agent to exit (it answers nothing).
pub fn quit(fx: &Fixture) {
    let mut cmd = std::fs::OpenOptions::new().write(true).open(fx.tmp.join("cmd")).expect("cmd fifo");
    writeln!(cmd, "quit").expect("send");
}

/// Runs every `(label, command)` through the agent; one line per command.
pub fn attempts(fx: &Fixture, lines: &[(&str, &str)]) -> String {
    lines.iter().map(|(label, line)| format!("{label}: {}\n", ask(fx, line))).collect()
}

/// Waits for a line on the `sync` FIFO (written by the workload).
pub fn synced(fx: &Fixture) -> String {
    let f = std::fs::File::open(fx.tmp.join("sync")).expect("sync fifo");
    let mut line = String::new();
    std::io::BufReader::new(f).read_line(&mut line).expect("sync");
    line.trim().to_string()
}

/// Waits (bounded) until `cond` holds; for kernel state that has no event
/// to wait on (a counter in a v1 cgroup file).
pub fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    cond()
}

/// Ends the workload and removes its containment.
pub fn finish(run: Running) {
    run.containment.terminate(Duration::from_millis(200)).expect("terminate");
    let _ = run.workload.reap();
    assert!(!run.containment.is_populated().expect("populated"));
    run.containment.remove().expect("remove");
}
