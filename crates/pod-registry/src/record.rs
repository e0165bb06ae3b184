//! The allocation record: everything the registry knows about one Pod.
//!
//! This is the unit that is stored, replicated (in etcd, when the registry is shared) and fenced;
//! its shape is part of the registry's durable format.

use std::collections::BTreeMap;

use scope::{Permission, PodName, ScopeRule, ScopeSnapshot};
use serde::{Deserialize, Serialize};

use crate::limits::MAX_FIELD_BYTES;

/// Whether the Pod behind an allocation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocState {
    /// Delegated to but not yet started: the region is held for the child,
    /// which takes it with `adopt`.
    Reserved,
    /// Started: pid and start time identify the process.
    Live,
}

/// One Pod's allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub name: PodName,
    /// The Pod this one was delegated from (`None`: top-level).
    pub parent: Option<PodName>,
    pub state: AllocState,
    /// 0 while reserved.
    pub pid: u32,
    /// Process start time in clock ticks since boot (`/proc/<pid>/stat`
    /// field 22); with the pid it tells a live Pod from a reused pid.
    pub start_time: u64,
    pub socket: String,
    /// The Pod's session (log) id.
    pub session: String,
    /// Base allow rules.
    pub allow: Vec<ScopeRule>,
    /// Base deny rules, exactly as the user gave them.
    pub deny: Vec<ScopeRule>,
    /// One delegation layer per child.
    pub layers: BTreeMap<PodName, Vec<ScopeRule>>,
    /// Increases on every change of this allocation (drawn from one
    /// registry-wide counter, so a re-created name never reuses a number).
    pub fence: u64,
    /// Set when this Pod was moved because its parent went away without the
    /// Pod holding a layer for that parent asking (swept, or released by
    /// itself): the parent it had. That Pod learns of the move through it:
    /// its reclaim of the gone child reports this Pod as reparented, or, if
    /// it was restored, its registration re-adopts it. Then it is cleared.
    #[serde(default)]
    pub former_parent: Option<PodName>,
    /// The node (machine) whose registry holds this allocation, on a
    /// registry shared through etcd; `None` on the embedded one. Only that
    /// node's registry changes it. Records are arrays in the stores: a
    /// record written before this field (or `containment`) existed decodes
    /// with it absent.
    #[serde(default)]
    pub node: Option<NodeName>,
    /// The containment of the Pod's workload, once it started one: what the
    /// sweep and a parent's reclaim end before the region is given up (a
    /// Pod is live while its process or any process of its workload is).
    #[serde(default)]
    pub containment: Option<pod_sandbox::ContainmentRecord>,
    /// Paths this Pod's workload may write that no allocation may overlap
    /// (`--scratch`); absent from records written before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<scope::ScopePath>,
}

/// A node's name: like a Pod name, 1-64 bytes of `[a-z0-9._-]` starting
/// with a letter or digit (a host name, lowercased).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: impl Into<String>) -> Result<NodeName, String> {
        let name = name.into();
        match PodName::new(name.clone()) {
            Ok(_) => Ok(NodeName(name)),
            Err(_) => {
                Err(format!("node name {name:?} is not 1-64 bytes of [a-z0-9._-] starting with a letter or digit"))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeName {
    type Error = String;
    fn try_from(s: String) -> Result<NodeName, String> {
        NodeName::new(s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl Allocation {
    pub fn snapshot(&self) -> ScopeSnapshot {
        ScopeSnapshot { allow: self.allow.clone(), deny: self.deny.clone(), layers: self.layers.clone() }
    }

    pub fn allow_writes(&self) -> impl Iterator<Item = &ScopeRule> {
        self.allow.iter().filter(|r| r.permission == Permission::Write)
    }

    /// Rules that take write away from this Pod: every deny and every
    /// layer's write rule.
    pub fn write_caps(&self) -> impl Iterator<Item = &ScopeRule> {
        self.deny.iter().chain(self.layers.values().flatten().filter(|r| r.permission == Permission::Write))
    }

    /// What must hold for every record, checked before writing and after
    /// reading.
    pub fn validate(&self) -> Result<(), String> {
        match self.state {
            AllocState::Reserved if self.pid != 0 => {
                return Err(format!("{} is reserved but has pid {}", self.name, self.pid))
            }
            AllocState::Live if self.pid == 0 => return Err(format!("{} is live but has no pid", self.name)),
            AllocState::Live if self.start_time == 0 => {
                return Err(format!("{} is live but has no process start time", self.name))
            }
            _ => {}
        }
        if self.parent.as_ref() == Some(&self.name) || self.former_parent.as_ref() == Some(&self.name) {
            return Err(format!("{} is its own parent", self.name));
        }
        if self.layers.contains_key(&self.name) {
            return Err(format!("{} holds a layer for itself", self.name));
        }
        if self.session.len() > MAX_FIELD_BYTES || self.socket.len() > MAX_FIELD_BYTES {
            return Err(format!("{}: session or socket longer than {MAX_FIELD_BYTES} bytes", self.name));
        }
        Ok(())
    }
}
