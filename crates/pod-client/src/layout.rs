//! Where a Pod's files live. `$POD_HOME/run/pods/<name>/` holds what dies
//! with a boot (socket, pid, lock, the children mirror, process logs);
//! `$POD_HOME/data/pods/<name>/` holds the session log. Without POD_HOME,
//! the XDG runtime and state locations (see `pod_proto::RuntimeDirs`). The
//! registry's files are in `run/registry/` and `data/registry/`, a name
//! space no Pod name reaches.
//!
//! Also the one-time move from the old layout (Pods directly under `run/`
//! and `data/`, the registry's socket, lock and log directly in `run/`),
//! done only while nothing of the old layout runs.

use std::fs::File;
use std::path::{Path, PathBuf};

use pod_proto::paths::{ensure_durable_private_dir, ensure_private_dir, DirError, PODS_DIR, REGISTRY_DIR};
use pod_proto::{RuntimeDirs, WireError};
use rustix::fs::{flock, FlockOperation};
use scope::PodName;

#[derive(Debug, Clone)]
pub struct PodPaths {
    pub dirs: RuntimeDirs,
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl PodPaths {
    pub fn new(dirs: &RuntimeDirs, name: &PodName) -> PodPaths {
        PodPaths {
            dirs: dirs.clone(),
            run_dir: dirs.pods_run().join(name.as_str()),
            data_dir: dirs.pods_data().join(name.as_str()),
        }
    }

    /// Creates the Pod's folders if they are new; the data folder's name is
    /// made durable too (its stores are).
    pub fn ensure(&self) -> Result<(), DirError> {
        ensure_private_dir(&self.run_dir)?;
        ensure_durable_private_dir(&self.data_dir)
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("sock")
    }

    /// `PID START_TIME`: the Pod process's identity (a pid alone may be
    /// reused), removed on a clean exit. Callers are told apart by it (see
    /// `process::caller`).
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("pid")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.run_dir.join("lock")
    }

    /// True when a Pod process holds this Pod's lock (it may be starting
    /// up and not answer yet). The kernel drops the lock when the process
    /// dies, however it dies, so this is exact where a ping with a timeout
    /// would mistake a slow Pod for a dead one. Opened read-only (a flock
    /// needs no write): an enforced workload may not write the runtime's
    /// files, and would otherwise take every Pod for stopped.
    pub fn lock_held(&self) -> bool {
        match std::fs::File::open(self.lock_file()) {
            Ok(file) => flock(&file, FlockOperation::NonBlockingLockExclusive).is_err(),
            Err(_) => false,
        }
    }

    /// The Pod process's own diagnostics (tracing output).
    pub fn pod_log(&self) -> PathBuf {
        self.run_dir.join("pod.log")
    }

    /// The workload's private TMPDIR: `run/tmp/NAME` (0700), beside (not
    /// inside) `run/pods/` and `run/registry/`, which no workload may write.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dirs.run.join("tmp").join(self.run_dir.file_name().unwrap_or_default())
    }

    /// The session log's sled directory.
    pub fn session_log(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    /// The identity of this Pod's session in the registry: its log's path,
    /// unique on the machine.
    pub fn session_id(&self) -> String {
        self.session_log().to_string_lossy().into_owned()
    }
}

/// A Pod process's record of itself in its pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    pub start_time: u64,
}

impl PidRecord {
    pub fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    /// Reads `paths`'s pid file; `None` when it is missing or not ours.
    pub fn read(paths: &PodPaths) -> Option<PidRecord> {
        let text = std::fs::read_to_string(paths.pid_file()).ok()?;
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let start_time = words.next()?.parse().ok()?;
        Some(PidRecord { pid, start_time })
    }
}

/// What [`migrate_old_layout`] moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    pub pods: Vec<String>,
}

