//! Suite `log`: what a durable append costs next to one fdatasync on the
//! same disk in the same run, how much group commit buys with 8 concurrent
//! appenders, and how long a Pod with a 100,000-event log takes to resume,
//! with and without checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use scope::{PodName, ScopePath, ScopeRule, ScopeSnapshot};
use serde_json::{json, Value};
use session_log::{Event, LogOptions, RemovalReason, SessionLog};

use crate::floor::FsyncProbe;
use crate::stats::quantile;

#[derive(clap::Args)]
pub struct Args {
    /// Timed single-event appends (and fdatasync rounds for the floor).
    #[arg(long, default_value_t = 400)]
    appends: usize,
    /// Appends per thread in the 8-thread group-commit run.
    #[arg(long, default_value_t = 200)]
    group_appends: usize,
    /// Where the temporary logs go; default: `$CARGO_TARGET_DIR` if set,
    /// else `$TMPDIR` (or /tmp). The JSON says which directory was used.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one line of JSON.
    #[arg(long)]
    pub json: bool,
}

const GROUP_THREADS: usize = 8;
const RESUME_EVENTS: u64 = 100_000;

fn err(what: &str) -> impl Fn(session_log::LogError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn name(s: &str) -> Result<PodName, String> {
    PodName::new(s).map_err(|e| e.to_string())
}

fn rule(p: &str) -> Result<ScopeRule, String> {
    Ok(ScopeRule::write(ScopePath::new(p).map_err(|e| e.to_string())?))
}

fn base() -> Result<ScopeSnapshot, String> {
    Ok(ScopeSnapshot {
        allow: vec![rule("/work/repo")?],
        deny: vec![rule("/work/repo/.git")?],
        layers: Default::default(),
    })
}

fn created() -> Result<Event, String> {
    Ok(Event::PodCreated { name: name("bench")?, parent: None, base: base()?, workload: None })
}

fn spawned(child: &str) -> Result<Event, String> {
    Ok(Event::ChildSpawned {
        name: name(child)?,
        socket: format!("/run/pod/{child}.sock"),
        rules: vec![rule(&format!("/work/repo/{child}"))?],
        callback: "/run/pod/bench.sock".into(),
    })
}

/// A realistic history: children come and go, each change followed by a
/// scope snapshot, about ten children live at any time.
fn history(events: u64) -> Result<Vec<Vec<Event>>, String> {
    let mut batches = vec![vec![created()?]];
    let mut scope = base()?;
    let mut count = 1;
    let mut i = 0u64;
    while count < events {
        let child = format!("c{i}");
        let mut batch = vec![spawned(&child)?];
        scope.layers.insert(name(&child)?, vec![rule(&format!("/work/repo/{child}"))?]);
        if i >= 10 {
            let old = name(&format!("c{}", i - 10))?;
            scope.layers.remove(&old);
            batch.push(Event::ChildRemoved {
                name: old,
                reason: RemovalReason::Stopped,
                exit: session_log::Exit::default(),
            });
        }
        batch.push(Event::PodScope { scope: scope.clone() });
        batch.truncate((events - count) as usize);
        count += batch.len() as u64;
        batches.push(batch);
        i += 1;
    }
    Ok(batches)
}

fn bench_dir(args: &Args) -> Result<PathBuf, String> {
    let parent = crate::scratch::parent_dir(args.dir.as_deref())?;
    parent.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", parent.display()))
}

/// Per-append latencies (us) of `n` single-event durable appends, the wall
/// time of the whole run, and `n` floor samples (256-byte append +
/// fdatasync on a plain file in the same directory) taken between the
/// appends, so that both see the same disk at the same moments on a machine
/// that is busy with other work.
fn single(dir: &Path, n: usize) -> Result<(Vec<u64>, f64, Vec<u64>), String> {
    let log = SessionLog::open(dir, LogOptions::default()).map_err(err("open"))?;
    log.append(vec![created()?]).map_err(err("append"))?;
    let events = (0..n).map(|i| spawned(&format!("s{i}"))).collect::<Result<Vec<_>, _>>()?;
    let mut samples = Vec::with_capacity(n);
    let mut floor = Vec::with_capacity(n);
    let mut probe = FsyncProbe::open(dir)?;
    let mut appending = std::time::Duration::ZERO;
    for e in events {
        floor.push(probe.sample()?);
        let t = Instant::now();
        log.append(vec![e]).map_err(err("append"))?;
        let took = t.elapsed();
        appending += took;
        samples.push(took.as_micros() as u64);
    }
    Ok((samples, appending.as_secs_f64(), floor))
}

/// Single-event appends per second from `GROUP_THREADS` threads at once,
/// and how many of them each commit (one fdatasync) carried on average.
fn group(dir: &Path, per_thread: usize) -> Result<(f64, f64), String> {
    let log = Arc::new(SessionLog::open(dir, LogOptions::default()).map_err(err("open"))?);
    log.append(vec![created()?]).map_err(err("append"))?;
    let before = log.commit_stats();
    let start = Instant::now();
    let threads: Vec<_> = (0..GROUP_THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..per_thread {
                    log.append(vec![spawned(&format!("t{t}-{i}"))?]).map_err(err("append"))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "an appender thread panicked".to_string())??;
    }
    let ops = (GROUP_THREADS * per_thread) as f64 / start.elapsed().as_secs_f64();
    let after = log.commit_stats();
    let per_commit = (after.batches - before.batches) as f64 / (after.groups - before.groups).max(1) as f64;
    Ok((ops, per_commit))
}

/// Writes a `RESUME_EVENTS` log, closes it, and times open + replay.
fn resume(dir: &Path, checkpoint_every: u64) -> Result<f64, String> {
    let options = LogOptions { checkpoint_every, ..LogOptions::default() };
    let expected = {
        let log = SessionLog::open(dir, options).map_err(err("open"))?;
        // Many batches per append: this measures resume, not writing.
        let batches = history(RESUME_EVENTS)?;
        for chunk in batches.chunks(400) {
            log.append(chunk.concat()).map_err(err("append"))?;
        }
        log.replay().map_err(err("replay"))?
    };
    let start = Instant::now();
    let log = SessionLog::open(dir, options).map_err(err("open"))?;
    let state = log.replay().map_err(err("replay"))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if state != expected || state.last_seq != RESUME_EVENTS {
        return Err(format!("resume rebuilt a different state (last_seq {})", state.last_seq));
    }
    Ok(ms)
}

pub fn run(args: &Args) -> Result<Value, String> {
    if args.appends == 0 || args.group_appends == 0 {
        return Err("--appends and --group-appends must be at least 1".into());
    }
    let parent = bench_dir(args)?;
    let tmp = |what: &str| {
        tempfile::Builder::new()
            .prefix(&format!("log-{what}-"))
            .tempdir_in(&parent)
            .map_err(|e| format!("cannot create a temp dir in {}: {e}", parent.display()))
    };
    let (mut samples, single_secs, mut floor) = single(tmp("single")?.path(), args.appends)?;
    let floor_p50 = quantile(&mut floor, 0.50);
    let floor_p99 = quantile(&mut floor, 0.99);
    let append_p50 = quantile(&mut samples, 0.50);
    let append_p99 = quantile(&mut samples, 0.99);
    let single_ops = args.appends as f64 / single_secs;
    let (group_ops, group_per_commit) = group(tmp("group")?.path(), args.group_appends)?;
    let resume_ms = resume(tmp("resume")?.path(), LogOptions::default().checkpoint_every)?;
    let resume_nockpt_ms = resume(tmp("resume-nockpt")?.path(), 0)?;
    let ratio = append_p50 as f64 / floor_p50.max(1) as f64;
    Ok(json!({
        "suite": "log",
        "dir": parent.display().to_string(),
        "appends": args.appends,
        "floor_fsync_us_p50": floor_p50,
        "floor_fsync_us_p99": floor_p99,
        "append_us_p50": append_p50,
        "append_us_p99": append_p99,
        "append_p50_over_floor": (ratio * 100.0).round() / 100.0,
        "single_ops_per_s": single_ops.round(),
        "group8_ops_per_s": group_ops.round(),
        "group8_over_single": (group_ops / single_ops * 100.0).round() / 100.0,
        "group8_batches_per_commit": (group_per_commit * 100.0).round() / 100.0,
        "resume_100k_ms": (resume_ms * 10.0).round() / 10.0,
        "resume_100k_nockpt_ms": (resume_nockpt_ms * 10.0).round() / 10.0,
        "targets": {
            "append_p50_le_1_5x_floor": ratio <= 1.5,
            "group8_ge_4x_single": group_ops >= 4.0 * single_ops,
            "resume_100k_le_50ms": resume_ms <= 50.0,
        },
    }))
}
