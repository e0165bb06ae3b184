//! The Pod process (`pod __pod NAME`, or `pod __pod --standby` started
//! ahead by a spawning parent; both started by `launch`).
//!
//! Startup does, in order: take the Pod's lock (one process per Pod name),
//! decide a new Pod's scope and level from its launch request, then at once
//! (1) open the session log, take the scope in the registry (register,
//! adopt, or re-register with layers on resume, recording that durably
//! and pruning unreachable children), and (2) prepare a new Pod's
//! workload, parked before its exec; then, together, bind the socket,
//! record a new Pod's creation in its log and its workload's containment
//! in the registry; release the workload, while the watch on the
//! allocation starts, and only then report ready on stdout. Any failure
//! before "ready" undoes what was taken (a parked workload is cancelled:
//! nothing of it ran) and is reported as the launch error. The layer's
//! coordination store opens once the Pod serves (`kv::KvHandle`).

pub mod authorize;
pub mod caller;
pub mod enforcement;
pub mod kv;
pub mod lease;
mod output;
pub mod owner;
pub mod reads;
pub mod server;
pub mod watch;
pub(crate) mod workload;

pub use workload::HELPER_SUBCOMMAND;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use pod_proto::{RuntimeDirs, WireError};
use scope::{PodName, Scope};
use session_log::{Event, LogOptions, RemovalReason, SessionLog};
use tokio::sync::mpsc;

use crate::launch::{LaunchMode, LaunchOutcome, LaunchRequest, MAX_LAUNCH_BYTES};
use crate::layout::PodPaths;
use crate::process::owner::{Owner, OwnerMsg};
use crate::registry_link::Registry;

/// Longest the process waits at exit for connections to deliver replies.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Depth of the owner's queue; senders wait when it is full.
const OWNER_QUEUE: usize = 256;

/// Entry point of the hidden `__pod` command. Exit code 0 after a clean
/// shutdown, 1 when startup failed (the reason went to stdout).
pub fn main(name: Option<&str>) -> std::process::ExitCode {
    // A Pod outlives the terminal and the command that started it.
    if let Err(e) = rustix::process::setsid() {
        tracing::debug!(error = %e, "setsid failed (already a session leader)");
    }
    // Before the request: a standby has it ready when the request comes.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report_failure(WireError::new("pod.runtime", format!("cannot start the async runtime: {e}"))),
    };
    let request = match name {
        Some(name) => read_request(Some(name)),
        None => standby(),
    };
    let request = match request {
        Ok(Some(r)) => r,
        // A standby whose parent went away without using it.
        Ok(None) => return std::process::ExitCode::SUCCESS,
        Err(e) => return report_failure(e),
    };
    let (code, lock) = runtime.block_on(run(request));
    // The Pod's lock says "this Pod's process is still here" to every other
    // process (resume, rm, read commands that open the log directly). It is
    // released only after the runtime, and with it every task holding the
    // session log, is gone, so nobody finds the lock free while sled still
    // holds the database. A blocking log read still waiting (a follower's
    // long-poll) gets a bounded time; the kernel frees the rest at exit.
    runtime.shutdown_timeout(DRAIN_TIMEOUT);
    drop(lock);
    code
}

/// The launch request on stdin, which must name `name` when one was given.
/// `None`: stdin closed with nothing on it (a standby nobody used).
fn read_request(name: Option<&str>) -> Result<Option<LaunchRequest>, WireError> {
    let mut body = Vec::new();
    std::io::stdin()
        .take(MAX_LAUNCH_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| WireError::new("launch.io", format!("cannot read the launch request: {e}")))?;
    if body.is_empty() && name.is_none() {
        return Ok(None);
    }
    if body.len() as u64 > MAX_LAUNCH_BYTES {
        return Err(WireError::new("launch.too_large", format!("launch request over {MAX_LAUNCH_BYTES} bytes")));
    }
    let request: LaunchRequest = serde_json::from_slice(&body)
        .map_err(|e| WireError::new("launch.garbled", format!("launch request does not parse: {e}")))?;
    if let Some(name) = name.filter(|n| request.name.as_str() != *n) {
        return Err(WireError::new("launch.garbled", format!("launch request names {}, not {name}", request.name)));
    }
    Ok(Some(request))
}

