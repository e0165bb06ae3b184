//! The re-exec helper: `pod __sandbox-exec STAGE` (or this crate's
//! `pod-sandbox-helper STAGE`), a fresh single-threaded process that does
//! what a multithreaded Pod cannot do for a child without `unsafe` in
//! `pre_exec`: join the Pod's cgroups, enter new namespaces, mount, restrict
//! itself with Landlock, and only then exec the workload. Its spec arrives
//! as a frame on stdin, a socketpair the parent made, never on argv.
//!
//! Stages: the keeper and the init are re-execs of the same binary; the
//! exec stage is a fork of the keeper (a re-exec below an init):
//! - **keeper**: spawned by the Pod, born inside the Pod's v2 cgroup
//!   (`clone3` with `CLONE_INTO_CGROUP`: a move by a write to
//!   `cgroup.procs` waits for an RCU grace period, most of a spawn's time).
//!   Joins the cgroups it was not born in (v1 limits), unshares the user
//!   (when not root), mount and PID namespaces the plan needs, applies the
//!   exec-time mounts, and stays: it serves narrowing on the Pod's control
//!   socket (the Pod process cannot enter these namespaces), reports the
//!   workload's exit, and, without a PID namespace, is the tree's
//!   subreaper: every orphan of the workload comes back to it, and it lives
//!   until the last one is gone. SIGTERM: end the tree (TERM to all);
//!   SIGUSR1: kill it (KILL until none is left).
//! - **init**: the first process of a new PID namespace (supervisor
//!   without a cgroup). Reaps, relays SIGTERM to the namespace, SIGUSR1
//!   kills it; when it dies the kernel ends every process in it.
//! - **exec**: forked by the keeper, its signals back to their defaults
//!   (below an init, started by it as a re-exec); applies Landlock (with `no_new_privs`), says it is parked,
//!   and execs the workload when `Go` comes down the chain (Pod → keeper
//!   [→ init] → exec). A failure before exec is a frame back; a successful
//!   exec closes the socket (close-on-exec), which its parent reads as
//!   success.
//!
//! Parking is what lets the Pod record the containment (every process of
//! it exists, pids known) before the workload's first instruction runs: a
//! Pod killed before it says `Go` leaves nothing that ever ran, since each
//! parked stage that loses its parent's socket exits without going on.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;
use scope::{Permission, ScopeRule};
use serde::{Deserialize, Serialize};

use crate::frame::{read_frame, write_frame};
use crate::policy::{LandlockPlan, MountOp};
use crate::{busy, cgroup, enforce, mounts, proc, sys, SandboxError};

/// Version of the spec and of the control messages; a helper from another
/// build refuses a spec of another version.
pub const PROTOCOL: u32 = 1;
/// Exit code of a helper that failed before the workload ran.
pub const EXIT_SETUP_FAILED: u8 = 125;
/// Exit code when the workload's program could not be executed.
pub const EXIT_EXEC_FAILED: u8 = 127;

/// How to start the helper: the program and the arguments before the stage
/// (`[pod, "__sandbox-exec"]`, or the crate's test binary alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl HelperCommand {
    fn command(&self, stage: Stage) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).arg(stage.name()).env_clear();
        cmd
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Keeper,
    Init,
    Exec,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Keeper => "keeper",
            Stage::Init => "init",
            Stage::Exec => "exec",
        }
    }
}

/// Namespaces the keeper creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub user: bool,
    pub mount: bool,
    pub pid: bool,
}

/// The workload's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub program: String,
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// Everything a stage needs, sent on its stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub protocol: u32,
    pub stage: Stage,
    pub helper: HelperCommand,
    /// `cgroup.procs` files the keeper writes itself into (those it was
    /// not born in).
    pub cgroups: Vec<PathBuf>,
    /// The v2 cgroup whose members are the workload (busy scans); `None`:
    /// the keeper's descendants are.
    pub members_cgroup: Option<PathBuf>,
    pub namespaces: Namespaces,
    /// Real ids, mapped to themselves in a new user namespace.
    pub uid: u32,
    pub gid: u32,
    pub mounts: Vec<MountOp>,
    /// Regions delegated before the workload started, per child.
    pub narrowed: BTreeMap<String, Vec<MountOp>>,
    pub landlock: Option<LandlockPlan>,
    pub workload: Program,
}

