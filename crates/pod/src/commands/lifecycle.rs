//! start, spawn, stop, resume, rm: the commands that change what runs.
//! Arguments become `pod_client` specs here (names validated, paths
//! resolved against the current directory); the results are printed.

use std::process::ExitCode;

use pod_client::protocol::{EnforceRequest, Enforcement, StopGrace};
use pod_client::{SpawnSpec, StartSpec, Stopped};
use pod_proto::WireError;
use pod_sandbox::Level;
use scope::Permission;

use crate::cli::{EnforceArgs, SpawnArgs, StartArgs};
use crate::commands::{client, cwd, pod_name, print_json, resolve_args};
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
    let env = crate::env_args::collect(&args.env.env, args.env.env_file.as_deref(), &cwd)?;
    let limits = args.limits.limits(workload.is_some())?;
    let enforce = enforce_request(&args.enforce, &cwd)?;
    let spec =
        StartSpec { name, allow, deny, workload, cwd: Some(cwd.to_string_lossy().into_owned()), env, limits, enforce };
    let started = client()?.start(spec).await?;
    println!("started {} (pid {}){}", started.name, started.pid, enforced_suffix(started.enforcement.as_ref()));
    warn_weak(&started.name, started.enforcement.as_ref());
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
    let env = crate::env_args::collect(&args.env.env, args.env.env_file.as_deref(), &cwd)?;
    let limits = args.limits.limits(!args.workload.is_empty())?;
    let enforce = enforce_request(&args.enforce, &cwd)?;
    let spec = SpawnSpec {
        env,
        limits,
        enforce,
        parent,
        child,
        rules,
        workload: (!args.workload.is_empty()).then_some(args.workload),
        cwd: Some(cwd.to_string_lossy().into_owned()),
    };
    let spawned = client()?.spawn(spec).await?;
    println!(
        "spawned {} (pid {}) under {}{}",
        spawned.child,
        spawned.pid,
        spawned.parent,
        enforced_suffix(spawned.enforcement.as_ref())
    );
    Ok(ExitCode::SUCCESS)
}

/// `--enforce` (else `POD_ENFORCE`) and `--scratch`, validated here: one
/// line naming a bad level, scratch paths resolved like rule paths.
fn enforce_request(args: &EnforceArgs, cwd: &std::path::Path) -> Result<EnforceRequest, WireError> {
    let from_env = std::env::var(ENFORCE_ENV).ok().filter(|v| !v.is_empty());
    let level = match (args.level.as_deref(), from_env.as_deref()) {
        (Some(text), _) => Some(Level::parse(text).map_err(|e| WireError::new(e.code(), format!("--enforce: {e}")))?),
        (None, Some(text)) => {
            Some(Level::parse(text).map_err(|e| WireError::new(e.code(), format!("{ENFORCE_ENV}: {e}")))?)
        }
        (None, None) => None,
    };
    let scratch = resolve_args(&args.scratch, cwd, Permission::Write)?
        .into_iter()
        .map(|rule| {
            if rule.recursive {
                Ok(rule.target)
            } else {
                Err(WireError::new(
                    "enforce.scratch",
                    format!("--scratch {rule}: a scratch path is a whole tree; drop the trailing /*"),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EnforceRequest { level, scratch })
}

/// The default level's environment variable.
const ENFORCE_ENV: &str = "POD_ENFORCE";

/// `, enforced at full (Landlock ABI 7)` for the start and spawn lines.
fn enforced_suffix(enforcement: Option<&Enforcement>) -> String {
    match enforcement {
        None => String::new(),
        Some(e) if e.level == Level::Off => ", not enforced (level off)".to_string(),
        Some(e) => match e.landlock_abi {
            Some(abi) => format!(", enforced at {} (Landlock ABI {abi})", e.level),
            None => format!(", enforced at {}", e.level),
        },
    }
}

/// Below `full`, and for what a level does not cover here, a warning on
/// stderr: the user must not believe in an enforcement that is not there.
fn warn_weak(name: &scope::PodName, enforcement: Option<&Enforcement>) {
    let Some(e) = enforcement else { return };
    match e.level {
        Level::Full => {}
        Level::Landlock => eprintln!(
            "pod: WARNING: {name} is enforced at landlock only: its workload keeps write on regions it delegates while it runs"
        ),
        Level::Off => eprintln!(
            "pod: WARNING: {name} is NOT enforced (level off): its workload can write anywhere its user can; the scope is bookkeeping"
        ),
    }
    for note in &e.notes {
        eprintln!("pod: WARNING: {name}: {note}");
    }
}

pub async fn stop(name: &str, timeout: u64) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let grace = StopGrace::from_secs(timeout)?;
    match client()?.stop(&name, grace).await? {
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

pub async fn rm(names: &[String], stopped: bool) -> Result<ExitCode, WireError> {
    let client = client()?;
    let names = if stopped {
        // Every Pod that has ended; running, crashed (resumable) and
        // corrupt ones are kept.
        let ended = ["exited", "killed", "stopped", "lost"];
        let pods = client.ls().await?;
        pods.into_iter().filter(|p| ended.contains(&p.state.as_str())).map(|p| p.name).collect()
    } else {
        names.iter().map(|n| pod_name(n)).collect::<Result<Vec<_>, _>>()?
    };
    for name in &names {
        let removed = client.rm(name).await?;
        println!("removed {}", removed.name);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(name: &str, signal: &str) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let number = pod_client::commands::wait::parse_signal(signal).ok_or_else(|| {
        WireError::new(
            "cli.bad_signal",
            format!("{} is no signal (a name like TERM or KILL, or 1-64)", scope::Echo(signal)),
        )
    })?;
    client()?.kill(&name, number).await?;
    println!("sent {} to {name}'s workload", pod_client::commands::wait::signal_name(number));
    Ok(ExitCode::SUCCESS)
}

pub async fn wait(names: &[String], timeout: Option<u64>, json: bool) -> Result<ExitCode, WireError> {
    let names = names.iter().map(|n| pod_name(n)).collect::<Result<Vec<_>, _>>()?;
    let waited = client()?.wait(&names, timeout.map(std::time::Duration::from_secs)).await?;
    if json {
        print_json(&waited)?;
    } else {
        for o in &waited.outcomes {
            println!("{} {}", o.name, o.ended.map_or("running".to_string(), |e| e.label()));
        }
    }
    if waited.timed_out {
        let running: Vec<String> =
            waited.outcomes.iter().filter(|o| o.ended.is_none()).map(|o| o.name.to_string()).collect();
        eprintln!(
            "pod: still running after {}s: {} [pod.wait_timeout]",
            timeout.unwrap_or_default(),
            running.join(", ")
        );
        return Ok(ExitCode::from(TIMED_OUT));
    }
    let statuses: Vec<u8> = waited.outcomes.iter().filter_map(|o| o.ended).map(|e| e.status()).collect();
    Ok(ExitCode::from(match statuses.as_slice() {
        [one] => *one,
        all if all.iter().all(|s| *s == 0) => 0,
        _ => 1,
    }))
}

/// `pod wait`'s status when the timeout passed (as timeout(1)'s).
const TIMED_OUT: u8 = 124;