/// A standby Pod process (`pod __pod --standby`), started by a spawning
/// Pod ahead of its next spawn: what does not depend on the name (loading
/// this binary, detecting the machine's support) is done before the
/// request comes; then its diagnostics go to the named Pod's own log, and
/// its failpoints are armed for that name, as if started for it.
fn standby() -> Result<Option<LaunchRequest>, WireError> {
    if let Err(e) = enforcement::support() {
        tracing::debug!(error = %e, "support detection failed ahead of a launch; the launch reports it");
    }
    let Some(request) = read_request(None)? else { return Ok(None) };
    let dirs = RuntimeDirs::from_env().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let log_file = PodPaths::new(&dirs, &request.name).pod_log();
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&log_file)
    }
    .map_err(|e| WireError::new("launch.io", format!("cannot open {}: {e}", log_file.display())))?;
    rustix::stdio::dup2_stderr(&log)
        .map_err(|e| WireError::new("launch.io", format!("cannot write diagnostics to {}: {e}", log_file.display())))?;
    pod_proto::failpoints::arm(request.name.as_str()).map_err(|e| WireError::new("cli.failpoints", e))?;
    Ok(Some(request))
}

fn report(outcome: &LaunchOutcome) {
    let mut stdout = std::io::stdout().lock();
    let line = serde_json::to_string(outcome).unwrap_or_else(|_| "{}".into());
    if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
        tracing::warn!("the launcher is gone; nobody hears the launch outcome");
    }
}

fn report_failure(e: WireError) -> std::process::ExitCode {
    tracing::error!(code = %e.code, "{}", e.message);
    report(&LaunchOutcome::Failed(e));
    std::process::ExitCode::FAILURE
}

async fn run(request: LaunchRequest) -> (std::process::ExitCode, Option<std::fs::File>) {
    let (tx, rx) = mpsc::channel(OWNER_QUEUE);
    let started = match startup(request, tx.clone()).await {
        Ok(s) => s,
        Err(e) => return (report_failure(e), None),
    };
    let Started { mut owner, listener, log, lock } = started;
    // Opened once the Pod serves: a store's open is on no launch's path;
    // a kv call made meanwhile waits for it.
    let kv = kv::KvHandle::open(owner.paths.data_dir.join(kv::KV_DIR));
    owner.set_kv(kv.clone());
    let enforcement = owner.enforcement().cloned();
    let socket = owner.paths.socket().to_string_lossy().into_owned();
    let pid_file = owner.paths.pid_file();
    let tmp_paths = owner.paths.clone();
    let (hurry_tx, hurry_rx) = tokio::sync::watch::channel(false);
    owner.set_hurry(hurry_rx);
    let (name, dirs, registry, lease) = (owner.name.clone(), owner.paths.dirs.clone(), owner.registry(), owner.lease());
    let parent = owner.parent.clone();
    let owner_task = tokio::spawn(owner.run(rx));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let ctx = server::ConnectionContext {
        name,
        parent,
        dirs,
        registry,
        lease,
        owner: tx.clone(),
        log,
        closing: closing_rx,
        done: done_tx,
        kv,
    };
    let server = tokio::spawn(pod_proto::server::serve(
        listener,
        async move {
            let _ = stop_rx.await;
        },
        move |conn, peer| server::handle_connection(conn, peer, ctx.clone()),
    ));
    spawn_signal_handler(tx.clone(), hurry_tx);
    report(&LaunchOutcome::Ready { pid: std::process::id(), socket, enforcement });
    drop(tx);
    if let Err(e) = owner_task.await {
        tracing::error!(error = %e, "owner task failed");
    }
    // Stop accepting, tell idle connections to close, and let the ones
    // holding a reply (to Shutdown, StopChild) deliver it before exiting.
    let _ = stop_tx.send(());
    if let Err(e) = server.await {
        tracing::error!(error = %e, "server task failed");
    }
    let _ = closing_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv()).await.is_err() {
        tracing::warn!(?DRAIN_TIMEOUT, "connections still open at exit");
    }
    if let Err(e) = std::fs::remove_file(&pid_file) {
        tracing::debug!(error = %e, "pid file already gone");
    }
    enforcement::remove_tmpdir(&tmp_paths);
    (std::process::ExitCode::SUCCESS, Some(lock))
}

