//! What a Pod answers on its socket. Framing, handshake, limits and peer
//! checks are `pod-proto`'s, shared with the registry; this file is only the
//! message set. Identity (who is calling) is never a field here: it is the
//! kernel-reported peer pid, checked by the Pod.

use std::time::Duration;

use pod_proto::WireError;
use scope::{Permission, PodName, ScopeRule, ScopeSnapshot};
use serde::{Deserialize, Serialize};
use session_log::Record;

/// Most log records returned in one `Log` reply.
pub const MAX_LOG_PAGE: usize = 512;

/// Most records (log events or output lines) in one `Output` or `LogOf`
/// answer.
pub const MAX_READ_RECORDS: usize = 512;
/// Most bytes of records in one `Output` or `LogOf` answer, each record
/// counted as its JSON text (never shorter than its MessagePack in the
/// frame); a single record larger than this is sent alone.
pub const MAX_READ_BYTES: usize = 512 << 10;
/// Longest one `Ended` or `LogOf` request waits before it answers; a
/// client that wants longer asks again.
pub const MAX_READ_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PodRequest {
    /// Liveness and identity probe (used by resume to prune).
    Ping,
    /// Name, parent, pid, scope, children.
    Status,
    /// May this Pod read (or write) `path`? The path is already resolved by
    /// the caller; the Pod normalizes it again (it is a `ScopePath`).
    Check { path: scope::ScopePath, permission: Permission },
    /// Spawn a child with delegated rules.
    Spawn(SpawnRequest),
    /// StopPod: stop this Pod's child `child` and reclaim its scope; each
    /// workload of its tree gets `grace` between SIGTERM and SIGKILL.
    StopChild {
        child: PodName,
        #[serde(default)]
        grace: StopGrace,
    },
    /// Stop this Pod (its children first), its workload (and each of its
    /// children's) given `grace` between SIGTERM and SIGKILL.
    Shutdown {
        #[serde(default)]
        grace: StopGrace,
    },
    /// Send signal number `signal` to this Pod's workload.
    Signal { signal: i32 },
    /// The ShutDown callback: "I, your child, am going away", with how its
    /// workload ended. Accepted only from the child's own process (peer
    /// pid).
    ChildShutDown {
        child: PodName,
        #[serde(default)]
        exit: session_log::Exit,
    },
    /// Records from `from_seq`; with `wait_ms`, waits up to that long for
    /// the first new record.
    Log { from_seq: u64, wait_ms: u64 },
    /// A call on the coordination store of the layer this Pod leads
    /// (`reach: Tree`: its tree-wide leases, only at a root). Who calls is
    /// the kernel's answer, never a field. Mutations may carry a request
    /// id, so that a retry after a lost answer changes nothing.
    Kv { reach: pod_kv::Reach, op: pod_kv::Op, id: Option<pod_kv::store::RequestId> },
    /// Who the kernel says the caller is: a Pod of this tree (its lineage)
    /// or the operator. The CLI asks its own Pod before it picks a layer.
    Whoami,
    /// How `name` (this Pod or a descendant) ended, once its Pod process
    /// is gone; waits up to `wait_ms` (at most [`MAX_READ_WAIT`]) and
    /// answers `None` while it still runs. `pod wait` inside a workload,
    /// which cannot read the stores' `data/`.
    Ended { name: PodName, wait_ms: u64 },
    /// A page of `name`'s workload output (this Pod or a descendant), from
    /// `from` (`None`: its oldest line kept). `pod logs` inside a workload.
    Output { name: PodName, from: Option<OutputCursor> },
    /// A page of `name`'s session log (this Pod or a descendant) from
    /// `from_seq`, waiting up to `wait_ms` (at most [`MAX_READ_WAIT`]) for
    /// the first new record. `pod log` inside a workload.
    LogOf { name: PodName, from_seq: u64, wait_ms: u64 },
    /// Forget `name` (a stopped descendant of this Pod): its files and any
    /// allocation it left. `pod rm` inside a workload, which may not write
    /// the runtime's directories.
    Remove { name: PodName },
}

/// Where an `Output` page ended: the file (its inode, as the output file
/// is renamed on rotation) and the byte after the last whole line read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCursor {
    pub file: u64,
    pub offset: u64,
}

/// The answer to `Output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputPage {
    pub lines: Vec<crate::output::OutputLine>,
    /// Where the next page begins.
    pub next: Option<OutputCursor>,
    /// The Pod was running when the page was read: more may come.
    pub running: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub child: PodName,
    pub rules: Vec<ScopeRule>,
    pub workload: Option<Vec<String>>,
    /// Working directory for the child's workload.
    pub cwd: Option<String>,
    /// Variables for the child's workload (never stored).
    #[serde(default)]
    pub env: Env,
    /// The child's workload's resource limits (`--max-pids`, `--memory`).
    #[serde(default)]
    pub limits: pod_sandbox::Limits,
    /// Kernel enforcement of the child's workload (`--enforce`, `--scratch`).
    #[serde(default)]
    pub enforce: EnforceRequest,
}

/// What a new Pod asks of kernel enforcement, on `pod start` and `pod spawn`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforceRequest {
    /// `--enforce` (or `POD_ENFORCE`); `None`: the strongest level the
    /// machine and the Pod's rules allow, never weaker than the parent's.
    #[serde(default)]
    pub level: Option<pod_sandbox::Level>,
    /// `--scratch`: paths the workload may write that no Pod allocates.
    #[serde(default)]
    pub scratch: Vec<scope::ScopePath>,
}

