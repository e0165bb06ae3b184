//! A Pod's workload as one unit of processes: created for (home, Pod,
//! instance), joined by the helper at exec, ended by `terminate(grace)`
//! (TERM, the grace, KILL; returns only once nothing is left), asked
//! `is_populated()` for liveness, removed when empty. The mechanism is the
//! best the machine has ([`crate::level::choose_containment`]): a cgroup,
//! else a supervisor (the init of a PID namespace, or a subreaper).
//!
//! Everything needed to act on it later, from another process (the
//! registry's sweep, a parent reclaiming a child whose Pod process was
//! killed), is in the serializable [`ContainmentRecord`].

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupSet, Limit, LimitAt};
use crate::detect::{Controller, Support};
use crate::level::{ContainmentChoice, Limits, Mechanism};
use crate::{proc, SandboxError};

/// How long `terminate` waits after SIGKILL (or `cgroup.kill`) before it
/// declares the workload held.
pub const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long `terminate` lets the keeper report and exit after every other
/// process of a cgroup was killed, before `cgroup.kill` takes it too.
pub const KEEPER_WAIT: Duration = Duration::from_secs(1);
/// Longest instance token.
pub const MAX_INSTANCE_BYTES: usize = 40;

/// A process, named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    /// The live process `pid`, as it is now.
    pub fn of(pid: u32) -> Option<ProcessId> {
        proc::start_time(pid).map(|start_time| ProcessId { pid, start_time })
    }

    pub fn is_alive(&self) -> bool {
        proc::is_same(self.pid, self.start_time)
    }

    /// A pidfd on it, if it is still the same process.
    fn open(&self) -> Option<OwnedFd> {
        let raw = Pid::from_raw(i32::try_from(self.pid).ok()?)?;
        let fd = pidfd_open(raw, PidfdFlags::empty()).ok()?;
        self.is_alive().then_some(fd)
    }
}

/// Who a containment is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainmentKey {
    /// The runtime's home (`POD_HOME`, or the runtime directory): its hash
    /// keeps parallel homes apart.
    pub home: PathBuf,
    pub pod: scope::PodName,
    /// Unique per run of the Pod (e.g. its session id): 1-40 of
    /// `[a-z0-9-]`.
    pub instance: String,
}

/// All that identifies a workload's containment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainmentRecord {
    pub mechanism: Mechanism,
    pub home_tag: String,
    pub pod: String,
    pub instance: String,
    pub cgroups: CgroupSet,
    /// The v2 cgroup as `/proc/<pid>/cgroup` shows it (`/pod-sandbox.<tag>/<leaf>`).
    pub v2_path: Option<String>,
    /// The keeper (set once the workload is launched).
    pub keeper: Option<ProcessId>,
    /// The init of the PID namespace (`PidNamespace` only).
    pub init: Option<ProcessId>,
    pub pid_namespace: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containment {
    record: ContainmentRecord,
}

fn check_instance(instance: &str) -> Result<(), SandboxError> {
    let ok = !instance.is_empty()
        && instance.len() <= MAX_INSTANCE_BYTES
        && instance.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::BadRequest(format!(
            "containment instance {instance:?} must be 1-{MAX_INSTANCE_BYTES} characters of a-z, 0-9 and '-'"
        )))
    }
}