/// Moves a POD_HOME of the old layout into this one, once nothing of it
/// runs (its registry daemon's lock and every Pod's lock are free, and stay
/// taken by us while we move). Pod folders are renamed, never copied; a
/// crash halfway leaves some Pods moved and the rest still old (or set
/// aside as `.old-pod-NAME`), which the next call finishes. The registry's
/// records keep the old socket paths of Pods that are not running; they
/// are replaced when those Pods are resumed (and dropped for Pods that are
/// gone).
pub fn migrate_old_layout(dirs: &RuntimeDirs) -> Result<Option<Migrated>, WireError> {
    let leftovers = |dirs: &RuntimeDirs| old_pods(&dirs.run, Root::Run).len() + old_pods(&dirs.data, Root::Data).len();
    if dirs.old_layout().is_none() && leftovers(dirs) == 0 {
        return Ok(None);
    }
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        WireError::new("dirs.migrate", format!("moving the old layout: cannot {what} {}: {e}", path.display()))
    };
    let private = |dir: &Path| ensure_private_dir(dir).map_err(|e| WireError::new(e.code(), e.to_string()));
    // One mover at a time; a second finds the work done.
    private(&dirs.run)?;
    let guard_path = dirs.run.join(".layout.lock");
    let guard = open_lock(&guard_path).map_err(|e| fail("open", &guard_path, e))?;
    flock(&guard, FlockOperation::LockExclusive).map_err(|e| fail("lock", &guard_path, e.into()))?;
    let run_pods = old_pods(&dirs.run, Root::Run);
    let data_pods = old_pods(&dirs.data, Root::Data);
    if dirs.old_layout().is_none() && run_pods.is_empty() && data_pods.is_empty() {
        return Ok(None);
    }
    // Nothing moves while anything of the old layout runs.
    let mut held = Vec::new();
    let old_daemon = dirs.run.join("registry.lock");
    if old_daemon.exists() {
        held.push(take_free_lock(&old_daemon, "the registry daemon of the old layout")?);
    }
    for pod in &run_pods {
        let lock = pod.aside.as_ref().map_or(&pod.folder, |(from, _)| from).join("lock");
        if lock.exists() {
            held.push(take_free_lock(&lock, &format!("pod {} of the old layout", pod.name))?);
        }
    }
    // Pods named like the runtime's folders leave them first.
    for pod in run_pods.iter().chain(&data_pods) {
        if let Some((from, to)) = &pod.aside {
            private(&pod.folder)?;
            std::fs::rename(from, to).map_err(|e| fail("move aside", from, e))?;
        }
    }
    for dir in [dirs.pods_run(), dirs.pods_data(), dirs.registry_run(), dirs.registry_data()] {
        private(&dir)?;
    }
    let mut moved = Migrated::default();
    for (pod, root) in
        run_pods.iter().map(|p| (p, dirs.pods_run())).chain(data_pods.iter().map(|p| (p, dirs.pods_data())))
    {
        let target = root.join(&pod.name);
        if !target.exists() {
            std::fs::rename(&pod.folder, &target).map_err(|e| fail("move", &pod.folder, e))?;
        }
        if !moved.pods.contains(&pod.name) {
            moved.pods.push(pod.name.clone());
        }
    }
    let old_log = dirs.run.join("registry.log");
    if old_log.exists() && !dirs.registry_log().exists() {
        std::fs::rename(&old_log, dirs.registry_log()).map_err(|e| fail("move", &old_log, e))?;
    }
    for stale in [dirs.run.join("registry.sock"), old_log, old_daemon] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("remove", &stale, e)),
        }
    }
    drop(held);
    moved.pods.sort();
    Ok(Some(moved))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Root {
    Run,
    Data,
}

/// A Pod folder of the old layout.
struct OldPod {
    name: String,
    /// For a Pod named like a runtime folder (`pods`, `registry`): what
    /// is moved aside first, and to where, since its new home is inside the
    /// folder of its own name.
    aside: Option<(PathBuf, PathBuf)>,
    /// The folder that then moves to `pods/NAME`.
    folder: PathBuf,
}

/// Pods of the old layout under `root`: folders directly in it holding a
/// Pod's `lock` (run) or `log` (data). Folders named `pods` or `registry`
/// are the runtime's own unless their content says otherwise: an old
/// Pod's `pod.log` file in run, a `log` folder in `data/registry` (where
/// the registry's files are in both layouts: only the log moves), a sled
/// `log/conf` in `data/pods`. Pure: nothing moves here.
fn old_pods(root: &Path, kind: Root) -> Vec<OldPod> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let is_dir = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.is_dir());
    let is_file = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.is_file());
    let mut pods = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !is_dir(&path) {
            continue;
        }
        // Set aside by a move that was interrupted.
        if let Some(old) = name.strip_prefix(".old-pod-") {
            pods.push(OldPod { name: old.to_string(), aside: None, folder: path });
            continue;
        }
        if PodName::new(name.as_str()).is_err() {
            continue;
        }
        let aside = root.join(format!(".old-pod-{name}"));
        let pod = match (name.as_str(), kind) {
            (PODS_DIR | REGISTRY_DIR, Root::Run) | (PODS_DIR, Root::Data) => {
                let own = match kind {
                    Root::Run => is_file(&path.join("pod.log")),
                    Root::Data => is_file(&path.join("log").join("conf")),
                };
                own.then(|| OldPod { name: name.clone(), aside: Some((path.clone(), aside.clone())), folder: aside })
            }
            (REGISTRY_DIR, Root::Data) => is_dir(&path.join("log")).then(|| OldPod {
                name: name.clone(),
                aside: Some((path.join("log"), aside.join("log"))),
                folder: aside,
            }),
            (_, Root::Run) => {
                path.join("lock").exists().then(|| OldPod { name: name.clone(), aside: None, folder: path })
            }
            (_, Root::Data) => {
                is_dir(&path.join("log")).then(|| OldPod { name: name.clone(), aside: None, folder: path })
            }
        };
        pods.extend(pod);
    }
    pods
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)
}

/// Takes `path`'s flock, or says who still holds it.
fn take_free_lock(path: &Path, holder: &str) -> Result<File, WireError> {
    let file =
        open_lock(path).map_err(|e| WireError::new("dirs.migrate", format!("cannot open {}: {e}", path.display())))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(WireError::new(
            "dirs.old_layout_running",
            format!(
                "{holder} still runs (it holds {}); stop it with the build that started it (or `kill` it), then run this command again to move the old layout",
                path.display()
            ),
        ));
    }
    Ok(file)
}
