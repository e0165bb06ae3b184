//! Suite `pod`: the Pod runtime end to end, with real Pod processes and a
//! real registry daemon in a temporary POD_HOME. `pod-bench` carries the
//! whole `pod` binary (it runs `pod::main` when started as `__pod` or
//! `registry`), so the processes measured are exactly the product's.
//!
//! - spawn: from the Spawn request on the parent's socket to the child being
//!   ready (registered, logged, serving), for `--children` children;
//! - stop: StopPod until the parent has reclaimed;
//! - resume: a parent with `--resume-children` recorded children, half of
//!   them killed while it was down, from launch to ready (prune included);
//! - stop tree: a Pod whose workload runs ten processes (setsid and
//!   double-forked among them), from the Shutdown request until every one
//!   of them is gone, `--stop-trees` times;
//! - the resident memory of an idle Pod.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pod::launch::{launch, LaunchMode, LaunchRequest};
use pod::process::watch::{self, PidFd};
use pod::protocol::{PodReply, PodRequest, SpawnRequest};
use pod_client::pod::PodClient;
use rustix::process::Signal;
use scope::{PodName, ScopePath, ScopeRule};
use serde_json::{json, Value};

use crate::floor;
use crate::scratch;
use crate::stats::{quantile, rss_mb};

#[derive(clap::Args)]
pub struct Args {
    /// Children spawned (and then stopped) one by one.
    #[arg(long, default_value_t = 100)]
    children: usize,
    /// Recorded children of the resumed parent (half are killed).
    #[arg(long, default_value_t = 1000)]
    resume_children: usize,
    /// Pods with a ten-process workload stopped one by one.
    #[arg(long, default_value_t = 20)]
    stop_trees: usize,
    /// Where POD_HOME goes; default: `$CARGO_TARGET_DIR` if set, else
    /// `$TMPDIR` (or /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one line of JSON.
    #[arg(long)]
    pub json: bool,
}

/// True when this process was started as a Pod process, a workload's
/// keeper (or one of its stages) or the registry daemon by the runtime
/// under test.
pub fn is_runtime_invocation() -> bool {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("__pod") => true,
        Some(helper) if helper == pod::process::HELPER_SUBCOMMAND => true,
        // `pod registry serve` (the daemon), not this tool's `registry` suite.
        Some("registry") => args.next().as_deref() == Some("serve"),
        _ => false,
    }
}

fn name(s: String) -> Result<PodName, String> {
    PodName::new(s).map_err(|e| e.to_string())
}

fn write_rule(p: &Path) -> Result<ScopeRule, String> {
    let target = ScopePath::new(&p.to_string_lossy()).map_err(|e| e.to_string())?;
    Ok(ScopeRule::write(target))
}

pub fn run(args: &Args) -> Result<Value, String> {
    if args.children == 0 || args.resume_children < 2 {
        return Err("--children must be at least 1 and --resume-children at least 2".into());
    }
    let parent = scratch::parent_dir(args.dir.as_deref())?;
    let root = tempfile::tempdir_in(&parent).map_err(|e| e.to_string())?;
    let root_path = root.path().canonicalize().map_err(|e| e.to_string())?;
    let home = root_path.join("home");
    // Set before any thread exists: every Pod process and the registry this
    // run starts inherit it, so the run touches nothing outside `root`.
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
    figures["suite"] = json!("pod");
    figures["floor_fsync_us_p50"] = json!(fsync_p50);
    figures["floor_ipc_rtt_us_p50"] = json!(ipc_p50);
    figures["dir"] = json!(parent.to_string_lossy());
    Ok(figures)
}

pub(crate) async fn start(pod: &str, write: &Path, home: &Path) -> Result<(PodName, String, u32), String> {
    start_with(pod, write, home, None).await
}

