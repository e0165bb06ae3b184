//! Suite `pod`: the Pod runtime end to end, with real Pod processes and a
//! real registry daemon in a temporary POD_HOME. `pod-bench` carries the
//! whole `pod` binary (it runs `pod::main` when started as `__pod` or
//! `registry`), so the processes measured are exactly the product's.
//!
//! - spawn: from the Spawn request on the parent's socket to the child being
//!   ready (registered, logged, serving, its workload running), for
//!   `--children` children, once with parent and children at `--enforce`
//!   (default `full`: the parent's running workload is narrowed too) and
//!   once, the same run, at `off`; every workload is a `sleep`;
//! - stop: StopPod until the parent has reclaimed (the enforced run);
//! - narrow: from the Spawn request until the parent's running workload
//!   (a probe, [`NARROW_PROBE`], that keeps making and removing a
//!   directory in the region) has lost write on the delegated directory,
//!   `--narrows` times;
//! - resume: a parent with `--resume-children` recorded children, half of
//!   them killed while it was down, from launch to ready (prune included);
//! - stop tree: a Pod whose workload runs ten processes (setsid and
//!   double-forked among them), from the Shutdown request until every one
//!   of them is gone, `--stop-trees` times;
//! - the resident memory of an idle Pod.
//!
//! Floors, the same run: an fdatasync on the same disk, a local socket
//! round trip, and a new file's creation there (`floor_create_us`): a
//! spawn makes about twenty files and folders, and what one costs varies
//! many times over on some filesystems (see [`floor::create_us`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use pod::launch::{launch, LaunchMode, LaunchRequest};
use pod::process::watch::{self, PidFd};
use pod::protocol::{EnforceRequest, PodReply, PodRequest, SpawnRequest};
use pod_client::pod::PodClient;
use pod_sandbox::Level;
use rustix::process::Signal;
use scope::{PodName, ScopePath, ScopeRule};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

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
    /// Spawns measured until the parent's workload has lost write.
    #[arg(long, default_value_t = 50)]
    narrows: usize,
    /// The level the spawn and narrow figures are measured at (`full`,
    /// `landlock`; narrowing needs `full`).
    #[arg(long, default_value = "full")]
    enforce: String,
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
    if args.children == 0 || args.resume_children < 2 || args.stop_trees == 0 {
        return Err("--children and --stop-trees must be at least 1 and --resume-children at least 2".into());
    }
    let level = Level::parse(&args.enforce).map_err(|e| e.to_string())?;
    if level == Level::Off || (level != Level::Full && args.narrows > 0) {
        return Err("--enforce must be full or landlock (the `off` figures are measured in every run); narrowing needs full, or --narrows 0".into());
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
    let (create_p50, create_p99) = floor::create_us(&root_path, 200)?;
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
    figures["floor_create_us_p50"] = json!(create_p50);
    figures["floor_create_us_p99"] = json!(create_p99);
    figures["dir"] = json!(parent.to_string_lossy());
    Ok(figures)
}

pub(crate) async fn start(pod: &str, write: &Path, home: &Path) -> Result<(PodName, String, u32), String> {
    start_with(pod, write, home, None, None).await
}

async fn start_with(
    pod: &str,
    write: &Path,
    home: &Path,
    workload: Option<Vec<String>>,
    level: Option<Level>,
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
        enforce: EnforceRequest { level, scratch: Vec::new() },
    };
    let launched = launch(&request, &run_dir.join("pod.log")).await.map_err(|e| e.to_string())?;
    Ok((pod, launched.socket, launched.pid))
}

async fn call(socket: &str, request: &PodRequest) -> Result<PodReply, String> {
    PodClient::call_at(socket, request).await.map_err(|e| format!("{request:?} to {socket}: {e}"))
}

/// How the children of one run are spawned.
#[derive(Clone, Copy)]
struct Children<'a> {
    prefix: &'a str,
    /// Each child's workload, if any.
    workload: Option<&'a [String]>,
    /// The level asked for (`None`: the parent's).
    level: Option<Level>,
}

fn spawn_request(repo: &Path, i: usize, how: Children<'_>) -> Result<PodRequest, String> {
    let dir = repo.join(format!("m{i}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(PodRequest::Spawn(SpawnRequest {
        child: name(format!("{}{i}", how.prefix))?,
        rules: vec![write_rule(&dir)?],
        workload: how.workload.map(<[String]>::to_vec),
        cwd: None,
        env: Default::default(),
        limits: Default::default(),
        enforce: EnforceRequest { level: how.level, scratch: Vec::new() },
    }))
}