/// SIGTERM and SIGINT are a clean shutdown; a second one stops waiting
/// (children and workload are killed, failed reclaims are not retried).
/// The handlers are registered here, synchronously, before the Pod reports
/// ready: a signal that arrives right after `pod start` returns must not
/// find the default action (death without a callback) still in place.
fn spawn_signal_handler(tx: mpsc::Sender<OwnerMsg>, hurry: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; SIGTERM will kill the pod uncleanly");
        return;
    };
    tokio::spawn(async move {
        for msg in [OwnerMsg::Terminate, OwnerMsg::TerminateNow] {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let now = matches!(msg, OwnerMsg::TerminateNow);
            if now {
                tracing::warn!("second signal: the shutdown stops waiting");
                hurry.send_replace(true);
            }
            if tx.send(msg).await.is_err() {
                tracing::debug!("owner already gone at a signal");
                return;
            }
        }
    });
}

struct Started {
    owner: Owner,
    listener: pod_proto::server::Bound,
    log: Arc<SessionLog>,
    lock: std::fs::File,
}

fn wire<E: std::fmt::Display>(code: &str) -> impl Fn(E) -> WireError + '_ {
    move |e| WireError::new(code, e.to_string())
}

async fn startup(request: LaunchRequest, tx: mpsc::Sender<OwnerMsg>) -> Result<Started, WireError> {
    let name = request.name.clone();
    let dirs = RuntimeDirs::from_env().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    dirs.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let paths = PodPaths::new(&dirs, &name);
    paths.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let lock = take_lock(&paths, &name)?;
    // From here on this process is recognized as the Pod's own (its calls
    // to its parent, see `caller.rs`). A failed start takes it back: the
    // record must never outlive the process it names.
    write_pid_file(&paths)?;
    let pid_file = paths.pid_file();
    let started = startup_locked(request, paths, lock, tx).await;
    if started.is_err() {
        if let Err(e) = std::fs::remove_file(&pid_file) {
            tracing::warn!(error = %e, "cannot remove the pid file of a failed start");
        }
    }
    started
}

async fn startup_locked(
    request: LaunchRequest,
    paths: PodPaths,
    lock: std::fs::File,
    tx: mpsc::Sender<OwnerMsg>,
) -> Result<Started, WireError> {
    // Decided before anything is taken: a refusal changes nothing.
    let creation = creation(&request, &paths)?;
    let early = creation.as_ref().and_then(|c| EarlyWorkload::of(&request, c));
    let input = WorkloadInput::of(request.cwd.clone(), request.env.clone(), request.limits);
    let data_dir = paths.data_dir.clone();
    // A new Pod's workload is prepared (parked before its exec) while its
    // scope is taken: the keeper's start and the session log's open both
    // wait mostly on the kernel, so together they take the longer of the
    // two, not the sum. It is recorded and released only once the scope
    // is, and cancelled (nothing of it ran) when taking the scope fails.
    let ((scoped, fresh), prepared) =
        tokio::join!(take_scope(request, creation, &paths, tx.clone()), prepare_workload(early, &paths, input));
    let started = match (scoped, prepared) {
        (Ok(scoped), Ok(prepared)) => serve(scoped, &paths, lock, prepared, tx).await,
        (Err(e), Ok(Some(prepared))) => {
            prepared.cancel().await;
            Err(e)
        }
        (Err(e), _) => Err(e),
        (Ok(scoped), Err(e)) => {
            abandon(scoped.owner).await;
            Err(e)
        }
    };
    // A log this launch created holds nothing but what this launch wrote; if
    // the launch fails it goes too, so a failed start or spawn leaves no Pod
    // behind (and the name can be used again).
    if started.is_err() && fresh {
        if let Err(rm) = std::fs::remove_dir_all(&data_dir) {
            tracing::warn!(error = %rm, dir = %data_dir.display(), "cannot remove a failed launch's session log");
        }
    }
    started
}

