//! Who is calling, and which layer a call addresses: two pure decisions
//! over facts the shell supplies.
//!
//! The shell learns the calling process's Pod from the kernel (the Pod's
//! containment, read right after accept), never from a frame field or an
//! environment variable; a process outside every Pod is the operator. From
//! that [`Identity`] and the layer's own knowledge of its children, [`role`]
//! decides the caller's standing in the layer. On the client side,
//! [`address`] decides which lead's socket a call goes to.

use std::fmt;

use scope::PodName;
use serde::{Deserialize, Serialize};

use crate::error::KvError;

/// One run of a Pod's process, as the registry records it: the pid and its
/// start time (clock ticks since boot) tell it from a later process that
/// got the same pid, or a later Pod that got the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation {
    pub pid: u32,
    pub start_time: u64,
}

/// A Pod as a party to a call: its name and which run of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub name: PodName,
    pub incarnation: Incarnation,
}

/// How the calling Pod stands to the lead whose store it calls, as the
/// lead's shell knows it (its own name, its children, and for tree-wide
/// leases the registry's record of the tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The lead itself.
    Lead,
    /// A direct child of the lead: a member of its layer.
    Child,
    /// Deeper in the lead's tree.
    Descendant,
    /// Not in the lead's tree.
    Outside,
}

/// Who is calling, according to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A process outside every Pod: the user at a terminal.
    Operator,
    /// A process of this Pod's workload (or the Pod process itself).
    Pod { pod: PodRef, relation: Relation },
}

/// What a call reaches: the lead's layer, or (leases only) the tree-wide
/// table at the root of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reach {
    Layer,
    Tree,
}

/// The caller's standing in the layer it calls. Rights are decided on this
/// and on the resolved key, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Reads every namespace; writes with the lead's rights, never as a
    /// member: it has no slot, and writes a member's slot only with
    /// `override`.
    Operator,
    /// The layer's lead: reads everything, writes `/ref`, `/shared`, its own
    /// slot, and a member's slot with `override`.
    Lead(PodRef),
    /// A direct child of the lead: reads `/ref`, `/shared` and its own slot,
    /// writes `/shared` and its own slot.
    Member(PodRef),
    /// A Pod deeper in the tree calling the root for a tree-wide lease:
    /// lease calls only.
    TreePod(PodRef),
}

impl Caller {
    /// The slot `/peer/self` names: the caller's own (none for the operator).
    pub fn slot(&self) -> Option<&PodName> {
        match self {
            Caller::Operator => None,
            Caller::Lead(p) | Caller::Member(p) | Caller::TreePod(p) => Some(&p.name),
        }
    }

    /// The Pod behind the call (none for the operator).
    pub fn pod(&self) -> Option<&PodRef> {
        match self {
            Caller::Operator => None,
            Caller::Lead(p) | Caller::Member(p) | Caller::TreePod(p) => Some(p),
        }
    }

    /// May this caller act with the lead's rights (override a member's slot,
    /// break another holder's lease)?
    pub fn has_lead_rights(&self) -> bool {
        matches!(self, Caller::Operator | Caller::Lead(_))
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Operator => f.write_str("the operator"),
            Caller::Lead(p) => write!(f, "lead {}", p.name),
            Caller::Member(p) => write!(f, "member {}", p.name),
            Caller::TreePod(p) => write!(f, "pod {}", p.name),
        }
    }
}

/// The caller's standing in the store of `lead`. `reach` is what the call
/// asked for; `lead_is_root` is whether `lead` has no parent.
pub fn role(identity: &Identity, lead: &PodName, reach: Reach, lead_is_root: bool) -> Result<Caller, KvError> {
    if reach == Reach::Tree && !lead_is_root {
        return Err(KvError::NotRoot { lead: lead.to_string() });
    }
    let (pod, relation) = match identity {
        Identity::Operator => return Ok(Caller::Operator),
        Identity::Pod { pod, relation } => (pod.clone(), *relation),
    };
    match (relation, reach) {
        (Relation::Lead, _) => Ok(Caller::Lead(pod)),
        (Relation::Child, _) => Ok(Caller::Member(pod)),
        (Relation::Descendant, Reach::Tree) => Ok(Caller::TreePod(pod)),
        (Relation::Descendant | Relation::Outside, _) => {
            Err(KvError::NotInLayer { who: format!("pod {}", pod.name), lead: lead.to_string(), reach })
        }
    }
}

/// Where the calling side stands in the tree, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub name: PodName,
    pub parent: Option<PodName>,
    /// The top of its tree (itself for a Pod without a parent).
    pub root: PodName,
}

/// Who is asking, on the calling side (the CLI or the MCP front end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asker {
    Operator,
    Pod(Lineage),
}

/// What the caller asked for: `--layer LEAD`, `--global`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub layer: Option<PodName>,
    pub reach: Reach,
}

/// The lead whose store a call goes to.
///
/// A layer: `--layer LEAD` must be the asker itself or its parent (a Pod
/// may address only the layer it leads and the layer it is a member of);
/// without it, the asker's parent's layer, and for a Pod without a parent
/// its own. The operator must name a layer.
///
/// The tree (`--global`): the root of the asker's tree; with `--layer`,
/// the root of that Pod's tree (`named_root`, which the shell looks up),
/// which for a Pod must be its own tree.
pub fn address(asker: &Asker, route: &Route, named_root: Option<&PodName>) -> Result<PodName, KvError> {
    match (route.reach, asker, &route.layer) {
        (Reach::Layer, Asker::Operator, Some(lead)) => Ok(lead.clone()),
        (_, Asker::Operator, None) => Err(KvError::LayerRequired),
        (Reach::Layer, Asker::Pod(me), None) => Ok(me.parent.clone().unwrap_or_else(|| me.name.clone())),
        (Reach::Layer, Asker::Pod(me), Some(lead)) => {
            if lead == &me.name || me.parent.as_ref() == Some(lead) {
                Ok(lead.clone())
            } else {
                Err(KvError::NotInLayer {
                    who: format!("pod {}", me.name),
                    lead: lead.to_string(),
                    reach: Reach::Layer,
                })
            }
        }
        (Reach::Tree, Asker::Pod(me), None) => Ok(me.root.clone()),
        (Reach::Tree, asker, Some(named)) => {
            let root = named_root.ok_or_else(|| KvError::NoSuchLayer { name: named.to_string() })?;
            match asker {
                Asker::Pod(me) if &me.root != root => Err(KvError::NotInLayer {
                    who: format!("pod {}", me.name),
                    lead: root.to_string(),
                    reach: Reach::Tree,
                }),
                _ => Ok(root.clone()),
            }
        }
    }
}
