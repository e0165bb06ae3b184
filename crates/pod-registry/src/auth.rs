//! Who may change an allocation: decided from the kernel, never from a frame.
//!
//! Why: any process of the same user can connect to the registry socket.
//! Without this, a stranger's `release` of a live Pod frees its paths while
//! the Pod keeps writing there, and the next Pod granted them is a second
//! writer. The rules:
//!
//! - A request that changes a live Pod's allocation is accepted from that
//!   Pod's own process (pid and start time, as the kernel reported them when
//!   the connection was accepted), or from the process that started it (its
//!   parent per the kernel, never pid 1: a reaper is nobody's parent). For a
//!   child Pod that is its parent Pod's process.
//! - `delegate` is accepted only from the parent Pod's process (or its
//!   starter), whether or not it still runs: a dead Pod delegates nothing.
//! - `adopt` of a reserved child (it has no process yet) is accepted from a
//!   process that its parent Pod's process started (the child Pod itself,
//!   which the parent launched), or from the parent Pod's process.
//! - `reclaim` of a child whose parent runs is accepted from the parent's
//!   process; when the parent does not run, only a child that does not run
//!   either may be reclaimed by anyone (a live child waits for its parent to
//!   resume, or for the sweep).
//! - Requests about Pods that are not live (reserved, or whose process is
//!   gone) may come from any same-uid caller: there is no writer to protect.
//! - The pid that `register` and `adopt` name must be the caller's own or a
//!   process the caller started; its start time is read from the kernel
//!   (checked at the edge, in the daemon, before the request is queued).
//!
//! Pure: the kernel's facts come in through [`Kernel`], so the rules are
//! tested without processes; the daemon's implementation reads `/proc`.

use crate::ops::Op;
use crate::record::{AllocState, Allocation};
use crate::state::State;
use crate::RegistryError;

/// A process as the kernel identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

/// The process on the other end of a connection, read from the kernel right
/// after the connection was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub process: ProcId,
    /// The process that started it (`None` when that is pid 1, a reaper,
    /// or unreadable).
    pub parent: Option<ProcId>,
}

/// What the kernel says about a pid now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Gone,
    Running {
        start: u64,
        parent: u32,
    },
    /// `/proc` could not be read: counts as running, parent unknown.
    Unknown,
}

pub trait Kernel {
    fn process(&self, pid: u32) -> Seen;
}

/// Whether the Pod of `rec` runs: live, and its process is still the one
/// recorded (`Some(parent pid)` when known).
fn running(kernel: &dyn Kernel, rec: &Allocation) -> Option<Option<u32>> {
    if rec.state != AllocState::Live {
        return None;
    }
    match kernel.process(rec.pid) {
        Seen::Running { start, parent } if start == rec.start_time => Some(Some(parent)),
        Seen::Running { .. } | Seen::Gone => None,
        Seen::Unknown => Some(None),
    }
}

/// Is `caller` the process of `rec`'s Pod? (No `/proc` read: the usual
/// case, a Pod calling about itself, costs nothing more.)
fn is_process(caller: &Caller, rec: &Allocation) -> bool {
    rec.state == AllocState::Live && caller.process == (ProcId { pid: rec.pid, start: rec.start_time })
}

/// Is `caller` the process of `rec`'s Pod, or the one that started it?
fn acts_for(caller: &Caller, rec: &Allocation, kernel: &dyn Kernel) -> bool {
    if rec.state != AllocState::Live {
        return false;
    }
    if is_process(caller, rec) {
        return true;
    }
    caller.process.pid != 1 && running(kernel, rec) == Some(Some(caller.process.pid))
}

fn not_pod_process(request: &'static str, rec: &Allocation, caller: &Caller) -> RegistryError {
    RegistryError::NotPodProcess { request, pod: rec.name.clone(), pod_pid: rec.pid, caller_pid: caller.process.pid }
}

fn not_parent_process(
    request: &'static str,
    child: &Allocation,
    parent: &Allocation,
    caller: &Caller,
) -> RegistryError {
    RegistryError::NotParentProcess {
        request,
        child: child.name.clone(),
        parent: parent.name.clone(),
        parent_pid: parent.pid,
        caller_pid: caller.process.pid,
    }
}

/// Refuses `op` unless `caller` may make it now. `None` is the daemon itself
/// (the sweep's forgets). Names that are not registered pass: the operation
/// then answers for itself (unknown pod, or idempotent success).
pub fn authorize(state: &State, op: &Op, caller: Option<&Caller>, kernel: &dyn Kernel) -> Result<(), RegistryError> {
    let Some(caller) = caller else { return Ok(()) };
    match op {
        Op::Register(_) | Op::Forget { .. } => Ok(()),
        Op::Delegate(d) => match state.get(&d.parent) {
            Some(p) if !acts_for(caller, &p.rec, kernel) => Err(not_pod_process("delegate", &p.rec, caller)),
            _ => Ok(()),
        },
        Op::Adopt(a) => {
            let Some(child) = state.get(&a.name) else { return Ok(()) };
            if child.rec.state == AllocState::Live {
                // Only the same process's repeat succeeds (the operation checks).
                return Ok(());
            }
            let Some(parent) = child.rec.parent.as_ref().and_then(|p| state.get(p)) else { return Ok(()) };
            let parent_process = ProcId { pid: parent.rec.pid, start: parent.rec.start_time };
            if parent.rec.state == AllocState::Live
                && (caller.parent == Some(parent_process) || acts_for(caller, &parent.rec, kernel))
            {
                return Ok(());
            }
            Err(RegistryError::NotSpawnedByParent {
                child: child.rec.name.clone(),
                parent: parent.rec.name.clone(),
                parent_pid: parent.rec.pid,
                caller_pid: caller.process.pid,
                caller_parent_pid: caller.parent.map(|p| p.pid),
            })
        }
        Op::Contain(c) => match state.get(&c.name) {
            Some(held) if !is_process(caller, &held.rec) => Err(not_pod_process("contain", &held.rec, caller)),
            _ => Ok(()),
        },
        Op::Reclaim { parent, child } => {
            let (Some(p), c) = (state.get(parent), state.get(child)) else { return Ok(()) };
            if is_process(caller, &p.rec) {
                return Ok(());
            }
            if running(kernel, &p.rec).is_some() {
                if acts_for(caller, &p.rec, kernel) {
                    return Ok(());
                }
                return match c {
                    Some(c) => Err(not_parent_process("reclaim", &c.rec, &p.rec, caller)),
                    None => Err(not_pod_process("reclaim", &p.rec, caller)),
                };
            }
            match c {
                Some(c) if running(kernel, &c.rec).is_some() => {
                    Err(not_parent_process("reclaim", &c.rec, &p.rec, caller))
                }
                _ => Ok(()),
            }
        }
        Op::Release { name } => {
            let Some(held) = state.get(name) else { return Ok(()) };
            if is_process(caller, &held.rec)
                || running(kernel, &held.rec).is_none()
                || acts_for(caller, &held.rec, kernel)
            {
                return Ok(());
            }
            match held.rec.parent.as_ref().and_then(|p| state.get(p)) {
                Some(p) if acts_for(caller, &p.rec, kernel) => Ok(()),
                _ => Err(not_pod_process("release", &held.rec, caller)),
            }
        }
    }
}