/// How the workload's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitReport {
    fn of(status: rustix::process::WaitStatus) -> ExitReport {
        ExitReport { code: status.exit_status(), signal: status.terminating_signal() }
    }

    /// The shell's convention: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// Keeper → Pod (and the exec stage → its parent: `Parked`, `Failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Every process of the containment exists and the workload is parked
    /// before its exec, waiting for `Request::Go`.
    Ready {
        keeper: u32,
        workload: u32,
        init: Option<u32>,
        pid_namespace: Option<u64>,
    },
    /// The exec stage is set up (Landlock applied) and waits for `Go`.
    Parked,
    /// After `Go`: the workload's program was exec'd.
    Started,
    Failed {
        code: String,
        message: String,
    },
    Exited {
        exit: ExitReport,
    },
    Reply {
        reply: Reply,
    },
}

/// Pod → keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Take the write rules of `rules` away from the workload (child `id`).
    Narrow {
        id: String,
        rules: Vec<ScopeRule>,
    },
    /// Give back what `Narrow { id }` took.
    Widen {
        id: String,
    },
    Ping,
    /// Lets the parked workload exec (once, before any other request).
    Go,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Narrowed { id: String },
    Widened { id: String },
    Busy { pid: u32, path: PathBuf, how: String },
    Error { code: String, message: String },
    Pong { keeper: u32 },
}

/// Init → keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum InitEvent {
    /// The exec stage below it is parked.
    Parked,
    Started,
    Failed {
        code: String,
        message: String,
    },
    Exited {
        exit: ExitReport,
    },
}

