//! The registry client used by the Pod runtime and the command line.
//!
//! `Client::connect` starts the daemon on demand: when the socket is absent
//! or refuses, it spawns `pod-registry serve` (next to the current
//! executable, or `$POD_REGISTRY_BIN`) in its own session with output to
//! `run/registry/log`, then retries for a bounded time. Two clients doing so
//! at once end with one daemon: the daemon's lock decides, the loser exits.
//!
//! [`Link`] is the one call path that survives daemon restarts and idle
//! timeouts: a request that was never sent is sent again on a fresh
//! connection (starting the daemon if needed), and one whose answer was lost
//! is sent again only when [`Request::safe_to_repeat`] says so (a read, or a
//! mutation with its request id, which makes the registry answer it the
//! way it answered the first).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pod_proto::paths::DirError;
use pod_proto::{Connection, ProtoError, RuntimeDirs, WireError};
use scope::{Permission, PodName, ScopePath, ScopeRule};

use tracing::Instrument;

use crate::limits::START_TIMEOUT;
use crate::wire::{CheckReply, Reclaimed, Reply, Request, RequestId, StreamId, WireRule};
use crate::Allocation;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry refused the request; `code` says why.
    #[error("{}", .0.message)]
    Refused(WireError),
    #[error(transparent)]
    Proto(ProtoError),
    #[error(transparent)]
    Dirs(#[from] DirError),
    #[error("cannot start the registry daemon: {0}")]
    Start(String),
    #[error("the registry answered a {request} request with an unexpected reply")]
    UnexpectedReply { request: &'static str },
    /// The connection broke after the request was sent, and the request is
    /// not safe to send again: whether it took effect is unknown.
    #[error("the connection to the registry broke before its answer arrived ({0}); the outcome is unknown")]
    OutcomeUnknown(ProtoError),
    #[error("cannot draw a request stream id: {0}")]
    Random(std::io::Error),
}

impl ClientError {
    pub fn code(&self) -> &str {
        match self {
            ClientError::Refused(w) => &w.code,
            ClientError::Proto(e) => e.code(),
            ClientError::Dirs(e) => e.code(),
            ClientError::Start(_) => "registry.start_failed",
            ClientError::UnexpectedReply { .. } => "registry.unexpected_reply",
            ClientError::OutcomeUnknown(_) => "registry.outcome_unknown",
            ClientError::Random(_) => "registry.random",
        }
    }
}

impl From<ProtoError> for ClientError {
    fn from(e: ProtoError) -> ClientError {
        match e {
            ProtoError::Remote(w) => ClientError::Refused(w),
            other => ClientError::Proto(other),
        }
    }
}

/// What a top-level (or restored) Pod registers.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub name: Option<PodName>,
    /// The caller's own pid or one of a process it started; the registry
    /// reads its start time from the kernel.
    pub pid: u32,
    pub socket: String,
    pub session: String,
    pub allow: Vec<ScopeRule>,
    pub deny: Vec<ScopeRule>,
    /// A restored Pod's layers (children it believes alive).
    pub layers: BTreeMap<PodName, Vec<ScopeRule>>,
}

/// One connection to the registry. Calls are sequential; open one client
/// per concurrent caller. Mutations get request ids from the client's own
/// stream (see `answers`); a client never resends (that is [`Link`]'s job).
pub struct Client {
    conn: Connection,
    ids: Ids,
}

/// The request ids of one stream: a random stream id, numbered from 1.
#[derive(Debug, Clone)]
pub struct Ids {
    stream: StreamId,
    last: u64,
}

impl Ids {
    pub fn new() -> Result<Ids, ClientError> {
        Ok(Ids { stream: StreamId::random().map_err(ClientError::Random)?, last: 0 })
    }

    pub fn next_id(&mut self) -> RequestId {
        self.last += 1;
        RequestId { stream: self.stream, seq: self.last }
    }

    /// `request` with the next id if it is a mutation that has none.
    fn stamp(&mut self, request: Request) -> Request {
        if request.is_mutation() && request.id().is_none() {
            let id = self.next_id();
            return request.with_id(id);
        }
        request
    }
}

/// How one attempt of a call failed.
enum Attempt {
    /// The request never reached the registry (connect, handshake or the
    /// write failed): sending it again is always safe.
    NotSent(ClientError),
    /// Sent, and the connection broke before the answer.
    Lost(ProtoError),
    /// Anything else: final.
    Failed(ClientError),
}

