//! `pod-registry serve | ls [--json]`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pod_proto::RuntimeDirs;
use pod_registry::config::{Config, Settings};
use pod_registry::daemon::{self, Served};
use pod_registry::{Allocation, Client};

#[derive(Parser)]
#[command(name = "pod-registry", version, about = "The machine-wide registry of Pod write scopes")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground (clients start it on demand).
    Serve {
        /// Start a new session first, detaching from the caller's terminal.
        #[arg(long)]
        detach: bool,
        /// Runtime directory (default: from POD_HOME or XDG); clients that
        /// start the daemon pass their own so both agree.
        #[arg(long, requires = "data_dir")]
        run_dir: Option<std::path::PathBuf>,
        /// Data directory, given together with --run-dir.
        #[arg(long, requires = "run_dir")]
        data_dir: Option<std::path::PathBuf>,
        /// Share one table with other nodes through etcd: its client URLs,
        /// comma-separated (default: POD_ETCD; without either, the embedded
        /// registry).
        #[arg(long)]
        etcd: Option<String>,
        /// This node's name in the shared table (default: POD_NODE, else the
        /// host name).
        #[arg(long)]
        node: Option<String>,
        /// Seconds a node's allocations outlive its last keepalive (default:
        /// POD_LEASE_TTL, else 10; 2..=3600).
        #[arg(long)]
        lease_ttl: Option<String>,
    },
    /// List every allocation.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    pod_proto::paths::private_umask();
    daemon::init_tracing();
    let cli = Cli::parse();
    if let Err(e) = pod_proto::failpoints::arm("registry") {
        return fail(&e);
    }
    let dirs = match (&cli.command, RuntimeDirs::from_env()) {
        (Cmd::Serve { run_dir: Some(run), data_dir: Some(data), .. }, _) => {
            RuntimeDirs { run: run.clone(), data: data.clone() }
        }
        (_, Ok(d)) => d,
        (_, Err(e)) => return fail(&e.to_string()),
    };
    match cli.command {
        Cmd::Serve { detach, etcd, node, lease_ttl, .. } => {
            let flags = Settings { etcd, node, lease_ttl };
            let config = match Config::from_settings(flags.or(Settings::from_env())) {
                Ok(c) => c,
                Err(e) => return fail(&format!("{e} [{}]", e.code())),
            };
            if detach {
                // Fails only when already a group leader; then we are detached enough.
                let _ = rustix::process::setsid();
            }
            match daemon::run_with(&dirs, &config) {
                Ok(Served::AlreadyRunning | Served::Stopped) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e} [{}]", e.code())),
            }
        }
        Cmd::Ls { json } => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))
            .and_then(|runtime| runtime.block_on(list(&dirs)).map_err(|e| format!("{e} [{}]", e.code())))
        {
            Ok(all) => print_list(&all, json),
            Err(e) => fail(&e),
        },
    }
}

async fn list(dirs: &RuntimeDirs) -> Result<Vec<Allocation>, pod_registry::ClientError> {
    Client::connect(dirs).await?.list().await
}

fn print_list(all: &[Allocation], json: bool) -> ExitCode {
    if json {
        return match serde_json::to_string_pretty(all) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("cannot render JSON: {e}")),
        };
    }
    println!("{:<24} {:<24} {:<16} {:>8} {:<8} {:>6} ALLOW", "NAME", "PARENT", "NODE", "PID", "STATE", "LAYERS");
    for a in all {
        let parent = a.parent.as_ref().map_or("-".to_string(), |p| p.to_string());
        let state = match a.state {
            pod_registry::AllocState::Live => "live",
            pod_registry::AllocState::Reserved => "reserved",
        };
        let allow: Vec<String> = a.allow.iter().map(|r| r.to_string()).collect();
        let node = a.node.as_ref().map_or("-", |n| n.as_str());
        println!(
            "{:<24} {:<24} {:<16} {:>8} {:<8} {:>6} {}",
            a.name,
            parent,
            node,
            a.pid,
            state,
            a.layers.len(),
            allow.join(", ")
        );
    }
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("pod-registry: {message}");
    ExitCode::FAILURE
}