/// A new Pod's scope, level and the plan its workload is enforced with
/// (start and spawn), from its launch request alone. A child's level was
/// decided by its parent before the delegate (never below its own); this
/// plans again at exactly that level.
struct Creation {
    scope: Scope,
    enforced: pod_client::protocol::Enforcement,
    plan: pod_sandbox::Choice,
}

fn creation(request: &LaunchRequest, paths: &PodPaths) -> Result<Option<Creation>, WireError> {
    let scope = match &request.mode {
        LaunchMode::Resume => return Ok(None),
        LaunchMode::Start { allow, deny, .. } => Scope::new(allow.clone(), deny.clone()),
        LaunchMode::Child { rules, .. } => Scope::new(rules.clone(), Vec::new()),
    }
    .map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let (enforced, plan) = enforcement::choose(
        enforcement::support()?,
        scope.snapshot(),
        &request.enforce,
        None,
        &paths.dirs,
        &request.name,
    )?;
    Ok(Some(Creation { scope, enforced, plan }))
}

/// What a new Pod's workload is started as, known before its scope is
/// taken. A resumed Pod has none: it does not re-run its workload.
struct EarlyWorkload {
    command: Vec<String>,
    plan: pod_sandbox::Choice,
    parent: Option<PodName>,
}

impl EarlyWorkload {
    fn of(request: &LaunchRequest, creation: &Creation) -> Option<EarlyWorkload> {
        let (command, parent) = match &request.mode {
            LaunchMode::Start { workload, .. } => (workload.clone()?, None),
            LaunchMode::Child { workload, parent, .. } => (workload.clone()?, Some(parent.clone())),
            LaunchMode::Resume => return None,
        };
        Some(EarlyWorkload { command, plan: creation.plan.clone(), parent })
    }
}

/// A Pod whose scope is taken, with its session log open. A new Pod's
/// first batch (who it is, its scope) is not in the log yet: `serve`
/// records it while the registry records the workload's containment.
struct Scoped {
    owner: Owner,
    log: Arc<SessionLog>,
    creation: Vec<Event>,
}

/// Gives back what a launch that fails from here on took: a top-level
/// Pod's allocation (a child's is undone by its parent's reclaim).
async fn abandon(owner: Owner) {
    if owner.parent.is_none() {
        owner.registry().release_quietly(&owner.name).await;
    }
}