fn wire(rules: &[ScopeRule]) -> Vec<WireRule> {
    rules.iter().map(WireRule::from).collect()
}

/// No daemon serves the socket: none ever did, or the one that did is gone
/// or going (a dying daemon's listener can still accept, then resets).
fn is_absent(e: &ProtoError) -> bool {
    match e {
        ProtoError::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::NotFound
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
        ),
        ProtoError::Closed => true,
        _ => false,
    }
}

/// How long a client waits before it starts a daemon again after the one it
/// started exited quietly: that one lost the lock race to a daemon that was
/// dying at that moment (or to one that is about to serve). A daemon that is
/// still running is never doubled: it is opening its store, and it either
/// serves or says why not.
const RESPAWN_EVERY: Duration = Duration::from_millis(250);

impl Client {
    /// Connects, starting the daemon (`pod-registry serve --detach`) if none
    /// answers.
    pub async fn connect(dirs: &RuntimeDirs) -> Result<Client, ClientError> {
        Client::connect_starting(dirs, &DaemonCommand::standalone()?).await
    }

    /// Connects, starting the daemon with `daemon` if none answers. The
    /// `pod` binary serves the registry itself (`pod registry serve
    /// --detach`), so a user needs only that one binary.
    pub async fn connect_starting(dirs: &RuntimeDirs, daemon: &DaemonCommand) -> Result<Client, ClientError> {
        dirs.ensure()?;
        match Client::connect_running(dirs).await {
            Err(ClientError::Proto(e)) if is_absent(&e) => {}
            other => return other,
        }
        let mut started = spawn_daemon(dirs, daemon)?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut respawn_at = tokio::time::Instant::now() + RESPAWN_EVERY;
        let mut backoff = Duration::from_millis(1);
        loop {
            match Client::connect_running(dirs).await {
                Err(ClientError::Proto(e)) if is_absent(&e) && tokio::time::Instant::now() < deadline => {
                    // The daemon we started refused to serve (a damaged
                    // store, a layout it refuses): say why at once rather
                    // than wait and start it again. One that exits 0 lost
                    // the lock to another, which is about to serve.
                    match started.exited() {
                        Some(status) if !status.success() => {
                            return Err(refusal_of_daemon(status, &dirs.registry_log()));
                        }
                        Some(_) => {}
                        None => respawn_at = tokio::time::Instant::now() + RESPAWN_EVERY,
                    }
                    if tokio::time::Instant::now() >= respawn_at {
                        started = spawn_daemon(dirs, daemon)?;
                        respawn_at = tokio::time::Instant::now() + RESPAWN_EVERY;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(ClientError::Proto(e)) if is_absent(&e) => {
                    return Err(ClientError::Start(format!(
                        "no daemon answered on {} within {START_TIMEOUT:?}; see {}",
                        dirs.registry_socket().display(),
                        dirs.registry_log().display()
                    )))
                }
                other => return other,
            }
        }
    }

    /// Connects to a running daemon; never starts one.
    pub async fn connect_running(dirs: &RuntimeDirs) -> Result<Client, ClientError> {
        Client::connect_socket(&dirs.registry_socket()).await
    }

    pub async fn connect_socket(socket: &Path) -> Result<Client, ClientError> {
        let mut conn = Connection::connect(socket).await?;
        conn.client_handshake(&client_description()).await?;
        Ok(Client { conn, ids: Ids::new()? })
    }

    /// Sends any request (a mutation without an id gets the next one of
    /// this client's stream); the typed methods below are thin wrappers.
    pub async fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let request = self.ids.stamp(request.clone());
        match self.attempt(&request).await {
            Ok(reply) => Ok(reply),
            Err(Attempt::NotSent(e) | Attempt::Failed(e)) => Err(e),
            Err(Attempt::Lost(e)) => Err(ClientError::Proto(e)),
        }
    }

    /// One exchange, telling a request that never left from one whose
    /// answer was lost.
    async fn attempt(&mut self, request: &Request) -> Result<Reply, Attempt> {
        let span = tracing::debug_span!("registry_call");
        match self.conn.call::<Request, Reply>(request).instrument(span).await {
            Ok(reply) => Ok(reply),
            Err(ProtoError::Remote(w)) => Err(Attempt::Failed(ClientError::Refused(w))),
            Err(e @ ProtoError::NotSent(_)) => Err(Attempt::NotSent(ClientError::Proto(e))),
            Err(e @ (ProtoError::Closed | ProtoError::Io(_) | ProtoError::Truncated { .. })) => Err(Attempt::Lost(e)),
            Err(e) => Err(Attempt::Failed(ClientError::Proto(e))),
        }
    }

    pub async fn register(&mut self, reg: &Registration) -> Result<Allocation, ClientError> {
        let name = reg.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        let request = Request::Register {
            id: None,
            name,
            pid: reg.pid,
            socket: reg.socket.clone(),
            session: reg.session.clone(),
            allow: wire(&reg.allow),
            deny: wire(&reg.deny),
            layers: reg.layers.iter().map(|(c, r)| (c.to_string(), wire(r))).collect(),
            scratch: Vec::new(),
        };
        match self.call(&request).await? {
            Reply::Allocation(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply { request: "register" }),
        }
    }

    /// Returns the parent's new fence and the reserved child.
    pub async fn delegate(
        &mut self,
        parent: &PodName,
        child: &PodName,
        rules: &[ScopeRule],
        deny: &[ScopeRule],
    ) -> Result<(u64, Allocation), ClientError> {
        let request = Request::Delegate {
            id: None,
            parent: parent.to_string(),
            child: child.to_string(),
            rules: wire(rules),
            deny: wire(deny),
        };
        match self.call(&request).await? {
            Reply::Delegated { parent_fence, child } => Ok((parent_fence, child)),
            _ => Err(ClientError::UnexpectedReply { request: "delegate" }),
        }
    }

    pub async fn adopt(
        &mut self,
        name: &PodName,
        pid: u32,
        session: &str,
        socket: &str,
    ) -> Result<Allocation, ClientError> {
        let request = Request::Adopt {
            id: None,
            name: name.to_string(),
            pid,
            session: session.to_string(),
            socket: socket.to_string(),
            scratch: Vec::new(),
        };
        match self.call(&request).await? {
            Reply::Allocation(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply { request: "adopt" }),
        }
    }

    pub async fn reclaim(&mut self, parent: &PodName, child: &PodName) -> Result<Reclaimed, ClientError> {
        let request = Request::Reclaim { id: None, parent: parent.to_string(), child: child.to_string() };
        match self.call(&request).await? {
            Reply::Reclaimed(r) => Ok(r),
            _ => Err(ClientError::UnexpectedReply { request: "reclaim" }),
        }
    }

    pub async fn release(&mut self, name: &PodName) -> Result<Reclaimed, ClientError> {
        match self.call(&Request::Release { id: None, name: name.to_string() }).await? {
            Reply::Reclaimed(r) => Ok(r),
            _ => Err(ClientError::UnexpectedReply { request: "release" }),
        }
    }

    pub async fn get(&mut self, name: &PodName) -> Result<Option<Allocation>, ClientError> {
        match self.call(&Request::Get { name: name.to_string() }).await? {
            Reply::Found(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply { request: "get" }),
        }
    }

    pub async fn by_session(&mut self, session: &str) -> Result<Option<Allocation>, ClientError> {
        match self.call(&Request::BySession { session: session.to_string() }).await? {
            Reply::Found(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply { request: "by_session" }),
        }
    }

    /// Every allocation, in name order (fetched page by page).
    pub async fn list(&mut self) -> Result<Vec<Allocation>, ClientError> {
        let mut all: Vec<Allocation> = Vec::new();
        loop {
            let after = all.last().map(|a| a.name.to_string());
            match self.call(&Request::List { after }).await? {
                Reply::Page { allocations, more } => {
                    all.extend(allocations);
                    if !more {
                        return Ok(all);
                    }
                }
                _ => return Err(ClientError::UnexpectedReply { request: "list" }),
            }
        }
    }

    /// May `name` access `path` with `permission`, and which rule decides.
    pub async fn check(
        &mut self,
        name: &PodName,
        path: &ScopePath,
        permission: Permission,
    ) -> Result<CheckReply, ClientError> {
        let request = Request::Check { name: name.to_string(), path: path.to_string(), permission };
        match self.call(&request).await? {
            Reply::Check(c) => Ok(c),
            _ => Err(ClientError::UnexpectedReply { request: "check" }),
        }
    }

    /// Forgets Pods whose process is gone; returns their names.
    pub async fn sweep(&mut self) -> Result<Vec<PodName>, ClientError> {
        match self.call(&Request::Sweep).await? {
            Reply::Swept { gone } => Ok(gone),
            _ => Err(ClientError::UnexpectedReply { request: "sweep" }),
        }
    }

    /// Waits (bounded by the registry) for `name`'s record to change past
    /// `after_fence`; returns it as it is then (`None`: gone).
    pub async fn watch(&mut self, name: &PodName, after_fence: u64) -> Result<Option<Allocation>, ClientError> {
        match self.call(&Request::Watch { name: name.to_string(), after_fence }).await? {
            Reply::Watched(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply { request: "watch" }),
        }
    }
}

/// Most attempts of one call through a [`Link`].
pub const MAX_ATTEMPTS: usize = 5;
/// Pause before the n-th attempt: n times this.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The one call path to the registry that outlives connections: it
/// reconnects (starting the daemon if none answers) and sends a request
/// again when that is safe (see the module comment). Calls are sequential;
/// the request ids of a link form one stream, kept across reconnects, so a
/// request sent again carries the id it had.
pub struct Link {
    dirs: RuntimeDirs,
    /// How to start the daemon when none answers; `None` inside a
    /// workload, which never starts one (it would die with the workload)
    /// and cannot check or create the directories (at `full` it sees
    /// `data/` as an empty read-only folder): its Pod made them ready.
    daemon: Option<DaemonCommand>,
    conn: Option<Client>,
    ids: Ids,
}

impl Link {
    /// A link that connects on its first call.
    pub fn new(dirs: &RuntimeDirs, daemon: DaemonCommand) -> Result<Link, ClientError> {
        Ok(Link { dirs: dirs.clone(), daemon: Some(daemon), conn: None, ids: Ids::new()? })
    }

