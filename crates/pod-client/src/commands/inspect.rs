//! ls, tree, scope, check, log: the read calls. Each reads a running Pod
//! over its socket, or, for a Pod that is not running, its session log
//! directly (sled allows one process per database, so never both).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_proto::WireError;
use pod_registry::Allocation;
use scope::{Permission, PodName, Scope, ScopePath, ScopeSnapshot};
use serde::Serialize;
use session_log::{LogOptions, Record, RecordIter, SessionLog};

use crate::commands::wait::{ended, Ended};
use crate::commands::Client;
use crate::layout::PodPaths;
use crate::pod::{not_running, OwnPod, Pod};
use crate::process::start_time_of;

/// One Pod as `pod ls` lists it. How a stopped Pod ended has the shape of
/// every outcome (`wait`'s too): `state` with `exit_code` or `signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodSummary {
    pub name: PodName,
    /// running, starting, exiting, exited, killed, stopped, crashed, lost,
    /// corrupt, fenced (running without an allocation, failed closed), held
    /// (its process is gone but processes of its workload remain: its region
    /// stays taken until they are ended).
    pub state: String,
    pub parent: Option<PodName>,
    pub pid: Option<u32>,
    /// Why a Pod is marked `corrupt` (its session log's error, whole) or
    /// `held` (what still runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// How its workload ended, for a Pod that stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// What `ls` says of a Pod the registry holds no running process for.
struct Gone {
    state: String,
    problem: Option<String>,
    ended: Option<Ended>,
    /// Whose child it was, from its log.
    parent: Option<PodName>,
}

impl PodSummary {
    fn new(name: PodName, parent: Option<PodName>, pid: Option<u32>, gone: Gone) -> PodSummary {
        let (exit_code, signal) = match gone.ended {
            Some(Ended::Exited { exit_code }) => (Some(exit_code), None),
            Some(Ended::Killed { signal }) => (None, Some(signal)),
            _ => (None, None),
        };
        let parent = parent.or(gone.parent);
        PodSummary { name, state: gone.state, parent, pid, problem: gone.problem, exit_code, signal }
    }

    /// The state as a person reads it: `exited(3)`, `killed(SIGKILL)`, or
    /// the state alone.
    pub fn label(&self) -> String {
        match (self.exit_code, self.signal) {
            (Some(code), _) => format!("{}({code})", self.state),
            (None, Some(signal)) => format!("{}({})", self.state, crate::commands::wait::signal_name(signal)),
            (None, None) => self.state.clone(),
        }
    }
}

/// A live Pod and its live descendants, as `pod tree` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeNode {
    pub name: PodName,
    pub pid: u32,
    pub state: pod_registry::AllocState,
    pub write: Vec<String>,
    pub children: Vec<TreeNode>,
}

/// A Pod's scope and whether it came from the running Pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeView {
    pub name: PodName,
    pub running: bool,
    /// Why the running Pod failed closed, if it did: every check of it is
    /// then denied, whatever its rules say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fenced: Option<String>,
    /// How the kernel holds its workload (`None`: its log predates levels).
    pub enforcement: Option<crate::protocol::Enforcement>,
    /// How its workload's processes are held together, while one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containment: Option<crate::protocol::ContainmentView>,
    #[serde(flatten)]
    pub scope: ScopeSnapshot,
}

/// The answer of `pod check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckView {
    pub pod: PodName,
    pub path: String,
    pub wanted: Permission,
    pub allowed: bool,
    pub permission: Option<Permission>,
    pub decided_by: String,
}

