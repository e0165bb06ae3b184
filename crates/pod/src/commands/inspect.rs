//! ls, tree, scope, check, log: the read commands, rendering what
//! `pod_client`'s read calls return (a running Pod over its socket, a
//! stopped one from its session log).

use std::process::ExitCode;

use pod_client::TreeNode;
use pod_proto::WireError;
use scope::Permission;
use std::collections::BTreeMap;

use scope::{PodName, ScopeRule};
use session_log::{Event, Exit, Record};

use crate::commands::{client, cwd, pod_name, print_json};

pub async fn ls(json: bool) -> Result<ExitCode, WireError> {
    let pods = client()?.ls().await?;
    if json {
        print_json(&pods)?;
    } else {
        println!("{:<24} {:<16} {:<24} PID", "NAME", "STATE", "PARENT");
        for p in &pods {
            let parent = p.parent.as_ref().map_or("-".to_string(), |p| p.to_string());
            let pid = p.pid.map_or("-".to_string(), |p| p.to_string());
            println!("{:<24} {:<16} {:<24} {pid}", p.name.as_str(), p.label(), parent);
        }
        for p in &pods {
            if let Some(problem) = &p.problem {
                println!("{}: {problem}", p.name);
            }
        }
        for p in pods.iter().filter(|p| p.state == "crashed" && p.parent.is_none()) {
            println!("{}: its Pod process died; `pod resume {}` brings it back", p.name, p.name);
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
    if let Some(reason) = &view.fenced {
        // Every check of this Pod is denied, whatever its rules say.
        println!("  fenced {reason}");
    }
    match &view.enforcement {
        Some(e) => {
            let abi = e.landlock_abi.map(|a| format!(" (Landlock ABI {a})")).unwrap_or_default();
            println!("  enforced {}{abi}", e.level);
            for path in &e.scratch {
                println!("  scratch {path}/**");
            }
        }
        None => println!("  enforced (not recorded: this Pod's log predates enforcement levels)"),
    }
    if let Some(containment) = &view.containment {
        // The mechanism in words; where it lives is in --json.
        let words = match containment.mechanism.as_str() {
            "cgroup" => "a cgroup v2",
            "pid_namespace" => "a PID-namespace supervisor",
            "subreaper" => "a subreaper supervisor",
            other => other,
        };
        println!("  contained by {words}");
    }
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

/// One concise line per event: what changed, not the whole scope (a
/// `pod.scope` snapshot is shown as the layers it added or removed).
#[derive(Default)]
struct LogView {
    layers: Option<BTreeMap<PodName, Vec<ScopeRule>>>,
}

fn rules(rules: &[ScopeRule]) -> String {
    rules.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

fn ended(exit: &Exit) -> String {
    match (exit.exit_code, exit.signal) {
        (Some(code), _) => format!("workload exited {code}"),
        (None, Some(signal)) => format!("workload killed by {}", pod_client::commands::wait::signal_name(signal)),
        (None, None) => "no workload exit seen".into(),
    }
}

impl LogView {
    fn describe(&mut self, event: &Event) -> String {
        match event {
            Event::PodCreated { name, parent, base, workload } => {
                self.layers = Some(base.layers.clone());
                let mut text = match parent {
                    Some(p) => format!("created {name}, a child of {p}: allow {}", rules(&base.allow)),
                    None => format!("created {name}: allow {}", rules(&base.allow)),
                };
                if !base.deny.is_empty() {
                    text.push_str(&format!("; deny {}", rules(&base.deny)));
                }
                if let Some(w) = workload {
                    text.push_str(&format!("; workload {}", scope::Echo(&w.join(" "))));
                }
                text
            }
            Event::PodScope { scope } => {
                let before = self.layers.replace(scope.layers.clone());
                let Some(before) = before else {
                    let names: Vec<&str> = scope.layers.keys().map(|n| n.as_str()).collect();
                    return format!("{} layer(s): {}", names.len(), names.join(", "));
                };
                let mut changes: Vec<String> = Vec::new();
                for (child, layer) in &scope.layers {
                    if before.get(child) != Some(layer) {
                        changes.push(format!("+{child} ({})", rules(layer)));
                    }
                }
                for child in before.keys().filter(|c| !scope.layers.contains_key(*c)) {
                    changes.push(format!("-{child}"));
                }
                if changes.is_empty() {
                    format!("unchanged, {} layer(s)", scope.layers.len())
                } else {
                    format!("layers {}", changes.join(" "))
                }
            }
            Event::ChildSpawned { name, rules: delegated, .. } => format!("spawned {name}: {}", rules(delegated)),
            Event::ChildRemoved { name, reason, exit } => {
                let reason =
                    serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                match (exit.exit_code, exit.signal) {
                    (None, None) => format!("removed {name} ({reason})"),
                    _ => format!("removed {name} ({reason}, {})", ended(exit)),
                }
            }
            Event::ChildReparented { name, from, rules: taken, .. } => {
                format!("adopted {name} from {from}: {}", rules(taken))
            }
            Event::PodStopped { exit } => match (exit.exit_code, exit.signal) {
                (None, None) => "stopped".into(),
                _ => format!("stopped ({})", ended(exit)),
            },
            Event::PodFenced { reason } => format!("fenced: {reason}"),
            Event::PodRejoined { reclaimed, fenced } => {
                let names: Vec<&str> = reclaimed.iter().map(PodName::as_str).collect();
                let mut text = if names.is_empty() {
                    "re-claimed nothing under the node's new lease".to_string()
                } else {
                    format!("re-claimed under the node's new lease: {}", names.join(", "))
                };
                for (name, why) in fenced {
                    text.push_str(&format!("; {name} stays fenced: {why}"));
                }
                text
            }
            Event::PodEnforced(e) => match e.landlock_abi {
                Some(abi) => format!("enforced at {} (Landlock ABI {abi})", e.level),
                None => format!("enforced at {}", e.level),
            },
            Event::Unknown { kind } => format!("({kind}: an event of a newer version)"),
        }
    }
}

fn print_record(view: &mut LogView, r: &Record, json: bool) -> Result<(), WireError> {
    if json {
        let line = serde_json::to_string(r).map_err(|e| WireError::new("cli.json", e.to_string()))?;
        println!("{line}");
    } else {
        let text = view.describe(&r.event);
        println!("{:>6}  {}  {:<16} {text}", r.seq, crate::render::local_time(r.timestamp_ms), r.event.kind());
    }
    Ok(())
}

pub async fn log(name: &str, follow: bool, json: bool) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let mut reader = client()?.log(&name, follow);
    let mut view = LogView::default();
    while let Some(record) = reader.next().await? {
        print_record(&mut view, &record, json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_output(line: &pod_client::output::OutputLine, json: bool) -> Result<(), WireError> {
    if json {
        let text = serde_json::to_string(line).map_err(|e| WireError::new("cli.json", e.to_string()))?;
        println!("{text}");
    } else {
        println!("{} {} {}", crate::render::local_time(line.timestamp_ms), line.stream.as_str(), line.line);
    }
    Ok(())
}

pub async fn logs(name: &str, follow: bool, tail: Option<usize>, json: bool) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let (lines, mut next) = client()?.logs(&name, tail).await?;
    for line in &lines {
        print_output(line, json)?;
    }
    if follow {
        // stdout is line-buffered: a reader on a pipe sees each line at once.
        while let Some(lines) = next.next().await? {
            for line in &lines {
                print_output(line, json)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
