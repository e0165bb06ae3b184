//! Who is calling a Pod's socket, from the kernel's answers only.
//!
//! The kernel says which process connected (`SO_PEERCRED`: its pid; its
//! start time is read from `/proc` as soon as the connection is handed to
//! the Pod, right after the accept and the handshake).
//! This module says which Pod's workload that process belongs to, or that
//! it belongs to none (the operator, a user at a terminal): the one
//! decision [`identify`] makes. Nothing a caller sends (a frame field,
//! `POD_NAME`) takes part in it.
//!
//! Every fact about a process comes from `pod_registry::proc`, the reader
//! the registry's authorization uses too, so the Pod and the registry never
//! disagree about who a process is.
//!
//! First the containment: a process in a workload's cgroup belongs to that
//! workload's Pod (`pod_sandbox::workload_of`, the kernel's bookkeeping,
//! which a setsid or a double fork cannot leave), provided the cgroup is
//! the running Pod's own (its instance names the Pod process's pid and
//! start time). Else the process tree: a process belongs to the Pod whose
//! Pod process is its nearest ancestor (itself included), where a Pod
//! process is one whose pid and start time are the ones its Pod wrote in
//! `run/pods/NAME/pid` (`/proc/PID/cmdline` only says which record to
//! compare with; a Pod process started as a standby keeps the command line
//! `pod __pod --standby`, which names no Pod, so its record is looked for
//! among every Pod's; until it has one, it counts as a process of the Pod
//! that started it, which it is). Every step up is checked by start time,
//! so an ancestor that exited and whose pid was reused is never taken for
//! a Pod. The tree covers the Pod processes themselves and workloads held
//! by a supervisor instead of a cgroup (the keeper is the subreaper of its
//! tree, so an orphan stays under it). Limit: a pid file is a file the
//! same user can write.

use pod_proto::{PeerCred, RuntimeDirs, WireError};
use pod_registry::proc::stat;
use scope::PodName;

use crate::layout::{PidRecord, PodPaths};

/// Most steps up the process tree before giving up (a tree that deep is
/// not one this runtime built).
const MAX_DEPTH: usize = 4096;
/// Most Pod folders looked at for the pid record of a Pod process that was
/// started as a standby.
const MAX_PODS_SCANNED: usize = 65_536;

/// The process on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    /// Read right after the accept and handshake; `None` when the
    /// process was already gone.
    pub start_time: Option<u64>,
}

impl Peer {
    /// The kernel's credentials, completed with the process's start time.
    pub fn from_cred(cred: PeerCred) -> Peer {
        let start_time = stat(cred.pid).ok().flatten().map(|s| s.start_time);
        Peer { pid: cred.pid, uid: cred.uid, start_time }
    }

    /// Is this the process `pid` that started at `start_time`?
    pub fn is(&self, pid: u32, start_time: u64) -> bool {
        self.pid == pid && self.start_time == Some(start_time)
    }
}

/// Whose rights a caller has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A process outside every Pod: the user. May run every command.
    Operator,
    /// A process of this Pod's tree: its Pod process, its workload, or
    /// anything they started that stayed in the tree.
    Pod(PodName),
}

/// Which Pod's workload `peer` belongs to, if any. The seam containment
/// replaces: everything that authorizes asks here.
pub fn identify(peer: &Peer, dirs: &RuntimeDirs) -> Result<Caller, WireError> {
    let unknown = |why: String| {
        WireError::new("auth.caller_unknown", format!("cannot tell which pod process {} belongs to: {why}", peer.pid))
    };
    let Some(mut start_time) = peer.start_time else {
        return Err(unknown("it exited right after it connected".into()));
    };
    if let Some(name) = by_containment(peer.pid, start_time, dirs) {
        return Ok(Caller::Pod(name));
    }
    let mut pid = peer.pid;
    for _ in 0..MAX_DEPTH {
        if let Some(name) = pod_process(pid, start_time, dirs) {
            return Ok(Caller::Pod(name));
        }
        let me = stat(pid)
            .map_err(|e| unknown(format!("/proc/{pid}/stat: {e}")))?
            .filter(|s| s.start_time == start_time)
            .ok_or_else(|| unknown(format!("process {pid} exited while its ancestry was read")))?;
        if me.ppid == 0 {
            return Ok(Caller::Operator);
        }
        let parent = stat(me.ppid)
            .map_err(|e| unknown(format!("/proc/{}/stat: {e}", me.ppid)))?
            .ok_or_else(|| unknown(format!("the parent {} of process {pid} exited while it was read", me.ppid)))?;
        // A parent starts before its child. A later start means the parent
        // died and its pid went to another process between the two reads.
        if parent.start_time > start_time {
            return Err(unknown(format!("the parent of process {pid} exited while it was read")));
        }
        pid = me.ppid;
        start_time = parent.start_time;
    }
    Err(unknown(format!("its process tree is deeper than {MAX_DEPTH}")))
}