/// Entry point: `args` are the arguments after the dispatch word (the
/// stage name). The pod binary calls this for `pod __sandbox-exec`.
pub fn helper_main(args: &[String]) -> ExitCode {
    let stage = match args {
        [s] if s == "keeper" => Stage::Keeper,
        [s] if s == "init" => Stage::Init,
        [s] if s == "exec" => Stage::Exec,
        _ => {
            eprintln!("sandbox helper: expected one stage argument (keeper, init or exec), got {args:?}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    let mut socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("sandbox helper: no control socket on stdin: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    let spec: Spec = match read_frame(&mut socket) {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            eprintln!("sandbox helper: the parent sent no spec");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
        Err(e) => return report_failure(&mut socket, &e),
    };
    if spec.protocol != PROTOCOL || spec.stage != stage {
        let e = SandboxError::Protocol(format!(
            "spec for stage {} protocol {}, but this helper is stage {} protocol {PROTOCOL}",
            spec.stage.name(),
            spec.protocol,
            stage.name()
        ));
        return report_failure(&mut socket, &e);
    }
    // The spec's socket stays ours alone: stdin becomes /dev/null.
    if let Err(e) = null_stdin() {
        return report_failure(&mut socket, &e);
    }
    match stage {
        Stage::Keeper => keeper(spec, socket),
        Stage::Init => init(spec, socket),
        Stage::Exec => ExitCode::from(exec(&spec, socket)),
    }
}

fn null_stdin() -> Result<(), SandboxError> {
    let null = std::fs::File::open("/dev/null").map_err(SandboxError::io("cannot open /dev/null"))?;
    rustix::stdio::dup2_stdin(&null).map_err(SandboxError::errno("cannot make /dev/null stdin"))
}

fn report_failure(socket: &mut UnixStream, e: &SandboxError) -> ExitCode {
    tell_failure(socket, e);
    ExitCode::from(EXIT_SETUP_FAILED)
}

/// Tells the parent stage why this one failed (stderr when it is gone).
fn tell_failure(socket: &mut UnixStream, e: &SandboxError) {
    let event = Event::Failed { code: e.code().to_string(), message: e.to_string() };
    if write_frame(socket, &event).is_err() {
        eprintln!("sandbox helper: {e}");
    }
}

/// Forks the exec stage on a fresh socketpair and returns its pid. A fork
/// of the single-threaded keeper, not a re-exec: it is what the keeper is,
/// minus the keeper's duties, and a re-exec of the whole binary costs
/// about 2 ms of every spawn.
fn fork_exec_stage(spec: &Spec) -> Result<(u32, UnixStream), SandboxError> {
    let (mine, theirs) = UnixStream::pair().map_err(SandboxError::io("cannot create a socketpair"))?;
    // The child takes the signals the keeper handles back to their default
    // actions: until its exec, it is a plain process.
    let signals = [libc::SIGTERM, libc::SIGUSR1, libc::SIGCHLD];
    match sys::fork_with_default_signals(&signals) {
        Err(e) => Err(SandboxError::io("cannot fork the exec stage")(e)),
        Ok(None) => {
            // Its parent's end closes here, so the parent's exit is an end
            // of file on `theirs`.
            drop(mine);
            std::process::exit(i32::from(exec(spec, theirs)))
        }
        Ok(Some(pid)) => Ok((pid, mine)),
    }
}

/// Starts a stage as a re-exec of this binary, with `spec` (its stage set)
/// sent down a fresh socketpair; returns its pid. The init is one (it must
/// be a new process image to be the first of its PID namespace with
/// nothing of the keeper's), and so is the exec stage the init starts: the
/// supervisor without a cgroup keeps the shape it was proven with.
fn spawn_stage(spec: &Spec, stage: Stage) -> Result<(u32, UnixStream), SandboxError> {
    let (mut mine, theirs) = UnixStream::pair().map_err(SandboxError::io("cannot create a socketpair"))?;
    let mut cmd = spec.helper.command(stage);
    cmd.stdin(Stdio::from(OwnedFd::from(theirs))).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let child = cmd.spawn().map_err(SandboxError::io(format!(
        "cannot start the {} stage ({})",
        stage.name(),
        spec.helper.program.display()
    )))?;
    let mut next = spec.clone();
    next.stage = stage;
    write_frame(&mut mine, &next)?;
    Ok((child.id(), mine))
}

/// Waits until an exec stage is parked.
fn exec_parked(socket: &mut UnixStream) -> Result<(), SandboxError> {
    match read_frame::<Event>(socket)? {
        Some(Event::Parked) => Ok(()),
        None => Err(SandboxError::Helper("the exec stage exited before it was parked".into())),
        Some(Event::Failed { code, message }) => Err(remote_error(&code, message)),
        Some(other) => Err(SandboxError::Protocol(format!("unexpected frame from the exec stage: {other:?}"))),
    }
}

/// Blocks until the parent says `Go`; false when it went away (or said
/// anything else): the parked stage then exits and nothing runs.
fn go_from(parent: &mut UnixStream) -> bool {
    matches!(read_frame::<Request>(parent), Ok(Some(Request::Go)))
}

/// Waits for an exec stage: the socket closing is success.
fn exec_result(socket: &mut UnixStream) -> Result<(), SandboxError> {
    match read_frame::<Event>(socket)? {
        None => Ok(()),
        Some(Event::Failed { code, message }) => Err(remote_error(&code, message)),
        Some(other) => Err(SandboxError::Protocol(format!("unexpected frame from the exec stage: {other:?}"))),
    }
}

/// Rebuilds a typed error from its code, as far as one can be.
pub(crate) fn remote_error(code: &str, message: String) -> SandboxError {
    match code {
        "enforce.unsupported" => SandboxError::Unsupported(message),
        "enforce.refused" => SandboxError::Refused(message),
        "sandbox.bad_request" => SandboxError::BadRequest(message),
        "sandbox.protocol" => SandboxError::Protocol(message),
        "sandbox.exec" => SandboxError::Exec(message),
        _ => SandboxError::Helper(message),
    }
}

fn write_map(file: &str, text: &str) -> Result<(), SandboxError> {
    std::fs::write(file, text).map_err(SandboxError::io(format!("cannot write {file:?} to {file}")))
}

/// Everything the keeper does before it starts the next stage.
fn keeper_setup(spec: &Spec) -> Result<(), SandboxError> {
    std::env::set_current_dir("/").map_err(SandboxError::io("cannot change to /"))?;
    cgroup::join(&spec.cgroups)?;
    let ns = spec.namespaces;
    let mut flags = UnshareFlags::empty();
    if ns.user {
        flags |= UnshareFlags::NEWUSER;
    }
    if ns.mount {
        flags |= UnshareFlags::NEWNS;
    }
    if ns.pid {
        flags |= UnshareFlags::NEWPID;
    }
    if !flags.is_empty() {
        sys::unshare_namespaces(flags).map_err(SandboxError::errno(format!("cannot create namespaces ({flags:?})")))?;
    }
    if ns.user {
        write_map("/proc/self/setgroups", "deny")?;
        write_map("/proc/self/uid_map", &format!("{0} {0} 1", spec.uid))?;
        write_map("/proc/self/gid_map", &format!("{0} {0} 1", spec.gid))?;
    }
    if ns.mount {
        mounts::make_downstream()?;
        mounts::apply_all(&spec.mounts)?;
        for ops in spec.narrowed.values() {
            mounts::apply_all(ops)?;
        }
    }
    if !ns.pid {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(SandboxError::errno("cannot become the subreaper of the workload"))?;
    }
    Ok(())
}

/// The parked keeper waits for the Pod's `Go`; false when the Pod went
/// away, said anything else, or the keeper was told to end (TERM, USR1):
/// ending a parked workload is not letting it start.
fn go_from_pod(control: &mut UnixStream, signals: &mut SignalPipes) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let mut fds = [
            PollFd::new(&*control, PollFlags::IN),
            PollFd::new(&signals.term, PollFlags::IN),
            PollFd::new(&signals.kill, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        if ready[1] && drained(&mut signals.term) || ready[2] && drained(&mut signals.kill) {
            return false;
        }
        if ready[0] {
            return go_from(control);
        }
    }
}

/// One wake-up pipe per signal the keeper handles (signal-hook writes a
/// byte into it from the handler; the poll loop reads it).
struct SignalPipes {
    term: UnixStream,
    kill: UnixStream,
    child: UnixStream,
}

fn signal_pipes() -> Result<SignalPipes, SandboxError> {
    let pipe = |signal: i32| -> Result<UnixStream, SandboxError> {
        let (read, write) = UnixStream::pair().map_err(SandboxError::io("cannot create a signal pipe"))?;
        read.set_nonblocking(true).map_err(SandboxError::io("signal pipe"))?;
        signal_hook::low_level::pipe::register(signal, write).map_err(SandboxError::io("cannot handle signals"))?;
        Ok(read)
    };
    Ok(SignalPipes {
        term: pipe(signal_hook::consts::SIGTERM)?,
        kill: pipe(signal_hook::consts::SIGUSR1)?,
        child: pipe(signal_hook::consts::SIGCHLD)?,
    })
}

/// Empties a non-blocking wake-up pipe; true when it held anything.
fn drained(pipe: &mut UnixStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut any = false;
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        any = true;
    }
    any
}

/// The keeper. Single-threaded on purpose: after `unshare(CLONE_NEWPID)` a
/// process cannot create threads, so one poll loop serves the control
/// socket, the signals, the init's reports and the reaping.
fn keeper(spec: Spec, mut control: UnixStream) -> ExitCode {
    use rustix::event::{poll, PollFd, PollFlags};
    // Registered before any child exists, so no TERM finds the default
    // action and no SIGCHLD is missed.
    let mut signals = match signal_pipes() {
        Ok(s) => s,
        Err(e) => return report_failure(&mut control, &e),
    };
    if let Err(e) = keeper_setup(&spec) {
        return report_failure(&mut control, &e);
    }
    let pidns = spec.namespaces.pid;
    let next = if pidns { spawn_stage(&spec, Stage::Init) } else { fork_exec_stage(&spec) };
    let (child_pid, mut child_socket) = match next {
        Ok(c) => c,
        Err(e) => return report_failure(&mut control, &e),
    };
    let parked = if pidns {
        match read_frame::<InitEvent>(&mut child_socket) {
            Ok(Some(InitEvent::Parked)) => Ok(()),
            Ok(Some(InitEvent::Failed { code, message })) => Err(remote_error(&code, message)),
            Ok(other) => Err(SandboxError::Protocol(format!("the init stage said {other:?} before it was parked"))),
            Err(e) => Err(e),
        }
    } else {
        exec_parked(&mut child_socket)
    };
    if let Err(e) = parked {
        return report_failure(&mut control, &e);
    }
    // The exec stage's pid is the workload's: exec keeps it.
    let workload = if pidns { proc::descendants(child_pid).first().copied().unwrap_or(0) } else { child_pid };
    let ready = Event::Ready {
        keeper: std::process::id(),
        workload,
        init: pidns.then_some(child_pid),
        pid_namespace: if pidns { proc::pid_namespace(child_pid) } else { None },
    };
    // A Pod that is gone before its `Go` (killed while it recorded the
    // containment) leaves a workload that never ran: returning closes the
    // socket the parked stages wait on, and they exit too.
    if write_frame(&mut control, &ready).is_err() || !go_from_pod(&mut control, &mut signals) {
        return ExitCode::from(EXIT_SETUP_FAILED);
    }
    let started = match write_frame(&mut child_socket, &Request::Go) {
        Err(e) => Err(e),
        Ok(()) if pidns => match read_frame::<InitEvent>(&mut child_socket) {
            Ok(Some(InitEvent::Started)) => Ok(()),
            Ok(Some(InitEvent::Failed { code, message })) => Err(remote_error(&code, message)),
            Ok(other) => Err(SandboxError::Protocol(format!("the init stage said {other:?} before starting"))),
            Err(e) => Err(e),
        },
        Ok(()) => exec_result(&mut child_socket),
    };
    if let Err(e) = started {
        return report_failure(&mut control, &e);
    }
    // From here the Pod may be gone (killed): the workload goes on without
    // it, recorded, until whoever finds the Pod dead ends it.
    let mut pod_listening = write_frame(&mut control, &Event::Started).is_ok();
    let mut init_listening = pidns;
    let mut narrowed = spec.narrowed.clone();
    let mut main_exit: Option<ExitReport> = None;
    loop {
        let mut fds = vec![
            PollFd::new(&signals.term, PollFlags::IN),
            PollFd::new(&signals.kill, PollFlags::IN),
            PollFd::new(&signals.child, PollFlags::IN),
        ];
        if pod_listening {
            fds.push(PollFd::new(&control, PollFlags::IN));
        }
        if init_listening {
            fds.push(PollFd::new(&child_socket, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                eprintln!("sandbox keeper: poll: {e}");
                return ExitCode::from(EXIT_SETUP_FAILED);
            }
        }
        let ready_at = |i: usize| fds.get(i).is_some_and(|f| !f.revents().is_empty());
        let (term, kill, chld) = (ready_at(0), ready_at(1), ready_at(2));
        let pod_ready = pod_listening && ready_at(3);
        let init_ready = init_listening && ready_at(if pod_listening { 4 } else { 3 });
        drop(fds);
        if term && drained(&mut signals.term) {
            relay_signal(false, pidns.then_some(child_pid));
        }
        if kill && drained(&mut signals.kill) {
            relay_signal(true, pidns.then_some(child_pid));
        }
        if init_ready {
            match read_frame::<InitEvent>(&mut child_socket) {
                Ok(Some(InitEvent::Exited { exit })) => {
                    main_exit.get_or_insert(exit);
                    if pod_listening {
                        pod_listening = write_frame(&mut control, &Event::Exited { exit }).is_ok();
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => init_listening = false,
            }
        }
        if pod_ready {
            match read_frame::<Request>(&mut control) {
                Ok(Some(request)) => {
                    let reply = handle(&spec, &mut narrowed, request);
                    pod_listening = write_frame(&mut control, &Event::Reply { reply }).is_ok();
                }
                Ok(None) | Err(_) => pod_listening = false,
            }
        }
        if chld {
            drained(&mut signals.child);
            loop {
                match rustix::process::wait(WaitOptions::NOHANG) {
                    Ok(Some((pid, status))) => {
                        if pid.as_raw_nonzero().get() as u32 == child_pid {
                            let exit = ExitReport::of(status);
                            if !pidns {
                                main_exit.get_or_insert(exit);
                                if pod_listening {
                                    pod_listening = write_frame(&mut control, &Event::Exited { exit }).is_ok();
                                }
                            } else {
                                // The namespace is empty once its init is
                                // gone; its last report may still be queued.
                                while let Ok(Some(InitEvent::Exited { exit })) =
                                    read_frame::<InitEvent>(&mut child_socket)
                                {
                                    main_exit.get_or_insert(exit);
                                    if pod_listening {
                                        pod_listening = write_frame(&mut control, &Event::Exited { exit }).is_ok();
                                    }
                                }
                                main_exit.get_or_insert(exit);
                            }
                        }
                    }
                    Ok(None) | Err(rustix::io::Errno::INTR) => break,
                    Err(_) => {
                        // ECHILD: nobody left; the tree is gone.
                        let code = main_exit.map_or(255, ExitReport::shell_code);
                        return ExitCode::from(u8::try_from(code).unwrap_or(255));
                    }
                }
            }
        }
    }
}

fn handle(spec: &Spec, narrowed: &mut BTreeMap<String, Vec<MountOp>>, request: Request) -> Reply {
    match request {
        Request::Ping => Reply::Pong { keeper: std::process::id() },
        Request::Go => Reply::Error {
            code: "sandbox.protocol".into(),
            message: "the workload already runs; go is said once, before any other request".into(),
        },
        Request::Narrow { id, rules } => narrow(spec, narrowed, id, &rules),
        Request::Widen { id } => match narrowed.remove(&id) {
            None => Reply::Widened { id },
            Some(ops) => match mounts::undo_all(&ops) {
                Ok(()) => Reply::Widened { id },
                Err(e) => {
                    narrowed.insert(id, ops);
                    Reply::Error { code: e.code().into(), message: e.to_string() }
                }
            },
        },
    }
}

/// Reaps every child until none is left, calling `on_main` when `main`
/// exits. Returns the main process's shell code (255 when not seen).
fn reap_until_empty(main: u32, mut on_main: impl FnMut(ExitReport)) -> i32 {
    let mut code = 255;
    loop {
        // `wait`, not `waitpid(None)`: the latter only sees children of our
        // process group, and a setsid'd orphan is in its own.
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) => {
                if pid.as_raw_nonzero().get() as u32 == main {
                    let exit = ExitReport::of(status);
                    code = exit.shell_code();
                    on_main(exit);
                }
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return code, // ECHILD: nobody left
        }
    }
}

/// Sends `signal` to every descendant of this process, each through a
/// pidfd opened while it is still known to be ours (a reused pid is never
/// signalled).
fn signal_descendants(signal: Signal) -> usize {
    let me = std::process::id();
    let mut sent = 0;
    for pid in proc::descendants(me) {
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else { continue };
        let Ok(fd) = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) else { continue };
        // Still below us once the pidfd pins it?
        let mut up = pid;
        let mut ours = false;
        for _ in 0..4096 {
            match proc::parent(up) {
                Some(p) if p == me => {
                    ours = true;
                    break;
                }
                Some(p) if p > 1 => up = p,
                _ => break,
            }
        }
        if ours && rustix::process::pidfd_send_signal(&fd, signal).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Most rounds of "kill every descendant" before the keeper gives up.
const MAX_KILL_ROUNDS: usize = 10_000;

/// SIGTERM (`kill` false): end the tree; SIGUSR1 (`kill` true): kill it.
/// With a PID namespace, its init does it (SIGKILL of the init ends every
/// process in it); else the keeper signals its descendants itself.
fn relay_signal(kill: bool, init: Option<u32>) {
    match init {
        Some(init) => {
            if let Some(pid) = i32::try_from(init).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, if kill { Signal::KILL } else { Signal::TERM });
            }
        }
        None if kill => {
            for _ in 0..MAX_KILL_ROUNDS {
                if signal_descendants(Signal::KILL) == 0 {
                    break;
                }
            }
        }
        None => {
            signal_descendants(Signal::TERM);
        }
    }
}

fn workload_members(spec: &Spec) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = match &spec.members_cgroup {
        Some(dir) => cgroup::members(dir),
        None => proc::descendants(me),
    };
    pids.retain(|p| *p != me);
    pids
}

fn busy_reply(h: busy::Holder) -> Reply {
    Reply::Busy { pid: h.pid, path: h.path, how: h.how.to_string() }
}

fn narrow(spec: &Spec, narrowed: &mut BTreeMap<String, Vec<MountOp>>, id: String, rules: &[ScopeRule]) -> Reply {
    if !spec.namespaces.mount {
        return Reply::Error {
            code: "enforce.unsupported".into(),
            message: "this workload has no private mount namespace (level landlock or off): a running workload keeps its exec-time scope".into(),
        };
    }
    if narrowed.contains_key(&id) {
        return Reply::Narrowed { id };
    }
    let writes: Vec<ScopeRule> = rules.iter().filter(|r| r.permission == Permission::Write).cloned().collect();
    if let Some(h) = busy::find(&workload_members(spec), &writes) {
        return busy_reply(h);
    }
    let ops = crate::policy::narrowing(rules);
    if let Err(e) = mounts::apply_all(&ops) {
        return Reply::Error { code: e.code().into(), message: e.to_string() };
    }
    // A process that opened something between the scan and the bind still
    // holds the old mount: look again, and undo if so.
    if let Some(h) = busy::find(&workload_members(spec), &writes) {
        if let Err(e) = mounts::undo_all(&ops) {
            return Reply::Error { code: e.code().into(), message: e.to_string() };
        }
        return busy_reply(h);
    }
    narrowed.insert(id.clone(), ops);
    Reply::Narrowed { id }
}

fn init(spec: Spec, mut keeper: UnixStream) -> ExitCode {
    let fail = |keeper: &mut UnixStream, e: &SandboxError| {
        let _ = write_frame(keeper, &InitEvent::Failed { code: e.code().into(), message: e.to_string() });
        ExitCode::from(EXIT_SETUP_FAILED)
    };
    if let Err(e) = std::env::set_current_dir("/") {
        return fail(&mut keeper, &SandboxError::io("cannot change to /")(e));
    }
    let mut signals =
        match signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1]) {
            Ok(s) => s,
            Err(e) => return fail(&mut keeper, &SandboxError::io("cannot handle signals")(e)),
        };
    let (main, mut socket) = match spawn_stage(&spec, Stage::Exec) {
        Ok(c) => c,
        Err(e) => return fail(&mut keeper, &e),
    };
    if let Err(e) = exec_parked(&mut socket) {
        return fail(&mut keeper, &e);
    }
    // Parked until the keeper's `Go`; a keeper gone before it takes this
    // init, and with it the namespace, away before anything ran.
    if write_frame(&mut keeper, &InitEvent::Parked).is_err() || !go_from(&mut keeper) {
        return ExitCode::from(EXIT_SETUP_FAILED);
    }
    if let Err(e) = write_frame(&mut socket, &Request::Go).and_then(|()| exec_result(&mut socket)) {
        return fail(&mut keeper, &e);
    }
    let _ = write_frame(&mut keeper, &InitEvent::Started);
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let sig = if signal == signal_hook::consts::SIGUSR1 { libc::SIGKILL } else { libc::SIGTERM };
            if let Err(e) = sys::kill_all_in_namespace(sig) {
                tracing::debug!(error = %e, "nothing left to signal");
            }
        }
    });
    let code = reap_until_empty(main, |exit| {
        let _ = write_frame(&mut keeper, &InitEvent::Exited { exit });
    });
    let _ = keeper.flush();
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

