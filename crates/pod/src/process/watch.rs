//! Noticing that a process is gone, and making it go.
//!
//! A Pod is the OS parent of the children it spawned and learns of their exit
//! by waiting on them. After a resume, or for a grandchild it adopted, it is
//! not; it then holds a pidfd, which cannot be fooled by pid reuse once
//! opened, and checks the start time before opening it.

pub use pod_client::process::{start_time_of, PidFd};
use scope::PodName;
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::process::owner::OwnerMsg;

/// Waits for an OS child and reports its exit.
pub fn watch_os_child(name: PodName, pid: u32, mut child: Child, tx: mpsc::Sender<OwnerMsg>) {
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => tracing::info!(%name, pid, %status, "child process exited"),
            Err(e) => tracing::warn!(%name, pid, error = %e, "cannot wait for the child"),
        }
        if tx.send(OwnerMsg::ChildExited { name, pid }).await.is_err() {
            tracing::debug!("owner gone before a child exit");
        }
    });
}

/// Watches a process that is not our child. A pid that is already gone, or
/// that now belongs to another process (start time differs), is reported as
/// exited at once.
pub fn watch_pid(name: PodName, pid: u32, start_time: u64, tx: mpsc::Sender<OwnerMsg>) {
    tokio::spawn(async move {
        match PidFd::open(pid, start_time) {
            Some(process) => process.exited().await,
            None => tracing::info!(%name, pid, "process already gone"),
        }
        if tx.send(OwnerMsg::ChildExited { name, pid }).await.is_err() {
            tracing::debug!("owner gone before a child exit");
        }
    });
}
