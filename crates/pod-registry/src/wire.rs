//! The registry's messages as they cross the socket, and their validation.
//!
//! Requests carry raw strings: names and paths are validated here, on the
//! server, into [`scope::PodName`] and [`scope::ScopePath`], so a bad name or a
//! relative path is answered with its own error code and the connection stays
//! usable. What is checked is exactly what is stored (normalized paths).

use std::collections::BTreeMap;

use scope::{Permission, PodName, ScopePath, ScopeRule};
use serde::{Deserialize, Serialize};

pub use crate::answers::{RequestId, StreamId};
use crate::limits::MAX_FIELD_BYTES;
use crate::ops::{Adopt, Contain, Delegate, Op, Query, Register};
use crate::{Allocation, RegistryError};

/// A rule as sent: the target may be any absolute path; it is normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRule {
    pub target: String,
    pub permission: Permission,
    pub recursive: bool,
}

impl From<&ScopeRule> for WireRule {
    fn from(r: &ScopeRule) -> WireRule {
        WireRule { target: r.target.to_string(), permission: r.permission, recursive: r.recursive }
    }
}

/// Every request a client may send after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// A top-level Pod (or a restored one, with its layers) takes its scope.
    Register {
        /// See [`RequestId`]: a retry with the same id gets the first answer.
        #[serde(default)]
        id: Option<RequestId>,
        name: String,
        /// The caller itself or a process it started; its start time is read
        /// from the kernel, never taken from the request.
        pid: u32,
        socket: String,
        session: String,
        allow: Vec<WireRule>,
        deny: Vec<WireRule>,
        layers: BTreeMap<String, Vec<WireRule>>,
        /// Scratch paths (`--scratch`); absent from older clients.
        #[serde(default)]
        scratch: Vec<String>,
    },
    /// A parent hands `rules` to a new, reserved child.
    Delegate {
        #[serde(default)]
        id: Option<RequestId>,
        parent: String,
        child: String,
        rules: Vec<WireRule>,
        deny: Vec<WireRule>,
    },
    /// A started child takes its reservation.
    Adopt {
        #[serde(default)]
        id: Option<RequestId>,
        name: String,
        pid: u32,
        session: String,
        socket: String,
        #[serde(default)]
        scratch: Vec<String>,
    },
    /// A Pod's own process records its workload's containment.
    Contain {
        #[serde(default)]
        id: Option<RequestId>,
        name: String,
        pid: u32,
        containment: pod_sandbox::ContainmentRecord,
    },
    /// The parent takes back a child's region. Idempotent.
    Reclaim {
        #[serde(default)]
        id: Option<RequestId>,
        parent: String,
        child: String,
    },
    /// A Pod leaves. Idempotent.
    Release {
        #[serde(default)]
        id: Option<RequestId>,
        name: String,
    },
    Get {
        name: String,
    },
    /// One page of allocations in name order, after `after`.
    List {
        after: Option<String>,
    },
    /// May Pod `name` access `path` with `permission`?
    Check {
        name: String,
        path: String,
        permission: Permission,
    },
    BySession {
        session: String,
    },
    /// Forget Pods whose process is gone (or whose pid was reused).
    Sweep,
    /// Long-poll for changes of one allocation: answered once `name`'s
    /// record has a fence above `after_fence` or is gone, else after
    /// `limits::WATCH_WAIT` with the record as it is. A Pod holds one on a
    /// connection of its own, so it learns of every change the registry
    /// makes to its allocation (reparenting included) and fails closed on
    /// one it cannot explain.
    Watch {
        name: String,
        after_fence: u64,
    },
    /// [`Request::Watch`], also answered as soon as the node's lease
    /// deadline differs from `deadline_after` (renewed or lost; 0: the
    /// caller knows none), and answered with [`Reply::WatchedLease`]. A
    /// Pod on a registry shared through etcd holds this one, so it keeps
    /// its node's lease deadline itself and stops granting at it even
    /// when the daemon is frozen.
    WatchLease {
        name: String,
        after_fence: u64,
        deadline_after: u64,
    },
}

/// Every successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Allocation(Allocation),
    Found(Option<Allocation>),
    /// The parent's record is not repeated (it can be large); its new
    /// fence says which version holds the layer.
    Delegated {
        parent_fence: u64,
        child: Allocation,
    },
    Reclaimed(Reclaimed),
    Page {
        allocations: Vec<Allocation>,
        more: bool,
    },
    Check(CheckReply),
    Swept {
        gone: Vec<PodName>,
    },
    /// The watched allocation now (`None`: it is gone).
    Watched(Option<Allocation>),
    /// The answer to [`Request::WatchLease`]: the allocation now, and the
    /// node's lease (`None`: the embedded registry, which has none).
    WatchedLease {
        record: Option<Allocation>,
        lease: Option<LeaseView>,
    },
}

