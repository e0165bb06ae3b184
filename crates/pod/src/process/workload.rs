//! The optional workload, started in exactly one place: this file. What it
//! is given is data ([`WorkloadSpec`]): its command, directory and the
//! `--env` variables; its stdout and stderr are pipes the Pod captures
//! (`output.rs`); its stdin is empty. When it exits, its Pod shuts down and
//! records how it ended.
//!
//! It starts through `pod_sandbox::launch`, inside a containment of its own
//! (a cgroup where the machine has one, else a supervisor): the keeper, this
//! very binary re-executed as `pod __sandbox-exec keeper`, joins it and
//! executes the workload, so that every process the workload ever starts
//! (setsid, double-forked) is in it and ends with the Pod ([`Contained::end`]).
//! The level and plan it is enforced with are `enforcement.rs`'s.
//!
//! It starts in two steps: [`start`] prepares it parked before its exec
//! (its containment complete), the caller records that containment
//! durably, and only then [`Prepared::release`] lets the program run, so a
//! Pod killed at any moment never leaves a tree that ran unrecorded.
//!
//! Its environment: the Pod process's own (for a top-level Pod, that of the
//! `pod start` caller; for a child, inherited from its parent Pod process;
//! variables whose name or value is not UTF-8 are left out), then the
//! `--env` variables, then `POD_NAME`, `POD_SOCKET`, `POD_HOME` (when the
//! Pod has one) and `POD_PARENT` (a child's parent), which `--env` cannot
//! set.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pod_client::protocol::{ContainmentView, Env};
use pod_proto::WireError;
use pod_sandbox::{
    choose_containment, launch, Containment, ContainmentKey, ContainmentRecord, ExitReport, HelperCommand, LaunchSpec,
    Limits, Mechanism, Parked, Program, SandboxError, Workload,
};
use session_log::Exit;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::layout::PodPaths;
use crate::process::output::OutputFile;
use crate::process::owner::OwnerMsg;
use crate::process::watch::PidFd;

/// The hidden subcommand that runs the sandbox's re-exec helper.
pub const HELPER_SUBCOMMAND: &str = "__sandbox-exec";
/// How often the exit watcher looks whether the keeper vanished without
/// reporting the workload's exit (it was killed).
const KEEPER_CHECK: Duration = Duration::from_secs(1);

pub struct WorkloadSpec<'a> {
    pub command: &'a [String],
    pub cwd: Option<&'a str>,
    pub env: &'a Env,
    pub parent: Option<&'a scope::PodName>,
    pub limits: Limits,
    /// The level and plan it is enforced with (`enforcement.rs`).
    pub enforcement: pod_sandbox::Choice,
}

/// A workload parked before its exec, its containment complete.
pub struct Prepared {
    containment: Containment,
    parked: Parked,
    program: String,
    stdout: tokio::net::unix::pipe::Receiver,
    stderr: tokio::net::unix::pipe::Receiver,
    output: OutputFile,
}

/// A started workload.
pub struct Running {
    /// `None` when it had already exited when looked at.
    pub process: Option<PidFd>,
    /// How it ended, once it has.
    pub exit: watch::Receiver<Option<Exit>>,
    /// Finishes when its output is all written.
    pub output: JoinHandle<()>,
    /// Its whole process tree.
    pub contained: Contained,
}

/// The workload's containment and the keeper that holds it.
#[derive(Clone)]
pub struct Contained {
    containment: Arc<Containment>,
    workload: Arc<Workload>,
}

impl Contained {
    pub fn containment(&self) -> &Containment {
        &self.containment
    }

    /// Ends the whole tree (TERM, `grace`, KILL) and removes the
    /// containment; returns once no process of it remains, or `Held` when
    /// that cannot be shown.
    pub async fn end(&self, grace: Duration) -> Result<(), SandboxError> {
        let containment = Arc::clone(&self.containment);
        tokio::task::spawn_blocking(move || {
            containment.terminate(grace)?;
            containment.remove()
        })
        .await
        .map_err(|e| SandboxError::Held(format!("the task ending the workload failed: {e}")))?
    }