    /// A link from inside a workload: to a running daemon only.
    pub fn running_only(dirs: &RuntimeDirs) -> Result<Link, ClientError> {
        Ok(Link { dirs: dirs.clone(), daemon: None, conn: None, ids: Ids::new()? })
    }

    async fn open(&self) -> Result<Client, ClientError> {
        match &self.daemon {
            Some(daemon) => Client::connect_starting(&self.dirs, daemon).await,
            None => Client::connect_running(&self.dirs).await,
        }
    }

    /// Connects now (so that a first call does not pay for it).
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        if self.conn.is_none() {
            self.conn = Some(self.open().await?);
        }
        Ok(())
    }

    /// Sends `request` (a mutation gets this link's next request id) and
    /// returns its answer, reconnecting and resending as far as is safe,
    /// at most [`MAX_ATTEMPTS`] times.
    pub async fn call(&mut self, request: Request) -> Result<Reply, ClientError> {
        let request = self.ids.stamp(request);
        let mut last: Option<ClientError> = None;
        // Whether some attempt reached the registry: if the last one fails
        // too, the request may have taken effect.
        let mut sent = false;
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                // A daemon restarting needs a moment; bounded by MAX_ATTEMPTS.
                tokio::time::sleep(RETRY_PAUSE * attempt as u32).await;
            }
            let mut client = match self.conn.take() {
                Some(c) => c,
                None => match self.open().await {
                    Ok(c) => c,
                    // A daemon that accepted and then went away (it was
                    // stopping) is started again on the next attempt.
                    Err(ClientError::Proto(e)) if is_absent(&e) => {
                        last = Some(ClientError::Proto(e));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match client.attempt(&request).await {
                Ok(reply) => {
                    self.conn = Some(client);
                    return Ok(reply);
                }
                Err(Attempt::NotSent(e)) => {
                    tracing::info!(attempt, error = %e, "registry request not sent; sending it on a fresh connection");
                    last = Some(e);
                }
                Err(Attempt::Lost(e)) if request.safe_to_repeat() => {
                    tracing::info!(attempt, error = %e, id = ?request.id(), "registry answer lost; sending the request again");
                    sent = true;
                    last = Some(ClientError::Proto(e));
                }
                Err(Attempt::Lost(e)) => return Err(ClientError::OutcomeUnknown(e)),
                // A daemon that is stopping refuses before doing anything.
                Err(Attempt::Failed(ClientError::Refused(w))) if w.code == "registry.shutting_down" => {
                    last = Some(ClientError::Refused(w));
                }
                Err(Attempt::Failed(e)) => {
                    if !matches!(e, ClientError::Proto(_)) {
                        self.conn = Some(client);
                    }
                    return Err(e);
                }
            }
        }
        match last {
            Some(ClientError::Proto(e)) if sent && request.is_mutation() => Err(ClientError::OutcomeUnknown(e)),
            Some(e) => Err(e),
            None => Err(ClientError::Start("no attempt was made".into())),
        }
    }
}

fn client_description() -> String {
    let exe = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    format!("{} (pid {})", exe.unwrap_or_else(|| "unknown".into()), std::process::id())
}

/// `$POD_REGISTRY_BIN`, else `pod-registry` next to the current executable
/// (or one level up, where cargo puts binaries next to test executables).
fn daemon_binary() -> Result<PathBuf, ClientError> {
    if let Some(bin) = std::env::var_os("POD_REGISTRY_BIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let exe =
        std::env::current_exe().map_err(|e| ClientError::Start(format!("cannot find the current executable: {e}")))?;
    let dir = exe.parent().ok_or_else(|| ClientError::Start("the current executable has no directory".into()))?;
    [dir.join("pod-registry"), dir.join("../pod-registry")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| ClientError::Start(format!("no pod-registry next to {}; set POD_REGISTRY_BIN", exe.display())))
}

/// How to start the daemon: a program and the arguments that select its
/// `serve` command; `--detach --run-dir R --data-dir D` are appended.
#[derive(Debug, Clone)]
pub struct DaemonCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl DaemonCommand {
    /// The `pod-registry` binary (see `daemon_binary`).
    pub fn standalone() -> Result<DaemonCommand, ClientError> {
        Ok(DaemonCommand { program: daemon_binary()?, args: vec!["serve".into()] })
    }
}

/// A daemon this client started, and how it ended once it did.
struct Started {
    exit: std::sync::mpsc::Receiver<std::process::ExitStatus>,
    status: Option<std::process::ExitStatus>,
}

impl Started {
    /// Its exit status once it has exited; `None` while it runs.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.exit.try_recv().ok();
        }
        self.status
    }
}