async fn start_with(
    pod: &str,
    write: &Path,
    home: &Path,
    workload: Option<Vec<String>>,
) -> Result<(PodName, String, u32), String> {
    let pod = name(pod.to_string())?;
    std::fs::create_dir_all(write).map_err(|e| e.to_string())?;
    let dirs = pod_proto::RuntimeDirs { run: home.join("run"), data: home.join("data") };
    dirs.ensure().map_err(|e| e.to_string())?;
    let paths = pod::layout::PodPaths::new(&dirs, &pod);
    paths.ensure().map_err(|e| e.to_string())?;
    let run_dir = paths.run_dir;
    let request = LaunchRequest {
        name: pod.clone(),
        mode: LaunchMode::Start { allow: vec![write_rule(write)?], deny: vec![], workload },
        cwd: None,
        env: Default::default(),
        limits: Default::default(),
        enforce: Default::default(),
    };
    let launched = launch(&request, &run_dir.join("pod.log")).await.map_err(|e| e.to_string())?;
    Ok((pod, launched.socket, launched.pid))
}

async fn call(socket: &str, request: &PodRequest) -> Result<PodReply, String> {
    PodClient::call_at(socket, request).await.map_err(|e| format!("{request:?} to {socket}: {e}"))
}

async fn spawn_children(socket: &str, repo: &Path, n: usize, prefix: &str) -> Result<(Vec<u64>, Vec<u32>), String> {
    let mut micros = Vec::with_capacity(n);
    let mut pids = Vec::with_capacity(n);
    for i in 0..n {
        let dir = repo.join(format!("m{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let request = PodRequest::Spawn(SpawnRequest {
            child: name(format!("{prefix}{i}"))?,
            rules: vec![write_rule(&dir)?],
            workload: None,
            cwd: None,
            env: Default::default(),
            limits: Default::default(),
            enforce: Default::default(),
        });
        let t = Instant::now();
        match call(socket, &request).await? {
            PodReply::Spawned { pid, .. } => pids.push(pid),
            other => return Err(format!("spawn answered {other:?}")),
        }
        micros.push(t.elapsed().as_micros() as u64);
    }
    Ok((micros, pids))
}

/// A handle on `pid` taken now, while it is known to be ours to stop.
fn process(pid: u32) -> Result<PidFd, String> {
    watch::start_time_of(pid)
        .and_then(|start| PidFd::open(pid, start))
        .ok_or_else(|| format!("pid {pid} is not running"))
}

const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks a Pod to stop and waits until its process is gone.
pub(crate) async fn shut_down(socket: &str, pid: u32) -> Result<(), String> {
    let handle = process(pid)?;
    call(socket, &PodRequest::Shutdown { grace: Default::default() }).await?;
    handle.wait_or_kill(EXIT_WAIT).await;
    Ok(())
}

