//! `pod registry serve | ls | stop`: the registry daemon in the foreground, and its
//! table (the JSON is `pod-registry ls --json`'s: one object per allocation).

use std::process::ExitCode;

use pod_proto::WireError;

use crate::cli::ServeArgs;
use crate::commands::{client, print_json};

pub fn serve(args: &ServeArgs) -> Result<ExitCode, WireError> {
    if args.detach {
        // Fails only for a process group leader, which is detached enough.
        let _ = rustix::process::setsid();
    }
    let dirs = match (&args.run_dir, &args.data_dir) {
        (Some(run), Some(data)) => pod_proto::RuntimeDirs { run: run.clone(), data: data.clone() },
        _ => client()?.dirs().clone(),
    };
    pod_registry::daemon::run(&dirs).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn ls(json: bool) -> Result<ExitCode, WireError> {
    let all = client()?.registry_list().await?;
    if json {
        print_json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<9} {:<24} {:>8}  WRITE", "NAME", "STATE", "PARENT", "PID");
    for a in &all {
        let parent = a.parent.as_ref().map_or("-".to_string(), |p| p.to_string());
        let write: Vec<String> = a.allow_writes().map(|r| r.region().to_string()).collect();
        println!(
            "{:<24} {:<9} {:<24} {:>8}  {}",
            a.name.as_str(),
            format!("{:?}", a.state).to_lowercase(),
            parent,
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