    /// Takes `rules` (delegated to `child`) from the running workload at
    /// level `full`; returns once the kernel enforces it (`enforce.busy`,
    /// nothing changed, while one of its processes holds a path there).
    pub async fn narrow(&self, child: &scope::PodName, rules: &[scope::ScopeRule]) -> Result<(), SandboxError> {
        let (workload, child, rules) = (Arc::clone(&self.workload), child.clone(), rules.to_vec());
        tokio::task::spawn_blocking(move || workload.narrow(&child, &rules))
            .await
            .map_err(|e| SandboxError::Helper(format!("the task narrowing the workload failed: {e}")))?
    }

    /// Gives back what `narrow(child)` took (idempotent).
    pub async fn widen(&self, child: &scope::PodName) -> Result<(), SandboxError> {
        let (workload, child) = (Arc::clone(&self.workload), child.clone());
        tokio::task::spawn_blocking(move || workload.widen(&child))
            .await
            .map_err(|e| SandboxError::Helper(format!("the task widening the workload failed: {e}")))?
    }

    /// Takes write on all of `rules` (the Pod's write scope, while it is
    /// fenced) from the running workload at level `full`.
    pub async fn fence(&self, rules: &[scope::ScopeRule]) -> Result<(), SandboxError> {
        let (workload, rules) = (Arc::clone(&self.workload), rules.to_vec());
        tokio::task::spawn_blocking(move || workload.fence(&rules))
            .await
            .map_err(|e| SandboxError::Helper(format!("the task fencing the workload failed: {e}")))?
    }

    /// Gives back what `fence` took (idempotent).
    pub async fn unfence(&self) -> Result<(), SandboxError> {
        let workload = Arc::clone(&self.workload);
        tokio::task::spawn_blocking(move || workload.unfence())
            .await
            .map_err(|e| SandboxError::Helper(format!("the task unfencing the workload failed: {e}")))?
    }

    /// What `pod scope` says of it.
    pub fn view(&self) -> ContainmentView {
        let mechanism = match self.containment.mechanism() {
            Mechanism::Cgroup => "cgroup",
            Mechanism::PidNamespace => "pid_namespace",
            Mechanism::Subreaper => "subreaper",
        };
        ContainmentView { mechanism: mechanism.to_string(), detail: self.containment.describe() }
    }
}

/// The containment instance of the Pod process `pid` started at
/// `start_time`: unique per run of a Pod, and how a cgroup is known to be
/// the running Pod's (`caller.rs`).
pub fn instance(pid: u32, start_time: u64) -> String {
    format!("{pid}-{start_time}")
}

fn wire(e: SandboxError) -> WireError {
    WireError::new(e.code(), e.to_string())
}

/// The workload's whole environment (see the module's comment).
fn environment(spec: &WorkloadSpec<'_>, paths: &PodPaths, name: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| !pod_client::env::RESERVED_ENV.contains(&k.as_str()))
        .collect();
    let mut set = |key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    };
    for (key, value) in &spec.env.0 {
        set(key, value.clone());
    }
    set("POD_NAME", name.to_string());
    set("POD_SOCKET", paths.socket().to_string_lossy().into_owned());
    if let Some(parent) = spec.parent {
        set("POD_PARENT", parent.as_str().to_string());
    }
    if let (Some(home), true) = (paths.dirs.run.parent(), std::env::var_os("POD_HOME").is_some()) {
        set("POD_HOME", home.to_string_lossy().into_owned());
    }
    env
}

/// A pipe whose write end the workload gets and whose read end the Pod reads.
fn output_pipe() -> Result<(tokio::net::unix::pipe::Receiver, OwnedFd), WireError> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| WireError::new("pod.workload", format!("cannot create the workload's output pipe: {e}")))?;
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(read)
        .map_err(|e| WireError::new("pod.workload", format!("cannot read the workload's output pipe: {e}")))?;
    Ok((read, write))
}