/// A workload of ten processes: the main shell, three background sleeps,
/// three shells that exec a sleep, and three sleeps in sessions of their
/// own left behind by subshells that exit (double forks). Once all ten run
/// it writes their pids, one a line, to `pids`.
fn ten_process_workload(pids: &Path) -> Vec<String> {
    let f = pids.display();
    let script = format!(
        r#"for i in 1 2 3; do sleep 1000 & echo $! >> {f}.tmp; done
for i in 1 2 3; do sh -c "echo \$\$ >> {f}.tmp; exec sleep 1000" & done
for i in 1 2 3; do (setsid sh -c "echo \$\$ >> {f}.tmp; exec sleep 1000" &); done
until [ "$(wc -l < {f}.tmp)" -ge 9 ]; do :; done
echo $$ >> {f}.tmp && mv {f}.tmp {f}
wait"#
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Starts a Pod with a ten-process workload, then measures from Shutdown
/// until none of the ten runs.
async fn stop_tree(root: &Path, home: &Path, i: usize) -> Result<u64, String> {
    let pids_file = root.join(format!("tree{i}.pids"));
    let (_, socket, pid) =
        start_with(&format!("tree{i}"), &root.join(format!("tree{i}")), home, Some(ten_process_workload(&pids_file)))
            .await?;
    let deadline = Instant::now() + EXIT_WAIT;
    let text = loop {
        match std::fs::read_to_string(&pids_file) {
            Ok(text) => break text,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            Err(e) => return Err(format!("the ten-process workload never wrote {}: {e}", pids_file.display())),
        }
    };
    let tree: Vec<PidFd> = text.lines().filter_map(|l| l.trim().parse().ok()).map(process).collect::<Result<_, _>>()?;
    if tree.len() != 10 {
        return Err(format!("the workload runs {} processes, not 10", tree.len()));
    }
    let handle = process(pid)?;
    let t = Instant::now();
    call(&socket, &PodRequest::Shutdown { grace: Default::default() }).await?;
    for p in tree {
        p.exited().await;
    }
    let us = t.elapsed().as_micros() as u64;
    handle.wait_or_kill(EXIT_WAIT).await;
    Ok(us)
}

async fn measure(args: &Args, root: &Path, home: &Path) -> Result<Value, String> {
    // Whole workload trees, stopped.
    let mut stop_tree_us = Vec::with_capacity(args.stop_trees);
    for i in 0..args.stop_trees {
        stop_tree_us.push(stop_tree(root, home, i).await?);
    }

    // An idle Pod's memory.
    let (_, idle_socket, idle_pid) = start("idle", &root.join("idle"), home).await?;
    let rss = rss_mb(idle_pid)?;
    shut_down(&idle_socket, idle_pid).await?;

    // Spawn and stop, one child at a time.
    let repo = root.join("repo");
    let (_, lead_socket, lead_pid) = start("lead", &repo, home).await?;
    let (mut spawn_us, _) = spawn_children(&lead_socket, &repo, args.children, "c").await?;
    let mut stop_us = Vec::with_capacity(args.children);
    for i in 0..args.children {
        let t = Instant::now();
        match call(&lead_socket, &PodRequest::StopChild { child: name(format!("c{i}"))?, grace: Default::default() })
            .await?
        {
            PodReply::Stopped { .. } => {}
            other => return Err(format!("stop answered {other:?}")),
        }
        stop_us.push(t.elapsed().as_micros() as u64);
    }
    shut_down(&lead_socket, lead_pid).await?;

    // Resume with many recorded children, half of them gone.
    let big_repo = root.join("big");
    let (big, big_socket, big_pid) = start("big", &big_repo, home).await?;
    let (_, pids) = spawn_children(&big_socket, &big_repo, args.resume_children, "r").await?;
    let mut victims = vec![process(big_pid)?];
    for pid in pids.iter().step_by(2) {
        victims.push(process(*pid)?);
    }
    for victim in &victims {
        victim.signal(Signal::KILL);
    }
    for victim in victims {
        victim.wait_or_kill(EXIT_WAIT).await;
    }
    let run_dir = home.join("run/pods").join(big.as_str());
    let t = Instant::now();
    let resumed = launch(
        &LaunchRequest {
            name: big.clone(),
            mode: LaunchMode::Resume,
            cwd: None,
            env: Default::default(),
            limits: Default::default(),
            enforce: Default::default(),
        },
        &run_dir.join("pod.log"),
    )
    .await
    .map_err(|e| e.to_string())?;
    let resume_ms = t.elapsed().as_millis() as u64;
    let survivors = match call(&resumed.socket, &PodRequest::Status).await? {
        PodReply::Status(s) => s.children.len(),
        other => return Err(format!("status answered {other:?}")),
    };
    if survivors != args.resume_children / 2 {
        return Err(format!("resume kept {survivors} children, expected {}", args.resume_children / 2));
    }
    shut_down(&resumed.socket, resumed.pid).await?;

    Ok(json!({
        "children": args.children,
        "spawn_ms_p50": quantile(&mut spawn_us, 0.50) as f64 / 1000.0,
        "spawn_ms_p99": quantile(&mut spawn_us, 0.99) as f64 / 1000.0,
        "stop_ms_p50": quantile(&mut stop_us, 0.50) as f64 / 1000.0,
        "stop_ms_p99": quantile(&mut stop_us, 0.99) as f64 / 1000.0,
        "resume_children": args.resume_children,
        "resume_1000_children_ms": resume_ms,
        "pod_rss_mb": (rss * 10.0).round() / 10.0,
        "stop_trees": args.stop_trees,
        "stop_tree_ms_p50": quantile(&mut stop_tree_us, 0.50) as f64 / 1000.0,
    }))
}
