//! The Pod's side of a sandboxed workload: start the keeper with its spec,
//! wait (bounded) until the workload is parked before its exec (every
//! process of its containment exists: the record is complete), let it go
//! once the caller has recorded that, then talk to the keeper: narrow and
//! widen regions (each acknowledged before the call returns), and hear the
//! workload's exit.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use scope::{PodName, ScopeRule};

use crate::containment::{Containment, ProcessId};
use crate::detect::Support;
use crate::frame::{read_frame, write_frame};
use crate::helper::{Event, ExitReport, HelperCommand, Namespaces, Program, Reply, Request, Spec, Stage, PROTOCOL};
use crate::level::Mechanism;
use crate::policy::{Level, Plan};
use crate::SandboxError;

/// Longest the keeper may take to report the workload started.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The narrowing a fenced Pod's whole write scope is taken under: no Pod
/// name can be it (names begin with a letter or a digit), so it never
/// meets a child's.
const FENCE_ID: &str = "-fenced";
/// Longest one narrow or widen may take to be acknowledged.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run, how enforced.
pub struct LaunchSpec<'a> {
    pub helper: HelperCommand,
    pub program: Program,
    pub level: Level,
    pub plan: &'a Plan,
    pub support: &'a Support,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The keeper process, held by the pidfd its clone returned: signals and
/// waits can never reach another process that reused its pid.
struct Keeper {
    pid: u32,
    pidfd: OwnedFd,
    /// Once reaped, how it ended (a second wait would find no child).
    status: Option<ExitStatus>,
}

impl Keeper {
    fn id(&self) -> u32 {
        self.pid
    }

    fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
    }

    /// Waits for it to exit and reaps it.
    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(rustix::process::WaitIdOptions::empty())? {
                return Ok(status);
            }
        }
    }

    /// Reaps it if it has exited.
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.reap(rustix::process::WaitIdOptions::NOHANG)
    }

    fn reap(&mut self, extra: rustix::process::WaitIdOptions) -> std::io::Result<Option<ExitStatus>> {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let found = match waitid(WaitId::PidFd(self.pidfd.as_fd()), WaitIdOptions::EXITED | extra) {
            Ok(found) => found,
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The raw wait status std's `ExitStatus` is made of: the code in
        // the second byte, or the signal in the low seven bits.
        self.status = found.map(|s| match (s.exit_status(), s.terminating_signal()) {
            (Some(code), _) => ExitStatus::from_raw((code & 0xff) << 8),
            (None, Some(signal)) => ExitStatus::from_raw(signal & 0x7f),
            (None, None) => ExitStatus::from_raw(0xff << 8),
        });
        Ok(self.status)
    }
}

