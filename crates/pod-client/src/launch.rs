//! Starting a Pod process and waiting until it is ready to serve.
//!
//! The Pod process is this same binary (`pod __pod NAME`). Its launch request
//! travels on stdin (never on the command line: argv is visible to every
//! user and has a small per-argument limit); its first line on stdout is a
//! JSON `LaunchOutcome`: ready with its pid, or the error that stopped it.
//! So `pod start` and `pod spawn` return exactly when the Pod serves, and a
//! failure is reported in the Pod's own words.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pod_proto::WireError;
use scope::{Echo, PodName, ScopeRule};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Longest a launcher waits for a new Pod to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest launch request a Pod process reads from stdin.
pub const MAX_LAUNCH_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub name: PodName,
    pub mode: LaunchMode,
    /// Directory the workload runs in.
    pub cwd: Option<String>,
    /// Variables for the workload (`--env`): they travel on this pipe only.
    #[serde(default)]
    pub env: crate::protocol::Env,
    /// The workload's resource limits (`--max-pids`, `--memory`).
    #[serde(default)]
    pub limits: pod_sandbox::Limits,
    /// Kernel enforcement of the workload (start and spawn; a child's level
    /// is already decided by its parent).
    #[serde(default)]
    pub enforce: crate::protocol::EnforceRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LaunchMode {
    /// A new top-level Pod.
    Start { allow: Vec<ScopeRule>, deny: Vec<ScopeRule>, workload: Option<Vec<String>> },
    /// A child: its reservation was made by `parent`, which waits for it.
    Child { parent: PodName, rules: Vec<ScopeRule>, workload: Option<Vec<String>> },
    /// Replay the session log and serve again.
    Resume,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LaunchOutcome {
    Ready {
        pid: u32,
        socket: String,
        #[serde(default)]
        enforcement: Option<crate::protocol::Enforcement>,
    },
    Failed(WireError),
}

/// A Pod process that reported ready.
pub struct Launched {
    pub pid: u32,
    pub socket: String,
    /// The level the new Pod's workload is enforced at.
    pub enforcement: Option<crate::protocol::Enforcement>,
    /// The process handle, kept by a parent Pod to notice the child's exit.
    pub child: Child,
}

/// A Pod process started and not yet ready: its pid is known at once, so
/// a parent can record it (and recognize the child's own calls) while the
/// wait for readiness runs elsewhere.
pub struct Starting {
    child: Child,
    pid: u32,
    body: Vec<u8>,
    log_file: PathBuf,
}

/// Starts `pod __pod` for `request` and waits (bounded) for its outcome.
/// The process's stderr goes to `log_file`.
pub async fn launch(request: &LaunchRequest, log_file: &Path) -> Result<Launched, WireError> {
    start(request, log_file)?.ready().await
}

/// Starts `pod __pod` for `request`, without waiting for it.
pub fn start(request: &LaunchRequest, log_file: &Path) -> Result<Starting, WireError> {
    let exe = std::env::current_exe()
        .map_err(|e| WireError::new("launch.exe", format!("cannot find the pod binary: {e}")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_file)
        .map_err(|e| WireError::new("launch.io", format!("cannot open {}: {e}", log_file.display())))?;
    let body = serde_json::to_vec(request).map_err(|e| WireError::new("launch.encode", e.to_string()))?;
    let mut command = Command::new(exe);
    command.arg("__pod").arg(request.name.as_str());
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(log));
    let child =
        command.spawn().map_err(|e| WireError::new("launch.spawn", format!("cannot start the pod process: {e}")))?;
    let pid = child.id().ok_or_else(|| WireError::new("launch.died", "the pod process was gone at once"))?;
    Ok(Starting { child, pid, body, log_file: log_file.to_path_buf() })
}

/// A Pod process started ahead of its launch request (`pod __pod
/// --standby`), kept by a Pod that spawns children so that a spawn does not
/// wait for this binary to load (ld.so's relocations, glibc's CPU probing
/// and the runtime's start are a good part of a spawn). It learns its name
/// from the request; its diagnostics go to the parent's log until then.
/// Dropped unused, its stdin closes and it exits without a word.
pub struct Standby {
    child: Child,
    pid: u32,
}

/// The argument after `__pod` that makes a standby: its command line names
/// no Pod, even after it became one (see `process::caller` in `pod`).
pub const STANDBY_ARG: &str = "--standby";

impl Standby {
    pub fn start() -> Result<Standby, WireError> {
        let exe = std::env::current_exe()
            .map_err(|e| WireError::new("launch.exe", format!("cannot find the pod binary: {e}")))?;
        let mut command = Command::new(exe);
        command.arg("__pod").arg(STANDBY_ARG);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let child = command
            .spawn()
            .map_err(|e| WireError::new("launch.spawn", format!("cannot start a standby pod process: {e}")))?;
        let pid =
            child.id().ok_or_else(|| WireError::new("launch.died", "the standby pod process was gone at once"))?;
        Ok(Standby { child, pid })
    }

    /// Still waiting for its request (not killed meanwhile)?
    pub fn is_waiting(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The launch of `request` by this process, as [`start`] would begin
    /// it; the request is sent by [`Starting::ready`].
    pub fn launch(self, request: &LaunchRequest, log_file: &Path) -> Result<Starting, WireError> {
        let body = serde_json::to_vec(request).map_err(|e| WireError::new("launch.encode", e.to_string()))?;
        Ok(Starting { child: self.child, pid: self.pid, body, log_file: log_file.to_path_buf() })
    }
}

impl Starting {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills and reaps a Pod process that is not wanted after all (its
    /// spawn failed before the launch request was sent).
    pub async fn abandon(mut self) {
        reap(&mut self.child).await;
    }

    /// Sends the launch request and waits, at most [`READY_TIMEOUT`], for
    /// the Pod's one-line outcome. A Pod that fails or times out is killed
    /// and reaped.
    pub async fn ready(mut self) -> Result<Launched, WireError> {
        let Starting { child, pid: _, body, log_file } = &mut self;
        let outcome = async {
            let mut stdin = child.stdin.take().ok_or_else(|| WireError::new("launch.io", "no stdin pipe"))?;
            stdin
                .write_all(body)
                .await
                .map_err(|e| WireError::new("launch.io", format!("cannot send the launch request: {e}")))?;
            drop(stdin);
            let stdout = child.stdout.take().ok_or_else(|| WireError::new("launch.io", "no stdout pipe"))?;
            let mut line = String::new();
            BufReader::new(stdout)
                .take(MAX_OUTCOME_BYTES)
                .read_line(&mut line)
                .await
                .map_err(|e| WireError::new("launch.io", format!("cannot read the pod's answer: {e}")))?;
            if line.trim().is_empty() {
                return Err(WireError::new(
                    "launch.died",
                    format!("the pod process exited before it was ready; see {}", log_file.display()),
                ));
            }
            serde_json::from_str::<LaunchOutcome>(&line).map_err(|e| {
                WireError::new("launch.garbled", format!("the pod process answered {}: {e}", Echo(line.trim_end())))
            })
        };
        let result = tokio::time::timeout(READY_TIMEOUT, outcome).await;
        let Starting { mut child, .. } = self;
        match result {
            Ok(Ok(LaunchOutcome::Ready { pid, socket, enforcement })) => {
                Ok(Launched { pid, socket, enforcement, child })
            }
            Ok(Ok(LaunchOutcome::Failed(e))) => {
                reap(&mut child).await;
                Err(e)
            }
            Ok(Err(e)) => {
                reap(&mut child).await;
                Err(e)
            }
            Err(_) => {
                reap(&mut child).await;
                Err(WireError::new("launch.timeout", format!("the pod was not ready within {READY_TIMEOUT:?}")))
            }
        }
    }
}

/// Largest outcome line read from a starting Pod.
const MAX_OUTCOME_BYTES: u64 = 64 << 10;

/// Kills (if still running) and waits for a launch that failed, so no
/// half-started Pod is left behind.
async fn reap(child: &mut Child) {
    if let Err(e) = child.kill().await {
        tracing::debug!(error = %e, "failed launch already gone");
    }
}
