//! Talking to a Pod over its socket: [`PodClient`], one connection (connect,
//! shake hands, call), and [`Pod`], a named Pod with one typed method per
//! request of `protocol.rs`, each answering in the runtime's error codes
//! (a Pod that does not answer is `pod.not_running` or `pod.unknown`).
//!
//! Adding a request is two steps: its variant in `protocol.rs` (request and
//! reply) and a method here that sends it and matches its reply.

use std::path::Path;
use std::time::Duration;

use pod_proto::{Connection, ProtoError, WireError};
use scope::{Permission, PodName, ScopePath};
use session_log::{LogOptions, SessionLog};

use crate::layout::PodPaths;
use crate::protocol::{PodReply, PodRequest, PodStatus, SpawnRequest, StopGrace};

/// Longest a caller waits to connect and shake hands with a Pod.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PodClient {
    conn: Connection,
}

impl PodClient {
    pub async fn connect(socket: &Path) -> Result<PodClient, ProtoError> {
        let connect = async {
            let mut conn = Connection::connect(socket).await?;
            conn.client_handshake("pod").await?;
            Ok::<_, ProtoError>(conn)
        };
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ProtoError::Timeout(CONNECT_TIMEOUT))??;
        Ok(PodClient { conn })
    }

    /// How long one call may take in all (default: the idle timeout); a
    /// call the Pod holds on purpose (a store wait) needs its own.
    pub fn set_call_limit(&mut self, limit: Duration) {
        self.conn.set_idle_timeout(limit);
    }

    pub async fn call(&mut self, request: &PodRequest) -> Result<PodReply, ProtoError> {
        self.conn.call(request).await
    }

    /// One request on a fresh connection, errors as `WireError`.
    pub async fn call_at(socket: &str, request: &PodRequest) -> Result<PodReply, WireError> {
        PodClient::call_once(socket, request).await.map_err(|e| e.to_wire())
    }

    /// One request on a fresh connection. `ProtoError::Remote` is the Pod's
    /// own answer; every other error means the Pod could not be reached.
    pub async fn call_once(socket: &str, request: &PodRequest) -> Result<PodReply, ProtoError> {
        let mut client = PodClient::connect(Path::new(socket)).await?;
        client.call(request).await
    }

    /// A bounded liveness probe: does a Pod named `expected` answer here?
    pub async fn ping(socket: &Path, limit: Duration) -> Option<(scope::PodName, u32)> {
        let probe = async {
            let mut client = PodClient::connect(socket).await.ok()?;
            match client.call(&PodRequest::Ping).await.ok()? {
                PodReply::Pong { name, pid } => Some((name, pid)),
                _ => None,
            }
        };
        tokio::time::timeout(limit, probe).await.ok().flatten()
    }
}

/// A Pod by name: each request on a fresh connection to its socket.
pub struct Pod<'a> {
    pub paths: &'a PodPaths,
    pub name: &'a PodName,
}

/// The answer to a `Check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub permission: Option<Permission>,
    pub decided_by: String,
}

/// A page of a Pod's session log.
#[derive(Debug, Clone)]
pub struct LogPage {
    pub records: Vec<session_log::Record>,
    pub next_seq: u64,
}

