//! Why a registry operation was refused. Every variant has a stable code and
//! crosses IPC as a [`pod_proto::WireError`]; the registry is unchanged
//! whenever one of these is returned.

use pod_proto::WireError;
use scope::{NameError, PathError, PodName, Region, ScopeError, ScopeRule};

use crate::record::NodeName;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid {field}: {source}")]
    Name {
        field: &'static str,
        #[source]
        source: NameError,
    },
    #[error("invalid {field}: {source}")]
    Path {
        field: &'static str,
        #[source]
        source: PathError,
    },
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("a pod named {0} is already registered")]
    DuplicateName(PodName),
    #[error("session {session:?} is already held by live pod {holder}")]
    SessionTaken { session: String, holder: PodName },
    #[error("{rule} conflicts with pod {holder}, which holds {holder_rule} (both cover {overlap})")]
    WriteConflict { rule: ScopeRule, holder: PodName, holder_rule: ScopeRule, overlap: Region },
    /// A write conflict on a registry shared through etcd: the holder's
    /// node is named too (same code as `WriteConflict`).
    #[error("{} conflicts with pod {} on node {}, which holds {} (both cover {})", .0.rule, .0.holder, .0.node, .0.holder_rule, .0.overlap)]
    NodeConflict(Box<NodeConflict>),
    #[error("scratch path {scratch} overlaps pod {holder}'s {rule}; a scratch path lies outside every allocation")]
    ScratchOverlap { scratch: scope::ScopePath, holder: PodName, rule: ScopeRule },
    #[error("{rule} overlaps scratch path {scratch} of pod {holder}; no allocation may cover a scratch path")]
    ScratchTaken { rule: ScopeRule, holder: PodName, scratch: scope::ScopePath },
    #[error("no pod named {0} is registered")]
    UnknownPod(PodName),
    #[error("{child} is not a child of {parent} (its parent is {actual})")]
    NotParent { child: PodName, parent: PodName, actual: String },
    #[error("{0} is reserved but not started; only a live pod delegates")]
    NotLive(PodName),
    #[error("{0} is already live with another process or session; adopt only takes a reservation")]
    AlreadyLive(PodName),
    #[error("no process {pid} is running")]
    NoSuchProcess { pid: u32 },
    #[error("{0}")]
    Scope(#[from] ScopeError),
    #[error("the registry holds {max} allocations, the limit")]
    Full { max: usize },
    #[error("{name} would be {depth} levels deep; the limit is {max}")]
    TooDeep { name: PodName, depth: usize, max: usize },
    #[error("stored registry data is corrupt: {0}")]
    Corrupt(String),
    #[error("registry storage failed: {0}")]
    Store(String),
    #[error("the registry is shutting down")]
    ShuttingDown,
    #[error("{request} changes live pod {pod}, so it must come from its process (pid {pod_pid}) or the process that started it; the caller is pid {caller_pid}")]
    NotPodProcess { request: &'static str, pod: PodName, pod_pid: u32, caller_pid: u32 },
    #[error("{request} of {child} must come from the process of its parent {parent} (pid {parent_pid}); the caller is pid {caller_pid}")]
    NotParentProcess { request: &'static str, child: PodName, parent: PodName, parent_pid: u32, caller_pid: u32 },
    #[error("adopt of reserved pod {child} must come from a process that {parent}'s process (pid {parent_pid}) started, or from that process; the caller is pid {caller_pid}, started by {}", .caller_parent_pid.map_or_else(|| "an unknown process".to_string(), |p| format!("pid {p}")))]
    NotSpawnedByParent {
        child: PodName,
        parent: PodName,
        parent_pid: u32,
        caller_pid: u32,
        caller_parent_pid: Option<u32>,
    },
    #[error("pid {pid} is neither the caller (pid {caller_pid}) nor a process the caller started")]
    PidNotCaller { pid: u32, caller_pid: u32 },
    #[error("the calling process cannot be identified: {0}")]
    CallerUnknown(String),
    #[error("{parent} names {child} as its child, but {child} is a top-level pod that was not reparented away from {parent}")]
    NotFormerChild { child: PodName, parent: PodName },
    #[error("request {id} is older than the last request of its stream ({last}); its answer is no longer known")]
    StaleRequest { id: String, last: u64 },
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("pod {pod} is on node {node}; only that node's registry changes its allocation")]
    OtherNode { pod: PodName, node: NodeName },
    #[error("etcd cannot be reached: {0}")]
    EtcdUnavailable(String),
    #[error("the change needs more operations than etcd takes in one transaction ({0}); raise etcd's --max-txn-ops")]
    TxnTooLarge(String),
    #[error("bad registry configuration: {0}")]
    Config(String),
}

/// What `RegistryError::NodeConflict` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConflict {
    pub rule: ScopeRule,
    pub holder: PodName,
    pub node: NodeName,
    pub holder_rule: ScopeRule,
    pub overlap: Region,
}

