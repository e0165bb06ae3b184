//! Suite `registry`: what a registry operation costs over IPC, next to the
//! two things it cannot avoid (one fsync and one socket round trip, both
//! measured in the same run), with `n` allocations already registered, how
//! far group commit carries 32 concurrent clients (each its own parent, and
//! all under one parent), the daemon's memory, and how a `check` fares
//! while 1,000 connections that never finish the handshake are held open
//! (reopened as soon as the daemon closes them).
//!
//! The daemon is this same executable re-run with `--serve-daemon`, so it
//! is a separate process (real socket, real RSS) without depending on
//! cargo having built the `pod-registry` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pod_proto::RuntimeDirs;
use pod_registry::client::Registration;
use pod_registry::Client;
use scope::{Permission, PodName, ScopePath, ScopeRule};
use serde_json::{json, Value};

use crate::floor::{FsyncProbe, IpcProbe};
use crate::stats::{quantile, rss_mb};

#[derive(clap::Args)]
pub struct Args {
    /// Allocations registered before anything is timed.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Timed delegate + reclaim pairs (one client, sequential).
    #[arg(long, default_value_t = 1000)]
    pub rounds: usize,
    /// Delegate + reclaim pairs per client in the 32-client run.
    #[arg(long, default_value_t = 200)]
    pub concurrent_pairs: usize,
    /// Where the temporary POD_HOME goes; default: `$CARGO_TARGET_DIR` or
    /// `./target`, so that it sits on the disk the project builds on.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Internal: serve a registry for this POD_HOME instead of benchmarking.
    #[arg(long, hide = true)]
    serve_daemon: Option<PathBuf>,
    /// Print one line of JSON.
    #[arg(long)]
    pub json: bool,
    /// `sled` (the embedded registry) or `etcd` (a table shared through a
    /// throwaway three-member etcd on loopback, or `--etcd`).
    #[arg(long, default_value = "sled")]
    pub store: String,
    /// With `--store etcd`: an etcd cluster to use instead (client URLs).
    #[arg(long)]
    pub etcd: Option<String>,
    /// With `--store etcd`: the lease TTL of the nodes, in seconds.
    #[arg(long, default_value_t = 2)]
    pub lease_ttl: u64,
}

const CLIENTS: usize = 32;
const REGISTER_SAMPLES: usize = 200;
const CHECK_SAMPLES: usize = 5000;
/// Checks (and probe round trips) per block; see `sequential`.
const CHECK_BLOCK: usize = 100;
const POPULATE_CLIENTS: usize = 16;

pub(crate) fn dirs_for(home: &Path) -> RuntimeDirs {
    RuntimeDirs { run: home.join("run"), data: home.join("data") }
}

pub(crate) fn name(s: &str) -> Result<PodName, String> {
    PodName::new(s).map_err(|e| e.to_string())
}

pub(crate) fn write(p: &str) -> Result<ScopeRule, String> {
    Ok(ScopeRule::write(ScopePath::new(p).map_err(|e| e.to_string())?))
}

pub(crate) fn registration(pod: &str, target: &str) -> Result<Registration, String> {
    Ok(Registration {
        name: Some(name(pod)?),
        pid: std::process::id(),
        allow: vec![write(target)?],
        ..Registration::default()
    })
}

pub(crate) fn us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

