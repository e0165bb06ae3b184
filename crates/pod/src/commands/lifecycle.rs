//! start, spawn, stop, resume, rm: the commands that change what runs.

use std::process::ExitCode;
use std::time::Duration;

use pod_proto::{ProtoError, WireError};
use scope::Permission;
use session_log::{LogOptions, SessionLog};

use crate::cli::{SpawnArgs, StartArgs};
use crate::client::PodClient;
use crate::commands::{cwd, dirs, pod_name, resolve_args, running};
use crate::launch::{launch, LaunchMode, LaunchRequest};
use crate::layout::PodPaths;
use crate::manifest::Manifest;
use crate::process::watch;
use crate::protocol::{PodReply, PodRequest, SpawnRequest};
use crate::registry_link::Registry;

/// Longest `pod stop` waits for a top-level Pod's process to be gone.
const STOP_WAIT: Duration = Duration::from_secs(30);

pub async fn start(args: StartArgs) -> Result<ExitCode, WireError> {
    let cwd = cwd()?;
    let manifest = args
        .manifest
        .as_deref()
        .map(|m| Manifest::load_arg(m, &cwd))
        .transpose()
        .map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let from_manifest = manifest.as_ref().and_then(|m| m.name.clone());
    let name = match (args.name.as_deref().map(pod_name).transpose()?, from_manifest) {
        (Some(a), Some(m)) if a != m => {
            return Err(WireError::new(
                "cli.name_conflict",
                format!("the command line names {a} but the manifest names {m}"),
            ))
        }
        (Some(a), _) => a,
        (None, Some(m)) => m,
        (None, None) => {
            return Err(WireError::new("cli.no_name", "a pod name is needed (argument or `name` in the manifest)"))
        }
    };
    let resolve_specs = |specs: &[crate::rules::RuleSpec]| {
        specs
            .iter()
            .map(|s| s.resolve().map_err(|e| WireError::new(e.code(), e.to_string())))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut allow = manifest.as_ref().map(|m| resolve_specs(&m.allow)).transpose()?.unwrap_or_default();
    allow.extend(resolve_args(&args.rules.write, &cwd, Permission::Write)?);
    allow.extend(resolve_args(&args.rules.read, &cwd, Permission::Read)?);
    let mut deny = manifest.as_ref().map(|m| resolve_specs(&m.deny)).transpose()?.unwrap_or_default();
    deny.extend(resolve_args(&args.deny_write, &cwd, Permission::Write)?);
    deny.extend(resolve_args(&args.deny_read, &cwd, Permission::Read)?);
    let workload = if args.workload.is_empty() { manifest.and_then(|m| m.workload) } else { Some(args.workload) };
    let dirs = dirs()?;
    let paths = PodPaths::new(&dirs, &name);
    paths.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let request = LaunchRequest {
        name: name.clone(),
        mode: LaunchMode::Start { allow, deny, workload },
        cwd: Some(cwd.to_string_lossy().into_owned()),
    };
    let launched = launch(&request, &paths.pod_log()).await?;
    println!("started {name} (pid {})", launched.pid);
    Ok(ExitCode::SUCCESS)
}

pub async fn spawn(args: SpawnArgs) -> Result<ExitCode, WireError> {
    let cwd = cwd()?;
    let child = pod_name(&args.child)?;
    let parent = args.parent.as_deref().map(pod_name).transpose()?.ok_or_else(|| {
        WireError::new("cli.no_parent", "--parent is needed outside a workload (POD_NAME is not set)")
    })?;
    let mut rules = resolve_args(&args.rules.write, &cwd, Permission::Write)?;
    rules.extend(resolve_args(&args.rules.read, &cwd, Permission::Read)?);
    let dirs = dirs()?;
    let parent_paths = PodPaths::new(&dirs, &parent);
    let request = PodRequest::Spawn(SpawnRequest {
        child: child.clone(),
        rules,
        workload: (!args.workload.is_empty()).then_some(args.workload),
        cwd: Some(cwd.to_string_lossy().into_owned()),
    });
    let reply = call_pod(&parent_paths, &parent, &request).await?;
    match reply {
        PodReply::Spawned { child, pid, .. } => println!("spawned {child} (pid {pid}) under {parent}"),
        other => return Err(unexpected(&other)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(name: &str) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let dirs = dirs()?;
    let paths = PodPaths::new(&dirs, &name);
    let registry = Registry::connect(&dirs).await?;
    let Some(alloc) = registry.get(&name).await? else {
        return Err(not_running(&paths, &name));
    };
    fail::fail_point!("stop.after_lookup");
    if let Some(parent) = &alloc.parent {
        let parent_paths = PodPaths::new(&dirs, parent);
        match PodClient::call_once(
            &parent_paths.socket().to_string_lossy(),
            &PodRequest::StopChild { child: name.clone() },
        )
        .await
        {
            Ok(PodReply::Stopped { reclaimed: true }) => {
                println!("stopped {name}; {parent} has its scope back");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(PodReply::Stopped { reclaimed: false }) => {
                println!("{name} had already stopped; {parent} has its scope back");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(other) => return Err(unexpected(&other)),
            Err(ProtoError::Remote(e)) => return Err(e),
            Err(e) => {
                tracing::info!(%parent, error = %e, "parent not reachable; stopping the child directly");
            }
        }
    }
    // Held before the request: after the exit its pid may be reused.
    let process = watch::PidFd::open(alloc.pid, alloc.start_time);
    call_pod(&paths, &name, &PodRequest::Shutdown).await?;
    if let Some(process) = process {
        if tokio::time::timeout(STOP_WAIT, process.wait_or_kill(STOP_WAIT)).await.is_err() {
            return Err(WireError::new("pod.stop_timeout", format!("{name} did not exit within {STOP_WAIT:?}")));
        }
    }
    match &alloc.parent {
        Some(parent) => println!("stopped {name}; {parent} is not running and takes its scope back when resumed"),
        None => println!("stopped {name}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(name: &str) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let dirs = dirs()?;
    let paths = PodPaths::new(&dirs, &name);
    if !paths.session_log().exists() {
        return Err(WireError::new("pod.unknown", format!("no pod named {name} has a session log here")));
    }
    if running(&paths).await && !exited(&paths).await {
        return Err(WireError::new("pod.running", format!("pod {name} is already running")));
    }
    let request = LaunchRequest { name: name.clone(), mode: LaunchMode::Resume, cwd: None };
    let launched = launch(&request, &paths.pod_log()).await?;
    println!("resumed {name} (pid {})", launched.pid);
    Ok(ExitCode::SUCCESS)
}

/// Longest `resume` and `rm` wait for a Pod that is on its way out.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// For a Pod whose lock is held: false when it answers (it runs); else waits
/// (bounded) for the lock to go. A process killed with SIGKILL keeps its
/// files, and so its lock, until its last thread has exited, which can be
/// a moment after its main thread is already a zombie.
async fn exited(paths: &PodPaths) -> bool {
    if PodClient::ping(&paths.socket(), Duration::from_secs(1)).await.is_some() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    while lock_held(paths) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

pub async fn rm(name: &str) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let dirs = dirs()?;
    let paths = PodPaths::new(&dirs, &name);
    if !paths.data_dir.exists() && !paths.run_dir.exists() {
        return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
    }
    if running(&paths).await && !exited(&paths).await {
        return Err(WireError::new("pod.running", format!("pod {name} is running; `pod stop {name}` first")));
    }
    // A Pod that crashed still holds its allocation (its record keeps its
    // children's regions excluded until it resumes); forgetting the Pod
    // gives that up: its live children become top-level Pods.
    let registry = Registry::connect(&dirs).await?;
    if let Some(alloc) = registry.get(&name).await? {
        if watch::start_time_of(alloc.pid) == Some(alloc.start_time) {
            return Err(WireError::new(
                "pod.running",
                format!("pod {name} is running (pid {}); `pod stop {name}` first", alloc.pid),
            ));
        }
        registry.release(&name).await?;
    }
    for dir in [&paths.data_dir, &paths.run_dir] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WireError::new("pod.io", format!("cannot remove {}: {e}", dir.display()))),
        }
    }
    println!("removed {name}");
    Ok(ExitCode::SUCCESS)
}

/// True when a Pod process holds `name`'s lock (it may be starting up and
/// not answer yet).
pub fn lock_held(paths: &PodPaths) -> bool {
    use rustix::fs::{flock, FlockOperation};
    match std::fs::OpenOptions::new().write(true).open(paths.lock_file()) {
        Ok(file) => flock(&file, FlockOperation::NonBlockingLockExclusive).is_err(),
        Err(_) => false,
    }
}

pub async fn call_pod(paths: &PodPaths, name: &scope::PodName, request: &PodRequest) -> Result<PodReply, WireError> {
    PodClient::call_once(&paths.socket().to_string_lossy(), request).await.map_err(|e| match e {
        ProtoError::Remote(w) => w,
        ProtoError::Timeout(_) => e.to_wire(),
        _ => not_running(paths, name),
    })
}

pub fn not_running(paths: &PodPaths, name: &scope::PodName) -> WireError {
    if !paths.session_log().exists() {
        return WireError::new("pod.unknown", format!("no pod named {name} here"));
    }
    // A child is not resumed but spawned again by its parent: say so. Its
    // log says whose child it was (read only when nobody holds it).
    let parent = (!lock_held(paths))
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

pub fn unexpected(reply: &PodReply) -> WireError {
    WireError::new("pod.unexpected_reply", format!("unexpected reply from the pod: {reply:?}"))
}