impl Containment {
    /// Creates the cgroups (and limits) for a workload; the workload itself
    /// joins at exec ([`crate::launch`]).
    pub fn create(
        support: &Support,
        choice: &ContainmentChoice,
        key: &ContainmentKey,
        limits: &Limits,
    ) -> Result<Containment, SandboxError> {
        check_instance(&key.instance)?;
        let tag = cgroup::home_tag(&key.home);
        let leaf = cgroup::leaf_name(key.pod.as_str(), &key.instance);
        let v2_parent = match (choice.mechanism, &support.cgroup) {
            (Mechanism::Cgroup, Ok(v2)) => Some(v2.parent.as_path()),
            (Mechanism::Cgroup, Err(m)) => return Err(SandboxError::Unsupported(format!("no cgroup: {}", m.reason))),
            _ => None,
        };
        fn at(c: &Option<Controller>) -> Option<LimitAt<'_>> {
            match c {
                Some(Controller::V2) => Some(LimitAt::V2),
                Some(Controller::V1 { parent, .. }) => Some(LimitAt::V1 { parent: parent.as_path() }),
                None => None,
            }
        }
        let mut wanted = Vec::new();
        if let (Some(n), Some(at)) = (limits.max_pids, at(&choice.pids)) {
            wanted.push(Limit { at, controller: "pids", file: "pids.max", value: n.to_string() });
        }
        if let (Some(bytes), Some(at)) = (limits.memory_bytes, at(&choice.memory)) {
            let file = if matches!(at, LimitAt::V2) { "memory.max" } else { "memory.limit_in_bytes" };
            wanted.push(Limit { at, controller: "memory", file, value: bytes.to_string() });
        }
        let cgroups = cgroup::create(v2_parent, &tag, &leaf, &wanted)?;
        let v2_path = match (&cgroups.v2, &support.cgroup) {
            (Some(dir), Ok(v2)) => dir.strip_prefix(&v2.mount).ok().map(|rel| format!("/{}", rel.display())),
            _ => None,
        };
        Ok(Containment {
            record: ContainmentRecord {
                mechanism: choice.mechanism,
                home_tag: tag,
                pod: key.pod.as_str().to_string(),
                instance: key.instance.clone(),
                cgroups,
                v2_path,
                keeper: None,
                init: None,
                pid_namespace: None,
            },
        })
    }

    /// Takes up a containment another process created (registry sweep,
    /// reclaim after the Pod process died).
    pub fn from_record(record: ContainmentRecord) -> Containment {
        Containment { record }
    }

    pub fn record(&self) -> &ContainmentRecord {
        &self.record
    }

    pub fn mechanism(&self) -> Mechanism {
        self.record.mechanism
    }

    pub(crate) fn set_processes(&mut self, keeper: ProcessId, init: Option<ProcessId>, pid_namespace: Option<u64>) {
        self.record.keeper = Some(keeper);
        self.record.init = init;
        self.record.pid_namespace = pid_namespace;
    }

    /// One line for `pod scope`: the mechanism and where it lives.
    pub fn describe(&self) -> String {
        let mut text = match (&self.record.mechanism, &self.record.cgroups.v2) {
            (Mechanism::Cgroup, Some(dir)) => format!("cgroup {}", dir.display()),
            (m, _) => match self.record.keeper {
                Some(k) => format!("{} (keeper pid {})", m.name(), k.pid),
                None => m.name().to_string(),
            },
        };
        for v1 in &self.record.cgroups.v1 {
            text.push_str(&format!("; {} limit in {}", v1.controller, v1.dir.display()));
        }
        text
    }

    /// The v2 cgroup, when the mechanism is a cgroup.
    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.record.cgroups.v2.as_deref()
    }

    /// Is any process of the workload alive? ("A Pod is live while its
    /// process or any process of its workload is.")
    pub fn is_populated(&self) -> Result<bool, SandboxError> {
        match self.record.mechanism {
            Mechanism::Cgroup => match &self.record.cgroups.v2 {
                Some(dir) => cgroup::is_populated(dir),
                None => Ok(false),
            },
            Mechanism::PidNamespace | Mechanism::Subreaper => {
                Ok(self.record.keeper.is_some_and(|k| k.is_alive()) || self.record.init.is_some_and(|i| i.is_alive()))
            }
        }
    }

    /// The workload's processes now (keeper included).
    pub fn members(&self) -> Vec<u32> {
        match (&self.record.mechanism, &self.record.cgroups.v2) {
            (Mechanism::Cgroup, Some(dir)) => cgroup::members(dir),
            _ => match self.record.keeper.filter(|k| k.is_alive()) {
                Some(k) => {
                    let mut out = vec![k.pid];
                    out.extend(proc::descendants(k.pid));
                    out
                }
                None => Vec::new(),
            },
        }
    }

    /// Ends the whole tree: SIGTERM to every process, up to `grace` for them
    /// to go, then SIGKILL (`cgroup.kill`, or the supervisor's kill), and
    /// returns once none is left. `Held` when that cannot be shown within
    /// [`KILL_WAIT`]: the caller keeps the region and retries.
    pub fn terminate(&self, grace: Duration) -> Result<(), SandboxError> {
        match self.record.mechanism {
            Mechanism::Cgroup => self.terminate_cgroup(grace),
            Mechanism::PidNamespace | Mechanism::Subreaper => self.terminate_supervised(grace),
        }
    }

    fn terminate_cgroup(&self, grace: Duration) -> Result<(), SandboxError> {
        let Some(dir) = &self.record.cgroups.v2 else { return Ok(()) };
        if !cgroup::is_populated(dir)? {
            return Ok(());
        }
        self.signal_members(dir, Signal::TERM, None);
        if cgroup::wait_empty(dir, grace)? {
            return Ok(());
        }
        // Every process but the keeper first: the keeper then reaps the
        // main process, reports how it ended (killed, signal 9: a kernel
        // fact the Pod records) and exits once its tree is gone.
        // `cgroup.kill` only for what is left after KEEPER_WAIT (a process
        // forked meanwhile, a keeper that does not go).
        if let Some(keeper) = self.record.keeper.filter(|k| k.is_alive()) {
            self.signal_members(dir, Signal::KILL, Some(keeper));
            if cgroup::wait_empty(dir, KEEPER_WAIT)? {
                return Ok(());
            }
        }
        cgroup::kill(dir)?;
        if cgroup::wait_empty(dir, KILL_WAIT)? {
            return Ok(());
        }
        Err(SandboxError::Held(format!(
            "cgroup {} still holds {} processes {KILL_WAIT:?} after cgroup.kill",
            dir.display(),
            cgroup::members(dir).len()
        )))
    }

    /// Sends `signal` to every process of the cgroup `dir` but `except`,
    /// each through a pidfd opened while it is still in the cgroup.
    fn signal_members(&self, dir: &Path, signal: Signal, except: Option<ProcessId>) {
        let ours = self.record.v2_path.as_deref();
        for pid in cgroup::members(dir) {
            let Some(id) = ProcessId::of(pid) else { continue };
            if except == Some(id) {
                continue;
            }
            let Some(fd) = id.open() else { continue };
            // Still in our cgroup once pinned by the pidfd?
            let inside = match (ours, proc::cgroup_v2_path(pid)) {
                (Some(ours), Some(now)) => now.starts_with(ours),
                _ => true,
            };
            if inside {
                let _ = pidfd_send_signal(&fd, signal);
            }
        }
    }

    fn terminate_supervised(&self, grace: Duration) -> Result<(), SandboxError> {
        let Some(keeper) = self.record.keeper else { return Ok(()) };
        let wait_gone = |timeout: Duration| -> bool {
            let deadline = Instant::now() + timeout;
            loop {
                if !self.is_populated().unwrap_or(true) {
                    return true;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                // Woken by the keeper's exit (pidfd readable), else by
                // the init's.
                let target = if keeper.is_alive() { Some(keeper) } else { self.record.init };
                match target.and_then(|p| p.open()) {
                    Some(fd) => wait_readable(&fd, left),
                    None => continue,
                }
            }
        };
        let signal = |p: ProcessId, s: Signal| {
            if let Some(fd) = p.open() {
                let _ = pidfd_send_signal(&fd, s);
            }
        };
        if !self.is_populated()? {
            return Ok(());
        }
        signal(keeper, Signal::TERM);
        if wait_gone(grace) {
            return Ok(());
        }
        signal(keeper, Signal::USR1);
        if let Some(init) = self.record.init {
            // The namespace dies with its init, whatever the keeper does.
            signal(init, Signal::KILL);
        }
        if wait_gone(KILL_WAIT) {
            return Ok(());
        }
        if self.record.mechanism == Mechanism::PidNamespace {
            // Nothing of the workload is left outside the namespace but
            // the keeper itself.
            signal(keeper, Signal::KILL);
            if wait_gone(KILL_WAIT) {
                return Ok(());
            }
        }
        Err(SandboxError::Held(format!(
            "the {} (pid {}) still runs {KILL_WAIT:?} after the kill",
            self.record.mechanism.name(),
            keeper.pid
        )))
    }

    /// Removes the cgroups. Refused while a process remains.
    pub fn remove(&self) -> Result<(), SandboxError> {
        if self.is_populated()? {
            return Err(SandboxError::Held(format!("{} still holds processes; terminate it first", self.describe())));
        }
        cgroup::remove(&self.record.cgroups);
        if !cgroup::is_removed(&self.record.cgroups) {
            return Err(SandboxError::Held(format!("the cgroups of {} could not be removed", self.describe())));
        }
        Ok(())
    }
}

fn wait_readable(fd: &OwnedFd, timeout: Duration) {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let ts = rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec { tv_sec: 1, tv_nsec: 0 });
    let _ = poll(&mut fds, Some(&ts));
}
