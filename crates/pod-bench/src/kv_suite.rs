//! Suite `kv`: the coordination store of a real Pod, over its socket, as
//! the operator, against the same run's floors (an fdatasync on the same
//! disk, a local-socket round trip).
//!
//! - set: a durable set on one connection (`set_us_p50`, `set_us_p99`);
//! - get: a read on one connection (`get_us_p50`);
//! - wait_wake: from a set being acknowledged to the waiter (on another
//!   connection) having the value (`wait_wake_us_p50`);
//! - lease_handoff: from the holder's release being sent to the queued
//!   waiter having the grant (`lease_handoff_us_p50`, `_p99`; it includes
//!   the release's durable commit). The holder is this process (the
//!   operator); the waiter is a member Pod whose workload is this very
//!   binary ([`HANDOFF_WAITER`]), calling through `pod_client`'s lease
//!   calls. The two sides stamp the system-wide monotonic clock; each
//!   round's order is forced through the store (the waiter queues only
//!   after `/ref/roundN` is set, the release only once `lease ls` shows it
//!   queued);
//! - concurrent32: 32 clients, each a loop of durable sets of its own
//!   `/shared` key (`concurrent32_ops_per_s`).
//!
//! etcd, in the same run (feature `etcd`, see `kv_etcd.rs`): a put on one
//! client and 32 clients' puts (`etcd_put_us_p50`,
//! `etcd_concurrent32_ops_per_s`, `concurrent32_over_etcd`); without the
//! feature, or with no `etcd` binary, `etcd_measured: false` and why.
//!
//! Floors: an fdatasync after an append (`floor_fsync_us_p50`, the one the
//! goals name) and a local-socket round trip (`floor_ipc_rtt_us_p50`), one
//! sample before every set (and a round trip before every get): the disk
//! of a shared machine changes speed from one second to the next, so floor
//! samples taken in a block before the sets could measure another disk
//! (see `floor.rs`). And an fdatasync after an overwrite of a block that
//! exists (`floor_fsync_overwrite_us_p50`, a block before the run), which
//! is what the store's write-ahead entry costs once its lap's blocks are
//! written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pod::protocol::{PodReply, PodRequest, SpawnRequest};
use pod_client::pod::PodClient;
use pod_kv::{Expect, Op, Outcome, Reach};
use serde_json::{json, Value};

use crate::floor;
use crate::pod_suite::{shut_down, start};
use crate::scratch;
use crate::stats::quantile;