/// Opens the session log while it reaches the registry, then takes the
/// scope there and records it. Also says whether the log is new (a failed
/// launch then removes it).
async fn take_scope(
    request: LaunchRequest,
    creation: Option<Creation>,
    paths: &PodPaths,
    tx: mpsc::Sender<OwnerMsg>,
) -> (Result<Scoped, WireError>, bool) {
    let opening = std::time::Instant::now();
    let log_dir = paths.session_log();
    let open_log = async {
        let opened = tokio::task::spawn_blocking(move || SessionLog::open(&log_dir, LogOptions::default()))
            .await
            .map_err(wire("pod.internal"))
            .and_then(|opened| opened.map_err(|e| WireError::new(e.code(), e.to_string())));
        tracing::info!(ms = opening.elapsed().as_secs_f64() * 1e3, "session log open");
        opened
    };
    // A child's adoption (its parent's reservation made its own) needs
    // nothing of the log, so it goes to the registry while the log opens;
    // a failure after it (the log's open, a history under this name) is
    // undone by the parent's reclaim, as any later one.
    let adopt = match (&request.mode, &creation) {
        (LaunchMode::Child { .. }, Some(creation)) => Some(creation.enforced.scratch.clone()),
        _ => None,
    };
    let name = request.name.clone();
    let reach_registry = async {
        let phase = std::time::Instant::now();
        let registry = Registry::connect(&paths.dirs).await?;
        tracing::info!(ms = phase.elapsed().as_secs_f64() * 1e3, "registry connected");
        if let Some(scratch) = &adopt {
            fail::fail_point!("spawn.before_adopt");
            let socket = paths.socket().to_string_lossy().into_owned();
            registry.adopt(&name, std::process::id(), &paths.session_id(), &socket, scratch).await?;
        }
        Ok::<Registry, WireError>(registry)
    };
    let (opened, registry) = tokio::join!(open_log, reach_registry);
    let log = match opened {
        Ok(log) => Arc::new(log),
        Err(e) => return (Err(e), false),
    };
    let fresh = log.last_seq() == 0 && !matches!(request.mode, LaunchMode::Resume);
    let scoped =
        match registry {
            Ok(registry) => scope_of(request, creation, paths, &log, registry, tx)
                .await
                .map(|(owner, creation)| Scoped { owner, log, creation }),
            Err(e) => Err(e),
        };
    (scoped, fresh)
}

/// Takes the scope at the registry (a start registers, a child adopted it
/// already, a resume restores and prunes). A new Pod's owner comes with
/// its first batch, still to be recorded.
async fn scope_of(
    request: LaunchRequest,
    creation: Option<Creation>,
    paths: &PodPaths,
    log: &Arc<SessionLog>,
    registry: Registry,
    tx: mpsc::Sender<OwnerMsg>,
) -> Result<(Owner, Vec<Event>), WireError> {
    let name = request.name.clone();
    let phase = std::time::Instant::now();
    let pid = std::process::id();
    let socket = paths.socket().to_string_lossy().into_owned();
    let session = paths.session_id();
    let (mode, creation) = match (request.mode, creation) {
        (LaunchMode::Resume, _) => {
            let owner = resume(&name, paths, log, registry, tx).await?;
            tracing::info!(ms = phase.elapsed().as_secs_f64() * 1e3, "scope restored and pruned");
            return Ok((owner, Vec::new()));
        }
        (mode, Some(creation)) => (mode, creation),
        (_, None) => return Err(WireError::new("pod.internal", "a new pod launched without its scope and level")),
    };
    let Creation { scope, enforced, .. } = creation;
    let (parent, workload) = match mode {
        LaunchMode::Start { workload, .. } => {
            refuse_existing_log(log, &name, "`pod resume NAME` or `pod rm NAME`")?;
            registry.register(&name, pid, &socket, &session, scope.snapshot(), &enforced.scratch).await?;
            (None, workload)
        }
        LaunchMode::Child { parent, workload, .. } => {
            // Adopted already (`take_scope`); a failure from here on is
            // undone by the parent's reclaim.
            refuse_existing_log(log, &name, "`pod rm NAME` first")?;
            (Some(parent), workload)
        }
        LaunchMode::Resume => unreachable!("handled above"),
    };
    tracing::info!(ms = phase.elapsed().as_secs_f64() * 1e3, "scope taken");
    let creation = creation_batch(&name, parent.as_ref(), &scope, &workload, &enforced);
    let mut owner =
        Owner::new(name, parent, workload, paths.clone(), scope, BTreeMap::new(), Arc::clone(log), registry, tx);
    owner.set_enforcement(Some(enforced));
    Ok((owner, creation))
}

/// What a launch says of the workload besides its command.
struct WorkloadInput {
    cwd: Option<String>,
    env: pod_client::protocol::Env,
    limits: pod_sandbox::Limits,
}