pub fn run(args: &Args) -> Result<Value, String> {
    if let Some(home) = &args.serve_daemon {
        // The daemon runs exactly as `pod-registry serve` does, logging included.
        pod_registry::daemon::init_tracing();
        return pod_registry::daemon::run(&dirs_for(home)).map(|_| json!({"served": true})).map_err(|e| e.to_string());
    }
    // Sequential calls run on one thread, as a Pod's runtime calling the
    // registry would: the reply is read by the thread that waits for it.
    // The 32 concurrent clients get two worker threads.
    let sequential_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let concurrent_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    if args.rounds == 0 || args.concurrent_pairs == 0 {
        return Err("--rounds and --concurrent-pairs must be at least 1".into());
    }
    match args.store.as_str() {
        "sled" => {}
        "etcd" => return crate::registry_etcd::run(args),
        other => return Err(format!("--store {other:?}: the stores are sled and etcd")),
    }
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from),
    };
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("reg-bench-")
        .tempdir_in(&base)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", base.display()))?;
    let dirs = dirs_for(tmp.path());
    dirs.ensure().map_err(|e| e.to_string())?;
    let mut daemon = Daemon::start(tmp.path(), &[])?;
    let result = sequential_rt.block_on(sequential(args, &dirs, tmp.path())).and_then(|(samples, floors)| {
        let cpu_before = cpu_us(daemon.pid())?;
        let own = concurrent_rt.block_on(concurrent(&dirs, args.concurrent_pairs, Layout::OwnParent))?;
        let cpu_per_op = (cpu_us(daemon.pid())? - cpu_before) / (CLIENTS * args.concurrent_pairs * 2) as u64;
        let shared = concurrent_rt.block_on(concurrent(&dirs, args.concurrent_pairs, Layout::SharedParent))?;
        let throughput = Throughput { own, shared, cpu_per_op };
        Ok(report(args, samples, floors, &throughput, round2(rss_mb(daemon.pid())?)))
    });
    daemon.stop();
    result
}

pub(crate) async fn connect(dirs: &RuntimeDirs) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect_running(dirs).await {
            Ok(c) => return Ok(c),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(format!("daemon did not answer: {e}")),
        }
    }
}

/// Raw floor samples (microseconds), taken between the timed calls: one
/// fsync (same disk as the registry's data) and one round trip (same kind
/// of socket) per delegate + reclaim pair, one round trip per check.
struct Floors {
    fsync: Vec<u64>,
    rtt: Vec<u64>,
}

/// Raw samples (microseconds) of the sequential calls.
struct Samples {
    register: Vec<u64>,
    delegate: Vec<u64>,
    reclaim: Vec<u64>,
    check: Vec<u64>,
    /// Checks timed as `idle_check` is, without the idle connections.
    plain_check: Vec<u64>,
    /// Checks while the idle connections are held.
    idle_check: Vec<u64>,
    /// Idle connections opened in all (the daemon closes each after the
    /// handshake deadline; the holder opens it again).
    reopened: usize,
}

