//! One file per command. Every command returns `Result<ExitCode, WireError>`
//! so errors print as one line (`pod: what went wrong and why [code]`) with
//! a non-zero exit, and nothing else is printed on failure.

pub mod demo;
pub mod inspect;
pub mod lifecycle;
pub mod registry;

use std::path::Path;

use pod_proto::{RuntimeDirs, WireError};
use scope::{Permission, PodName, ScopeRule};

use crate::layout::PodPaths;
use crate::rules::RuleSpec;

/// The runtime directories, created or checked, with a POD_HOME of the old
/// layout moved into this one first (see `layout::migrate_old_layout`).
pub fn dirs() -> Result<RuntimeDirs, WireError> {
    let dirs = RuntimeDirs::from_env().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    if let Some(moved) = crate::layout::migrate_old_layout(&dirs)? {
        eprintln!(
            "pod: moved {} pod(s) of the old layout to {} and {} (the registry's files to {})",
            moved.pods.len(),
            dirs.pods_run().display(),
            dirs.pods_data().display(),
            dirs.registry_run().display()
        );
    }
    dirs.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    Ok(dirs)
}

pub fn pod_name(raw: &str) -> Result<PodName, WireError> {
    PodName::new(raw).map_err(|e| WireError::new(e.code(), e.to_string()))
}

pub fn cwd() -> Result<std::path::PathBuf, WireError> {
    std::env::current_dir().map_err(|e| WireError::new("cli.cwd", format!("cannot read the current directory: {e}")))
}

/// Command-line paths, relative to `cwd`, resolved through symlinks.
pub fn resolve_args(args: &[String], cwd: &Path, permission: Permission) -> Result<Vec<ScopeRule>, WireError> {
    args.iter()
        .map(|a| {
            RuleSpec::from_arg(a, cwd, permission)
                .and_then(|s| s.resolve())
                .map_err(|e| WireError::new(e.code(), e.to_string()))
        })
        .collect()
}

/// Is a process of this Pod alive? Its lock says so exactly (the kernel
/// drops it when the process dies, however it dies), where a ping with a
/// timeout would mistake a slow Pod for a dead one.
pub async fn running(paths: &PodPaths) -> bool {
    lifecycle::lock_held(paths)
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), WireError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| WireError::new("cli.json", e.to_string()))?;
    println!("{text}");
    Ok(())
}