/// A spawn's pid, checked to be at the level asked for.
fn spawned(reply: PodReply, how: Children<'_>) -> Result<u32, String> {
    match reply {
        PodReply::Spawned { pid, enforcement, .. } => {
            let given = enforcement.map(|e| e.level);
            match how.level {
                Some(asked) if given != Some(asked) => Err(format!("a spawn at {} was given {given:?}", asked.name())),
                _ => Ok(pid),
            }
        }
        other => Err(format!("spawn answered {other:?}")),
    }
}

async fn spawn_children(
    socket: &str,
    repo: &Path,
    n: usize,
    how: Children<'_>,
) -> Result<(Vec<u64>, Vec<u32>), String> {
    let mut micros = Vec::with_capacity(n);
    let mut pids = Vec::with_capacity(n);
    for i in 0..n {
        let request = spawn_request(repo, i, how)?;
        let t = Instant::now();
        let reply = call(socket, &request).await?;
        micros.push(t.elapsed().as_micros() as u64);
        pids.push(spawned(reply, how)?);
    }
    Ok((micros, pids))
}

async fn stop_child(socket: &str, child: String) -> Result<u64, String> {
    let t = Instant::now();
    match call(socket, &PodRequest::StopChild { child: name(child)?, grace: Default::default() }).await? {
        PodReply::Stopped { .. } => Ok(t.elapsed().as_micros() as u64),
        other => Err(format!("stop answered {other:?}")),
    }
}

/// A workload that runs until its Pod ends it.
fn idle_workload() -> Vec<String> {
    vec!["sleep".into(), "1000000".into()]
}

/// One spawn run: a lead at `level` whose workload runs, `n` children at
/// the same level (each with a running workload), spawned then stopped one
/// by one. The microseconds of each spawn and of each stop.
async fn spawn_run(root: &Path, home: &Path, level: Level, n: usize) -> Result<(Vec<u64>, Vec<u64>), String> {
    let lead = format!("lead-{}", level.name());
    let repo = root.join(&lead);
    let idle = idle_workload();
    let (_, socket, pid) = start_with(&lead, &repo, home, Some(idle.clone()), Some(level)).await?;
    let prefix = format!("{lead}-c");
    let how = Children { prefix: &prefix, workload: Some(&idle), level: Some(level) };
    let (spawn_us, _) = spawn_children(&socket, &repo, n, how).await?;
    let mut stop_us = Vec::with_capacity(n);
    for i in 0..n {
        stop_us.push(stop_child(&socket, format!("{prefix}{i}")).await?);
    }
    shut_down(&socket, pid).await?;
    Ok((spawn_us, stop_us))
}

/// The first argument that makes this binary the narrowing probe.
pub const NARROW_PROBE: &str = "__narrow-probe";