async fn sequential(args: &Args, dirs: &RuntimeDirs, floor_dir: &Path) -> Result<(Samples, Floors), String> {
    let e = |what: &'static str| move |err: pod_registry::ClientError| format!("{what}: {err}");
    let mut c = connect(dirs).await?;
    let mut fsync_probe = FsyncProbe::open(floor_dir)?;
    let mut ipc_probe = IpcProbe::open(floor_dir).await?;
    let mut floors =
        Floors { fsync: Vec::with_capacity(args.rounds), rtt: Vec::with_capacity(args.rounds + CHECK_SAMPLES) };
    populate(dirs, args.n).await?;
    c.register(&registration("lead", "/bench/work")?).await.map_err(e("register lead"))?;

    let mut register = Vec::with_capacity(REGISTER_SAMPLES);
    for k in 0..REGISTER_SAMPLES {
        let reg = registration(&format!("reg-{k}"), &format!("/bench/reg/{k}"))?;
        let start = Instant::now();
        c.register(&reg).await.map_err(e("register"))?;
        register.push(us(start));
    }

    let lead = name("lead")?;
    let (mut delegate, mut reclaim) = (Vec::with_capacity(args.rounds), Vec::with_capacity(args.rounds));
    for k in 0..args.rounds {
        let child = name(&format!("d-{k}"))?;
        let rules = [write(&format!("/bench/work/seq/{k}"))?];
        floors.fsync.push(fsync_probe.sample()?);
        floors.rtt.push(ipc_probe.sample().await?);
        let start = Instant::now();
        c.delegate(&lead, &child, &rules, &[]).await.map_err(e("delegate"))?;
        delegate.push(us(start));
        let start = Instant::now();
        c.reclaim(&lead, &child).await.map_err(e("reclaim"))?;
        reclaim.push(us(start));
    }

    let probe = ScopePath::new("/bench/work/src/lib.rs").map_err(|e| e.to_string())?;
    let mut check = Vec::with_capacity(CHECK_SAMPLES);
    // Checks are cheap enough that what runs between two of them matters:
    // a round trip of the probe in between lets the daemon fall idle. So
    // checks and probes alternate in blocks, each block back to back, and
    // both still see the machine at the same moments.
    for _ in 0..CHECK_SAMPLES / CHECK_BLOCK {
        for _ in 0..CHECK_BLOCK {
            floors.rtt.push(ipc_probe.sample().await?);
        }
        for _ in 0..CHECK_BLOCK {
            let start = Instant::now();
            let verdict = c.check(&lead, &probe, Permission::Write).await.map_err(e("check"))?;
            check.push(us(start));
            if !verdict.allowed {
                return Err(format!("lead should be able to write {probe}: {verdict:?}"));
            }
        }
    }

    // The idle-load figure compares two phases timed alike (same blocks,
    // same length: long enough to span several handshake deadlines, so the
    // daemon's closing and the holder's reopening are part of it): without,
    // then with another client holding IDLE_HOLDERS connections open that
    // never send a byte, reopening each as soon as the daemon closes it.
    let mut timed_checks = async |samples: &mut Vec<u64>, floors: &mut Floors| -> Result<(), String> {
        let phase = Instant::now();
        while samples.len() < IDLE_CHECK_SAMPLES || phase.elapsed() < IDLE_PHASE {
            for _ in 0..CHECK_BLOCK {
                floors.rtt.push(ipc_probe.sample().await?);
            }
            for _ in 0..CHECK_BLOCK {
                let start = Instant::now();
                c.check(&lead, &probe, Permission::Write).await.map_err(e("check"))?;
                samples.push(us(start));
            }
        }
        Ok(())
    };
    let mut plain_check = Vec::with_capacity(IDLE_CHECK_SAMPLES);
    timed_checks(&mut plain_check, &mut floors).await?;
    let holders = IdleHolders::start(dirs.registry_socket(), IDLE_HOLDERS)?;
    holders.wait_connected()?;
    let mut idle_check = Vec::with_capacity(IDLE_CHECK_SAMPLES);
    timed_checks(&mut idle_check, &mut floors).await?;
    let reopened = holders.stop()?;

    ipc_probe.close()?;
    Ok((Samples { register, delegate, reclaim, check, plain_check, idle_check, reopened }, floors))
}

/// Connections held open, never handshaken, in the idle-load phase.
const IDLE_HOLDERS: usize = 1000;
const IDLE_CHECK_SAMPLES: usize = 2000;
const IDLE_PHASE: Duration = Duration::from_millis(2500);

/// A client that holds connections open without ever sending a byte.
struct IdleHolders {
    stop: tokio::sync::watch::Sender<bool>,
    connected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Result<usize, String>>,
}