/// Longest a read call waits for an exiting Pod to let go of its log.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long one `follow` poll waits for new records.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Every Pod known here: the registry's allocations, and the Pods of
    /// this machine's data folder that hold none (stopped, corrupt).
    pub async fn ls(&self) -> Result<Vec<PodSummary>, WireError> {
        let mut registry = self.registry().await?;
        let mut pods: BTreeMap<PodName, PodSummary> = BTreeMap::new();
        for a in registry.list().await? {
            let live = |state: &str| Gone { state: state.into(), problem: None, ended: None, parent: None };
            let gone = match a.state {
                pod_registry::AllocState::Reserved => live("starting"),
                pod_registry::AllocState::Live if start_time_of(a.pid) == Some(a.start_time) => live("running"),
                pod_registry::AllocState::Live if held_by_workload(&a).is_some() => {
                    Gone { state: "held".into(), problem: held_by_workload(&a), ended: None, parent: None }
                }
                // Its process is gone and the registry has not swept it yet: a
                // crash, which `pod resume` recovers, unless its log is damaged.
                pod_registry::AllocState::Live => match stopped_state(&self.paths(&a.name), &a.name) {
                    Gone { state, problem, .. } if state != "corrupt" && state != "exiting" => {
                        Gone { state: "crashed".into(), problem, ended: Some(Ended::Crashed), parent: None }
                    }
                    other => other,
                },
            };
            let pid = Some(a.pid).filter(|p| *p != 0);
            pods.insert(a.name.clone(), PodSummary::new(a.name, a.parent, pid, gone));
        }
        if let Ok(entries) = std::fs::read_dir(self.dirs().pods_data()) {
            for entry in entries.flatten() {
                let Ok(name) = PodName::new(entry.file_name().to_string_lossy().into_owned()) else { continue };
                if entry.path().join("log").exists() && !pods.contains_key(&name) {
                    let paths = self.paths(&name);
                    let gone = match stopped_state(&paths, &name) {
                        // Running without an allocation: the registry dropped
                        // it (its node's lease expired); it says whether it
                        // failed closed.
                        Gone { state, .. } if state == "exiting" => match fenced(&paths, &name).await {
                            Some(reason) => {
                                Gone { state: "fenced".into(), problem: Some(reason), ended: None, parent: None }
                            }
                            None => Gone { state, problem: None, ended: None, parent: None },
                        },
                        other => other,
                    };
                    pods.insert(name.clone(), PodSummary::new(name, None, None, gone));
                }
            }
        }
        Ok(pods.into_values().collect())
    }

    /// The trees of live Pods: under `name`, or every top-level one.
    pub async fn tree(&self, name: Option<&PodName>) -> Result<Vec<TreeNode>, WireError> {
        let mut registry = self.registry().await?;
        let all: BTreeMap<PodName, Allocation> =
            registry.list().await?.into_iter().map(|a| (a.name.clone(), a)).collect();
        let mut kids: BTreeMap<PodName, Vec<PodName>> = BTreeMap::new();
        for a in all.values() {
            if let Some(p) = &a.parent {
                kids.entry(p.clone()).or_default().push(a.name.clone());
            }
        }
        let roots: Vec<PodName> = match name {
            Some(n) => {
                if !all.contains_key(n) {
                    return Err(not_running(&self.paths(n), n));
                }
                vec![n.clone()]
            }
            None => all.values().filter(|a| a.parent.is_none()).map(|a| a.name.clone()).collect(),
        };
        Ok(roots.iter().filter_map(|r| build(r, &all, &kids, 0)).collect())
    }

    /// A Pod's scope: from the running Pod, else from its log.
    pub async fn scope(&self, name: &PodName) -> Result<ScopeView, WireError> {
        let current = current_scope(&self.paths(name), name).await?;
        Ok(ScopeView {
            name: name.clone(),
            running: current.running,
            fenced: current.fenced,
            enforcement: current.enforcement,
            containment: current.containment,
            scope: current.scope,
        })
    }

    /// May `name` read (or write) `path`, and which rule decides.
    pub async fn check(&self, name: &PodName, path: ScopePath, wanted: Permission) -> Result<CheckView, WireError> {
        let paths = self.paths(name);
        let live = if paths.lock_held() {
            match (Pod { paths: &paths, name }).check(path.clone(), wanted).await {
                Ok(v) => Some((v.allowed, v.permission, v.decided_by)),
                Err(e) if e.code == "pod.not_running" => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let (allowed, permission, decided_by) = if let Some(verdict) = live {
            verdict
        } else {
            let current = current_scope(&paths, name).await?;
            let scope = Scope::from_snapshot(current.scope).map_err(|e| WireError::new(e.code(), e.to_string()))?;
            let v = scope.permission_at(&path);
            match current.enforcement.as_ref().and_then(|e| e.scratch_verdict(&path, &v.decided_by)) {
                Some(scratch) => (true, Some(Permission::Write), scratch),
                None => (v.allows(wanted), v.permission, v.decided_by.to_string()),
            }
        };
        Ok(CheckView { pod: name.clone(), path: path.to_string(), wanted, allowed, permission, decided_by })
    }

    /// A reader of `name`'s session log from its first record; with
    /// `follow`, it goes on with new records until the Pod stops.
    /// Inside a workload, its Pod reads it (the workload cannot read the
    /// stores' `data/`).
    pub fn log(&self, name: &PodName, follow: bool) -> LogReader {
        LogReader {
            paths: self.paths(name),
            name: name.clone(),
            follow,
            own_socket: self.own_socket().map(Path::to_path_buf),
            reading: Reading::NotStarted,
        }
    }
}

/// Why a Pod whose process is gone still holds its region: processes of
/// its workload remain (a Pod is live while any of them is).
fn held_by_workload(a: &Allocation) -> Option<String> {
    let containment = pod_sandbox::Containment::from_record(a.containment.clone()?);
    match containment.is_populated() {
        Ok(false) => None,
        Ok(true) => Some(format!(
            "its Pod process is gone but {} processes of its workload still run ({}); its region stays held until they are ended",
            containment.members().len(),
            containment.describe()
        )),
        Err(e) => Some(format!("its Pod process is gone and whether its workload still runs is unknown ({e}); its region stays held")),
    }
}

/// A Pod without a running process: how it ended if its log replays
/// (`exited`, `killed`, `stopped`, `crashed`, `lost`), `corrupt`
/// (with the error) if it is damaged, `exiting` while its process still
/// holds it.
fn stopped_state(paths: &PodPaths, name: &PodName) -> Gone {
    if paths.lock_held() {
        return Gone { state: "exiting".into(), problem: None, ended: None, parent: None };
    }
    let opened = SessionLog::open(paths.session_log(), LogOptions::default());
    match opened.and_then(|log| log.replay()) {
        Ok(_) => match ended(paths, name) {
            Ok((ended, parent)) => Gone { state: ended.state().into(), problem: None, ended: Some(ended), parent },
            Err(e) => Gone {
                state: "stopped".into(),
                problem: Some(format!("{} [{}]", e.message, e.code)),
                ended: None,
                parent: None,
            },
        },
        Err(e) if e.damage().is_some() || e.code() == "log.impossible_history" => {
            Gone { state: "corrupt".into(), problem: Some(format!("{e} [{}]", e.code())), ended: None, parent: None }
        }
        Err(e) => {
            Gone { state: "stopped".into(), problem: Some(format!("{e} [{}]", e.code())), ended: None, parent: None }
        }
    }
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

/// Why a running Pod failed closed, if it says it did.
async fn fenced(paths: &PodPaths, name: &PodName) -> Option<String> {
    (Pod { paths, name }).status().await.ok().and_then(|s| s.fenced)
}

/// A running Pod's scope from itself, else from its log; and why the
/// running Pod failed closed, if it did.
async fn current_scope(paths: &PodPaths, name: &PodName) -> Result<Current, WireError> {
    if paths.lock_held() {
        match (Pod { paths, name }).status().await {
            Ok(s) => {
                return Ok(Current {
                    scope: s.scope,
                    running: true,
                    fenced: s.fenced,
                    enforcement: s.enforcement,
                    containment: s.containment,
                })
            }
            // Exiting (its lock not yet released): its log is about to be
            // complete; read it there.
            Err(e) if e.code == "pod.not_running" => {}
            Err(e) => return Err(e),
        }
    }
    let state = open_log(paths, name)?.replay().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let enforcement = state.enforced.as_ref().map(crate::protocol::Enforcement::from_recorded).transpose()?;
    Ok(Current { scope: state.scope, running: false, fenced: None, enforcement, containment: None })
}

/// A Pod's scope as `current_scope` found it.
struct Current {
    scope: ScopeSnapshot,
    running: bool,
    fenced: Option<String>,
    enforcement: Option<crate::protocol::Enforcement>,
    /// How its workload's processes are held together, while one runs.
    containment: Option<crate::protocol::ContainmentView>,
}

/// Opens a stopped Pod's log. A Pod that stopped answering may still be
/// exiting and holding its database; its lock file tells when it is gone.
pub fn open_log(paths: &PodPaths, name: &PodName) -> Result<SessionLog, WireError> {
    if !paths.session_log().exists() {
        return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
    }
    let deadline = std::time::Instant::now() + EXIT_WAIT;
    while paths.lock_held() {
        if std::time::Instant::now() >= deadline {
            return Err(WireError::new("pod.exiting", format!("pod {name} neither answers nor exits; try again")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    SessionLog::open(paths.session_log(), LogOptions::default()).map_err(|e| WireError::new(e.code(), e.to_string()))
}

/// Records of one Pod's session log, one at a time: from the running Pod
/// (page by page), or from the log itself once nobody holds it.
pub struct LogReader {
    paths: PodPaths,
    name: PodName,
    follow: bool,
    /// The Pod this workload runs in, which reads for it.
    own_socket: Option<PathBuf>,
    reading: Reading,
}

enum Reading {
    NotStarted,
    Live {
        next: u64,
        page: VecDeque<Record>,
    },
    /// Pages from the Pod this workload runs in.
    OwnPod {
        next: u64,
        page: VecDeque<Record>,
    },
    /// The log itself (kept open while its records are read).
    Stored(Box<(SessionLog, RecordIter)>),
    Done,
}

impl LogReader {
    /// The next record, or `None` at the end (without `follow`: the last
    /// record now; with it: the last one the Pod recorded before it
    /// stopped). An error ends the reading.
    pub async fn next(&mut self) -> Result<Option<Record>, WireError> {
        loop {
            match &mut self.reading {
                Reading::NotStarted => {
                    self.reading = if self.own_socket.is_some() {
                        Reading::OwnPod { next: 1, page: VecDeque::new() }
                    } else if self.paths.lock_held() {
                        Reading::Live { next: 1, page: VecDeque::new() }
                    } else {
                        self.stored(1)?
                    };
                }
                Reading::Stored(stored) => match stored.1.next() {
                    Some(r) => return r.map(Some).map_err(|e| WireError::new(e.code(), e.to_string())),
                    None => self.reading = Reading::Done,
                },
                Reading::Done => return Ok(None),
                Reading::OwnPod { next, page } => {
                    if let Some(r) = page.pop_front() {
                        return Ok(Some(r));
                    }
                    let from = *next;
                    let Some(socket) = self.own_socket.as_deref() else { return Ok(None) };
                    let wait = if self.follow && from > 1 { FOLLOW_WAIT } else { Duration::ZERO };
                    let (got, running) = OwnPod { socket }.log_of(&self.name, from, wait).await?;
                    // Empty: the end now, or (following) the end once the
                    // Pod stopped; else wait again.
                    if got.records.is_empty() && (!self.follow || !running) {
                        self.reading = Reading::Done;
                    } else if let Reading::OwnPod { next, page } = &mut self.reading {
                        *next = got.next_seq;
                        page.extend(got.records);
                    }
                }
                Reading::Live { next, page } => {
                    if let Some(r) = page.pop_front() {
                        return Ok(Some(r));
                    }
                    let from = *next;
                    let wait = if self.follow && from > 1 { FOLLOW_WAIT } else { Duration::ZERO };
                    match (Pod { paths: &self.paths, name: &self.name }).log(from, wait).await {
                        Ok(got) => {
                            if got.records.is_empty() && !self.follow {
                                self.reading = Reading::Done;
                            } else if let Reading::Live { next, page } = &mut self.reading {
                                *next = got.next_seq;
                                page.extend(got.records);
                            }
                        }
                        // The Pod stopped while we read it: its log is
                        // complete now; the rest comes from there.
                        Err(e) if e.code == "pod.not_running" => self.reading = self.stored(from)?,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn stored(&self, from: u64) -> Result<Reading, WireError> {
        let log = open_log(&self.paths, &self.name)?;
        let records = log.read_from(from);
        Ok(Reading::Stored(Box::new((log, records))))
    }
}
