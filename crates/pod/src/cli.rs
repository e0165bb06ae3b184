//! The command line (the user's contract, `docs/concepts.md`). This file only
//! describes arguments; `commands/` carries them out.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pod",
    version,
    propagate_version = true,
    about = "Run trees of cooperating processes with delegated filesystem scopes"
)]
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
    Stop {
        /// The Pod to stop.
        name: String,
        /// Seconds each workload of the tree gets between SIGTERM and
        /// SIGKILL, 0 to 120.
        #[arg(long, short = 't', value_name = "SECS", default_value_t = pod_client::protocol::StopGrace::DEFAULT_SECS)]
        timeout: u64,
    },
    /// Send a signal to a Pod's workload (default SIGTERM); the Pod stops
    /// when its workload exits.
    Kill {
        /// The Pod whose workload to signal.
        name: String,
        /// The signal: a name (TERM, SIGKILL, ...) or a number.
        #[arg(long, short = 's', value_name = "SIG", default_value = "TERM")]
        signal: String,
    },
    /// Restart a Pod from its session log, pruning children that are gone.
    Resume {
        /// The Pod to resume (a top-level Pod that is not running).
        name: String,
    },
    /// Wait until every named Pod has stopped. Exit status: for one Pod its
    /// workload's exit code (128+N when killed by signal N, 0 for a clean
    /// stop, 125 when the Pod process died); for several 0 when all are 0,
    /// else 1; 124 on timeout.
    Wait {
        /// The Pods to wait for.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Give up after SECS seconds (exit 124).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print a Pod workload's stdout and stderr, each line with its time
    /// and stream.
    Logs {
        /// The Pod whose workload's output to print.
        name: String,
        /// Keep printing lines as they are written, until the Pod stops.
        #[arg(long)]
        follow: bool,
        /// Print only the last N lines written so far.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List Pods known on this machine.
    Ls(JsonFlag),
    /// Show the tree of live Pods (under NAME, or all).
    Tree {
        /// Show only the tree under this Pod.
        name: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a Pod's scope: base rules and delegation layers.
    Scope {
        /// The Pod whose scope to show.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Exit 0 if NAME may read (or, with --write, write) PATH, 1 if not;
    /// prints the deciding rule.
    Check {
        /// The Pod to ask about.
        name: String,
        /// The path (relative to the current directory; symlinks followed).
        path: PathBuf,
        /// Ask about write instead of read.
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print a Pod's session log: one line per event (local time, what
    /// changed); --json prints the raw records.
    Log {
        /// The Pod whose session log to print.
        name: String,
        /// Keep printing new events as they are recorded.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Forget stopped Pods: delete their session logs, workload output and
    /// runtime directories.
    Rm {
        /// The Pods to forget.
        #[arg(value_name = "NAME", required_unless_present = "stopped", conflicts_with = "stopped")]
        names: Vec<String>,
        /// Forget every Pod that has stopped (exited, killed, stopped, lost).
        #[arg(long)]
        stopped: bool,
    },
    /// The coordination store of a layer (a lead and its direct children):
    /// keys with versions, waits. Exit status: 0 ok, 1 denied, 2 bad input,
    /// 3 version mismatch, 4 not found, 124 wait timed out, 69 the lead
    /// does not answer.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Leases of a layer's coordination store (or of the tree's, --global).
    /// Exit status: 0 ok, 1 denied, 2 bad input, 3 held by another, 4 not
    /// held, 124 wait timed out, 69 the lead does not answer.
    Lease {
        #[command(subcommand)]
        command: LeaseCommand,
    },
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
    /// Print what this machine offers for enforcement and containment
    /// (Landlock, namespaces, cgroups), and why not where it does not.
    Doctor(JsonFlag),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Internal: the Pod process itself, started by `start`, `spawn` and
    /// `resume`.
    #[command(name = "__pod", hide = true)]
    PodProcess(PodProcessArgs),
}

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Print KEY's value alone, as written (--json: with its version,
    /// writer and time).
    Get {
        /// The key: /ref/NAME, /shared/NAME, /peer/MEMBER/NAME or
        /// /peer/self/NAME.
        key: String,
        #[command(flatten)]
        layer: LayerArg,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Write KEY (prints its new version).
    Set {
        key: String,
        /// The value; `-` reads it from stdin (at most 1 MiB).
        value: String,
        #[command(flatten)]
        overriding: OverrideFlag,
        #[command(flatten)]
        layer: LayerArg,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Write KEY only if it is at version EXPECTED (0: only if it does not
    /// exist); prints its new version, exit 3 on a mismatch.
    Cas {
        key: String,
        expected: u64,
        /// The value; `-` reads it from stdin (at most 1 MiB).
        value: String,
        #[command(flatten)]
        overriding: OverrideFlag,
        #[command(flatten)]
        layer: LayerArg,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete KEY (prints the version it had).
    Rm {
        key: String,
        #[command(flatten)]
        overriding: OverrideFlag,
        #[command(flatten)]
        layer: LayerArg,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the keys matching GLOB that you may read (`*` one segment,
    /// `**` any number), at most 1,000.
    Ls {
        glob: String,
        #[command(flatten)]
        layer: LayerArg,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Wait until KEY exists (or is at --min-version), then print its value
    /// as `get` does; exit 124 after --timeout.
    Wait {
        key: String,
        /// The version to wait for (0: until the key exists).
        #[arg(long, value_name = "V", default_value_t = 0)]
        min_version: u64,
        /// Give up after SECS seconds (decimals allowed; at most 3600).
        #[arg(long, value_name = "SECS", default_value = "3600", value_parser = parse_secs)]
        timeout: std::time::Duration,
        #[command(flatten)]
        layer: LayerArg,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Take lease NAME for --ttl seconds (prints the grant and its fencing
    /// token); exit 3 if another holds it, unless --wait queues for it.
    Acquire {
        /// The lease's name: one key segment (it lives at /leases/NAME).
        name: String,
        /// How long the grant lasts unless renewed (0.1 to 86400 seconds).
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        ttl: std::time::Duration,
        /// Queue up to SECS seconds for a held lease (first come, first
        /// served; exit 124 after).
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        wait: Option<std::time::Duration>,
        #[command(flatten)]
        target: LeaseTarget,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Extend your grant of NAME by its TTL (or --ttl) from now.
    Renew {
        name: String,
        /// A new TTL in seconds (default: the grant's own).
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        ttl: Option<std::time::Duration>,
        /// Only the grant with this fencing token.
        #[arg(long, value_name = "TOKEN")]
        token: Option<u64>,
        #[command(flatten)]
        target: LeaseTarget,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Give NAME up; the first waiter gets it.
    Release {
        name: String,
        /// Only the grant with this fencing token.
        #[arg(long, value_name = "TOKEN")]
        token: Option<u64>,
        #[command(flatten)]
        overriding: OverrideFlag,
        #[command(flatten)]
        target: LeaseTarget,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the live grants: name, holder, token, expiry, waiters.
    Ls {
        #[command(flatten)]
        target: LeaseTarget,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Args, Debug, Clone)]
pub struct LayerArg {
    /// The layer's lead: yourself or your parent (default: your parent's
    /// layer, or your own without a parent); outside every Pod, required.
    #[arg(long, value_name = "LEAD")]
    pub layer: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct LeaseTarget {
    #[command(flatten)]
    pub layer: LayerArg,
    /// The tree-wide leases, kept at the root of the tree (of --layer's
    /// tree when given).
    #[arg(long)]
    pub global: bool,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct OverrideFlag {
    /// Act with the lead's rights on a member's slot or another's lease
    /// (the lead and the operator only).
    #[arg(long = "override")]
    pub overriding: bool,
}

/// Seconds as the store's commands take them: a decimal number, to the
/// millisecond (range checks are the store's, with its codes).
pub fn parse_secs(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{text:?} is not a number of seconds from 0 to 1e9"));
    }
    Ok(std::time::Duration::from_millis((secs * 1000.0).round() as u64))
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
    /// Stop the registry daemon; refused while Pods run (naming them).
    Stop {
        /// Stop every running Pod first (top-level Pods, with their trees).
        #[arg(long)]
        all: bool,
    },
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
    /// Share one table with other nodes through etcd: its client URLs,
    /// comma-separated (default: POD_ETCD; without either, the embedded
    /// registry).
    #[arg(long, value_name = "URL[,URL...]")]
    pub etcd: Option<String>,
    /// This node's name in the shared table (default: POD_NODE, else the
    /// host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Seconds a node's allocations outlive its last keepalive (default:
    /// POD_LEASE_TTL, else 10; 2..=3600).
    #[arg(long, value_name = "SECS")]
    pub lease_ttl: Option<String>,
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
    /// Deny write on PATH and below (read stays); never lifted by a reclaim.
    #[arg(long = "deny-write", value_name = "PATH")]
    pub deny_write: Vec<String>,
    /// Deny all access to PATH and below.
    #[arg(long = "deny-read", value_name = "PATH")]
    pub deny_read: Vec<String>,
    /// TOML manifest with name, allow and deny rules and workload.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub env: EnvArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub enforce: EnforceArgs,
    /// The workload to run; the Pod stops when it exits.
    #[arg(last = true, value_name = "CMD")]
    pub workload: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SpawnArgs {
    /// The child's name.
    pub child: String,
    /// The parent Pod (default: $POD_NAME, set inside a workload).
    #[arg(long, env = "POD_NAME")]
    pub parent: Option<String>,
    #[command(flatten)]
    pub rules: RuleArgs,
    #[command(flatten)]
    pub env: EnvArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub enforce: EnforceArgs,
    /// The child's workload; the child stops when it exits.
    #[arg(last = true, value_name = "CMD")]
    pub workload: Vec<String>,
}

/// Resource limits of the workload, applied through its cgroup's
/// controllers; refused where the machine lacks the controller.
#[derive(Args, Debug)]
pub struct LimitArgs {
    /// At most N processes in the workload at once, its keeper included
    /// (at least 8; the pids controller).
    #[arg(long = "max-pids", value_name = "N")]
    pub max_pids: Option<u32>,
    /// At most BYTES of memory for the workload (at least 4194304; the
    /// memory controller).
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<u64>,
}

impl LimitArgs {
    /// The limits, refused for a Pod that runs no workload.
    pub fn limits(&self, has_workload: bool) -> Result<pod_sandbox::Limits, pod_proto::WireError> {
        let limits = pod_sandbox::Limits { max_pids: self.max_pids, memory_bytes: self.memory };
        if !has_workload && limits != pod_sandbox::Limits::default() {
            return Err(pod_proto::WireError::new(
                "cli.limits_without_workload",
                "--max-pids and --memory limit a workload, and this pod runs none (give one after --)",
            ));
        }
        Ok(limits)
    }
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// Give the workload variable K=V; `--env K` passes K's value from this
    /// environment (so a secret stays out of argv). Never stored.
    #[arg(long = "env", value_name = "K[=V]")]
    pub env: Vec<String>,
    /// Give the workload the KEY=VALUE lines of FILE (# comments); --env
    /// wins over it.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EnforceArgs {
    /// How the kernel holds the workload to its scope: full (Landlock and a
    /// private mount namespace; delegated regions taken from the running
    /// workload), landlock (bounded at exec only) or off. Default:
    /// POD_ENFORCE, else the parent's level for a child and the strongest
    /// level this machine and the Pod's rules allow for a top-level Pod
    /// (said, loudly below full); never weaker than the parent's.
    #[arg(long = "enforce", value_name = "LEVEL")]
    pub level: Option<String>,
    /// Let the workload write PATH and below (caches, tool state): a path
    /// no Pod's scope may overlap; several Pods may share it.
    #[arg(long = "scratch", value_name = "PATH")]
    pub scratch: Vec<String>,
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
    /// The Pod's name (absent with --standby: the launch request names it).
    #[arg(required_unless_present = "standby")]
    pub name: Option<String>,
    /// Started ahead of its launch request by a Pod that spawns children,
    /// so a spawn does not wait for this binary to load: it learns its
    /// name from the request.
    #[arg(long, conflicts_with_all = ["name", "resume", "request"])]
    pub standby: bool,
    /// Resume from the session log instead of starting anew.
    #[arg(long)]
    pub resume: bool,
    /// Launch request (start or spawn), as JSON; absent with --resume.
    #[arg(long)]
    pub request: Option<String>,
}