/// The level a Pod's workload is enforced at, as `pod start`, `pod spawn`
/// and `pod scope` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    pub level: pod_sandbox::Level,
    /// The kernel's Landlock ABI, when Landlock is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock_abi: Option<u32>,
    /// What the user should hear: why a stronger level was not given, what
    /// this level does not cover on this kernel (said only at creation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `--scratch` paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<scope::ScopePath>,
}

impl Enforcement {
    /// The `pod.enforced` event body.
    pub fn recorded(&self) -> session_log::Enforced {
        session_log::Enforced {
            level: self.level.name().to_string(),
            landlock_abi: self.landlock_abi,
            scratch: self.scratch.clone(),
        }
    }

    /// `pod check`'s answer where a scratch path decides: write (and read)
    /// beneath a scratch path, unless a deny rule of the Pod decided
    /// (enforcement keeps base denies over scratch too). `decider` is the
    /// scope's own verdict.
    pub fn scratch_verdict(&self, path: &scope::ScopePath, decider: &scope::Decider<'_>) -> Option<String> {
        if matches!(decider, scope::Decider::Deny { .. }) {
            return None;
        }
        self.scratch.iter().find(|s| path.is_within(s)).map(|s| format!("scratch {s}/**"))
    }

    /// What a log recorded; an unknown level (a newer build's) is an error
    /// naming it.
    pub fn from_recorded(recorded: &session_log::Enforced) -> Result<Enforcement, pod_proto::WireError> {
        let level = pod_sandbox::Level::parse(&recorded.level).map_err(|e| {
            pod_proto::WireError::new("log.corrupt", format!("pod.enforced records an unknown level: {e}"))
        })?;
        Ok(Enforcement {
            level,
            landlock_abi: recorded.landlock_abi,
            notes: Vec::new(),
            scratch: recorded.scratch.clone(),
        })
    }
}

/// How long a stopping workload has between SIGTERM and SIGKILL (`pod
/// stop --timeout`), in whole seconds, at most [`StopGrace::MAX_SECS`]:
/// a stop is answered within one call, whose bound (five minutes) a tree's
/// stop must fit in, each level of it taking up to this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct StopGrace {
    secs: u64,
}

impl StopGrace {
    /// The grace when none is given.
    pub const DEFAULT_SECS: u64 = 5;
    /// The longest grace accepted.
    pub const MAX_SECS: u64 = 120;

    /// A grace of `secs` seconds, or why it is refused.
    pub fn from_secs(secs: u64) -> Result<StopGrace, WireError> {
        if secs > StopGrace::MAX_SECS {
            return Err(WireError::new(
                "pod.bad_timeout",
                format!("a stop timeout of {secs}s is over the limit of {}s", StopGrace::MAX_SECS),
            ));
        }
        Ok(StopGrace { secs })
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.secs)
    }
}

impl Default for StopGrace {
    fn default() -> StopGrace {
        StopGrace { secs: StopGrace::DEFAULT_SECS }
    }
}

impl TryFrom<u64> for StopGrace {
    type Error = String;
    fn try_from(secs: u64) -> Result<StopGrace, String> {
        StopGrace::from_secs(secs).map_err(|e| e.message)
    }
}

impl From<StopGrace> for u64 {
    fn from(grace: StopGrace) -> u64 {
        grace.secs
    }
}

/// Environment variables given to a workload with `--env`: sent to the
/// Pod process on its launch pipe or socket, never written to a file or
/// put on a command line. `Debug` shows the names only, so a value never
/// reaches a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env(pub Vec<(String, String)>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PodReply {
    Pong {
        name: PodName,
        pid: u32,
    },
    Status(PodStatus),
    Verdict {
        allowed: bool,
        permission: Option<Permission>,
        decided_by: String,
    },
    Spawned {
        child: PodName,
        pid: u32,
        socket: String,
        #[serde(default)]
        enforcement: Option<Enforcement>,
    },
    /// Reclaim done (`reclaimed: false` when the child was already gone).
    Stopped {
        reclaimed: bool,
    },
    /// The Pod has shut down; how its workload ended (the parent that
    /// stopped it records this in `child.removed`).
    ShuttingDown {
        #[serde(default)]
        exit: session_log::Exit,
    },
    Ack,
    Log {
        records: Vec<Record>,
        next_seq: u64,
    },
    Kv(pod_kv::Outcome),
    Whoami(Whoami),
    /// How the Pod ended; `None`: still running when the wait passed.
    Ended(Option<crate::commands::wait::Ended>),
    Output(OutputPage),
    /// A page of another Pod's session log; `running`: it was running when
    /// the page was read, so more may come.
    LogOf {
        records: Vec<Record>,
        next_seq: u64,
        running: bool,
    },
    /// The Pod was forgotten (`Remove`).
    Removed,
}

/// The kernel's view of a caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Whoami {
    Operator,
    Pod { name: PodName, parent: Option<PodName>, root: PodName },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    pub name: PodName,
    pub parent: Option<PodName>,
    pub pid: u32,
    pub scope: ScopeSnapshot,
    pub children: Vec<ChildStatus>,
    pub workload: Option<Vec<String>>,
    /// Why the Pod failed closed (every check denied, spawns refused), if
    /// it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<String>,
    /// How the kernel holds its workload to its scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// How the workload's processes are held together, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<ContainmentView>,
}

/// The containment of a running workload, as `pod scope` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainmentView {
    /// `cgroup` (a cgroup v2 of its own), `pid_namespace` (a supervisor
    /// that is the init of a PID namespace) or `subreaper` (a supervisor
    /// that every orphan of the tree comes back to).
    pub mechanism: String,
    /// In words: the mechanism, where it lives, and the cgroup v1
    /// hierarchies that carry a limit.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub name: PodName,
    pub socket: String,
    pub pid: Option<u32>,
    pub rules: Vec<ScopeRule>,
}
