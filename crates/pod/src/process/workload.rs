//! The optional workload, started in exactly one place: this file. What it
//! is given is data ([`WorkloadSpec`]): its command, directory and the
//! `--env` variables; its stdout and stderr are pipes the Pod captures
//! (`output.rs`); its stdin is empty. When it exits, its Pod shuts down and
//! records how it ended.
//!
//! Its environment: the Pod process's own (for a top-level Pod, that of the
//! `pod start` caller; for a child, inherited from its parent Pod process),
//! then the `--env` variables, then `POD_NAME`, `POD_SOCKET`, `POD_HOME`
//! (when the Pod has one) and `POD_PARENT` (a child's parent), which
//! `--env` cannot set.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use pod_client::protocol::Env;
use pod_proto::WireError;
use session_log::Exit;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::layout::PodPaths;
use crate::process::owner::OwnerMsg;
use crate::process::watch::PidFd;

pub struct WorkloadSpec<'a> {
    pub command: &'a [String],
    pub cwd: Option<&'a str>,
    pub env: &'a Env,
    pub parent: Option<&'a scope::PodName>,
}

/// A started workload.
pub struct Running {
    /// `None` when it had already exited when looked at.
    pub process: Option<PidFd>,
    /// How it ended, once it has.
    pub exit: watch::Receiver<Option<Exit>>,
    /// Finishes when its output is all written.
    pub output: JoinHandle<()>,
}

pub fn start(spec: WorkloadSpec<'_>, paths: &PodPaths, tx: mpsc::Sender<OwnerMsg>) -> Result<Running, WireError> {
    let (program, args) =
        spec.command.split_first().ok_or_else(|| WireError::new("pod.workload", "the workload command is empty"))?;
    let name = paths.run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let home = paths.dirs.run.parent().map(|p| p.to_path_buf());
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for (key, value) in &spec.env.0 {
        cmd.env(key, value);
    }
    cmd.env("POD_NAME", &name)
        .env("POD_SOCKET", paths.socket())
        .env_remove("POD_PARENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(parent) = spec.parent {
        cmd.env("POD_PARENT", parent.as_str());
    }
    if let (Some(home), Some(_)) = (home, std::env::var_os("POD_HOME")) {
        cmd.env("POD_HOME", home);
    }
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child =
        cmd.spawn().map_err(|e| WireError::new("pod.workload", format!("cannot start workload {program:?}: {e}")))?;
    let pid = child.id().ok_or_else(|| WireError::new("pod.workload", "the workload exited at once"))?;
    let stdout = child.stdout.take().ok_or_else(|| WireError::new("pod.workload", "no stdout pipe"))?;
    let stderr = child.stderr.take().ok_or_else(|| WireError::new("pod.workload", "no stderr pipe"))?;
    let output = crate::process::output::capture(paths, stdout, stderr)?;
    // Opened before the waiter below can reap it: the handle stays bound to
    // this process even after its pid is reused. `None` when the workload
    // has already exited; the waiter reports that as usual.
    let process = crate::process::watch::start_time_of(pid).and_then(|start| PidFd::open(pid, start));
    let (exit_tx, exit) = watch::channel(None);
    tokio::spawn(async move {
        let exit = match child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Exit::code(code),
                (None, Some(signal)) => Exit::signal(signal),
                (None, None) => Exit::default(),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for the workload");
                Exit::default()
            }
        };
        exit_tx.send_replace(Some(exit));
        if tx.send(OwnerMsg::WorkloadExited { exit }).await.is_err() {
            tracing::debug!("owner gone before the workload exited");
        }
    });
    Ok(Running { process, exit, output })
}