/// A node's etcd lease as its Pods keep it.
///
/// `deadline_ms` is on CLOCK_BOOTTIME (which counts suspend too, and which
/// every process of the machine reads alike): the send time of the last
/// keepalive etcd answered, plus the TTL it granted, minus `margin_ms`.
/// etcd measures the lease from when it received that keepalive, which is
/// later, so no other node can be granted this node's paths before
/// `deadline_ms + margin_ms`. A Pod stops granting at `deadline_ms`
/// (checks denied with `registry.lease_lost`) unless a newer deadline
/// arrived; the daemon refuses writes at the same instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub node: crate::record::NodeName,
    /// 0 when the lease is lost (then `lost` says why).
    pub deadline_ms: u64,
    pub ttl_ms: u64,
    pub margin_ms: u64,
    pub lost: Option<String>,
}

impl Reply {
    /// Rewrites every fence the reply carries (a shared store turns the
    /// fences a plan handed out into its transaction's revision).
    pub fn map_fences(&mut self, f: impl Fn(u64) -> u64) {
        match self {
            Reply::Allocation(a) => a.fence = f(a.fence),
            Reply::Found(Some(a)) | Reply::Watched(Some(a)) => a.fence = f(a.fence),
            Reply::Delegated { parent_fence, child } => {
                *parent_fence = f(*parent_fence);
                child.fence = f(child.fence);
            }
            Reply::Reclaimed(r) => r.parent_fence = r.parent_fence.map(&f),
            Reply::Page { allocations, .. } => allocations.iter_mut().for_each(|a| a.fence = f(a.fence)),
            Reply::WatchedLease { record: Some(a), .. } => a.fence = f(a.fence),
            Reply::Found(None) | Reply::Watched(None) | Reply::WatchedLease { record: None, .. } => {}
            Reply::Check(_) | Reply::Swept { .. } => {}
        }
    }
}

/// The result of reclaim and release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclaimed {
    /// Whether an allocation was removed (false: it was already gone).
    pub removed: bool,
    /// The parent's fence after the change, when there is a parent.
    pub parent_fence: Option<u64>,
    /// Children of the removed Pod that survive it, now children of
    /// `parent` (or top-level), with everything the new parent needs to
    /// take them in. Remembered with the answer, so a retried reclaim
    /// reports them again.
    pub reparented: Vec<Survivor>,
}

/// A live Pod moved to a new parent because its own parent went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survivor {
    pub name: PodName,
    /// Its allow rules: the layer its new parent now holds for it (never
    /// empty: a delegation has at least one rule).
    pub rules: Vec<ScopeRule>,
    pub socket: String,
    pub pid: u32,
    /// Never 0: a survivor is live.
    pub start_time: u64,
}

