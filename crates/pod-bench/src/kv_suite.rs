//! Suite `kv`: the coordination store of a real Pod, over its socket, as
//! the operator, against the same run's floors (an fdatasync on the same
//! disk, a local-socket round trip).
//!
//! - set: a durable set on one connection (`set_us_p50`, `set_us_p99`);
//! - get: a read on one connection (`get_us_p50`);
//! - wait_wake: from a set being acknowledged to the waiter (on another
//!   connection) having the value (`wait_wake_us_p50`);
//! - lease_handoff: not measured yet (`null`): a hand-off needs a second
//!   holder, and every call of this process is the operator's;
//! - concurrent32: 32 clients, each a loop of durable sets of its own
//!   `/shared` key (`concurrent32_ops_per_s`).
//!
//! etcd figures are not measured yet (`etcd_measured: false`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pod::protocol::{PodReply, PodRequest};
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
    let (fsync_p50, _) = floor::fsync_us(&root_path, 200)?;
    let (ipc_p50, _) = floor::ipc_rtt_us(&root_path, 2000)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let figures = runtime.block_on(measure(args, &root_path, &home));
    scratch::stop_registry(&home);
    let mut figures = figures?;
    let ratio = |a: u64, b: u64| (a as f64 / b.max(1) as f64 * 100.0).round() / 100.0;
    let set = figures["set_us_p50"].as_u64().unwrap_or(0);
    let get = figures["get_us_p50"].as_u64().unwrap_or(0);
    let wake = figures["wait_wake_us_p50"].as_u64().unwrap_or(0);
    let c32 = figures["concurrent32_ops_per_s"].as_f64().unwrap_or(0.0);
    figures["suite"] = json!("kv");
    figures["floor_fsync_us_p50"] = json!(fsync_p50);
    figures["floor_ipc_rtt_us_p50"] = json!(ipc_p50);
    figures["set_over_fsync_plus_ipc"] = json!(ratio(set, fsync_p50 + ipc_p50));
    figures["get_over_ipc"] = json!(ratio(get, ipc_p50));
    figures["wait_wake_over_ipc"] = json!(ratio(wake, ipc_p50));
    figures["etcd_measured"] = json!(false);
    figures["targets"] = json!({
        "set_p50_le_1_3x_fsync_plus_ipc": (set as f64) <= 1.3 * (fsync_p50 + ipc_p50) as f64,
        "get_p50_le_3x_ipc": get <= 3 * ipc_p50,
        "wait_wake_p50_le_3x_ipc": wake <= 3 * ipc_p50,
        "concurrent32_ge_20000": c32 >= 20_000.0,
    });
    figures["dir"] = json!(parent.to_string_lossy());
    Ok(figures)
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
    let mut set_us = Vec::with_capacity(args.rounds);
    for i in 0..args.rounds {
        let t = Instant::now();
        kv(&mut client, &set("/shared/bench", format!("value {i}").as_bytes())).await?;
        set_us.push(us(t));
    }
    let mut get_us = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let t = Instant::now();
        kv(&mut client, &layer(Op::Get { key: "/shared/bench".into() })).await?;
        get_us.push(us(t));
    }
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
        "set_us_p50": quantile(&mut set_us, 0.5),
        "set_us_p99": quantile(&mut set_us, 0.99),
        "get_us_p50": quantile(&mut get_us, 0.5),
        "get_us_p99": quantile(&mut get_us, 0.99),
        "wait_wake_us_p50": quantile(&mut wake_us, 0.5),
        "wait_wake_us_p99": quantile(&mut wake_us, 0.99),
        // A hand-off needs two holders, and every call of this process is
        // the operator's: measured once the bench runs a workload.
        "lease_handoff_us_p50": null,
        "concurrent32_ops_per_s": ops_per_s.round(),
    }))
}