/// Prepares the workload, parked before its exec: what [`Prepared::record`]
/// says is all a later process needs to end it.
pub async fn start(spec: WorkloadSpec<'_>, paths: &PodPaths) -> Result<Prepared, WireError> {
    let (program, args) =
        spec.command.split_first().ok_or_else(|| WireError::new("pod.workload", "the workload command is empty"))?;
    let name = paths.run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let pod = scope::PodName::new(&name).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let cwd = match spec.cwd {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_dir()
            .map_err(|e| WireError::new("pod.workload", format!("cannot read the working directory: {e}")))?,
    };
    let program_spec =
        Program { program: program.clone(), args: args.to_vec(), env: environment(&spec, paths, &name), cwd };
    let helper = HelperCommand {
        program: std::env::current_exe()
            .map_err(|e| WireError::new("pod.workload", format!("cannot find this program to re-run it: {e}")))?,
        args: vec![HELPER_SUBCOMMAND.to_string()],
    };
    let home = paths.dirs.run.parent().map(|p| p.to_path_buf()).unwrap_or_else(|| paths.dirs.run.clone());
    let me = std::process::id();
    let my_start = crate::process::watch::start_time_of(me)
        .ok_or_else(|| WireError::new("pod.io", "cannot read this process's own start time from /proc"))?;
    let key = ContainmentKey { home, pod, instance: instance(me, my_start) };
    let limits = spec.limits;
    let enforcement = spec.enforcement.clone();
    let (stdout, stdout_w) = output_pipe()?;
    let (stderr, stderr_w) = output_pipe()?;
    // Detected once per process, as the level was decided on it.
    let support = crate::process::enforcement::support()?;
    // The output file is opened while the keeper starts (a file's
    // creation is one of the slow parts of a spawn on some filesystems).
    // Both tasks are awaited whatever happens: a failed launch's folder is
    // removed after this returns, and no open may still be making a file
    // in it then.
    let output_paths = paths.clone();
    let opening_output = tokio::task::spawn_blocking(move || OutputFile::open(&output_paths));
    let launching = tokio::task::spawn_blocking(move || -> Result<(Containment, Parked), SandboxError> {
        let phase = std::time::Instant::now();
        let choice = choose_containment(support, &limits)?;
        let mut containment = Containment::create(support, &choice, &key, &limits)?;
        tracing::info!(ms = phase.elapsed().as_secs_f64() * 1e3, "containment created");
        let phase = std::time::Instant::now();
        let launched = launch(
            &mut containment,
            LaunchSpec {
                helper,
                program: program_spec,
                level: enforcement.level,
                plan: &enforcement.plan,
                support,
                stdout: stdout_w,
                stderr: stderr_w,
            },
        );
        tracing::info!(ms = phase.elapsed().as_secs_f64() * 1e3, "keeper ready");
        match launched {
            Ok(parked) => Ok((containment, parked)),
            Err(e) => {
                // Nothing runs: the cgroups go too.
                if let Err(rm) = containment.remove() {
                    tracing::warn!(error = %rm, "cannot remove the containment of a workload that did not start");
                }
                Err(e)
            }
        }
    });
    let (launched, opened) = tokio::join!(launching, opening_output);
    let launched =
        launched.map_err(|e| WireError::new("pod.internal", format!("the workload's launch task failed: {e}")))?;
    let (containment, parked) = launched.map_err(|e| start_error(program, e))?;
    let output = match opened {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            cancel(containment, parked).await;
            return Err(e);
        }
        Err(e) => {
            cancel(containment, parked).await;
            return Err(WireError::new("pod.internal", format!("the task opening the output file failed: {e}")));
        }
    };
    Ok(Prepared { containment, parked, program: program.clone(), stdout, stderr, output })
}

fn start_error(program: &str, e: SandboxError) -> WireError {
    match e {
        SandboxError::Exec(why) => WireError::new("pod.workload", format!("cannot start workload {program:?}: {why}")),
        other => wire(other),
    }
}

impl Prepared {
    /// What is recorded (registry op `contain`) before the release.
    pub fn record(&self) -> &ContainmentRecord {
        self.containment.record()
    }