#[derive(clap::Args)]
pub struct Args {
    /// Samples of each single-client figure.
    #[arg(long, default_value_t = 2000)]
    rounds: usize,
    /// Samples of the wake and hand-off figures.
    #[arg(long, default_value_t = 300)]
    wakes: usize,
    /// How long the 32 clients run.
    #[arg(long, default_value_t = 3)]
    concurrent_secs: u64,
    /// Where POD_HOME goes; default: `$CARGO_TARGET_DIR` if set, else
    /// `$TMPDIR` (or /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one line of JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<Value, String> {
    if args.rounds == 0 || args.wakes == 0 || args.concurrent_secs == 0 {
        return Err("--rounds, --wakes and --concurrent-secs must be at least 1".into());
    }
    let parent = scratch::parent_dir(args.dir.as_deref())?;
    let root = tempfile::tempdir_in(&parent).map_err(|e| e.to_string())?;
    let root_path = root.path().canonicalize().map_err(|e| e.to_string())?;
    let home = root_path.join("home");
    // Set before any thread exists (see the `pod` suite).
    std::env::set_var("POD_HOME", &home);
    std::env::remove_var("POD_NAME");
    let (overwrite_p50, _) = floor::fsync_overwrite_us(&root_path, 200)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let figures = runtime.block_on(measure(args, &root_path, &home));
    scratch::stop_registry(&home);
    let mut figures = figures?;
    let fsync_p50 = figures["floor_fsync_us_p50"].as_u64().unwrap_or(0);
    let ipc_p50 = figures["floor_ipc_rtt_us_p50"].as_u64().unwrap_or(0);
    let etcd = runtime.block_on(etcd(args, &root_path));
    let ratio = |a: u64, b: u64| (a as f64 / b.max(1) as f64 * 100.0).round() / 100.0;
    let set = figures["set_us_p50"].as_u64().unwrap_or(0);
    let get = figures["get_us_p50"].as_u64().unwrap_or(0);
    let wake = figures["wait_wake_us_p50"].as_u64().unwrap_or(0);
    let c32 = figures["concurrent32_ops_per_s"].as_f64().unwrap_or(0.0);
    figures["suite"] = json!("kv");
    figures["floor_fsync_overwrite_us_p50"] = json!(overwrite_p50);
    figures["set_over_fsync_overwrite_plus_ipc"] = json!(ratio(set, overwrite_p50 + ipc_p50));
    figures["set_over_fsync_plus_ipc"] = json!(ratio(set, fsync_p50 + ipc_p50));
    figures["get_over_ipc"] = json!(ratio(get, ipc_p50));
    figures["wait_wake_over_ipc"] = json!(ratio(wake, ipc_p50));
    figures["targets"] = json!({
        "set_p50_le_1_3x_fsync_plus_ipc": (set as f64) <= 1.3 * (fsync_p50 + ipc_p50) as f64,
        "get_p50_le_3x_ipc": get <= 3 * ipc_p50,
        "wait_wake_p50_le_3x_ipc": wake <= 3 * ipc_p50,
        "concurrent32_ge_20000": c32 >= 20_000.0,
    });
    match etcd {
        Ok(etcd) => {
            let etcd_c32 = etcd["etcd_concurrent32_ops_per_s"].as_f64().unwrap_or(0.0);
            let over = (c32 / etcd_c32.max(1.0) * 100.0).round() / 100.0;
            figures["etcd_measured"] = json!(true);
            for (name, figure) in etcd.as_object().into_iter().flatten() {
                figures[name] = figure.clone();
            }
            figures["concurrent32_over_etcd"] = json!(over);
            figures["targets"]["concurrent32_ge_3x_etcd"] = json!(over >= 3.0);
        }
        Err(why) => {
            figures["etcd_measured"] = json!(false);
            figures["etcd_not_measured"] = json!(why);
        }
    }
    figures["dir"] = json!(parent.to_string_lossy());
    Ok(figures)
}

/// etcd's figures for this run (`etcd_*`), or why there are none.
#[cfg(feature = "etcd")]
async fn etcd(args: &Args, root: &Path) -> Result<Value, String> {
    let etcd = crate::kv_etcd::measure(&root.join("etcd"), args.rounds, args.concurrent_secs).await?;
    Ok(json!({
        "etcd_put_us_p50": etcd.put_us_p50,
        "etcd_put_us_p99": etcd.put_us_p99,
        "etcd_concurrent32_ops_per_s": etcd.concurrent32_ops_per_s,
    }))
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_: &Args, _: &Path) -> Result<Value, String> {
    Err("this pod-bench was built without the etcd feature".into())
}

/// The first argument that makes this binary the hand-off's waiter (the
/// workload of a member Pod; see the module comment).
pub const HANDOFF_WAITER: &str = "__kv-handoff-waiter";
/// The lease the hand-off passes back and forth.
const HANDOFF_LEASE: &str = "handoff";
/// How long either side of the hand-off waits for the other, at most.
const HANDOFF_BOUND: Duration = Duration::from_secs(30);

/// The system-wide monotonic clock in microseconds (comparable across
/// processes, unlike `Instant`).
pub(crate) fn mono_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000).saturating_add(t.tv_nsec as u64 / 1_000)
}

