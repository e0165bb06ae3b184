//! One file per command group. Each command turns its arguments into a
//! typed call of `pod_client::Client` and renders the result; every command
//! returns `Result<ExitCode, WireError>` so errors print as one line (`pod:
//! what went wrong and why [code]`) with a non-zero exit, and nothing else
//! is printed on failure.

pub mod demo;
pub mod doctor;
pub mod inspect;
pub mod kv;
pub mod lifecycle;
pub mod mcp;
pub mod registry;

use std::path::Path;

use pod_client::Client;
use pod_proto::WireError;
use scope::{Permission, PodName, ScopeRule};

use crate::rules::RuleSpec;

/// The client of this environment's runtime directories, created or
/// checked; a home of the old layout moved into this one first is told on
/// stderr (see `layout::migrate_old_layout`).
pub fn client() -> Result<Client, WireError> {
    let (client, moved) = Client::from_env()?;
    if let Some(moved) = moved {
        let dirs = client.dirs();
        eprintln!(
            "pod: moved {} pod(s) of the old layout to {} and {} (the registry's files to {})",
            moved.pods.len(),
            dirs.pods_run().display(),
            dirs.pods_data().display(),
            dirs.registry_run().display()
        );
    }
    Ok(client)
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

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), WireError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| WireError::new("cli.json", e.to_string()))?;
    println!("{text}");
    Ok(())
}