impl WorkloadInput {
    fn of(cwd: Option<String>, env: pod_client::protocol::Env, limits: pod_sandbox::Limits) -> WorkloadInput {
        WorkloadInput { cwd, env, limits }
    }
}

/// The last steps of every startup: the socket, the workload's record and
/// release, the watch on the allocation.
async fn serve(
    scoped: Scoped,
    paths: &PodPaths,
    lock: std::fs::File,
    prepared: Option<workload::Prepared>,
    tx: mpsc::Sender<OwnerMsg>,
) -> Result<Started, WireError> {
    let Scoped { mut owner, log, creation } = scoped;
    let socket = paths.socket();
    // The watch starts while the socket is bound, the Pod's creation and
    // its workload are recorded and the workload released; all are done
    // before the Pod says it is ready.
    let (released, watching) =
        tokio::join!(bind_record_and_release(&owner, &log, creation, &socket, prepared, tx), owner.start_watching());
    if let Err(e) = watching {
        tracing::error!(error = %e, "cannot watch this pod's allocation; registry changes go unnoticed");
    }
    let (listener, running) = match released {
        Ok(released) => released,
        Err(e) => {
            abandon(owner).await;
            return Err(e);
        }
    };
    if let Some(running) = running {
        owner.set_workload(running);
    }
    Ok(Started { owner, listener, log, lock })
}

/// Binds the Pod's socket, records a new Pod's creation in its session log
/// and, at the same time, the parked workload's containment (durably: the
/// registry answers once it is), then lets the workload exec: from its
/// first instruction on, whoever finds this process gone ends it from the
/// record. The three are independent (a crash between the records leaves
/// an allocation whose reclaim ends what the containment names, as a crash
/// after them; the socket is served only once the Pod is ready, so a
/// connection made meanwhile waits, as it did when the bind came first),
/// so the bind's new file and the two fsyncs are waited on together; the
/// workload is released only once all three are done, and cancelled
/// (nothing of it ran) when one failed.
async fn bind_record_and_release(
    owner: &Owner,
    log: &Arc<SessionLog>,
    creation: Vec<Event>,
    socket: &std::path::Path,
    prepared: Option<workload::Prepared>,
    tx: mpsc::Sender<OwnerMsg>,
) -> Result<(pod_proto::server::Bound, Option<workload::Running>), WireError> {
    let phase = std::time::Instant::now();
    let bind = async { pod_proto::server::bind(socket).await.map_err(|e| e.to_wire()) };
    let record_creation = async {
        if creation.is_empty() {
            return Ok(());
        }
        append(log, creation).await?;
        tracing::info!(ms = phase.elapsed().as_secs_f64() * 1e3, "creation recorded");
        Ok(())
    };
    let record = prepared.as_ref().map(|p| p.record().clone());
    let contain = async {
        let Some(record) = &record else { return Ok(()) };
        owner.registry().contain(&owner.name, record).await?;
        tracing::info!(ms = phase.elapsed().as_secs_f64() * 1e3, "containment recorded");
        Ok::<(), WireError>(())
    };
    let (bound, recorded, contained) = tokio::join!(bind, record_creation, contain);
    let listener = match bound.and_then(|listener| recorded.and(contained).map(|()| listener)) {
        Ok(listener) => listener,
        Err(e) => {
            if let Some(prepared) = prepared {
                prepared.cancel().await;
            }
            return Err(e);
        }
    };
    let Some(prepared) = prepared else { return Ok((listener, None)) };
    fail::fail_point!("workload.before_release");
    let running = prepared.release(tx).await?;
    fail::fail_point!("workload.after_launch");
    Ok((listener, Some(running)))
}