/// Most bytes read from the end of the daemon's log for its last line.
const LOG_TAIL_BYTES: u64 = 4096;
/// Most characters of that line repeated in an error.
const MAX_LAST_LINE_CHARS: usize = 400;

/// Why a daemon this client started exited without serving, in its own
/// words: the last line of its log, which is its error line (`PROGRAM:
/// MESSAGE [CODE]`), so the code it refused with (`registry.corrupt`, a
/// layout's code, ...) is the one the caller gets. Bounded and escaped.
fn refusal_of_daemon(status: std::process::ExitStatus, log: &Path) -> ClientError {
    let line = last_line(log).unwrap_or_default();
    let words = line.split_once(": ").map_or(
        line.as_str(),
        |(program, rest)| {
            if program.contains(' ') {
                line.as_str()
            } else {
                rest
            }
        },
    );
    let coded = words.strip_suffix(']').and_then(|w| w.rsplit_once(" [")).filter(|(_, code)| {
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
    });
    let log = log.display();
    match coded {
        Some((message, code)) => ClientError::Refused(WireError::new(
            code,
            format!(
                "the registry daemon did not start: {} (its log: {log})",
                scope::sanitize(message, MAX_LAST_LINE_CHARS)
            ),
        )),
        None => ClientError::Start(format!(
            "the daemon exited ({status}) without serving: {} (its log: {log})",
            scope::sanitize(&line, MAX_LAST_LINE_CHARS)
        )),
    }
}