/// The Pod whose running workload's cgroup holds `pid`, if any.
fn by_containment(pid: u32, start_time: u64, dirs: &RuntimeDirs) -> Option<PodName> {
    let tag = pod_sandbox::cgroup::home_tag(dirs.run.parent()?);
    let workload = pod_sandbox::workload_of(pid, start_time, &tag, &[])?;
    let name = PodName::new(&workload.pod).ok()?;
    let record = PidRecord::read(&PodPaths::new(dirs, &name))?;
    (workload.instance == crate::process::workload::instance(record.pid, record.start_time)).then_some(name)
}

/// The Pod `pid` is the Pod process of, if it is one: its command line is
/// `... __pod NAME` and `NAME`'s pid file names this very process, or it
/// is `... __pod --standby` and some Pod's pid file names it.
fn pod_process(pid: u32, start_time: u64, dirs: &RuntimeDirs) -> Option<PodName> {
    let cmdline = pod_registry::proc::cmdline(pid).ok()??;
    let mut args = cmdline.split(|b| *b == 0);
    args.next()?;
    if args.next()? != b"__pod" {
        return None;
    }
    let me = PidRecord { pid, start_time };
    let named = args.next()?;
    if named == pod_client::launch::STANDBY_ARG.as_bytes() {
        return became(me, dirs);
    }
    let name = PodName::new(std::str::from_utf8(named).ok()?).ok()?;
    (PidRecord::read(&PodPaths::new(dirs, &name))? == me).then_some(name)
}

/// The Pod a process started as a standby became: the one whose pid record
/// names it. `None` while it is still waiting for a launch request.
fn became(me: PidRecord, dirs: &RuntimeDirs) -> Option<PodName> {
    let entries = std::fs::read_dir(dirs.pods_run()).ok()?;
    entries.take(MAX_PODS_SCANNED).filter_map(Result::ok).find_map(|entry| {
        let name = PodName::new(entry.file_name().to_str()?).ok()?;
        (PidRecord::read(&PodPaths::new(dirs, &name))? == me).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_outside_every_pod_is_the_operator() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = RuntimeDirs { run: tmp.path().join("run"), data: tmp.path().join("data") };
        let cred =
            pod_proto::peer::peer_cred_of(std::os::unix::net::UnixStream::pair().expect("pair").0).expect("peercred");
        let peer = Peer::from_cred(cred);
        assert!(peer.start_time.is_some());
        assert_eq!(identify(&peer, &dirs), Ok(Caller::Operator));
        let gone = Peer { start_time: None, ..peer };
        assert_eq!(identify(&gone, &dirs).map_err(|e| e.code), Err("auth.caller_unknown".into()));
    }

    #[test]
    fn a_process_started_as_a_standby_is_the_pod_whose_pid_record_names_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = RuntimeDirs { run: tmp.path().join("run"), data: tmp.path().join("data") };
        for (folder, record) in [("a", "7 70\n"), ("b", "8 80\n"), (".not-a-pod", "9 90\n")] {
            let dir = dirs.pods_run().join(folder);
            std::fs::create_dir_all(&dir).expect("pod folder");
            std::fs::write(dir.join("pid"), record).expect("pid record");
        }
        let b = PodName::new("b").expect("name");
        assert_eq!(became(PidRecord { pid: 8, start_time: 80 }, &dirs), Some(b));
        // Same pid, another start time: another process.
        assert_eq!(became(PidRecord { pid: 8, start_time: 81 }, &dirs), None);
        // Only Pods' folders count.
        assert_eq!(became(PidRecord { pid: 9, start_time: 90 }, &dirs), None);
    }
}
