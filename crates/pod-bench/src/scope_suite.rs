//! Suite `scope`: the cost of one permission check (`permission_at` on an
//! already resolved path) against a scope of `rules` base rules and `layers`
//! delegation layers. Pure CPU: the floor reported is the timer's own cost.

use std::hint::black_box;
use std::time::Instant;

use scope::{Permission, PodName, Scope, ScopePath, ScopeRule};
use serde_json::{json, Value};

use crate::stats::quantile;

#[derive(clap::Args)]
pub struct Args {
    /// Base rules (allow and deny together).
    #[arg(long, default_value_t = 100)]
    rules: usize,
    /// Delegation layers (live children), one write rule each.
    #[arg(long, default_value_t = 100)]
    layers: usize,
    /// Timed checks.
    #[arg(long, default_value_t = 200_000)]
    iterations: usize,
    /// Print one line of JSON.
    #[arg(long)]
    pub json: bool,
}

fn path(s: &str) -> Result<ScopePath, String> {
    ScopePath::new(s).map_err(|e| e.to_string())
}

/// A repository-like tree: `/work/repo/mod{i}/...` allowed for write, with
/// deny rules sprinkled inside and one child layer per `/work/repo/mod{i}/sub`.
fn build(rules: usize, layers: usize) -> Result<(Scope, Vec<ScopePath>), String> {
    let denies = rules / 4;
    let allows = rules - denies;
    let mut allow = vec![ScopeRule::write(path("/work/repo")?)];
    for i in 1..allows {
        allow.push(ScopeRule::new(path(&format!("/opt/tool{i}/share"))?, Permission::Read, i % 2 == 0));
    }
    let deny = (0..denies)
        .map(|i| Ok(ScopeRule::new(path(&format!("/work/repo/mod{i}/secret"))?, Permission::Write, true)))
        .collect::<Result<Vec<_>, String>>()?;
    let mut scope = Scope::new(allow, deny).map_err(|e| e.to_string())?;
    for i in 0..layers {
        let child = PodName::new(format!("child-{i}")).map_err(|e| e.to_string())?;
        let rule = ScopeRule::write(path(&format!("/work/repo/mod{i}/sub"))?);
        scope.delegate(child, vec![rule]).map_err(|e| e.to_string())?;
    }
    let probes = (0..64)
        .map(|i| match i % 4 {
            0 => path(&format!("/work/repo/mod{i}/sub/src/lib.rs")),
            1 => path(&format!("/work/repo/mod{i}/secret/key.pem")),
            2 => path(&format!("/work/repo/mod{i}/README.md")),
            _ => path(&format!("/opt/tool{i}/share/data/file.txt")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((scope, probes))
}

pub fn run(args: &Args) -> Result<Value, String> {
    if args.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    let (scope, probes) = build(args.rules, args.layers)?;
    let mut writable = 0usize;
    for p in probes.iter().cycle().take(10_000) {
        writable += usize::from(black_box(&scope).can_write(black_box(p)));
    }
    let mut samples = Vec::with_capacity(args.iterations);
    let mut timer = Vec::with_capacity(args.iterations);
    for p in probes.iter().cycle().take(args.iterations) {
        let start = Instant::now();
        let verdict = black_box(&scope).permission_at(black_box(p));
        black_box(verdict);
        samples.push(start.elapsed().as_nanos() as u64);
        let start = Instant::now();
        timer.push(start.elapsed().as_nanos() as u64);
    }
    Ok(json!({
        "suite": "scope",
        "rules": args.rules,
        "layers": args.layers,
        "iterations": args.iterations,
        "check_ns_p50": quantile(&mut samples, 0.50),
        "check_ns_p99": quantile(&mut samples, 0.99),
        "floor_timer_ns_p50": quantile(&mut timer, 0.50),
        "warmup_writable": writable,
    }))
}