/// The last line of a log, read from at most its last [`LOG_TAIL_BYTES`].
fn last_line(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES))).ok()?;
    let mut bytes = Vec::new();
    file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string())
}

fn spawn_daemon(dirs: &RuntimeDirs, daemon: &DaemonCommand) -> Result<Started, ClientError> {
    let bin = &daemon.program;
    let log_path = dirs.registry_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600) // owner-only, like every file of the runtime
        .open(&log_path)
        .map_err(|e| ClientError::Start(format!("cannot open {}: {e}", log_path.display())))?;
    let log_err = log.try_clone().map_err(|e| ClientError::Start(format!("cannot duplicate the log handle: {e}")))?;
    let mut child = Command::new(bin)
        .args(&daemon.args)
        .args(["--detach", "--run-dir"])
        .arg(&dirs.run)
        .arg("--data-dir")
        .arg(&dirs.data)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| ClientError::Start(format!("cannot run {}: {e}", bin.display())))?;
    tracing::info!(pid = child.id(), bin = %bin.display(), "started the registry daemon");
    // The daemon stays our child until it exits; reap it then so it never
    // lingers as a zombie, and say how it ended.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            // The client may have stopped waiting long ago.
            let _ = tx.send(status);
        }
    });
    Ok(Started { exit: rx, status: None })
}