/// The exec stage, in a fork of the keeper that never returns to it (or,
/// below an init, a process of its own): its working directory, Landlock,
/// parked until `Go`, then the workload's exec. Returns the code to exit
/// with when it did not get that far (its parent heard why).
fn exec(spec: &Spec, mut parent: UnixStream) -> u8 {
    let program = &spec.workload;
    if let Err(e) = std::env::set_current_dir(&program.cwd) {
        tell_failure(&mut parent, &SandboxError::io(format!("cannot change to {}", program.cwd.display()))(e));
        return EXIT_SETUP_FAILED;
    }
    if let Some(plan) = &spec.landlock {
        if let Err(e) = enforce::restrict(plan) {
            tell_failure(&mut parent, &e);
            return EXIT_SETUP_FAILED;
        }
    }
    // Parked: the program runs only once its containment is on record.
    if write_frame(&mut parent, &Event::Parked).is_err() || !go_from(&mut parent) {
        return EXIT_SETUP_FAILED;
    }
    let err = Command::new(&program.program)
        .args(&program.args)
        .env_clear()
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .exec();
    // The OS's reason alone: the Pod names the program in its own words.
    let e = SandboxError::Exec(err.to_string());
    let _ = write_frame(&mut parent, &Event::Failed { code: e.code().into(), message: err.to_string() });
    EXIT_EXEC_FAILED
}
