//! Shared test harness: a private POD_HOME per test, real daemon processes,
//! real sockets, real sled files. Waits are on conditions, with a bound.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pod_proto::paths::DirEnv;
use pod_proto::RuntimeDirs;
use pod_registry::client::Registration;
use pod_registry::{Client, ClientError};
use scope::{Permission, PodName, ScopePath, ScopeRule};

pub const BIN: &str = env!("CARGO_BIN_EXE_pod-registry");
pub const BOUND: Duration = Duration::from_secs(20);

pub struct Home {
    pub tmp: tempfile::TempDir,
    pub dirs: RuntimeDirs,
}

impl Home {
    pub fn new() -> Home {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = RuntimeDirs::from_vars(&DirEnv { pod_home: Some(tmp.path().to_path_buf()), ..DirEnv::default() })
            .expect("dirs");
        dirs.ensure().expect("ensure");
        Home { tmp, dirs }
    }

    pub fn path(&self) -> PathBuf {
        self.tmp.path().to_path_buf()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dirs.registry_log()).unwrap_or_default()
    }
}

/// A daemon started by the test (not on demand), so the test knows its pid.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub async fn start(home: &Home) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(home.dirs.registry_log()).expect("log");
        let child = Command::new(BIN)
            .arg("serve")
            .env("POD_HOME", home.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let daemon = Daemon { child };
        wait_until(|| async { Client::connect_running(&home.dirs).await.is_ok() }).await;
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    pub fn term(&mut self) -> std::process::ExitStatus {
        signal(self.pid(), rustix::process::Signal::TERM);
        self.child.wait().expect("reap")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    let _ = rustix::process::kill_process(pid, sig);
}

/// Polls `cond` until true; panics after [`BOUND`].
pub async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + BOUND;
    let mut pause = Duration::from_millis(1);
    while !cond().await {
        assert!(Instant::now() < deadline, "condition not met within {BOUND:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

pub async fn client(home: &Home) -> Client {
    Client::connect_running(&home.dirs).await.expect("connect")
}

pub fn n(s: &str) -> PodName {
    PodName::new(s).expect("name")
}

pub fn p(s: &str) -> ScopePath {
    ScopePath::new(s).expect("path")
}

pub fn w(s: &str) -> ScopeRule {
    ScopeRule::write(p(s))
}

pub fn r(s: &str) -> ScopeRule {
    ScopeRule::new(p(s), Permission::Read, true)
}

/// A registration for a Pod run by this test process.
pub fn reg(name: &str, allow: Vec<ScopeRule>) -> Registration {
    Registration { name: Some(n(name)), pid: std::process::id(), allow, ..Registration::default() }
}

/// The names of reported survivors.
pub fn survivor_names(survivors: &[pod_registry::Survivor]) -> Vec<PodName> {
    survivors.iter().map(|s| s.name.clone()).collect()
}

/// The holder named by a write-conflict refusal.
pub fn blamed(e: ClientError) -> String {
    match e {
        ClientError::Refused(w) if w.code == "registry.write_conflict" => w.message,
        other => panic!("expected a write conflict, got {other:?} [{}]", other.code()),
    }
}

/// A `sleep 60` child for liveness tests; killed and reaped on drop.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("60").spawn().expect("sleep"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One step of a child's life in the kill -9 tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Delegate,
    Reclaim,
}

/// What a burst of clients saw: per child name the acknowledged steps, and
/// the step in flight when the daemon died (if any); and how many
/// acknowledgements in all.
#[derive(Clone, Default)]
pub struct Journal {
    pub acked: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<Step>>>>,
    pub in_flight: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Step>>>,
    pub count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One client delegating `/d/<name>` to children `<prefix>-<k>` of `lead`
/// and reclaiming each, until a call fails (the daemon died).
pub async fn delegate_reclaim_until_error(dirs: RuntimeDirs, prefix: String, journal: Journal) {
    let Ok(mut c) = Client::connect_running(&dirs).await else { return };
    for k in 0.. {
        let name = format!("{prefix}-{k}");
        for step in [Step::Delegate, Step::Reclaim] {
            journal.in_flight.lock().expect("lock").insert(name.clone(), step);
            let res: Result<(), ClientError> = match step {
                Step::Delegate => c.delegate(&n("lead"), &n(&name), &[w(&format!("/d/{name}"))], &[]).await.map(drop),
                Step::Reclaim => c.reclaim(&n("lead"), &n(&name)).await.map(drop),
            };
            if res.is_err() {
                return;
            }
            journal.in_flight.lock().expect("lock").remove(&name);
            journal.acked.lock().expect("lock").entry(name.clone()).or_default().push(step);
            journal.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// No half operation (every child of `lead` has its layer and every layer
/// its child) and every acknowledged step present; returns how many child
/// names were checked.
pub fn check_journal(all: &[pod_registry::Allocation], journal: &Journal, what: &str) -> usize {
    let by_name: std::collections::BTreeMap<String, &pod_registry::Allocation> =
        all.iter().map(|a| (a.name.to_string(), a)).collect();
    let lead = by_name.get("lead").expect("lead survives");
    for a in all.iter().filter(|a| a.name.as_str() != "lead") {
        assert_eq!(a.parent, Some(n("lead")), "{what}: {} lost its parent", a.name);
        assert!(lead.layers.contains_key(&a.name), "{what}: child {} without the parent's layer", a.name);
    }
    for child in lead.layers.keys() {
        assert!(by_name.contains_key(child.as_str()), "{what}: layer for {child} without its allocation");
    }
    let acked = journal.acked.lock().expect("lock");
    let in_flight = journal.in_flight.lock().expect("lock");
    for (name, steps) in acked.iter() {
        let exists = by_name.contains_key(name.as_str());
        match (steps.last(), in_flight.get(name)) {
            (Some(Step::Reclaim), _) => assert!(!exists, "{what}: {name}: acknowledged reclaim lost"),
            (Some(Step::Delegate), None) => assert!(exists, "{what}: {name}: acknowledged delegate lost"),
            // Its reclaim was in flight at the kill: either outcome is fine.
            (Some(Step::Delegate), Some(_)) | (None, _) => {}
        }
    }
    acked.len()
}
