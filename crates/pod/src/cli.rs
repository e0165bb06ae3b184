//! The command line, exactly as `shared/BRIEF.md` fixes it. This file only
//! describes arguments; `commands/` carries them out.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "pod", version, about = "Run trees of cooperating processes with delegated filesystem scopes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a top-level Pod (returns when it is ready to serve).
    Start(StartArgs),
    /// Spawn a child of a running Pod, delegating part of its scope.
    Spawn(SpawnArgs),
    /// Stop a Pod: its children first, then it; its parent gets its scope back.
    Stop { name: String },
    /// Restart a Pod from its session log, pruning children that are gone.
    Resume { name: String },
    /// List Pods known on this machine.
    Ls(JsonFlag),
    /// Show the tree of live Pods (under NAME, or all).
    Tree {
        name: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a Pod's scope: base rules and delegation layers.
    Scope {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Exit 0 if NAME may read (or, with --write, write) PATH, 1 if not;
    /// prints the deciding rule.
    Check {
        name: String,
        path: PathBuf,
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print a Pod's session log.
    Log {
        name: String,
        /// Keep printing new events as they are recorded.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Forget a stopped Pod: delete its session log and runtime directory.
    Rm { name: String },
    /// Serve this runtime's tools to an MCP agent client over stdio, with
    /// the rights of the Pod this process runs in (outside every Pod: the
    /// operator's).
    Mcp {
        #[command(subcommand)]
        command: Option<McpCommand>,
    },
    /// The machine-wide registry of write-scope allocations.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// A short tour: start a Pod, spawn two children, stop one, kill and
    /// resume the parent, and watch the scope come back.
    Demo {
        /// Directory to run in (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Internal: the Pod process itself, started by `start`, `spawn` and
    /// `resume`.
    #[command(name = "__pod", hide = true)]
    PodProcess(PodProcessArgs),
}

#[derive(Subcommand, Debug)]
pub enum McpCommand {
    /// Print the configuration snippet an MCP client needs to start `pod mcp`.
    Config,
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Run the registry daemon (in the foreground unless --detach).
    Serve(ServeArgs),
    /// List every allocation.
    Ls(JsonFlag),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Start a new session first, detaching from the caller's terminal
    /// (how clients start the daemon on demand).
    #[arg(long)]
    pub detach: bool,
    /// Runtime directory, given together with --data-dir (clients pass the
    /// directories they resolved, so the daemon serves exactly those).
    #[arg(long, requires = "data_dir")]
    pub run_dir: Option<PathBuf>,
    /// Data directory, given together with --run-dir.
    #[arg(long, requires = "run_dir")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The Pod's name (may come from --manifest instead).
    pub name: Option<String>,
    #[command(flatten)]
    pub rules: RuleArgs,
    #[arg(long = "deny-write", value_name = "PATH")]
    pub deny_write: Vec<String>,
    #[arg(long = "deny-read", value_name = "PATH")]
    pub deny_read: Vec<String>,
    /// TOML manifest with name, allow and deny rules and workload.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The workload to run; the Pod stops when it exits.
    #[arg(last = true)]
    pub workload: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SpawnArgs {
    pub child: String,
    /// The parent Pod (default: $POD_NAME, set inside a workload).
    #[arg(long, env = "POD_NAME")]
    pub parent: Option<String>,
    #[command(flatten)]
    pub rules: RuleArgs,
    #[arg(last = true)]
    pub workload: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RuleArgs {
    /// Grant write (and read) on PATH and below; PATH/* for PATH and its
    /// direct children only.
    #[arg(long = "write", value_name = "PATH")]
    pub write: Vec<String>,
    /// Grant read on PATH and below.
    #[arg(long = "read", value_name = "PATH")]
    pub read: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PodProcessArgs {
    /// The Pod's name.
    pub name: String,
    /// Resume from the session log instead of starting anew.
    #[arg(long)]
    pub resume: bool,
    /// Launch request (start or spawn), as JSON; absent with --resume.
    #[arg(long)]
    pub request: Option<String>,
}