/// The waiter's side of the hand-off (`HANDOFF_WAITER ROUNDS OUT`): per
/// round, wait for `/ref/roundN`, queue for the lease, stamp the grant,
/// release it; then write `N STAMP` lines to OUT.
pub fn handoff_waiter() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let parsed = match (args.first().and_then(|r| r.parse::<usize>().ok()), args.get(1)) {
        (Some(rounds), Some(out)) => Some((rounds, PathBuf::from(out))),
        _ => None,
    };
    let Some((rounds, out)) = parsed else {
        eprintln!("pod-bench: usage: {HANDOFF_WAITER} ROUNDS OUT");
        return std::process::ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pod-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let waited = runtime.block_on(async {
        let (client, _) = pod_client::Client::from_env().map_err(|e| e.to_string())?;
        let route = pod_client::KvRoute::default();
        let mut stamps = String::new();
        for i in 0..rounds {
            let round = format!("/ref/round{i}");
            client.kv_wait(&route, &round, 0, HANDOFF_BOUND).await.map_err(|e| e.to_string())?;
            let ttl = Duration::from_secs(10);
            let grant = client.lease_acquire(&route, HANDOFF_LEASE, ttl, Some(HANDOFF_BOUND)).await;
            let stamp = mono_us();
            let grant = grant.map_err(|e| e.to_string())?;
            stamps.push_str(&format!("{i} {stamp}\n"));
            client.lease_release(&route, HANDOFF_LEASE, Some(grant.token), false).await.map_err(|e| e.to_string())?;
        }
        std::fs::write(&out, stamps).map_err(|e| e.to_string())
    });
    match waited {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pod-bench: the hand-off waiter failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The holder's side: `rounds` hand-offs to a member Pod running
/// [`handoff_waiter`]; the microseconds of each.
async fn handoffs(socket: &str, repo: &Path, rounds: usize) -> Result<Vec<u64>, String> {
    let dir = repo.join("handoff");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = dir.join("stamps");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = scope::ScopePath::new(&dir.to_string_lossy()).map_err(|e| e.to_string())?;
    let spawn = PodRequest::Spawn(SpawnRequest {
        child: scope::PodName::new("waiter".to_string()).map_err(|e| e.to_string())?,
        rules: vec![scope::ScopeRule::write(target)],
        workload: Some(vec![
            exe.to_string_lossy().into_owned(),
            HANDOFF_WAITER.into(),
            rounds.to_string(),
            out.to_string_lossy().into_owned(),
        ]),
        cwd: None,
        env: Default::default(),
        limits: Default::default(),
        enforce: Default::default(),
    });
    match PodClient::call_at(socket, &spawn).await.map_err(|e| e.to_string())? {
        PodReply::Spawned { .. } => {}
        other => return Err(format!("spawn answered {other:?}")),
    }
    let mut client = connect(socket).await?;
    let mut sent = Vec::with_capacity(rounds);
    for i in 0..rounds {
        // Free, or freed by the waiter's release of the last round.
        let acquire = layer(Op::Acquire {
            name: HANDOFF_LEASE.into(),
            ttl_ms: 60_000,
            wait_ms: Some(HANDOFF_BOUND.as_millis() as u64),
        });
        let token = match kv(&mut client, &acquire).await? {
            Outcome::Granted(grant) => grant.token,
            other => return Err(format!("acquire answered {other:?}")),
        };
        kv(&mut client, &set(&format!("/ref/round{i}"), b"go")).await?;
        let deadline = Instant::now() + HANDOFF_BOUND;
        loop {
            let queued = match kv(&mut client, &layer(Op::Leases)).await? {
                Outcome::Leases(leases) => leases.iter().any(|l| l.name.as_str() == HANDOFF_LEASE && l.waiting == 1),
                other => return Err(format!("lease ls answered {other:?}")),
            };
            if queued {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the hand-off waiter did not queue in round {i}"));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        sent.push(mono_us());
        let release = layer(Op::Release { name: HANDOFF_LEASE.into(), token: Some(token), overriding: false });
        kv(&mut client, &release).await?;
    }
    let deadline = Instant::now() + HANDOFF_BOUND;
    let stamps = loop {
        match std::fs::read_to_string(&out) {
            Ok(text) if text.lines().count() == rounds => break text,
            _ if Instant::now() > deadline => return Err("the hand-off waiter wrote no stamps".into()),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let mut micros = Vec::with_capacity(rounds);
    for (line, sent) in stamps.lines().zip(sent) {
        let stamp: u64 =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad stamp {line:?}"))?;
        micros.push(stamp.saturating_sub(sent));
    }
    Ok(micros)
}

fn layer(op: Op) -> PodRequest {
    PodRequest::Kv { reach: Reach::Layer, op, id: None }
}

fn set(key: &str, value: &[u8]) -> PodRequest {
    layer(Op::Set { key: key.into(), value: value.to_vec(), expect: Expect::Any, overriding: false })
}

async fn connect(socket: &str) -> Result<PodClient, String> {
    PodClient::connect(Path::new(socket)).await.map_err(|e| format!("connect to {socket}: {e}"))
}

async fn kv(client: &mut PodClient, request: &PodRequest) -> Result<Outcome, String> {
    match client.call(request).await.map_err(|e| format!("{e}"))? {
        PodReply::Kv(outcome) => Ok(outcome),
        other => Err(format!("not a kv answer: {other:?}")),
    }
}

fn us(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Waits (polling the Pod's log, bounded) until it has registered `n`
/// waits: the waiter is in before the write that wakes it.
async fn waits_registered(log: &Path, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches("kv wait registered").count() >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Err(format!("the pod did not register wait {n} within 10 s"))
}

async fn measure(args: &Args, root: &Path, home: &Path) -> Result<Value, String> {
    let (_, socket, pid) = start("lead", &root.join("repo"), home).await?;
    let log = home.join("run/pods/lead/pod.log");
    let mut client = connect(&socket).await?;
    let mut fsync_probe = floor::FsyncProbe::open(root)?;
    let mut ipc_probe = floor::IpcProbe::open(root).await?;
    let (mut fsync_us, mut ipc_us) = (Vec::with_capacity(args.rounds), Vec::with_capacity(args.rounds));
    let mut set_us = Vec::with_capacity(args.rounds);
    for i in 0..args.rounds {
        fsync_us.push(fsync_probe.sample()?);
        ipc_us.push(ipc_probe.sample().await?);
        let t = Instant::now();
        kv(&mut client, &set("/shared/bench", format!("value {i}").as_bytes())).await?;
        set_us.push(us(t));
    }
    let mut get_us = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        ipc_us.push(ipc_probe.sample().await?);
        let t = Instant::now();
        kv(&mut client, &layer(Op::Get { key: "/shared/bench".into() })).await?;
        get_us.push(us(t));
    }
    ipc_probe.close()?;
    drop(fsync_probe);
    // Wakes: a waiter on its own connection, a set on this one.
    let mut wake_us = Vec::with_capacity(args.wakes);
    let mut registered = 0;
    for i in 0..args.wakes {
        let key = format!("/shared/wake{i}");
        let mut waiter = connect(&socket).await?;
        let wait = layer(Op::Wait { key: key.clone(), min_version: 0, timeout_ms: 10_000 });
        let woken = tokio::spawn(async move { kv(&mut waiter, &wait).await.map(|_| Instant::now()) });
        registered += 1;
        waits_registered(&log, registered).await?;
        kv(&mut client, &set(&key, b"up")).await?;
        let acked = Instant::now();
        let at = woken.await.map_err(|e| e.to_string())??;
        wake_us.push(at.saturating_duration_since(acked).as_micros() as u64);
    }
    let mut handoff_us = handoffs(&socket, &root.join("repo"), args.wakes).await?;
    // 32 clients, each a loop of durable sets of its own key.
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(args.concurrent_secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..32 {
        let (socket, done) = (socket.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&socket).await?;
            let key = format!("/shared/c{c}");
            let mut n = 0u64;
            while Instant::now() < until {
                kv(&mut client, &set(&key, &n.to_le_bytes())).await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let ops_per_s = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    drop(client);
    shut_down(&socket, pid).await?;
    Ok(json!({
        "floor_fsync_us_p50": quantile(&mut fsync_us, 0.5),
        "floor_fsync_us_p99": quantile(&mut fsync_us, 0.99),
        "floor_ipc_rtt_us_p50": quantile(&mut ipc_us, 0.5),
        "floor_ipc_rtt_us_p99": quantile(&mut ipc_us, 0.99),
        "set_us_p50": quantile(&mut set_us, 0.5),
        "set_us_p99": quantile(&mut set_us, 0.99),
        "get_us_p50": quantile(&mut get_us, 0.5),
        "get_us_p99": quantile(&mut get_us, 0.99),
        "wait_wake_us_p50": quantile(&mut wake_us, 0.5),
        "wait_wake_us_p99": quantile(&mut wake_us, 0.99),
        "lease_handoff_us_p50": quantile(&mut handoff_us, 0.5),
        "lease_handoff_us_p99": quantile(&mut handoff_us, 0.99),
        "concurrent32_ops_per_s": ops_per_s.round(),
    }))
}
