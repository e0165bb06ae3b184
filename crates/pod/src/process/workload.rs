//! The optional workload: a command the Pod runs with `POD_NAME`,
//! `POD_SOCKET` and `POD_HOME` in its environment, so it can call `pod`
//! itself. When it exits, its Pod shuts down.

use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use pod_proto::WireError;
use tokio::sync::mpsc;

use crate::layout::PodPaths;
use crate::process::owner::OwnerMsg;
use crate::process::watch::PidFd;

pub fn start(
    command: &[String],
    paths: &PodPaths,
    cwd: Option<&str>,
    tx: mpsc::Sender<OwnerMsg>,
) -> Result<Option<PidFd>, WireError> {
    let (program, args) =
        command.split_first().ok_or_else(|| WireError::new("pod.workload", "the workload command is empty"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(paths.workload_log())
        .map_err(|e| WireError::new("pod.io", format!("cannot open {}: {e}", paths.workload_log().display())))?;
    let err_log = log.try_clone().map_err(|e| WireError::new("pod.io", e.to_string()))?;
    let name = paths.run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let home = paths.dirs.run.parent().map(|p| p.to_path_buf());
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("POD_NAME", &name)
        .env("POD_SOCKET", paths.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log));
    if let (Some(home), Some(_)) = (home, std::env::var_os("POD_HOME")) {
        cmd.env("POD_HOME", home);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child =
        cmd.spawn().map_err(|e| WireError::new("pod.workload", format!("cannot start workload {program:?}: {e}")))?;
    let pid = child.id().ok_or_else(|| WireError::new("pod.workload", "the workload exited at once"))?;
    // Opened before the waiter below can reap it: the handle stays bound to
    // this process even after its pid is reused. `None` when the workload
    // has already exited; the waiter reports that as usual.
    let process = crate::process::watch::start_time_of(pid).and_then(|start| PidFd::open(pid, start));
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        if tx.send(OwnerMsg::WorkloadExited { status }).await.is_err() {
            tracing::debug!("owner gone before the workload exited");
        }
    });
    Ok(process)
}