/// Starts the keeper (`helper keeper`, stdin the control socket), born
/// inside the v2 cgroup `v2` when there is one, so that it never waits to
/// be moved there. True when it was: on a kernel without
/// `CLONE_INTO_CGROUP` (before 5.7) it is started outside and joins by
/// itself.
fn start_keeper(
    helper: &HelperCommand,
    control: &UnixStream,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    v2: Option<&Path>,
) -> Result<(Keeper, bool), SandboxError> {
    let bad = |what: &str| SandboxError::BadRequest(format!("the sandbox helper's {what} holds a NUL byte"));
    let program = CString::new(helper.program.as_os_str().as_bytes()).map_err(|_| bad("path"))?;
    let mut argv = vec![program.clone()];
    for arg in helper.args.iter().map(String::as_str).chain([Stage::Keeper.name()]) {
        argv.push(CString::new(arg).map_err(|_| bad("arguments"))?);
    }
    let cgroup = match v2 {
        Some(dir) => Some(
            rustix::fs::open(
                dir,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(SandboxError::errno(format!("cannot open the cgroup {}", dir.display())))?,
        ),
        None => None,
    };
    let stdio = [control.as_fd(), stdout.as_fd(), stderr.as_fd()];
    let started = |cgroup: Option<&OwnedFd>| {
        crate::sys::spawn(&program, &argv, stdio, cgroup.map(|c| c.as_fd()))
            .map_err(SandboxError::io(format!("cannot start the sandbox helper {}", helper.program.display())))
    };
    let (spawned, inside) = match started(cgroup.as_ref()) {
        Ok(spawned) => (spawned, cgroup.is_some()),
        Err(SandboxError::Io { source, .. })
            if cgroup.is_some() && matches!(source.raw_os_error(), Some(libc::EINVAL | libc::E2BIG)) =>
        {
            tracing::debug!(error = %source, "no CLONE_INTO_CGROUP; the keeper joins its cgroup itself");
            (started(None)?, false)
        }
        Err(e) => return Err(e),
    };
    Ok((Keeper { pid: spawned.pid, pidfd: spawned.pidfd, status: None }, inside))
}

/// A workload whose containment is complete (keeper, init, PID namespace
/// in its record) and whose program has not run yet: [`Parked::release`]
/// lets it exec. Dropped (or the Pod killed) without a release, its stages
/// exit without running anything.
pub struct Parked {
    keeper: Keeper,
    keeper_pid: u32,
    workload_pid: u32,
    level: Level,
    control: UnixStream,
}

/// A running, sandboxed workload.
pub struct Workload {
    /// Behind a lock so that one thread can reap it while others talk to
    /// the keeper through `&self`.
    keeper: Mutex<Keeper>,
    keeper_pid: u32,
    workload_pid: u32,
    level: Level,
    requests: Mutex<UnixStream>,
    replies: Mutex<Receiver<Reply>>,
    exits: Mutex<Receiver<ExitReport>>,
}

/// The namespaces a level and a mechanism need.
pub fn namespaces(level: Level, mechanism: Mechanism, root: bool) -> Namespaces {
    let mount = level == Level::Full;
    let pid = mechanism == Mechanism::PidNamespace;
    Namespaces { user: !root && (mount || pid), mount, pid }
}

/// Prepares the workload inside `containment`, enforced per `spec.plan`.
/// Returns once it is parked before its exec, with `containment`'s record
/// complete, or with the helper's error (nothing runs then).
pub fn launch(containment: &mut Containment, spec: LaunchSpec<'_>) -> Result<Parked, SandboxError> {
    let record = containment.record();
    let ns = namespaces(spec.level, record.mechanism, spec.support.root);
    let members_cgroup = if record.mechanism == Mechanism::Cgroup { record.cgroups.v2.clone() } else { None };
    let (mut control, theirs) = UnixStream::pair().map_err(SandboxError::io("cannot create a socketpair"))?;
    let (mut keeper, born_inside) =
        start_keeper(&spec.helper, &theirs, &spec.stdout, &spec.stderr, members_cgroup.as_deref())?;
    drop((theirs, spec.stdout, spec.stderr));
    // The cgroups the keeper still has to join: v1 hierarchies (limits on
    // hybrid hosts), and the v2 one when it could not be born there.
    let born_in = record.cgroups.v2.as_ref().filter(|_| born_inside).map(|dir| dir.join("cgroup.procs"));
    let joined = record.cgroups.procs_files().into_iter().filter(|procs| Some(procs) != born_in.as_ref());
    let helper_spec = Spec {
        protocol: PROTOCOL,
        stage: Stage::Keeper,
        helper: spec.helper.clone(),
        cgroups: joined.collect(),
        members_cgroup,
        namespaces: ns,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        mounts: spec.plan.mounts.clone(),
        narrowed: spec.plan.narrowed.iter().map(|(c, ops)| (c.as_str().to_string(), ops.clone())).collect(),
        landlock: spec.plan.landlock.clone(),
        workload: spec.program,
    };
    // Read now: the keeper waits for its spec, so it is alive; a workload
    // that exits at once may take the keeper with it before `Ready` is read.
    let keeper_id = ProcessId::of(keeper.id());
    let started = start(&mut control, &helper_spec);
    let (keeper_pid, workload_pid, init, pid_namespace) = match started {
        Ok(v) => v,
        Err(e) => {
            // Nothing may be left running: the keeper failed, or is stuck.
            keeper.kill();
            let _ = keeper.wait();
            return Err(e);
        }
    };
    if keeper_pid != keeper.id() {
        keeper.kill();
        let _ = keeper.wait();
        return Err(SandboxError::Protocol(format!("the keeper says it is pid {keeper_pid}, not {}", keeper.id())));
    }
    let Some(keeper_id) = keeper_id else {
        keeper.kill();
        let _ = keeper.wait();
        return Err(SandboxError::Helper("the keeper vanished before it read its spec".into()));
    };
    let init_id = init.and_then(ProcessId::of);
    containment.set_processes(keeper_id, init_id, pid_namespace);
    Ok(Parked { keeper, keeper_pid, workload_pid, level: spec.level, control })
}

impl Parked {
    pub fn keeper_pid(&self) -> u32 {
        self.keeper_pid
    }

    /// Lets the workload's program run; returns once it was exec'd, or
    /// with the reason it could not be (nothing of it runs then).
    pub fn release(self) -> Result<Workload, SandboxError> {
        let Parked { mut keeper, keeper_pid, workload_pid, level, mut control } = self;
        let fail = |keeper: &mut Keeper, e: SandboxError| {
            keeper.kill();
            let _ = keeper.wait();
            Err(e)
        };
        if let Err(e) = go(&mut control) {
            return fail(&mut keeper, e);
        }
        if let Err(e) = control.set_read_timeout(None).map_err(SandboxError::io("control socket")) {
            return fail(&mut keeper, e);
        }
        running(keeper, keeper_pid, workload_pid, level, control)
    }

    /// Ends a workload that never ran: the keeper is killed, and each
    /// parked stage below it exits once its parent's socket closes.
    pub fn cancel(self) {
        let Parked { mut keeper, control, .. } = self;
        drop(control);
        keeper.kill();
        let _ = keeper.wait();
    }
}

/// Says `Go` and waits (bounded) for the keeper's word that the program
/// was exec'd.
fn go(control: &mut UnixStream) -> Result<(), SandboxError> {
    match ask_keeper(control, &Request::Go, "start the workload")? {
        Event::Started => Ok(()),
        other => Err(SandboxError::Protocol(format!("the keeper said {other:?} before the workload ran"))),
    }
}

/// Sends one frame to the keeper during the launch and reads its answer
/// within `STARTUP_TIMEOUT`: a `Failed` answer, its exit or its silence are
/// each the error that names them (`doing` says what it did not do in time).
fn ask_keeper<T: serde::Serialize>(control: &mut UnixStream, frame: &T, doing: &str) -> Result<Event, SandboxError> {
    control.set_read_timeout(Some(STARTUP_TIMEOUT)).map_err(SandboxError::io("control socket"))?;
    write_frame(control, frame)?;
    match read_frame::<Event>(control) {
        Ok(Some(Event::Failed { code, message })) => Err(crate::helper::remote_error(&code, message)),
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(SandboxError::Helper("the keeper exited before the workload started".into())),
        Err(SandboxError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
        {
            Err(SandboxError::Helper(format!("the keeper did not {doing} within {STARTUP_TIMEOUT:?}")))
        }
        Err(e) => Err(e),
    }
}

/// The released workload: a thread reads the keeper's replies and exit
/// reports from here on.
fn running(
    keeper: Keeper,
    keeper_pid: u32,
    workload_pid: u32,
    level: Level,
    control: UnixStream,
) -> Result<Workload, SandboxError> {
    let mut reader = control.try_clone().map_err(SandboxError::io("cannot clone the control socket"))?;
    let (reply_tx, reply_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("sandbox-{keeper_pid}"))
        .spawn(move || {
            while let Ok(Some(event)) = read_frame::<Event>(&mut reader) {
                match event {
                    Event::Reply { reply } => {
                        if reply_tx.send(reply).is_err() {
                            break;
                        }
                    }
                    Event::Exited { exit } => {
                        let _ = exit_tx.send(exit);
                    }
                    Event::Ready { .. } | Event::Parked | Event::Started | Event::Failed { .. } => {}
                }
            }
        })
        .map_err(SandboxError::io("cannot start the control reader"))?;
    Ok(Workload {
        keeper: Mutex::new(keeper),
        keeper_pid,
        workload_pid,
        level,
        requests: Mutex::new(control),
        replies: Mutex::new(reply_rx),
        exits: Mutex::new(exit_rx),
    })
}

type Started = (u32, u32, Option<u32>, Option<u64>);

fn start(control: &mut UnixStream, spec: &Spec) -> Result<Started, SandboxError> {
    match ask_keeper(control, spec, "prepare the workload")? {
        Event::Ready { keeper, workload, init, pid_namespace } => Ok((keeper, workload, init, pid_namespace)),
        other => Err(SandboxError::Protocol(format!("the keeper said {other:?} before it was ready"))),
    }
}

impl Workload {
    pub fn keeper_pid(&self) -> u32 {
        self.keeper_pid
    }

    /// The workload's main process (its pid outside any namespace).
    pub fn pid(&self) -> u32 {
        self.workload_pid
    }

    pub fn level(&self) -> Level {
        self.level
    }

    fn call(&self, request: &Request) -> Result<Reply, SandboxError> {
        let mut stream = self.requests.lock().map_err(|_| SandboxError::Helper("control channel poisoned".into()))?;
        let replies = self.replies.lock().map_err(|_| SandboxError::Helper("control channel poisoned".into()))?;
        // A reply left over from a call that timed out is not ours.
        while replies.try_recv().is_ok() {}
        write_frame(&mut *stream, request)?;
        match replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Timeout) => {
                Err(SandboxError::Helper(format!("the keeper did not answer within {REPLY_TIMEOUT:?}")))
            }
            Err(RecvTimeoutError::Disconnected) => Err(SandboxError::Helper("the keeper is gone".into())),
        }
    }

    /// Takes the write rules of `rules` (delegated to `child`) away from the
    /// running workload; returns once the kernel enforces it. `Busy` when a
    /// process of the workload holds a path there (nothing changed).
    pub fn narrow(&self, child: &PodName, rules: &[ScopeRule]) -> Result<(), SandboxError> {
        self.narrow_as(child.as_str(), rules)
    }

    /// Gives back what `narrow(child)` took (idempotent).
    pub fn widen(&self, child: &PodName) -> Result<(), SandboxError> {
        self.widen_as(child.as_str())
    }

    /// Takes write on all of `rules` (the fenced Pod's write scope) from
    /// the running workload, as `narrow` does, until [`Workload::unfence`].
    pub fn fence(&self, rules: &[ScopeRule]) -> Result<(), SandboxError> {
        self.narrow_as(FENCE_ID, rules)
    }

    /// Gives back what `fence` took (idempotent).
    pub fn unfence(&self) -> Result<(), SandboxError> {
        self.widen_as(FENCE_ID)
    }

    fn narrow_as(&self, id: &str, rules: &[ScopeRule]) -> Result<(), SandboxError> {
        match self.call(&Request::Narrow { id: id.to_string(), rules: rules.to_vec() })? {
            Reply::Narrowed { .. } => Ok(()),
            Reply::Busy { pid, path, how } => Err(SandboxError::Busy { pid, path, how: busy_how(&how) }),
            Reply::Error { code, message } => Err(crate::helper::remote_error(&code, message)),
            other => Err(SandboxError::Protocol(format!("unexpected reply to narrow: {other:?}"))),
        }
    }

    fn widen_as(&self, id: &str) -> Result<(), SandboxError> {
        match self.call(&Request::Widen { id: id.to_string() })? {
            Reply::Widened { .. } => Ok(()),
            Reply::Error { code, message } => Err(crate::helper::remote_error(&code, message)),
            other => Err(SandboxError::Protocol(format!("unexpected reply to widen: {other:?}"))),
        }
    }

    /// Round trip to the keeper.
    pub fn ping(&self) -> Result<(), SandboxError> {
        match self.call(&Request::Ping)? {
            Reply::Pong { .. } => Ok(()),
            other => Err(SandboxError::Protocol(format!("unexpected reply to ping: {other:?}"))),
        }
    }

    /// Waits up to `timeout` for the workload's main process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitReport> {
        self.exits.lock().ok()?.recv_timeout(timeout).ok()
    }

    /// Reaps the keeper (it exits once the whole tree is gone). Holds the
    /// keeper's lock while it waits: `try_reap` meanwhile blocks too.
    pub fn reap(&self) -> std::io::Result<ExitStatus> {
        self.keeper_lock()?.wait()
    }

    /// Reaps the keeper if it has exited.
    pub fn try_reap(&self) -> std::io::Result<Option<ExitStatus>> {
        self.keeper_lock()?.try_wait()
    }

    fn keeper_lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, Keeper>> {
        self.keeper.lock().map_err(|_| std::io::Error::other("the keeper's handle is poisoned"))
    }
}

fn busy_how(how: &str) -> &'static str {
    match how {
        "its working directory" => "its working directory",
        "its root directory" => "its root directory",
        "open for writing" => "open for writing",
        "a directory held open" => "a directory held open",
        "a shared writable mapping" => "a shared writable mapping",
        _ => "held",
    }
}