impl Pod<'_> {
    /// One request; a Pod that cannot be reached is `not_running`.
    pub async fn call(&self, request: &PodRequest) -> Result<PodReply, WireError> {
        PodClient::call_once(&self.paths.socket().to_string_lossy(), request).await.map_err(|e| match e {
            ProtoError::Remote(w) => w,
            ProtoError::Timeout(_) => e.to_wire(),
            _ => not_running(self.paths, self.name),
        })
    }

    pub async fn status(&self) -> Result<PodStatus, WireError> {
        match self.call(&PodRequest::Status).await? {
            PodReply::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn check(&self, path: ScopePath, permission: Permission) -> Result<Verdict, WireError> {
        match self.call(&PodRequest::Check { path, permission }).await? {
            PodReply::Verdict { allowed, permission, decided_by } => Ok(Verdict { allowed, permission, decided_by }),
            other => Err(unexpected(&other)),
        }
    }

    /// Spawns a child; its name, pid and enforcement once it is ready.
    pub async fn spawn(
        &self,
        request: SpawnRequest,
    ) -> Result<(PodName, u32, Option<crate::protocol::Enforcement>), WireError> {
        match self.call(&PodRequest::Spawn(request)).await? {
            PodReply::Spawned { child, pid, enforcement, .. } => Ok((child, pid, enforcement)),
            other => Err(unexpected(&other)),
        }
    }

    /// StopPod for `child`: true when its scope was reclaimed now, false
    /// when it had already stopped.
    pub async fn stop_child(&self, child: &PodName, grace: StopGrace) -> Result<bool, WireError> {
        match self.call(&PodRequest::StopChild { child: child.clone(), grace }).await? {
            PodReply::Stopped { reclaimed } => Ok(reclaimed),
            other => Err(unexpected(&other)),
        }
    }

    /// Stops this Pod; how its workload ended.
    pub async fn shutdown(&self, grace: StopGrace) -> Result<session_log::Exit, WireError> {
        match self.call(&PodRequest::Shutdown { grace }).await? {
            PodReply::ShuttingDown { exit } => Ok(exit),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends signal `signal` to the Pod's workload.
    pub async fn signal(&self, signal: i32) -> Result<(), WireError> {
        match self.call(&PodRequest::Signal { signal }).await? {
            PodReply::Ack => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Records from `from_seq`, waiting up to `wait` for the first new one.
    pub async fn log(&self, from_seq: u64, wait: Duration) -> Result<LogPage, WireError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        match self.call(&PodRequest::Log { from_seq, wait_ms }).await? {
            PodReply::Log { records, next_seq } => Ok(LogPage { records, next_seq }),
            other => Err(unexpected(&other)),
        }
    }
}

/// The Pod this process's workload runs in (`POD_SOCKET`), asked about
/// itself or its descendants in place of reading the stores' `data/`,
/// which an enforced workload cannot read.
pub struct OwnPod<'a> {
    pub socket: &'a Path,
}

impl OwnPod<'_> {
    async fn call(&self, request: &PodRequest) -> Result<PodReply, WireError> {
        PodClient::call_once(&self.socket.to_string_lossy(), request).await.map_err(|e| match e {
            ProtoError::Remote(w) => w,
            other => WireError::new(
                "pod.own_unreachable",
                format!("the pod this workload runs in does not answer at {}: {other}", self.socket.display()),
            ),
        })
    }

    /// How `name` ended, waiting up to `wait` (the Pod bounds it);
    /// `None` while it runs.
    pub async fn ended(&self, name: &PodName, wait: Duration) -> Result<Option<crate::Ended>, WireError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        match self.call(&PodRequest::Ended { name: name.clone(), wait_ms }).await? {
            PodReply::Ended(ended) => Ok(ended),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of `name`'s workload output from `from`.
    pub async fn output(
        &self,
        name: &PodName,
        from: Option<crate::protocol::OutputCursor>,
    ) -> Result<crate::protocol::OutputPage, WireError> {
        match self.call(&PodRequest::Output { name: name.clone(), from }).await? {
            PodReply::Output(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of `name`'s session log from `from_seq`, waiting up to
    /// `wait` for a new record; and whether `name` was running.
    pub async fn log_of(&self, name: &PodName, from_seq: u64, wait: Duration) -> Result<(LogPage, bool), WireError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        match self.call(&PodRequest::LogOf { name: name.clone(), from_seq, wait_ms }).await? {
            PodReply::LogOf { records, next_seq, running } => Ok((LogPage { records, next_seq }, running)),
            other => Err(unexpected(&other)),
        }
    }
}

/// The error for a Pod that does not answer: unknown here, a child its
/// parent spawns again, or a top-level Pod `pod resume` brings back.
pub fn not_running(paths: &PodPaths, name: &PodName) -> WireError {
    if !paths.session_log().exists() {
        return WireError::new("pod.unknown", format!("no pod named {name} here"));
    }
    // A child is not resumed but spawned again by its parent: say so. Its
    // log says whose child it was (read only when nobody holds it).
    let parent = (!paths.lock_held())
        .then(|| SessionLog::open(paths.session_log(), LogOptions::default()).and_then(|log| log.replay()).ok())
        .flatten()
        .and_then(|state| state.identity)
        .and_then(|identity| identity.parent);
    match parent {
        Some(parent) => WireError::new(
            "pod.not_running",
            format!("pod {name} is not running; it was a child of {parent} (`pod spawn {name} --parent {parent}` starts it again)"),
        ),
        None => {
            WireError::new("pod.not_running", format!("pod {name} is not running (`pod resume {name}` brings it back)"))
        }
    }
}

/// The error for an answer of the wrong kind.
pub fn unexpected(reply: &PodReply) -> WireError {
    WireError::new("pod.unexpected_reply", format!("unexpected reply from the pod: {reply:?}"))
}
