//! `wait`: until named Pods have stopped, and how each ended. A Pod's end
//! is read from its own session log once its process is gone (its last
//! record: `pod.stopped` with its workload's exit, or none when the Pod
//! process itself died), so a Pod that stopped long ago answers at once,
//! and a workload can wait for its children (the files are its user's).

use std::time::Duration;

use pod_proto::WireError;
use scope::PodName;
use serde::{Deserialize, Serialize};
use session_log::{Event, Exit};

use crate::commands::inspect::open_log;
use crate::commands::Client;
use crate::layout::{PidRecord, PodPaths};
use crate::pod::OwnPod;
use crate::process::PidFd;
use crate::protocol::MAX_READ_WAIT;

/// How a Pod ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Ended {
    /// Its workload exited with this code.
    Exited { exit_code: i32 },
    /// Its workload was killed by this signal.
    Killed { signal: i32 },
    /// Stopped cleanly, without a workload (or one whose end was not seen).
    Stopped,
    /// The Pod process died without stopping (a top-level Pod: `pod
    /// resume` brings it back).
    Crashed,
    /// A child Pod whose process died; its parent reclaimed it.
    Lost,
}

/// What a Pod that ended with this exits with (`pod wait`'s status):
/// the workload's code, 128+N for signal N, 0 for a clean stop, 125 when
/// the Pod process itself died.
pub const POD_DIED_STATUS: u8 = 125;

impl Ended {
    /// From a stopped Pod's last record; `parent`: whose child it was.
    pub fn from_last(last: Option<&Event>, parent: Option<&PodName>) -> Ended {
        match last {
            Some(Event::PodStopped { exit }) => Ended::from_exit(*exit),
            _ if parent.is_some() => Ended::Lost,
            _ => Ended::Crashed,
        }
    }

    pub fn from_exit(exit: Exit) -> Ended {
        match (exit.exit_code, exit.signal) {
            (Some(exit_code), _) => Ended::Exited { exit_code },
            (None, Some(signal)) => Ended::Killed { signal },
            (None, None) => Ended::Stopped,
        }
    }

    /// The exit status this end stands for (see [`POD_DIED_STATUS`]).
    pub fn status(self) -> u8 {
        match self {
            Ended::Exited { exit_code } => u8::try_from(exit_code & 0xff).unwrap_or(1),
            Ended::Killed { signal } => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
            Ended::Stopped => 0,
            Ended::Crashed | Ended::Lost => POD_DIED_STATUS,
        }
    }

    /// `exited`, `killed`, `stopped`, `crashed`, `lost`: the `state` of
    /// its JSON.
    pub fn state(self) -> &'static str {
        match self {
            Ended::Exited { .. } => "exited",
            Ended::Killed { .. } => "killed",
            Ended::Stopped => "stopped",
            Ended::Crashed => "crashed",
            Ended::Lost => "lost",
        }
    }

    /// `exited(3)`, `killed(SIGKILL)`, `stopped`, `crashed`, `lost`.
    pub fn label(self) -> String {
        match self {
            Ended::Exited { exit_code } => format!("exited({exit_code})"),
            Ended::Killed { signal } => format!("killed({})", signal_name(signal)),
            Ended::Stopped => "stopped".into(),
            Ended::Crashed => "crashed".into(),
            Ended::Lost => "lost".into(),
        }
    }
}

/// `SIGKILL` for 9; the number for a signal without a common name.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return signal.to_string(),
    };
    name.to_string()
}

/// The number of a signal given as `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    (1..=15).find(|n| signal_name(*n) == name)
}

/// One Pod's end, as `pod wait` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitOutcome {
    pub name: PodName,
    /// `None`: still running when the wait timed out.
    #[serde(flatten)]
    pub ended: Option<Ended>,
    /// `running` in JSON when `ended` is `None`.
    #[serde(rename = "state", skip_serializing_if = "Option::is_none")]
    running: Option<&'static str>,
}

/// Every named Pod's outcome; `timed_out` when some had not stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waited {
    pub outcomes: Vec<WaitOutcome>,
    pub timed_out: bool,
}

/// How often the lock is looked at while a Pod process is on its way out.
const LOCK_POLL: Duration = Duration::from_millis(10);

