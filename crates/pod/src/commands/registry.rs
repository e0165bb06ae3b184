//! `pod registry serve | ls | stop`: the registry daemon in the foreground, and its
//! table (the JSON is `pod-registry ls --json`'s: one object per allocation).

use std::process::ExitCode;

use pod_proto::WireError;
use pod_registry::config::{Config, Settings};

use crate::cli::ServeArgs;
use crate::commands::{client, print_json};

/// The flags win over `POD_ETCD`, `POD_NODE`, `POD_LEASE_TTL`; a bad value
/// is refused before anything is opened (one line, exit 2).
pub fn serve(args: &ServeArgs) -> Result<ExitCode, WireError> {
    let flags = Settings { etcd: args.etcd.clone(), node: args.node.clone(), lease_ttl: args.lease_ttl.clone() };
    let config =
        Config::from_settings(flags.or(Settings::from_env())).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    if args.detach {
        // Fails only for a process group leader, which is detached enough.
        let _ = rustix::process::setsid();
    }
    let dirs = match (&args.run_dir, &args.data_dir) {
        (Some(run), Some(data)) => pod_proto::RuntimeDirs { run: run.clone(), data: data.clone() },
        _ => client()?.dirs().clone(),
    };
    pod_registry::daemon::run_with(&dirs, &config).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn ls(json: bool) -> Result<ExitCode, WireError> {
    let all = client()?.registry_list().await?;
    if json {
        print_json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    // NODE: the machine whose registry holds the allocation (`-` on the
    // embedded registry, which has no nodes).
    println!("{:<24} {:<9} {:<24} {:<16} {:>8}  WRITE", "NAME", "STATE", "PARENT", "NODE", "PID");
    for a in &all {
        let parent = a.parent.as_ref().map_or("-".to_string(), |p| p.to_string());
        let node = a.node.as_ref().map_or("-", |n| n.as_str());
        let write: Vec<String> = a.allow_writes().map(|r| r.region().to_string()).collect();
        println!(
            "{:<24} {:<9} {:<24} {:<16} {:>8}  {}",
            a.name.as_str(),
            format!("{:?}", a.state).to_lowercase(),
            parent,
            node,
            a.pid,
            write.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(all: bool) -> Result<ExitCode, WireError> {
    match client()?.registry_stop(all).await? {
        pod_client::commands::registry::RegistryStopped::Stopped { pid, pods } => {
            for pod in pods {
                println!("stopped {pod}");
            }
            println!("stopped the registry daemon (pid {pid})");
        }
        pod_client::commands::registry::RegistryStopped::NotRunning => println!("no registry daemon runs"),
    }
    Ok(ExitCode::SUCCESS)
}
