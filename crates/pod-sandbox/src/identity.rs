//! Which Pod's workload a process belongs to, from the kernel's own
//! bookkeeping: the cgroup it is in, or the PID namespace / subreaper tree
//! of a supervisor. Never from the environment, a frame, or a parent-pid
//! walk that a double fork could leave (the subreaper's walk cannot be
//! left: orphans are reparented to it). This backs the `caller(peer)` seam
//! of the Pod's socket and the coordination store's identity.

use serde::Serialize;

use crate::cgroup;
use crate::containment::ContainmentRecord;
use crate::level::Mechanism;
use crate::proc;

/// A Pod's workload (one run of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadId {
    pub pod: String,
    pub instance: String,
}

/// Longest parent chain followed to a subreaper.
const MAX_DEPTH: usize = 4096;

/// The workload that contains the process `pid` (started at `start_time`,
/// read right after accept), or `None`: the operator. `home_tag` selects
/// this runtime's cgroups; `supervised` are the records of workloads held
/// by a supervisor instead (from the registry).
pub fn workload_of(pid: u32, start_time: u64, home_tag: &str, supervised: &[ContainmentRecord]) -> Option<WorkloadId> {
    let found = by_cgroup(pid, home_tag).or_else(|| {
        supervised
            .iter()
            .find(|r| supervises(r, pid))
            .map(|r| WorkloadId { pod: r.pod.clone(), instance: r.instance.clone() })
    });
    // Read after the lookup: if the pid is still the same process, what we
    // read was about it.
    found.filter(|_| proc::is_same(pid, start_time))
}

fn by_cgroup(pid: u32, home_tag: &str) -> Option<WorkloadId> {
    let path = proc::cgroup_v2_path(pid)?;
    let (tag, pod, instance) = cgroup::parse_workload_path(&path)?;
    (tag == home_tag).then_some(WorkloadId { pod, instance })
}

fn supervises(record: &ContainmentRecord, pid: u32) -> bool {
    let Some(keeper) = record.keeper.filter(|k| k.is_alive()) else { return false };
    if pid == keeper.pid {
        return true;
    }
    match record.mechanism {
        Mechanism::PidNamespace => record.pid_namespace.is_some() && proc::pid_namespace(pid) == record.pid_namespace,
        Mechanism::Subreaper => {
            let mut up = pid;
            for _ in 0..MAX_DEPTH {
                match proc::parent(up) {
                    Some(p) if p == keeper.pid => return true,
                    Some(p) if p > 1 => up = p,
                    _ => return false,
                }
            }
            false
        }
        Mechanism::Cgroup => false,
    }
}
