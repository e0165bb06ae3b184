//! The registry's operations as pure functions: `(state, request) -> (plan,
//! reply)`. One file per command. Nothing here performs I/O, so every rule
//! of the registry is tested without sockets or disks.

mod adopt;
mod contain;
mod delegate;
mod query;
mod reclaim;
mod register;

use std::collections::BTreeMap;

use scope::{Permission, PodName, ScopePath, ScopeRule};

use crate::answers::{Lookup, RequestId};
use crate::auth::{self, Caller, Kernel};
use crate::state::{Plan, PlanBuilder, State};
use crate::wire::Reply;
use crate::RegistryError;

pub use query::answer;

/// A mutation as the writer receives it: who sent it, under which request
/// id (`None`: the daemon's own, or a client that takes no retry).
#[derive(Debug, Clone)]
pub struct Submission {
    pub op: Op,
    pub id: Option<RequestId>,
    /// `None`: the daemon itself (the sweep).
    pub caller: Option<Caller>,
}

/// Plans a submitted mutation: a request id seen last on its stream gets
/// its remembered answer and changes nothing; otherwise the caller is
/// authorized, the operation planned, and its answer remembered in the same
/// plan. On error nothing is to change.
pub fn plan_submission(state: &State, sub: &Submission, kernel: &dyn Kernel) -> Result<(Plan, Reply), RegistryError> {
    if let Some(id) = &sub.id {
        match state.answers().lookup(id) {
            Lookup::Replay(reply) => return Ok((PlanBuilder::new(state).finish(), reply.clone())),
            Lookup::Stale { last } => return Err(RegistryError::StaleRequest { id: id.to_string(), last }),
            Lookup::New => {}
        }
    }
    check_node(state, &sub.op)?;
    auth::authorize(state, &sub.op, sub.caller.as_ref(), kernel)?;
    let (mut plan, reply) = plan(state, &sub.op)?;
    if let Some(id) = &sub.id {
        plan.answers = state.answers().remember(id, &reply);
    }
    Ok((plan, reply))
}

#[derive(Debug, Clone)]
pub struct Register {
    pub name: PodName,
    pub pid: u32,
    pub start_time: u64,
    pub socket: String,
    pub session: String,
    pub allow: Vec<ScopeRule>,
    pub deny: Vec<ScopeRule>,
    pub layers: BTreeMap<PodName, Vec<ScopeRule>>,
    /// Paths outside every allocation the Pod's workload may write.
    pub scratch: Vec<ScopePath>,
}

#[derive(Debug, Clone)]
pub struct Delegate {
    pub parent: PodName,
    pub child: PodName,
    pub rules: Vec<ScopeRule>,
    pub deny: Vec<ScopeRule>,
}

#[derive(Debug, Clone)]
pub struct Adopt {
    pub name: PodName,
    pub pid: u32,
    pub start_time: u64,
    pub session: String,
    pub socket: String,
    /// The child's scratch paths (its rules were checked by the delegate).
    pub scratch: Vec<ScopePath>,
}

/// A Pod's own process records its workload's containment.
#[derive(Debug, Clone)]
pub struct Contain {
    pub name: PodName,
    pub pid: u32,
    pub start_time: u64,
    pub containment: pod_sandbox::ContainmentRecord,
}

/// A mutation.
#[derive(Debug, Clone)]
pub enum Op {
    Register(Register),
    Delegate(Delegate),
    Adopt(Adopt),
    Contain(Contain),
    Reclaim {
        parent: PodName,
        child: PodName,
    },
    Release {
        name: PodName,
    },
    /// Remove `name` because its process is gone; applies only if the
    /// record still names that process (it may have been replaced since
    /// the sweep looked).
    Forget {
        name: PodName,
        pid: u32,
        start_time: u64,
    },
}

/// A read.
#[derive(Debug, Clone)]
pub enum Query {
    Get(PodName),
    List(Option<PodName>),
    Check { name: PodName, path: ScopePath, permission: Permission },
    BySession(String),
}

/// Plans one mutation against `state`. On error nothing is to change.
pub fn plan(state: &State, op: &Op) -> Result<(Plan, Reply), RegistryError> {
    match op {
        Op::Register(r) => register::plan(state, r),
        Op::Delegate(d) => delegate::plan(state, d),
        Op::Adopt(a) => adopt::plan(state, a),
        Op::Contain(c) => contain::plan(state, c),
        Op::Reclaim { parent, child } => reclaim::plan_reclaim(state, parent, child),
        Op::Release { name } => reclaim::plan_release(state, name),
        Op::Forget { name, pid, start_time } => reclaim::plan_forget(state, name, *pid, *start_time),
    }
}

/// On a registry shared by several nodes, only a Pod's own node changes
/// its allocation (`registry.other_node`), and a Pod of this node that lost
/// its allocation with a lost lease stays fenced (`registry.fenced`): its
/// region may be someone else's now. A new allocation of a fenced name (a
/// registration, or a child's part delegated again) is that Pod's re-claim:
/// granted only where its paths are free, it un-fences the name.
fn check_node(state: &State, op: &Op) -> Result<(), RegistryError> {
    if state.local_node().is_none() {
        return Ok(());
    }
    let names: Vec<&PodName> = match op {
        Op::Register(r) => r.layers.keys().collect(),
        Op::Delegate(d) => vec![&d.parent],
        Op::Adopt(a) => vec![&a.name],
        Op::Contain(c) => vec![&c.name],
        Op::Reclaim { parent, child } => vec![parent, child],
        Op::Release { name } | Op::Forget { name, .. } => vec![name],
    };
    for name in names {
        if let Some(reason) = state.fenced(name) {
            return Err(RegistryError::Fenced(format!("pod {name}: {reason}")));
        }
        let remote = state.get(name).filter(|h| state.is_remote(&h.rec)).and_then(|h| h.rec.node.clone());
        if let Some(node) = remote {
            return Err(RegistryError::OtherNode { pod: name.clone(), node });
        }
    }
    Ok(())
}

/// Refuses a session already held by another live Pod.
fn check_session(state: &State, session: &str, me: &PodName) -> Result<(), RegistryError> {
    if session.is_empty() {
        return Ok(());
    }
    match state.by_session(session) {
        Some(h) if &h.rec.name != me => {
            Err(RegistryError::SessionTaken { session: session.to_string(), holder: h.rec.name.clone() })
        }
        _ => Ok(()),
    }
}

fn check_room(state: &State) -> Result<(), RegistryError> {
    use crate::limits::MAX_ALLOCATIONS;
    if state.len() >= MAX_ALLOCATIONS {
        return Err(RegistryError::Full { max: MAX_ALLOCATIONS });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
