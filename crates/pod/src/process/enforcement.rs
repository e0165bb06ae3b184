//! How strongly the kernel holds a Pod's workload to its scope: the one
//! place the Pod runtime decides a level (`pod_sandbox::choose_level`) and
//! builds the policy it is decided from. A top-level Pod decides at start,
//! before it takes its allocation; a parent decides for its child before
//! the registry's delegate (so a refusal changes nothing), and the child
//! plans again at that exact level. What the machine offers is detected
//! once per process.

use std::path::PathBuf;
use std::sync::OnceLock;

use pod_client::protocol::{EnforceRequest, Enforcement, Env};
use pod_proto::{RuntimeDirs, WireError};
use pod_sandbox::{Choice, Level, Policy, Support};
use scope::{PodName, ScopePath, ScopeSnapshot};

/// What this machine offers, detected on first use (honouring
/// `POD_SANDBOX_DISABLE`).
pub fn support() -> Result<&'static Support, WireError> {
    static SUPPORT: OnceLock<Result<Support, WireError>> = OnceLock::new();
    SUPPORT
        .get_or_init(|| Support::detect().map_err(|e| WireError::new(e.code(), e.to_string())))
        .as_ref()
        .map_err(Clone::clone)
}

/// The workload's private temporary directory (`PodPaths::tmp_dir`).
fn tmpdir(dirs: &RuntimeDirs, name: &PodName) -> PathBuf {
    crate::layout::PodPaths::new(dirs, name).tmp_dir()
}

/// Creates the workload's TMPDIR (0700, its parent too) and returns `env`
/// with `TMPDIR` naming it, last, so it wins over an `--env TMPDIR`: under
/// enforcement no other temporary directory would be writable.
pub fn with_tmpdir(paths: &crate::layout::PodPaths, mut env: Env) -> Result<Env, WireError> {
    let dir = paths.tmp_dir();
    if let Some(parent) = dir.parent() {
        pod_proto::paths::ensure_private_dir(parent).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    }
    pod_proto::paths::ensure_private_dir(&dir).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    env.0.push(("TMPDIR".to_string(), dir.to_string_lossy().into_owned()));
    Ok(env)
}

/// Removes the workload's TMPDIR when the Pod exits (what its workload
/// left there is nobody's).
pub fn remove_tmpdir(paths: &crate::layout::PodPaths) {
    match std::fs::remove_dir_all(paths.tmp_dir()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove the workload's TMPDIR"),
    }
}

fn scope_path(path: &std::path::Path) -> Result<ScopePath, WireError> {
    let text = path.to_str().ok_or_else(|| {
        WireError::new("enforce.path", format!("{} is not UTF-8; enforcement needs UTF-8 paths", path.display()))
    })?;
    ScopePath::new(text).map_err(|e| WireError::new(e.code(), e.to_string()))
}

/// A Pod's rules as enforcement sees them: its scope (base and layers),
/// its scratch paths, its TMPDIR, and the runtime's directories it may
/// never write (`run/pods`, `run/registry`) or read (`data/`).
pub fn policy(
    scope: &ScopeSnapshot,
    scratch: &[ScopePath],
    dirs: &RuntimeDirs,
    name: &PodName,
) -> Result<Policy, WireError> {
    Ok(Policy {
        allow: scope.allow.clone(),
        deny: scope.deny.clone(),
        layers: scope.layers.clone(),
        scratch: scratch.to_vec(),
        tmpdir: scope_path(&tmpdir(dirs, name))?,
        runtime_dirs: vec![scope_path(&dirs.pods_run())?, scope_path(&dirs.registry_run())?],
        data_dirs: vec![scope_path(&dirs.data)?],
    })
}

/// The level for a new Pod with `scope`: the one asked for, exactly, or
/// the strongest possible; never below `floor` (the parent's). A refusal
/// names the missing feature or the rule, with the sandbox's stable code.
pub fn choose(
    support: &Support,
    scope: &ScopeSnapshot,
    request: &EnforceRequest,
    floor: Option<Level>,
    dirs: &RuntimeDirs,
    name: &PodName,
) -> Result<(Enforcement, Choice), WireError> {
    let policy = policy(scope, &request.scratch, dirs, name)?;
    // Unasked, a child gets its parent's level, and a top-level Pod the
    // strongest level this machine and its rules allow (the notes say why
    // not a stronger one).
    let choice = pod_sandbox::choose_level(support, &policy, request.level.or(floor), floor)
        .map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let landlock_abi = match (choice.level, &support.landlock) {
        (Level::Off, _) | (_, Err(_)) => None,
        (_, Ok(landlock)) => Some(u32::from(landlock.abi)),
    };
    let enforcement = Enforcement {
        level: choice.level,
        landlock_abi,
        notes: choice.notes.clone(),
        scratch: request.scratch.clone(),
    };
    Ok((enforcement, choice))
}
