//! ls, tree, scope, check, log: the read commands, rendering what
//! `pod_client`'s read calls return (a running Pod over its socket, a
//! stopped one from its session log).

use std::process::ExitCode;

use pod_client::TreeNode;
use pod_proto::WireError;
use scope::Permission;
use session_log::Record;

use crate::commands::{client, cwd, pod_name, print_json};

pub async fn ls(json: bool) -> Result<ExitCode, WireError> {
    let pods = client()?.ls().await?;
    if json {
        print_json(&pods)?;
    } else {
        println!("{:<24} {:<9} {:<24} PID", "NAME", "STATE", "PARENT");
        for p in &pods {
            let parent = p.parent.as_ref().map_or("-".to_string(), |p| p.to_string());
            let pid = p.pid.map_or("-".to_string(), |p| p.to_string());
            println!("{:<24} {:<9} {:<24} {pid}", p.name.as_str(), p.state, parent);
        }
        for p in &pods {
            if let Some(problem) = &p.problem {
                println!("{}: {problem}", p.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tree(node: &TreeNode, prefix: &str, last: bool, root: bool) {
    let branch = if root {
        ""
    } else if last {
        "└── "
    } else {
        "├── "
    };
    println!("{prefix}{branch}{} (pid {}) write {}", node.name, node.pid, node.write.join(", "));
    let next = if root { String::new() } else { format!("{prefix}{}", if last { "    " } else { "│   " }) };
    for (i, c) in node.children.iter().enumerate() {
        print_tree(c, &next, i + 1 == node.children.len(), false);
    }
}

pub async fn tree(name: Option<&str>, json: bool) -> Result<ExitCode, WireError> {
    let client = client()?;
    let name = name.map(pod_name).transpose()?;
    let trees = client.tree(name.as_ref()).await?;
    if json {
        print_json(&trees)?;
    } else {
        for t in &trees {
            print_tree(t, "", true, true);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn scope(name: &str, json: bool) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let view = client()?.scope(&name).await?;
    if json {
        print_json(&view)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{name} ({})", if view.running { "running" } else { "not running" });
    for r in &view.scope.allow {
        println!("  allow  {r}");
    }
    for r in &view.scope.deny {
        println!("  deny   {r}");
    }
    for (child, rules) in &view.scope.layers {
        for r in rules {
            println!("  layer  {child}: {r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn check(name: &str, path: &std::path::Path, write: bool, json: bool) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let client = client()?;
    if path.as_os_str().is_empty() {
        return Err(WireError::new("path.empty", "an empty path names no file; write `.` for the current directory"));
    }
    let absolute = cwd()?.join(path);
    let resolved = scope::resolve(&absolute).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let wanted = if write { Permission::Write } else { Permission::Read };
    let view = client.check(&name, resolved, wanted).await?;
    if json {
        print_json(&view)?;
    } else {
        let verdict = if view.allowed { "allowed" } else { "denied" };
        println!("{verdict}: {name} {wanted} {} ({})", view.path, view.decided_by);
    }
    Ok(if view.allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_record(r: &Record, json: bool) -> Result<(), WireError> {
    if json {
        let line = serde_json::to_string(r).map_err(|e| WireError::new("cli.json", e.to_string()))?;
        println!("{line}");
    } else {
        let body = serde_json::to_value(&r.event).map_err(|e| WireError::new("cli.json", e.to_string()))?;
        let mut fields = body.as_object().cloned().unwrap_or_default();
        fields.remove("kind");
        println!("{:>6}  {}  {:<16} {}", r.seq, r.timestamp_ms, r.event.kind(), serde_json::Value::Object(fields));
    }
    Ok(())
}

pub async fn log(name: &str, follow: bool, json: bool) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let mut reader = client()?.log(&name, follow);
    while let Some(record) = reader.next().await? {
        print_record(&record, json)?;
    }
    Ok(ExitCode::SUCCESS)
}
