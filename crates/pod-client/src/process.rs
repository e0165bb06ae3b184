//! One process, named by its pid and start time: the handle that a reused
//! pid cannot redirect (a pidfd), shared by the Pod process (its children's
//! exits, its workload) and the clients (`stop` waits for a Pod to go).

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Shortest wait for a killed process to be gone (the kernel ends it, but
/// not always at once: a process in uninterruptible sleep goes when it
/// leaves it).
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// A handle on one process that a reused pid cannot redirect: opened while
/// the process is known to be the right one (our unreaped child, or a pid
/// whose start time matches), it keeps referring to that process.
pub struct PidFd {
    pid: u32,
    fd: OwnedFd,
}

impl PidFd {
    /// Opens `pid` if it still is the process that started at `start_time`.
    pub fn open(pid: u32, start_time: u64) -> Option<PidFd> {
        let raw = Pid::from_raw(i32::try_from(pid).ok()?)?;
        let fd = pidfd_open(raw, PidfdFlags::NONBLOCK).ok()?;
        // Checked after opening: if the start time matches now, the pidfd
        // refers to that very process for as long as we hold it.
        (start_time_of(pid) == Some(start_time)).then_some(PidFd { pid, fd })
    }

    /// Returns when the process has exited.
    pub async fn exited(self) {
        let Some(fd) = register(self.fd) else { return };
        if let Err(e) = fd.readable().await {
            tracing::warn!(pid = self.pid, error = %e, "cannot wait on a pidfd");
        }
    }

    /// Sends `signal`; a process already gone is not an error worth more
    /// than a debug line.
    pub fn signal(&self, signal: Signal) {
        if let Err(e) = pidfd_send_signal(&self.fd, signal) {
            tracing::debug!(pid = self.pid, error = %e, "signal not delivered (already gone?)");
        }
    }

    /// Waits up to `grace` for the process to exit, then kills it and waits
    /// again (bounded: `grace`, at least [`KILL_WAIT`]).
    pub async fn wait_or_kill(self, grace: Duration) {
        let pid = self.pid;
        let Some(fd) = register(self.fd) else { return };
        if tokio::time::timeout(grace, fd.readable()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, ?grace, "process did not exit in time; killing it");
        if let Err(e) = pidfd_send_signal(fd.get_ref(), Signal::KILL) {
            tracing::debug!(pid, error = %e, "kill failed (already gone?)");
        }
        let after_kill = grace.max(KILL_WAIT);
        if tokio::time::timeout(after_kill, fd.readable()).await.is_err() {
            tracing::error!(pid, "process survived SIGKILL for {after_kill:?}");
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(self, grace: Duration) {
        self.signal(Signal::TERM);
        self.wait_or_kill(grace).await;
    }
}

/// A pidfd becomes readable when its process exits.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the OwnedFd, so the descriptor
    // stays open (and is not reused for another file) for exactly as long
    // as it is registered; that is the I/O-safety condition tokio requires.
    match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(error = %e, "cannot register a pidfd with the reactor");
            None
        }
    }
}

/// Start time of a running process (not a zombie), from the registry's
/// reading of `/proc`: a pid plus its start time is a process's identity.
pub fn start_time_of(pid: u32) -> Option<u64> {
    pod_registry::proc::start_time(pid).ok().flatten()
}