/// Launches a new Pod's workload, if it has one, at its level, and leaves
/// it parked before its exec until its containment is recorded.
async fn prepare_workload(
    early: Option<EarlyWorkload>,
    paths: &PodPaths,
    input: WorkloadInput,
) -> Result<Option<workload::Prepared>, WireError> {
    let Some(early) = early else { return Ok(None) };
    let WorkloadInput { cwd, env, limits } = input;
    let env = enforcement::with_tmpdir(paths, env)?;
    let spec = workload::WorkloadSpec {
        command: &early.command,
        cwd: cwd.as_deref(),
        env: &env,
        parent: early.parent.as_ref(),
        limits,
        enforcement: early.plan,
    };
    workload::start(spec, paths).await.map(Some)
}

/// `run/pods/NAME/pid`: this process's pid and start time, written whole
/// (temporary file, rename) so a reader never sees half of it.
fn write_pid_file(paths: &PodPaths) -> Result<(), WireError> {
    use std::os::unix::fs::OpenOptionsExt;
    let pid = std::process::id();
    let start_time = watch::start_time_of(pid)
        .ok_or_else(|| WireError::new("pod.io", "cannot read this process's own start time from /proc"))?;
    let record = crate::layout::PidRecord { pid, start_time };
    let tmp = paths.run_dir.join(".pid.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(wire("pod.io"))?;
    file.write_all(record.render().as_bytes()).map_err(wire("pod.io"))?;
    drop(file);
    std::fs::rename(&tmp, paths.pid_file()).map_err(wire("pod.io"))
}

/// A new Pod's name must not already have a history here.
fn refuse_existing_log(log: &SessionLog, name: &PodName, hint: &str) -> Result<(), WireError> {
    if log.last_seq() == 0 {
        return Ok(());
    }
    Err(WireError::new(
        "pod.exists",
        format!("pod {name} already has a session log (stopped or crashed); {}", hint.replace("NAME", name.as_str())),
    ))
}

/// The first durable batch of every new Pod: who it is, and its scope.
fn creation_batch(
    name: &PodName,
    parent: Option<&PodName>,
    scope: &Scope,
    workload: &Option<Vec<String>>,
    enforced: &pod_client::protocol::Enforcement,
) -> Vec<Event> {
    vec![
        Event::PodCreated {
            name: name.clone(),
            parent: parent.cloned(),
            base: scope.snapshot().clone(),
            workload: workload.clone(),
        },
        Event::PodScope { scope: scope.snapshot().clone() },
        Event::PodEnforced(enforced.recorded()),
    ]
}

/// Resume: replay, re-register with layers, probe children in parallel,
/// prune the unreachable through the reclaim operation, and record the
/// resulting scope so a second resume starts from it.
async fn resume(
    name: &PodName,
    paths: &PodPaths,
    log: &Arc<SessionLog>,
    registry: Registry,
    tx: mpsc::Sender<OwnerMsg>,
) -> Result<Owner, WireError> {
    let replay_log = Arc::clone(log);
    let state = tokio::task::spawn_blocking(move || replay_log.replay())
        .await
        .map_err(wire("pod.internal"))?
        .map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let Some(identity) = state.identity.clone() else {
        // Damage is `log.corrupt` before this point: an empty history is a
        // Pod that never finished starting, so nothing of it was acknowledged.
        return Err(WireError::new(
            "pod.empty_log",
            format!("{name}'s session log holds nothing: it never finished starting; `pod rm {name}` forgets it"),
        ));
    };
    if let Some(parent) = &identity.parent {
        return Err(WireError::new(
            "pod.resume_child",
            format!("{name} was a child of {parent}; a child is spawned again by its parent, not resumed"),
        ));
    }
    fail::fail_point!("resume.after_replay");
    let scope = Scope::from_snapshot(state.scope.clone()).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let pid = std::process::id();
    let socket = paths.socket().to_string_lossy().into_owned();
    let gone = registry.sweep().await?;
    tracing::info!(?gone, "swept dead allocations before re-registering");
    let enforced = state.enforced.as_ref().map(pod_client::protocol::Enforcement::from_recorded).transpose()?;
    let scratch = enforced.as_ref().map(|e| e.scratch.clone()).unwrap_or_default();
    registry.register(name, pid, &socket, &paths.session_id(), scope.snapshot(), &scratch).await?;
    fail::fail_point!("resume.after_register");
    let mut owner = Owner::new(
        name.clone(),
        None,
        // A resumed Pod does not re-run its workload: the old one may still
        // be running (a Pod's death does not kill it), and running it twice
        // is worse than not at all. The Pod serves until stopped.
        None,
        paths.clone(),
        scope,
        state.children.clone(),
        Arc::clone(log),
        registry.clone(),
        tx,
    );
    owner.set_enforcement(enforced);
    // A child is kept when the registry names its process and that process
    // still runs (same pid, same start time): its pid comes from the
    // registry and the kernel, never from what answers on its socket.
    // One that does not run is pruned; one that runs but does not answer
    // (hung, or slow on a loaded machine) is kept and watched, since pruning
    // it would hand back a region it may still write.
    let children = owner.child_names();
    // Many children: one paged list of the table instead of a call each.
    let table: Option<BTreeMap<PodName, pod_registry::Allocation>> = if children.len() > LIST_ABOVE {
        Some(registry.list().await?.into_iter().map(|a| (a.name.clone(), a)).collect())
    } else {
        None
    };
    let mut unreachable = Vec::new();
    for child in children {
        let alloc = match &table {
            Some(table) => table.get(&child).cloned(),
            None => registry.get(&child).await?,
        };
        match still_running(&child, alloc)? {
            Some((pid, start_time)) => owner.watch_existing_child(&child, pid, start_time),
            None => unreachable.push(child),
        }
    }
    if !unreachable.is_empty() {
        tracing::info!(count = unreachable.len(), "children unreachable on resume; pruning");
        fail::fail_point!("resume.during_prune");
        owner.reclaim_all(&unreachable, RemovalReason::Pruned).await?;
    }
    // The mirror is rewritten from the durable state on every resume, so a
    // crash between a log batch and its mirror write heals here.
    owner.write_mirror()?;
    append(log, vec![Event::PodScope { scope: owner.core.scope.snapshot().clone() }]).await?;
    Ok(owner)
}

/// Above this many recorded children, resume reads the registry's whole
/// table (paged) rather than asking for each child.
const LIST_ABOVE: usize = 32;

/// The child's process, when the registry records it (`alloc`) as live
/// and it still runs (same pid, same start time: not a reused pid).
fn still_running(child: &PodName, alloc: Option<pod_registry::Allocation>) -> Result<Option<(u32, u64)>, WireError> {
    let Some(alloc) = alloc else { return Ok(None) };
    if alloc.state != pod_registry::AllocState::Live {
        return Ok(None);
    }
    if alloc.start_time == 0 {
        return Err(WireError::new(
            crate::registry_link::BAD_ANSWER,
            format!("the registry records live pod {child} without its process start time"),
        ));
    }
    Ok((watch::start_time_of(alloc.pid) == Some(alloc.start_time)).then_some((alloc.pid, alloc.start_time)))
}

async fn append(log: &Arc<SessionLog>, events: Vec<Event>) -> Result<(), WireError> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || log.append(events))
        .await
        .map_err(wire("pod.internal"))?
        .map(drop)
        .map_err(|e| WireError::new(e.code(), e.to_string()))
}

/// One process per Pod name: an exclusive, non-blocking flock held for the
/// process's life (the kernel drops it when the process dies, even by
/// SIGKILL).
fn take_lock(paths: &PodPaths, name: &PodName) -> Result<std::fs::File, WireError> {
    use rustix::fs::{flock, FlockOperation};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(paths.lock_file())
        .map_err(wire("pod.io"))?;
    flock(&file, FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| WireError::new("pod.running", format!("pod {name} is already running")))?;
    Ok(file)
}