impl IdleHolders {
    fn start(socket: PathBuf, count: usize) -> Result<IdleHolders, String> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        pod_proto::server::raise_fd_limit();
        let (stop, stop_t) = tokio::sync::watch::channel(false);
        let connected = Arc::new(AtomicUsize::new(0));
        let connected_t = Arc::clone(&connected);
        let thread = std::thread::Builder::new()
            .name("idle-holders".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start tokio: {e}"))?;
                rt.block_on(async move {
                    let mut tasks = Vec::with_capacity(count);
                    for _ in 0..count {
                        let (socket, stop, connected) = (socket.clone(), stop_t.clone(), Arc::clone(&connected_t));
                        tasks.push(tokio::spawn(async move {
                            use tokio::io::AsyncReadExt;
                            let mut stop = stop;
                            let mut opened = 0usize;
                            while !*stop.borrow() {
                                let mut s = tokio::net::UnixStream::connect(&socket)
                                    .await
                                    .map_err(|e| format!("idle connect: {e}"))?;
                                opened += 1;
                                if opened == 1 {
                                    connected.fetch_add(1, Ordering::SeqCst);
                                }
                                // Held until the daemon closes it, or we stop;
                                // no timer, so holding costs this side nothing.
                                let mut buf = [0u8; 64];
                                tokio::select! {
                                    _ = s.read(&mut buf) => {}
                                    _ = stop.changed() => break,
                                }
                            }
                            Ok::<usize, String>(opened)
                        }));
                    }
                    let mut opened = 0;
                    for t in tasks {
                        opened += t.await.map_err(|e| format!("idle holder: {e}"))??;
                    }
                    Ok(opened)
                })
            })
            .map_err(|e| format!("cannot start the idle holders: {e}"))?;
        Ok(IdleHolders { stop, connected, thread })
    }

    /// Waits (bounded) until every holder has its first connection open.
    fn wait_connected(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connected.load(std::sync::atomic::Ordering::SeqCst) < IDLE_HOLDERS {
            if Instant::now() > deadline || self.thread.is_finished() {
                return Err("the idle connections could not all be opened".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops holding; returns how many connections were opened in all.
    fn stop(self) -> Result<usize, String> {
        let _ = self.stop.send(true);
        self.thread.join().map_err(|_| "the idle holders panicked".to_string())?
    }
}

/// The 32-client runs.
struct Throughput {
    /// Operations per second, each client its own parent.
    own: u64,
    /// Operations per second, all under one parent.
    shared: u64,
    /// Daemon CPU time (user + system) per operation in the first run: the
    /// cost that does not depend on what else the machine is doing.
    cpu_per_op: u64,
}

fn report(args: &Args, samples: Samples, floors: Floors, throughput: &Throughput, rss_mb: f64) -> Value {
    let Samples { mut register, mut delegate, mut reclaim, mut check, mut plain_check, mut idle_check, reopened } =
        samples;
    let plain_check_p50 = quantile(&mut plain_check, 0.50);
    let idle_check_p50 = quantile(&mut idle_check, 0.50);
    let Floors { mut fsync, mut rtt } = floors;
    let (fsync_p50, fsync_p99) = (quantile(&mut fsync, 0.50), quantile(&mut fsync, 0.99));
    let (rtt_p50, rtt_p99) = (quantile(&mut rtt, 0.50), quantile(&mut rtt, 0.99));
    let delegate_p50 = quantile(&mut delegate, 0.50);
    let reclaim_p50 = quantile(&mut reclaim, 0.50);
    let floor = (fsync_p50 + rtt_p50) as f64;
    json!({
        "suite": "registry",
        "n": args.n,
        "rounds": args.rounds,
        "register_us_p50": quantile(&mut register, 0.50),
        "register_us_p99": quantile(&mut register, 0.99),
        "delegate_us_p50": delegate_p50,
        "delegate_us_p99": quantile(&mut delegate, 0.99),
        "reclaim_us_p50": reclaim_p50,
        "reclaim_us_p99": quantile(&mut reclaim, 0.99),
        "check_us_p50": quantile(&mut check, 0.50),
        "check_us_p99": quantile(&mut check, 0.99),
        "plain_phase_check_us_p50": plain_check_p50,
        "plain_phase_check_us_p99": quantile(&mut plain_check, 0.99),
        "idle1000_check_us_p50": idle_check_p50,
        "idle1000_check_us_p99": quantile(&mut idle_check, 0.99),
        "idle1000_connections_opened": reopened,
        "idle1000_check_over_plain": round2(idle_check_p50 as f64 / plain_check_p50.max(1) as f64),
        "floor_fsync_us_p50": fsync_p50,
        "floor_fsync_us_p99": fsync_p99,
        "floor_ipc_rtt_us_p50": rtt_p50,
        "floor_ipc_rtt_us_p99": rtt_p99,
        "delegate_over_floor": round2(delegate_p50 as f64 / floor),
        "reclaim_over_floor": round2(reclaim_p50 as f64 / floor),
        "concurrent32_ops_per_s": throughput.own,
        "concurrent32_shared_parent_ops_per_s": throughput.shared,
        "concurrent32_daemon_cpu_us_per_op": throughput.cpu_per_op,
        "rss_mb": rss_mb,
    })
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `n` top-level Pods with disjoint write scopes, registered by several
/// clients at once so group commit keeps set-up short.
pub(crate) async fn populate(dirs: &RuntimeDirs, n: usize) -> Result<(), String> {
    let mut tasks = Vec::new();
    for t in 0..POPULATE_CLIENTS {
        let dirs = dirs.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&dirs).await?;
            for i in (t..n).step_by(POPULATE_CLIENTS) {
                let reg = registration(&format!("pre-{i}"), &format!("/bench/pre/{}/{i}", i % 100))?;
                c.register(&reg).await.map_err(|e| format!("populate: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("populate task: {e}"))??;
    }
    Ok(())
}

/// How the 32 concurrent clients are parented.
#[derive(Clone, Copy)]
pub(crate) enum Layout {
    /// Each client is its own parent Pod (32 leads, one helper at a time).
    OwnParent,
    /// All 32 clients delegate under one parent, whose record then holds up
    /// to 32 layers and is rewritten by every operation.
    SharedParent,
}

/// 32 clients delegating and reclaiming children as fast as answers come
/// back; total operations per second.
pub(crate) async fn concurrent(dirs: &RuntimeDirs, pairs: usize, layout: Layout) -> Result<u64, String> {
    let tag = match layout {
        Layout::OwnParent => "own",
        Layout::SharedParent => "shared",
    };
    let parent_of = |i: usize| match layout {
        Layout::OwnParent => format!("lead-{tag}-{i}"),
        Layout::SharedParent => format!("lead-{tag}"),
    };
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = connect(dirs).await?;
        if matches!(layout, Layout::OwnParent) || i == 0 {
            c.register(&registration(&parent_of(i), &format!("/bench/{tag}/{i}"))?)
                .await
                .map_err(|e| format!("register {}: {e}", parent_of(i)))?;
        }
        clients.push(c);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        let (lead, root) = match layout {
            Layout::OwnParent => (name(&parent_of(i))?, format!("/bench/{tag}/{i}")),
            Layout::SharedParent => (name(&parent_of(i))?, format!("/bench/{tag}/0/c{i}")),
        };
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for k in 0..pairs {
                let child = name(&format!("{tag}-{i}-{k}"))?;
                let rules = [write(&format!("{root}/{k}"))?];
                c.delegate(&lead, &child, &rules, &[]).await.map_err(|e| format!("delegate: {e}"))?;
                c.reclaim(&lead, &child).await.map_err(|e| format!("reclaim: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    for t in tasks {
        t.await.map_err(|e| format!("client task: {e}"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(((CLIENTS * pairs * 2) as f64 / secs) as u64)
}

/// User + system CPU time of process `pid` so far, in microseconds
/// (`/proc/<pid>/stat` fields 14 and 15, in clock ticks of 1/100 s, the
/// Linux `USER_HZ`).
fn cpu_us(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("daemon stat: {e}"))?;
    let after_name = stat.rfind(')').map(|i| &stat[i + 1..]).ok_or("no command name in the daemon's stat")?;
    // After the name, field 3 (state) comes first, so fields 14 and 15 are
    // at positions 11 and 12.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or("short daemon stat");
    Ok((ticks(11)? + ticks(12)?) * 10_000)
}

/// The daemon process; stopped with SIGTERM (killed if that fails).
pub(crate) struct Daemon {
    child: Child,
}

impl Daemon {
    /// Serves the registry of `home`, with `env` set (the etcd settings).
    pub(crate) fn start(home: &Path, env: &[(&str, String)]) -> Result<Daemon, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let dirs = dirs_for(home);
        dirs.ensure().map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dirs.registry_log()).map_err(|e| format!("daemon log: {e}"))?;
        let child = Command::new(exe)
            .arg("registry")
            .arg("--serve-daemon")
            .arg(home)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        Ok(Daemon { child })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (reaped): the node stops keeping its lease alive.
    #[cfg(feature = "etcd")]
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn stop(&mut self) {
        let stopped = rustix::process::Pid::from_raw(self.child.id() as i32)
            .map(|pid| rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok())
            .unwrap_or(false);
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