/// The narrowing probe (`NARROW_PROBE REPO ROUNDS FIFO`), the running
/// workload of a lead at `full`: for each round `i`, it makes and removes
/// `REPO/m{i}/probe` until the kernel refuses (the region was delegated),
/// writes `i STAMP` (the system's monotonic clock, microseconds) to FIFO
/// and goes on with the next round; then waits to be ended. It holds no
/// file or directory open in the region, so it never makes a spawn busy.
/// At the lowest priority, so its spinning takes no time from the Pod.
pub fn narrow_probe() -> std::process::ExitCode {
    match probe(std::env::args().skip(2).collect()) {
        Ok(()) => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("pod-bench: the narrowing probe failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn probe(args: Vec<String>) -> Result<(), String> {
    let [repo, rounds, fifo] = args.as_slice() else {
        return Err(format!("usage: {NARROW_PROBE} REPO ROUNDS FIFO"));
    };
    let rounds: usize = rounds.parse().map_err(|e| format!("rounds {rounds:?}: {e}"))?;
    rustix::process::setpriority_process(None, 19).map_err(|e| format!("cannot lower its priority: {e}"))?;
    let mut out = std::fs::OpenOptions::new().write(true).open(fifo).map_err(|e| format!("{fifo}: {e}"))?;
    for i in 0..rounds {
        let dir = Path::new(repo).join(format!("m{i}")).join("probe");
        let lost = loop {
            match std::fs::create_dir(&dir).and_then(|()| std::fs::remove_dir(&dir)) {
                Ok(()) => std::thread::yield_now(),
                Err(e) if write_refused(&e) => break crate::kv_suite::mono_us(),
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        };
        use std::io::Write;
        writeln!(out, "{i} {lost}").map_err(|e| format!("{fifo}: {e}"))?;
    }
    Ok(())
}

/// The kernel's refusals of a write: a read-only bind (EROFS), Landlock
/// (EACCES), or EPERM.
fn write_refused(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::ROFS, Errno::ACCESS, Errno::PERM].iter().any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// `narrows` spawns under a lead at `full` whose workload is the probe;
/// the microseconds from each Spawn request until the probe saw write
/// refused in the delegated directory.
async fn narrow_run(root: &Path, home: &Path, narrows: usize) -> Result<Vec<u64>, String> {
    let repo = root.join("narrow");
    std::fs::create_dir_all(&repo).map_err(|e| e.to_string())?;
    for i in 0..narrows {
        std::fs::create_dir_all(repo.join(format!("m{i}"))).map_err(|e| e.to_string())?;
    }
    let fifo = repo.join("narrowed.fifo");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .map_err(|e| format!("cannot make {}: {e}", fifo.display()))?;
    // Read and write: the FIFO never reads as ended before the probe opens it.
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
        .map_err(|e| format!("{}: {e}", fifo.display()))?;
    let mut lines = tokio::io::BufReader::new(receiver).lines();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let probe = vec![
        exe.to_string_lossy().into_owned(),
        NARROW_PROBE.into(),
        repo.to_string_lossy().into_owned(),
        narrows.to_string(),
        fifo.to_string_lossy().into_owned(),
    ];
    let (_, socket, pid) = start_with("narrow", &repo, home, Some(probe), Some(Level::Full)).await?;
    let how = Children { prefix: "n", workload: None, level: Some(Level::Full) };
    let mut micros = Vec::with_capacity(narrows);
    for i in 0..narrows {
        let request = spawn_request(&repo, i, how)?;
        let t0 = crate::kv_suite::mono_us();
        spawned(call(&socket, &request).await?, how)?;
        let line = tokio::time::timeout(EXIT_WAIT, lines.next_line())
            .await
            .map_err(|_| format!("the probe did not see round {i}'s region narrowed within {EXIT_WAIT:?}"))?
            .map_err(|e| format!("{}: {e}", fifo.display()))?
            .ok_or("the probe's FIFO closed")?;
        let stamp = match line.split_once(' ') {
            Some((round, stamp)) if round == i.to_string() => stamp.parse::<u64>().ok(),
            _ => None,
        };
        let stamp = stamp.ok_or_else(|| format!("the probe wrote {line:?} in round {i}"))?;
        micros.push(stamp.saturating_sub(t0));
        stop_child(&socket, format!("n{i}")).await?;
    }
    shut_down(&socket, pid).await?;
    Ok(micros)
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
    // Inside the Pod's scope: enforced (the default), it writes nowhere else.
    let scope = root.join(format!("tree{i}"));
    let pids_file = scope.join("pids");
    let (_, socket, pid) =
        start_with(&format!("tree{i}"), &scope, home, Some(ten_process_workload(&pids_file)), None).await?;
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

    // Spawn and stop, one child at a time, enforced and not.
    let level = Level::parse(&args.enforce).map_err(|e| e.to_string())?;
    let (mut spawn_us, mut stop_us) = spawn_run(root, home, level, args.children).await?;
    let (mut spawn_off_us, _) = spawn_run(root, home, Level::Off, args.children).await?;

    // Narrowing of a running workload.
    let mut narrow_us = if args.narrows > 0 { narrow_run(root, home, args.narrows).await? } else { Vec::new() };

    // Resume with many recorded children, half of them gone.
    let big_repo = root.join("big");
    let (big, big_socket, big_pid) = start("big", &big_repo, home).await?;
    let how = Children { prefix: "r", workload: None, level: None };
    let (_, pids) = spawn_children(&big_socket, &big_repo, args.resume_children, how).await?;
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

    let narrow_ms_p50 = if narrow_us.is_empty() { Value::Null } else { json!(ms(quantile(&mut narrow_us, 0.50))) };
    let narrow_ms_p99 = if narrow_us.is_empty() { Value::Null } else { json!(ms(quantile(&mut narrow_us, 0.99))) };
    Ok(json!({
        "children": args.children,
        "enforce": level.name(),
        "spawn_ms_p50": quantile(&mut spawn_us, 0.50) as f64 / 1000.0,
        "spawn_ms_p99": quantile(&mut spawn_us, 0.99) as f64 / 1000.0,
        "spawn_off_ms_p50": ms(quantile(&mut spawn_off_us, 0.50)),
        "spawn_off_ms_p99": ms(quantile(&mut spawn_off_us, 0.99)),
        "narrows": args.narrows,
        "narrow_ms_p50": narrow_ms_p50,
        "narrow_ms_p99": narrow_ms_p99,
        "stop_ms_p50": quantile(&mut stop_us, 0.50) as f64 / 1000.0,
        "stop_ms_p99": quantile(&mut stop_us, 0.99) as f64 / 1000.0,
        "resume_children": args.resume_children,
        "resume_1000_children_ms": resume_ms,
        "pod_rss_mb": (rss * 10.0).round() / 10.0,
        "stop_trees": args.stop_trees,
        "stop_tree_ms_p50": quantile(&mut stop_tree_us, 0.50) as f64 / 1000.0,
        "stop_tree_ms_p99": ms(quantile(&mut stop_tree_us, 0.99)),
    }))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}
