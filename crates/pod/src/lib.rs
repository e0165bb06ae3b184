//! The Pod runtime: the Pod process (`process/`) and the `pod` command line
//! (`cli.rs`, `commands/`, a renderer of `pod-client`'s results). Launch,
//! layout and the Pod's messages are `pod-client`'s, shared with the Pod
//! process. `main` is the whole `pod` binary; it is a library function so
//! that `pod-bench` can run the very same code.

pub mod cli;
pub mod cli_doc;
pub mod commands;
pub mod core;
pub mod env_args;
pub mod manifest;
pub mod mirror;
pub mod process;
pub mod registry_link;
pub mod render;
pub mod rules;

pub use pod_client::{launch, layout, protocol};

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, McpCommand, RegistryCommand};
use commands::{demo, doctor, inspect, kv, lifecycle, mcp, registry};

/// The `pod` binary: parses `std::env::args` and runs the command.
pub fn main() -> ExitCode {
    pod_proto::paths::private_umask();
    // The sandbox's re-exec helper (a workload's keeper and its stages):
    // hidden, before anything else, as the helper expects a bare process.
    if std::env::args_os().nth(1).is_some_and(|first| first == process::HELPER_SUBCOMMAND) {
        let stage: Vec<String> = std::env::args_os().skip(2).map(|a| a.to_string_lossy().into_owned()).collect();
        return pod_sandbox::helper_main(&stage);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // clap's rendering spans several lines (usage, tips); errors of
            // this tool are one line.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("pod: {} (see `pod --help`) [cli.usage]", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let default_level = match cli.command {
        Command::PodProcess(_) | Command::Registry { command: RegistryCommand::Serve(_) } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Pod processes write to log files: no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let role = match &cli.command {
        // A standby Pod process arms its failpoints once its launch request
        // has named it (`process::main`).
        Command::PodProcess(args) if args.standby => "",
        Command::PodProcess(args) => args.name.as_deref().unwrap_or_default(),
        Command::Registry { command: RegistryCommand::Serve(_) } => "registry",
        _ => "cli",
    };
    if let Err(e) = pod_proto::failpoints::arm(role) {
        eprintln!("pod: {e} [cli.failpoints]");
        return ExitCode::from(2);
    }
    if let Command::PodProcess(args) = &cli.command {
        return process::main(args.name.as_deref());
    }
    if let Command::Registry { command: RegistryCommand::Serve(args) } = &cli.command {
        // The daemon runs on a runtime of its own (see `daemon::run`).
        return finish(registry::serve(args));
    }
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "pod", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Command::Demo { dir } = &cli.command {
        return finish(demo::run(dir.as_deref()));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pod: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    finish(runtime.block_on(dispatch(cli.command)))
}

async fn dispatch(command: Command) -> Result<ExitCode, pod_proto::WireError> {
    match command {
        Command::Start(args) => lifecycle::start(args).await,
        Command::Spawn(args) => lifecycle::spawn(args).await,
        Command::Stop { name, timeout } => lifecycle::stop(&name, timeout).await,
        Command::Resume { name } => lifecycle::resume(&name).await,
        Command::Rm { names, stopped } => lifecycle::rm(&names, stopped).await,
        Command::Kill { name, signal } => lifecycle::kill(&name, &signal).await,
        Command::Wait { names, timeout, json } => lifecycle::wait(&names, timeout, json.json).await,
        Command::Logs { name, follow, tail, json } => inspect::logs(&name, follow, tail, json.json).await,
        Command::Ls(j) => inspect::ls(j.json).await,
        Command::Tree { name, json } => inspect::tree(name.as_deref(), json.json).await,
        Command::Scope { name, json } => inspect::scope(&name, json.json).await,
        Command::Check { name, path, write, json } => inspect::check(&name, &path, write, json.json).await,
        Command::Log { name, follow, json } => inspect::log(&name, follow, json.json).await,
        Command::Registry { command: RegistryCommand::Ls(j) } => registry::ls(j.json).await,
        Command::Kv { command } => kv::kv(command).await,
        Command::Lease { command } => kv::lease(command).await,
        Command::Mcp { command: None } => mcp::serve().await,
        Command::Mcp { command: Some(McpCommand::Config) } => mcp::config(),
        Command::Registry { command: RegistryCommand::Stop { all } } => registry::stop(all).await,
        Command::Doctor(j) => doctor::run(j.json),
        Command::Demo { .. }
        | Command::Completions { .. }
        | Command::PodProcess(_)
        | Command::Registry { command: RegistryCommand::Serve(_) } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

fn finish(result: Result<ExitCode, pod_proto::WireError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pod: {} [{}]", e.message, e.code);
            // Exit 2 for errors, so scripts can tell them from `check`'s 1.
            ExitCode::from(2)
        }
    }
}