    /// Ends the workload that never ran and removes its containment.
    pub async fn cancel(self) {
        let Prepared { containment, parked, .. } = self;
        cancel(containment, parked).await;
    }

    /// Lets the program run (its containment is on record by now);
    /// returns once it was exec'd.
    pub async fn release(self, tx: mpsc::Sender<OwnerMsg>) -> Result<Running, WireError> {
        let Prepared { containment, parked, program, stdout, stderr, output } = self;
        let released = tokio::task::spawn_blocking(move || match parked.release() {
            Ok(workload) => Ok((containment, workload)),
            Err(e) => {
                // Nothing of it runs: the cgroups go too.
                if let Err(rm) = containment.terminate(Duration::ZERO).and_then(|()| containment.remove()) {
                    tracing::warn!(error = %rm, "cannot remove the containment of a workload that did not start");
                }
                Err(e)
            }
        })
        .await
        .map_err(|e| WireError::new("pod.internal", format!("the workload's release task failed: {e}")))?;
        let (containment, workload) = released.map_err(|e| start_error(&program, e))?;
        running(containment, workload, output, stdout, stderr, tx)
    }
}

/// Ends a workload that never ran and removes its containment.
async fn cancel(containment: Containment, parked: Parked) {
    let ended = tokio::task::spawn_blocking(move || {
        parked.cancel();
        containment.terminate(Duration::ZERO)?;
        containment.remove()
    })
    .await;
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot end a workload that was never released"),
        Err(e) => tracing::error!(error = %e, "the task ending a workload that was never released failed"),
    }
}

fn running(
    containment: Containment,
    workload: Workload,
    output: OutputFile,
    stdout: tokio::net::unix::pipe::Receiver,
    stderr: tokio::net::unix::pipe::Receiver,
    tx: mpsc::Sender<OwnerMsg>,
) -> Result<Running, WireError> {
    let output = crate::process::output::capture(output, stdout, stderr);
    let pid = workload.pid();
    // The main process, held for `pod kill`: a pidfd stays bound to it
    // even after its pid is reused. `None` when it has already exited.
    let process = crate::process::watch::start_time_of(pid).and_then(|start| PidFd::open(pid, start));
    tracing::info!(pid, keeper = workload.keeper_pid(), containment = %containment.describe(), "workload started");
    let contained = Contained { containment: Arc::new(containment), workload: Arc::new(workload) };
    let (exit_tx, exit) = watch::channel(None);
    let watched = Arc::clone(&contained.workload);
    std::thread::Builder::new()
        .name("workload-exit".into())
        .spawn(move || {
            let exit = exit_of(wait_for_exit(&watched));
            exit_tx.send_replace(Some(exit));
            if tx.blocking_send(OwnerMsg::WorkloadExited { exit }).is_err() {
                tracing::debug!("owner gone before the workload exited");
            }
            // The keeper exits once the whole tree is gone (the Pod's
            // shutdown ends it); reaped here so it is no zombie.
            if let Err(e) = watched.reap() {
                tracing::warn!(error = %e, "cannot reap the workload's keeper");
            }
        })
        .map_err(|e| WireError::new("pod.internal", format!("cannot start the workload's exit watcher: {e}")))?;
    Ok(Running { process, exit, output, contained })
}

/// The main process's exit as the keeper reports it; `None` when the
/// keeper went away without a report.
fn wait_for_exit(workload: &Workload) -> Option<ExitReport> {
    loop {
        if let Some(report) = workload.wait_exit(KEEPER_CHECK) {
            return Some(report);
        }
        match workload.try_reap() {
            Ok(None) => continue,
            // Gone: a report it sent just before is still read.
            Ok(Some(_)) | Err(_) => return workload.wait_exit(KEEPER_CHECK),
        }
    }
}

fn exit_of(report: Option<ExitReport>) -> Exit {
    match report {
        Some(ExitReport { code: Some(code), .. }) => Exit::code(code),
        Some(ExitReport { signal: Some(signal), .. }) => Exit::signal(signal),
        _ => {
            tracing::error!("the workload's keeper went away without reporting how the workload ended");
            Exit::default()
        }
    }
}
