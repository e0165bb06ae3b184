//! `pod-bench SUITE --json`: every benchmark of the project behind one
//! command. Each suite prints one JSON object holding its figures and, where
//! the figures depend on hardware, the same-run physical floor they are to be
//! compared with, so ratios stay meaningful on a noisy machine.

mod floor;
#[cfg(feature = "etcd")]
mod kv_etcd;
mod kv_suite;
mod log_suite;
mod pod_suite;
#[cfg(feature = "etcd")]
mod registry_etcd;
#[cfg(not(feature = "etcd"))]
mod registry_etcd {
    //! Without the `etcd` feature there is no etcd store to measure.
    pub fn run(_: &crate::registry_suite::Args) -> Result<serde_json::Value, String> {
        Err("this pod-bench was built without etcd support: cargo run --release -p pod-bench --features etcd -- registry --store etcd".into())
    }
}
mod registry_suite;
mod scope_suite;
mod scratch;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pod-bench", about = "Benchmarks of the Pod runtime")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Subcommand)]
enum Suite {
    /// permission_at against a scope with many base rules and layers.
    Scope(scope_suite::Args),
    /// Durable appends against an fdatasync floor, group commit, resume.
    Log(log_suite::Args),
    /// Registry operations over IPC against fsync and socket round-trip floors.
    Registry(registry_suite::Args),
    /// Spawn, stop and resume with real Pod processes.
    Pod(pod_suite::Args),
    /// The coordination store of a real Pod over its socket, against fsync and socket floors.
    Kv(kv_suite::Args),
}

fn main() -> std::process::ExitCode {
    pod_proto::paths::private_umask();
    // The `pod` suite starts Pod processes and the registry from this very
    // binary, as the `pod` binary would.
    if pod_suite::is_runtime_invocation() {
        return pod::main();
    }
    // The `kv` suite's hand-off waiter, the workload of a member Pod.
    if std::env::args().nth(1).as_deref() == Some(kv_suite::HANDOFF_WAITER) {
        return kv_suite::handoff_waiter();
    }
    // The `pod` suite's narrowing probe, the workload of an enforced lead.
    if std::env::args().nth(1).as_deref() == Some(pod_suite::NARROW_PROBE) {
        return pod_suite::narrow_probe();
    }
    let cli = Cli::parse();
    let (report, json) = match cli.suite {
        Suite::Scope(args) => (scope_suite::run(&args), args.json),
        Suite::Log(args) => (log_suite::run(&args), args.json),
        Suite::Registry(args) => (registry_suite::run(&args), args.json),
        Suite::Pod(args) => (pod_suite::run(&args), args.json),
        Suite::Kv(args) => (kv_suite::run(&args), args.json),
    };
    match report {
        Ok(value) if json => println!("{value}"),
        Ok(value) => match serde_json::to_string_pretty(&value) {
            Ok(text) => println!("{text}"),
            Err(e) => fail(&format!("cannot render report: {e}")),
        },
        Err(e) => fail(&e),
    }
    std::process::ExitCode::SUCCESS
}

fn fail(message: &str) -> ! {
    eprintln!("pod-bench: {message}");
    std::process::exit(1)
}