impl RegistryError {
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Name { source, .. } => source.code(),
            RegistryError::Path { source, .. } => source.code(),
            RegistryError::BadRequest(_) => "registry.bad_request",
            RegistryError::DuplicateName(_) => "registry.duplicate_name",
            RegistryError::SessionTaken { .. } => "registry.session_taken",
            RegistryError::WriteConflict { .. } | RegistryError::NodeConflict(_) => "registry.write_conflict",
            RegistryError::ScratchOverlap { .. } | RegistryError::ScratchTaken { .. } => "registry.scratch_overlap",
            RegistryError::UnknownPod(_) => "registry.unknown_pod",
            RegistryError::NotParent { .. } => "registry.not_parent",
            RegistryError::NotLive(_) => "registry.not_live",
            RegistryError::AlreadyLive(_) => "registry.already_live",
            RegistryError::NoSuchProcess { .. } => "registry.no_such_process",
            RegistryError::Scope(e) => e.code(),
            RegistryError::Full { .. } => "registry.full",
            RegistryError::TooDeep { .. } => "registry.too_deep",
            RegistryError::Corrupt(_) => "registry.corrupt",
            RegistryError::Store(_) => "registry.store",
            RegistryError::ShuttingDown => "registry.shutting_down",
            RegistryError::NotPodProcess { .. } => "registry.not_pod_process",
            RegistryError::NotParentProcess { .. } => "registry.not_parent_process",
            RegistryError::NotSpawnedByParent { .. } => "registry.not_spawned_by_parent",
            RegistryError::PidNotCaller { .. } => "registry.pid_not_caller",
            RegistryError::CallerUnknown(_) => "registry.caller_unknown",
            RegistryError::NotFormerChild { .. } => "registry.not_former_child",
            RegistryError::StaleRequest { .. } => "registry.stale_request",
            RegistryError::Fenced(_) => "registry.fenced",
            RegistryError::OtherNode { .. } => "registry.other_node",
            RegistryError::EtcdUnavailable(_) => "registry.etcd_unavailable",
            RegistryError::TxnTooLarge(_) => "registry.txn_too_large",
            RegistryError::Config(_) => "registry.bad_config",
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError::new(self.code(), self.to_string())
    }
}

impl From<sled::Error> for RegistryError {
    fn from(e: sled::Error) -> RegistryError {
        RegistryError::Store(e.to_string())
    }
}

/// The shared commit path's failures: damage is `registry.corrupt`, a
/// failing disk call `registry.store` (an open's refusals are put in the
/// registry's own words by the sled store).
impl From<durable::DurableError> for RegistryError {
    fn from(e: durable::DurableError) -> RegistryError {
        match e {
            durable::DurableError::Wal(e) => RegistryError::from(e),
            e if e.is_damage() => RegistryError::Corrupt(e.to_string()),
            e => RegistryError::Store(e.to_string()),
        }
    }
}

impl From<wal::WalError> for RegistryError {
    fn from(e: wal::WalError) -> RegistryError {
        match e {
            wal::WalError::Corrupt { .. } | wal::WalError::BadSize { .. } => RegistryError::Corrupt(e.to_string()),
            wal::WalError::Io { .. } => RegistryError::Store(e.to_string()),
        }
    }
}
