//! start, spawn, stop, resume, rm: the commands that change what runs.
//! Arguments become `pod_client` specs here (names validated, paths
//! resolved against the current directory); the results are printed.

use std::process::ExitCode;

use pod_client::{SpawnSpec, StartSpec, Stopped};
use pod_proto::WireError;
use scope::Permission;

use crate::cli::{SpawnArgs, StartArgs};
use crate::commands::{client, cwd, pod_name, resolve_args};
use crate::manifest::Manifest;

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
    let spec = StartSpec { name, allow, deny, workload, cwd: Some(cwd.to_string_lossy().into_owned()) };
    let started = client()?.start(spec).await?;
    println!("started {} (pid {})", started.name, started.pid);
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
    let spec = SpawnSpec {
        parent,
        child,
        rules,
        workload: (!args.workload.is_empty()).then_some(args.workload),
        cwd: Some(cwd.to_string_lossy().into_owned()),
    };
    let spawned = client()?.spawn(spec).await?;
    println!("spawned {} (pid {}) under {}", spawned.child, spawned.pid, spawned.parent);
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(name: &str) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    match client()?.stop(&name).await? {
        Stopped::Reclaimed { name, parent } => println!("stopped {name}; {parent} has its scope back"),
        Stopped::AlreadyStopped { name, parent } => println!("{name} had already stopped; {parent} has its scope back"),
        Stopped::ParentDown { name, parent } => {
            println!("stopped {name}; {parent} is not running and takes its scope back when resumed")
        }
        Stopped::TopLevel { name } => println!("stopped {name}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(name: &str) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let resumed = client()?.resume(&name).await?;
    println!("resumed {} (pid {})", resumed.name, resumed.pid);
    Ok(ExitCode::SUCCESS)
}

pub async fn rm(name: &str) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let removed = client()?.rm(&name).await?;
    println!("removed {}", removed.name);
    Ok(ExitCode::SUCCESS)
}