impl Client {
    /// Waits until every Pod of `names` has stopped (or `timeout` passed).
    /// Inside a workload its Pod is asked (it may read the stores' `data/`,
    /// the workload may not).
    pub async fn wait(&self, names: &[PodName], timeout: Option<Duration>) -> Result<Waited, WireError> {
        if let Some(socket) = self.own_socket() {
            return wait_asking(&OwnPod { socket }, names, timeout).await;
        }
        for name in names {
            let paths = self.paths(name);
            if !paths.session_log().exists() && !paths.lock_held() {
                return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut outcomes = Vec::with_capacity(names.len());
        let mut timed_out = false;
        for name in names {
            let paths = self.paths(name);
            let gone = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, process_gone(&paths)).await.is_ok(),
                None => {
                    process_gone(&paths).await;
                    true
                }
            };
            let ended = if gone { Some(ended(&paths, name)?.0) } else { None };
            timed_out |= ended.is_none();
            let running = ended.is_none().then_some("running");
            outcomes.push(WaitOutcome { name: name.clone(), ended, running });
        }
        Ok(Waited { outcomes, timed_out })
    }
}

impl Client {
    /// How `name` ended, waiting up to `wait` for its Pod process to be
    /// gone; `None` while it still runs. What a Pod answers to `Ended`.
    pub async fn ended_within(&self, name: &PodName, wait: Duration) -> Result<Option<Ended>, WireError> {
        let paths = self.paths(name);
        if !paths.session_log().exists() && !paths.lock_held() {
            return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
        }
        if tokio::time::timeout(wait, process_gone(&paths)).await.is_err() {
            return Ok(None);
        }
        let name = name.clone();
        // Opening the log may wait (bounded) for an exiting Pod to let go.
        let read = tokio::task::spawn_blocking(move || ended(&paths, &name));
        let (ended, _) =
            read.await.map_err(|e| WireError::new("pod.internal", format!("log reader failed: {e}")))??;
        Ok(Some(ended))
    }
}

/// [`Client::wait`] through the Pod a workload runs in: each request waits
/// at most [`MAX_READ_WAIT`], so it is asked again until `timeout`.
async fn wait_asking(own: &OwnPod<'_>, names: &[PodName], timeout: Option<Duration>) -> Result<Waited, WireError> {
    // Every name known and readable before any wait: a refusal is said at
    // once, not after the others ended.
    let mut first = Vec::with_capacity(names.len());
    for name in names {
        first.push(own.ended(name, Duration::ZERO).await?);
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut outcomes = Vec::with_capacity(names.len());
    let mut timed_out = false;
    for (name, mut ended) in names.iter().zip(first) {
        while ended.is_none() {
            let now = tokio::time::Instant::now();
            let wait = match deadline {
                Some(deadline) if deadline <= now => break,
                Some(deadline) => (deadline - now).min(MAX_READ_WAIT),
                None => MAX_READ_WAIT,
            };
            ended = own.ended(name, wait).await?;
        }
        timed_out |= ended.is_none();
        let running = ended.is_none().then_some("running");
        outcomes.push(WaitOutcome { name: name.clone(), ended, running });
    }
    Ok(Waited { outcomes, timed_out })
}

/// Returns once no Pod process holds `paths`' lock.
async fn process_gone(paths: &PodPaths) {
    while paths.lock_held() {
        match PidRecord::read(paths).and_then(|r| PidFd::open(r.pid, r.start_time)) {
            Some(process) => process.exited().await,
            // Starting (no pid record yet) or exiting (the lock outlives the
            // process by a moment): look again shortly.
            None => tokio::time::sleep(LOCK_POLL).await,
        }
        if paths.lock_held() {
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

/// How a Pod whose process is gone ended, and whose child it was, from its
/// log.
pub(crate) fn ended(paths: &PodPaths, name: &PodName) -> Result<(Ended, Option<PodName>), WireError> {
    let log = open_log(paths, name)?;
    let state = log.replay().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let last = match log.read_from(state.last_seq).next() {
        Some(record) => Some(record.map_err(|e| WireError::new(e.code(), e.to_string()))?.event),
        None => None,
    };
    let parent = state.identity.and_then(|i| i.parent);
    Ok((Ended::from_last(last.as_ref(), parent.as_ref()), parent))
}
