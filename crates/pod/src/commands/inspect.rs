//! ls, tree, scope, check, log: the read commands. Each reads a running Pod
//! over its socket, or, for a Pod that is not running, its session log
//! directly (sled allows one process per database, so never both).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use pod_proto::WireError;
use pod_registry::Allocation;
use scope::{Permission, PodName, Scope, ScopeSnapshot};
use serde::Serialize;
use session_log::{LogOptions, Record, SessionLog};

use crate::commands::lifecycle::{call_pod, not_running, unexpected};
use crate::commands::{cwd, dirs, pod_name, print_json, running};
use crate::layout::PodPaths;
use crate::protocol::{PodReply, PodRequest};
use crate::registry_link::Registry;

#[derive(Serialize)]
struct PodSummary {
    name: PodName,
    state: &'static str,
    parent: Option<PodName>,
    pid: Option<u32>,
    /// Why a Pod is marked `corrupt`: its session log's error, whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

pub async fn ls(json: bool) -> Result<ExitCode, WireError> {
    let dirs = dirs()?;
    let registry = Registry::connect(&dirs).await?;
    let mut pods: BTreeMap<PodName, PodSummary> = BTreeMap::new();
    for a in registry.list().await? {
        let (state, problem) = match a.state {
            pod_registry::AllocState::Reserved => ("starting", None),
            pod_registry::AllocState::Live if crate::process::watch::start_time_of(a.pid) == Some(a.start_time) => {
                ("running", None)
            }
            // Its process is gone and the registry has not swept it yet: a
            // crash, which `pod resume` recovers, unless its log is damaged.
            pod_registry::AllocState::Live => match stopped_state(&PodPaths::new(&dirs, &a.name)) {
                ("stopped", problem) => ("crashed", problem),
                other => other,
            },
        };
        pods.insert(
            a.name.clone(),
            PodSummary { name: a.name, state, parent: a.parent, pid: Some(a.pid).filter(|p| *p != 0), problem },
        );
    }
    if let Ok(entries) = std::fs::read_dir(dirs.pods_data()) {
        for entry in entries.flatten() {
            let Ok(name) = PodName::new(entry.file_name().to_string_lossy().into_owned()) else { continue };
            if entry.path().join("log").exists() && !pods.contains_key(&name) {
                let paths = PodPaths::new(&dirs, &name);
                let (state, problem) = match stopped_state(&paths) {
                    // Running without an allocation: the registry dropped it
                    // (its node's lease expired); it says whether it failed
                    // closed.
                    ("exiting", _) => fenced(&paths, &name).await.map_or(("exiting", None), |r| ("fenced", Some(r))),
                    other => other,
                };
                pods.insert(name.clone(), PodSummary { name, state, parent: None, pid: None, problem });
            }
        }
    }
    if json {
        print_json(&pods.values().collect::<Vec<_>>())?;
    } else {
        println!("{:<24} {:<9} {:<24} PID", "NAME", "STATE", "PARENT");
        for p in pods.values() {
            let parent = p.parent.as_ref().map_or("-".to_string(), |p| p.to_string());
            let pid = p.pid.map_or("-".to_string(), |p| p.to_string());
            println!("{:<24} {:<9} {:<24} {pid}", p.name.as_str(), p.state, parent);
        }
        for p in pods.values() {
            if let Some(problem) = &p.problem {
                println!("{}: {problem}", p.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a running Pod failed closed, if it says it did.
async fn fenced(paths: &PodPaths, name: &PodName) -> Option<String> {
    match call_pod(paths, name, &PodRequest::Status).await {
        Ok(PodReply::Status(s)) => s.fenced,
        _ => None,
    }
}

/// A Pod the registry does not list: `stopped` if its log replays,
/// `corrupt` (with the error) if it is damaged, `exiting` while its
/// process still holds it.
fn stopped_state(paths: &PodPaths) -> (&'static str, Option<String>) {
    if crate::commands::lifecycle::lock_held(paths) {
        return ("exiting", None);
    }
    let replayed = SessionLog::open(paths.session_log(), LogOptions::default()).and_then(|log| log.replay());
    match replayed {
        Ok(_) => ("stopped", None),
        Err(e) if e.damage().is_some() || e.code() == "log.impossible_history" => {
            ("corrupt", Some(format!("{e} [{}]", e.code())))
        }
        Err(e) => ("stopped", Some(format!("{e} [{}]", e.code()))),
    }
}

#[derive(Serialize)]
struct TreeNode {
    name: PodName,
    pid: u32,
    state: pod_registry::AllocState,
    write: Vec<String>,
    children: Vec<TreeNode>,
}

fn build(
    name: &PodName,
    all: &BTreeMap<PodName, Allocation>,
    kids: &BTreeMap<PodName, Vec<PodName>>,
    depth: usize,
) -> Option<TreeNode> {
    let a = all.get(name)?;
    // The registry keeps parent links acyclic; the bound is a second guard.
    let children = if depth < scope::limits::MAX_LAYERS {
        kids.get(name).into_iter().flatten().filter_map(|c| build(c, all, kids, depth + 1)).collect()
    } else {
        Vec::new()
    };
    Some(TreeNode {
        name: a.name.clone(),
        pid: a.pid,
        state: a.state,
        write: a.allow_writes().map(|r| r.region().to_string()).collect(),
        children,
    })
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
    let dirs = dirs()?;
    let registry = Registry::connect(&dirs).await?;
    let all: BTreeMap<PodName, Allocation> = registry.list().await?.into_iter().map(|a| (a.name.clone(), a)).collect();
    let mut kids: BTreeMap<PodName, Vec<PodName>> = BTreeMap::new();
    for a in all.values() {
        if let Some(p) = &a.parent {
            kids.entry(p.clone()).or_default().push(a.name.clone());
        }
    }
    let roots: Vec<PodName> = match name {
        Some(n) => {
            let n = pod_name(n)?;
            if !all.contains_key(&n) {
                return Err(not_running(&crate::layout::PodPaths::new(&dirs, &n), &n));
            }
            vec![n]
        }
        None => all.values().filter(|a| a.parent.is_none()).map(|a| a.name.clone()).collect(),
    };
    let trees: Vec<TreeNode> = roots.iter().filter_map(|r| build(r, &all, &kids, 0)).collect();
    if json {
        print_json(&trees)?;
    } else {
        for t in &trees {
            print_tree(t, "", true, true);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A running Pod's scope from itself, else from its log.
/// The scope, whether the Pod runs, and why it failed closed if it did.
async fn current_scope(paths: &PodPaths, name: &PodName) -> Result<(ScopeSnapshot, bool, Option<String>), WireError> {
    if running(paths).await {
        match call_pod(paths, name, &PodRequest::Status).await {
            Ok(PodReply::Status(s)) => return Ok((s.scope, true, s.fenced)),
            Ok(other) => return Err(unexpected(&other)),
            // Exiting (its lock not yet released): its log is about to be
            // complete; read it there.
            Err(e) if e.code == "pod.not_running" => {}
            Err(e) => return Err(e),
        }
    }
    let state = open_log(paths, name)?.replay().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    Ok((state.scope, false, None))
}

/// Longest a read command waits for an exiting Pod to let go of its log.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Opens a stopped Pod's log. A Pod that stopped answering may still be
/// exiting and holding its database; its lock file tells when it is gone.
fn open_log(paths: &PodPaths, name: &PodName) -> Result<SessionLog, WireError> {
    if !paths.session_log().exists() {
        return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
    }
    let deadline = std::time::Instant::now() + EXIT_WAIT;
    while crate::commands::lifecycle::lock_held(paths) {
        if std::time::Instant::now() >= deadline {
            return Err(WireError::new("pod.exiting", format!("pod {name} neither answers nor exits; try again")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    SessionLog::open(paths.session_log(), LogOptions::default()).map_err(|e| WireError::new(e.code(), e.to_string()))
}

#[derive(Serialize)]
struct ScopeView<'a> {
    name: &'a PodName,
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fenced: Option<&'a str>,
    #[serde(flatten)]
    scope: &'a ScopeSnapshot,
}

pub async fn scope(name: &str, json: bool) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let paths = PodPaths::new(&dirs()?, &name);
    let (snapshot, running, fenced) = current_scope(&paths, &name).await?;
    if json {
        print_json(&ScopeView { name: &name, running, fenced: fenced.as_deref(), scope: &snapshot })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{name} ({})", if running { "running" } else { "not running" });
    if let Some(reason) = &fenced {
        // Every check of this Pod is denied, whatever its rules say.
        println!("  fenced {reason}");
    }
    for r in &snapshot.allow {
        println!("  allow  {r}");
    }
    for r in &snapshot.deny {
        println!("  deny   {r}");
    }
    for (child, rules) in &snapshot.layers {
        for r in rules {
            println!("  layer  {child}: {r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct CheckView {
    pod: PodName,
    path: String,
    wanted: Permission,
    allowed: bool,
    permission: Option<Permission>,
    decided_by: String,
}

pub async fn check(name: &str, path: &std::path::Path, write: bool, json: bool) -> Result<ExitCode, WireError> {
    let name = pod_name(name)?;
    let paths = PodPaths::new(&dirs()?, &name);
    if path.as_os_str().is_empty() {
        return Err(WireError::new("path.empty", "an empty path names no file; write `.` for the current directory"));
    }
    let absolute = cwd()?.join(path);
    let resolved = scope::resolve(&absolute).map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let wanted = if write { Permission::Write } else { Permission::Read };
    let live = if running(&paths).await {
        match call_pod(&paths, &name, &PodRequest::Check { path: resolved.clone(), permission: wanted }).await {
            Ok(PodReply::Verdict { allowed, permission, decided_by }) => Some((allowed, permission, decided_by)),
            Ok(other) => return Err(unexpected(&other)),
            Err(e) if e.code == "pod.not_running" => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let (allowed, permission, decided_by) = if let Some(verdict) = live {
        verdict
    } else {
        let (snapshot, _, _) = current_scope(&paths, &name).await?;
        let scope = Scope::from_snapshot(snapshot).map_err(|e| WireError::new(e.code(), e.to_string()))?;
        let v = scope.permission_at(&resolved);
        (v.allows(wanted), v.permission, v.decided_by.to_string())
    };
    if json {
        print_json(&CheckView { pod: name, path: resolved.to_string(), wanted, allowed, permission, decided_by })?;
    } else {
        let verdict = if allowed { "allowed" } else { "denied" };
        println!("{verdict}: {name} {wanted} {resolved} ({decided_by})");
    }
    Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// How long one `--follow` poll waits for new records.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);

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
    let paths = PodPaths::new(&dirs()?, &name);
    if !running(&paths).await {
        let log = open_log(&paths, &name)?;
        for r in log.read_from(1) {
            print_record(&r.map_err(|e| WireError::new(e.code(), e.to_string()))?, json)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut next = 1;
    loop {
        let wait_ms = if follow && next > 1 { FOLLOW_WAIT.as_millis() as u64 } else { 0 };
        let reply = match call_pod(&paths, &name, &PodRequest::Log { from_seq: next, wait_ms }).await {
            Ok(r) => r,
            // The Pod stopped while we followed it: its log is complete now;
            // print what it recorded last, straight from the log.
            Err(e) if e.code == "pod.not_running" => {
                let log = open_log(&paths, &name)?;
                for r in log.read_from(next) {
                    print_record(&r.map_err(|e| WireError::new(e.code(), e.to_string()))?, json)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e),
        };
        let PodReply::Log { records, next_seq } = reply else { return Err(unexpected(&reply)) };
        for r in &records {
            print_record(r, json)?;
        }
        next = next_seq;
        if records.is_empty() && !follow {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