impl Survivor {
    /// What the new parent needs of `rec`.
    pub fn of(rec: &Allocation) -> Survivor {
        assert!(rec.start_time != 0 && rec.pid != 0, "a survivor is live: {} has no process", rec.name);
        Survivor {
            name: rec.name.clone(),
            rules: rec.allow.clone(),
            socket: rec.socket.clone(),
            pid: rec.pid,
            start_time: rec.start_time,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReply {
    pub allowed: bool,
    /// The Pod's effective permission at the path (`None`: no access).
    pub permission: Option<Permission>,
    /// The rule that decided, in words.
    pub decided_by: String,
}

/// What a validated request asks for.
#[derive(Debug)]
pub enum Command {
    Mutate(Op),
    Query(Query),
    Sweep,
    Watch { name: PodName, after_fence: u64, deadline_after: Option<u64> },
}

fn name(field: &'static str, raw: &str) -> Result<PodName, RegistryError> {
    PodName::new(raw).map_err(|source| RegistryError::Name { field, source })
}

fn path(field: &'static str, raw: &str) -> Result<ScopePath, RegistryError> {
    ScopePath::new(raw).map_err(|source| RegistryError::Path { field, source })
}

fn rules(field: &'static str, raw: &[WireRule]) -> Result<Vec<ScopeRule>, RegistryError> {
    raw.iter().map(|r| Ok(ScopeRule::new(path(field, &r.target)?, r.permission, r.recursive))).collect()
}

fn scratch_paths(raw: &[String]) -> Result<Vec<ScopePath>, RegistryError> {
    use crate::limits::MAX_SCRATCH;
    if raw.len() > MAX_SCRATCH {
        return Err(RegistryError::BadRequest(format!("{} scratch paths; the limit is {MAX_SCRATCH}", raw.len())));
    }
    raw.iter().map(|p| path("scratch path", p)).collect()
}

fn field(what: &'static str, raw: &str) -> Result<String, RegistryError> {
    if raw.len() > MAX_FIELD_BYTES {
        return Err(RegistryError::BadRequest(format!(
            "{what} is {} bytes; the limit is {MAX_FIELD_BYTES}",
            raw.len()
        )));
    }
    Ok(raw.to_string())
}

fn pid(raw: u32) -> Result<u32, RegistryError> {
    if raw == 0 {
        return Err(RegistryError::BadRequest("pid 0 names no process".into()));
    }
    Ok(raw)
}

impl Request {
    /// The request id of a mutation, if it carries one.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            Request::Register { id, .. }
            | Request::Delegate { id, .. }
            | Request::Adopt { id, .. }
            | Request::Contain { id, .. }
            | Request::Reclaim { id, .. }
            | Request::Release { id, .. } => *id,
            _ => None,
        }
    }

    /// Whether sending this request again, after its answer was lost, is
    /// safe: it then gets the answer the first one got (or would have got).
    /// Reads change nothing; `sweep` only removes Pods whose process is
    /// gone, checked again each time; a mutation is safe with a request id
    /// (the registry remembers its answer) and unsafe without one. The one
    /// call path (`client::Link`) asks this before resending.
    pub fn safe_to_repeat(&self) -> bool {
        match self {
            Request::Get { .. }
            | Request::List { .. }
            | Request::Check { .. }
            | Request::BySession { .. }
            | Request::Watch { .. }
            | Request::WatchLease { .. }
            | Request::Sweep => true,
            Request::Register { .. }
            | Request::Delegate { .. }
            | Request::Adopt { .. }
            | Request::Contain { .. }
            | Request::Reclaim { .. }
            | Request::Release { .. } => self.id().is_some(),
        }
    }

    /// Gives a mutation `id` (a request that has one keeps it).
    pub fn with_id(mut self, new: RequestId) -> Request {
        match &mut self {
            Request::Register { id, .. }
            | Request::Delegate { id, .. }
            | Request::Adopt { id, .. }
            | Request::Contain { id, .. }
            | Request::Reclaim { id, .. }
            | Request::Release { id, .. } => {
                id.get_or_insert(new);
            }
            _ => {}
        }
        self
    }

    /// Whether this request changes allocations (and so takes a request id).
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Request::Register { .. }
                | Request::Delegate { .. }
                | Request::Adopt { .. }
                | Request::Contain { .. }
                | Request::Reclaim { .. }
                | Request::Release { .. }
        )
    }

    /// Validates every name and path. `start_of` gives the start time of
    /// a pid named by register or adopt, and refuses a pid that is neither
    /// the caller's nor one the caller started (it reads `/proc`, which is
    /// why it is passed in: validation itself stays pure).
    pub fn validate(&self, start_of: impl Fn(u32) -> Result<u64, RegistryError>) -> Result<Command, RegistryError> {
        Ok(match self {
            Request::Register { id: _, name: n, pid: p, socket, session, allow, deny, layers, scratch } => {
                let pid = pid(*p)?;
                let mut parsed = BTreeMap::new();
                for (child, layer) in layers {
                    parsed.insert(name("layer child name", child)?, rules("layer rule target", layer)?);
                }
                Command::Mutate(Op::Register(Register {
                    name: name("pod name", n)?,
                    pid,
                    start_time: start_of(pid)?,
                    socket: field("socket path", socket)?,
                    session: field("session id", session)?,
                    allow: rules("allow rule target", allow)?,
                    deny: rules("deny rule target", deny)?,
                    layers: parsed,
                    scratch: scratch_paths(scratch)?,
                }))
            }
            Request::Delegate { id: _, parent, child, rules: r, deny } => Command::Mutate(Op::Delegate(Delegate {
                parent: name("parent name", parent)?,
                child: name("child name", child)?,
                rules: rules("delegated rule target", r)?,
                deny: rules("deny rule target", deny)?,
            })),
            Request::Adopt { id: _, name: n, pid: p, session, socket, scratch } => {
                let pid = pid(*p)?;
                Command::Mutate(Op::Adopt(Adopt {
                    name: name("pod name", n)?,
                    pid,
                    start_time: start_of(pid)?,
                    session: field("session id", session)?,
                    socket: field("socket path", socket)?,
                    scratch: scratch_paths(scratch)?,
                }))
            }
            Request::Contain { id: _, name: n, pid: p, containment } => {
                let pid = pid(*p)?;
                Command::Mutate(Op::Contain(Contain {
                    name: name("pod name", n)?,
                    pid,
                    start_time: start_of(pid)?,
                    containment: containment.clone(),
                }))
            }
            Request::Reclaim { id: _, parent, child } => {
                Command::Mutate(Op::Reclaim { parent: name("parent name", parent)?, child: name("child name", child)? })
            }
            Request::Release { id: _, name: n } => Command::Mutate(Op::Release { name: name("pod name", n)? }),
            Request::Get { name: n } => Command::Query(Query::Get(name("pod name", n)?)),
            Request::List { after } => {
                Command::Query(Query::List(after.as_deref().map(|a| name("list cursor", a)).transpose()?))
            }
            Request::Check { name: n, path: p, permission } => Command::Query(Query::Check {
                name: name("pod name", n)?,
                path: path("checked path", p)?,
                permission: *permission,
            }),
            Request::BySession { session } => Command::Query(Query::BySession(field("session id", session)?)),
            Request::Sweep => Command::Sweep,
            Request::Watch { name: n, after_fence } => {
                Command::Watch { name: name("watched pod name", n)?, after_fence: *after_fence, deadline_after: None }
            }
            Request::WatchLease { name: n, after_fence, deadline_after } => Command::Watch {
                name: name("watched pod name", n)?,
                after_fence: *after_fence,
                deadline_after: Some(*deadline_after),
            },
        })
    }
}
