//! `registry stop`: the registry daemon goes, but never from under live
//! Pods (their scopes need it): refused while any runs, naming them; with
//! `all`, the top-level Pods are stopped first (their trees with them).
//! Talks only to a running daemon: a stop never starts one.

use std::time::Duration;

use pod_proto::WireError;
use pod_registry::client::Client as DaemonClient;
use scope::PodName;
use serde::Serialize;

use crate::commands::Client;
use crate::process::{start_time_of, PidFd};
use crate::registry::to_wire;

/// Longest `registry stop` waits for the daemon to exit after SIGTERM.
const DAEMON_EXIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RegistryStopped {
    /// The daemon (this pid) exited; `pods`: the Pods stopped first.
    Stopped {
        pid: u32,
        pods: Vec<PodName>,
    },
    NotRunning,
}

impl Client {
    pub async fn registry_stop(&self, all: bool) -> Result<RegistryStopped, WireError> {
        let Some(pid) = self.daemon_pid() else { return Ok(RegistryStopped::NotRunning) };
        let live = self.live_pods().await?;
        let mut stopped = Vec::new();
        if !live.is_empty() {
            if !all {
                let names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
                return Err(WireError::new(
                    "registry.pods_live",
                    format!(
                        "the registry serves live pods ({}); stop them first, or `pod registry stop --all` stops them",
                        names.join(", ")
                    ),
                ));
            }
            for (name, _) in live.iter().filter(|(_, top)| *top) {
                self.stop(name, crate::protocol::StopGrace::default()).await?;
                stopped.push(name.clone());
            }
            if let Some((name, _)) = self.live_pods().await?.first() {
                return Err(WireError::new(
                    "registry.pods_live",
                    format!("{name} still runs after its tree was stopped"),
                ));
            }
        }
        // Held before the signal: after the exit its pid may be reused.
        let process = start_time_of(pid).and_then(|start| PidFd::open(pid, start));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0))
                .ok_or_else(|| WireError::new("registry.daemon", format!("bad daemon pid {pid}")))?,
            rustix::process::Signal::TERM,
        )
        .map_err(|e| WireError::new("registry.daemon", format!("cannot signal the daemon (pid {pid}): {e}")))?;
        let deadline = tokio::time::Instant::now() + DAEMON_EXIT_WAIT;
        let late = || {
            WireError::new(
                "registry.stop_timeout",
                format!("the daemon (pid {pid}) did not exit within {DAEMON_EXIT_WAIT:?}"),
            )
        };
        // Answered once the daemon has exited, not only let go of its lock.
        if let Some(process) = process {
            tokio::time::timeout_at(deadline, process.exited()).await.map_err(|_| late())?;
        }
        while self.daemon_pid().is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(late());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(RegistryStopped::Stopped { pid, pods: stopped })
    }

    /// The running daemon's pid: its lock is held, and holds its pid.
    fn daemon_pid(&self) -> Option<u32> {
        use rustix::fs::{flock, FlockOperation};
        let lock = self.dirs().registry_lock();
        let file = std::fs::OpenOptions::new().write(true).open(&lock).ok()?;
        flock(&file, FlockOperation::NonBlockingLockExclusive).is_err().then_some(())?;
        std::fs::read_to_string(&lock).ok()?.split_whitespace().next()?.parse().ok()
    }

    /// Pods whose process runs, each with whether it is top-level.
    async fn live_pods(&self) -> Result<Vec<(PodName, bool)>, WireError> {
        let mut daemon = DaemonClient::connect_running(self.dirs()).await.map_err(to_wire)?;
        let all = daemon.list().await.map_err(to_wire)?;
        Ok(all
            .into_iter()
            .filter(|a| start_time_of(a.pid) == Some(a.start_time))
            .map(|a| (a.name, a.parent.is_none()))
            .collect())
    }
}
