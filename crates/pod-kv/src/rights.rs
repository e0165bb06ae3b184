//! Who may read and write which key. Decided on the caller's standing and
//! the resolved key only, never on what the layer holds, so a refusal is
//! the same whether the key exists or not and tells nothing about it.
//!
//! | namespace          | reads                     | writes                                        |
//! |--------------------|---------------------------|-----------------------------------------------|
//! | `/ref/*`           | everyone in the layer     | the lead, the operator                        |
//! | `/shared/*`        | everyone in the layer     | everyone in the layer                         |
//! | `/peer/<m>/*`      | m, the lead, the operator | m; the lead and the operator with `override`  |
//!
//! (For m = the lead, the lead's own slot: the lead writes it as m does.)
//! Every right to write implies the right to read, so an answer to a write
//! (a version, a mismatch) never tells a writer what it may not read.

use crate::caller::Caller;
use crate::error::{Access, KvError};
use crate::key::{Key, Namespace};

const PEER_READ: &str = "a /peer slot is read only by its member and the layer's lead";
const PEER_WRITE: &str = "a /peer slot is written only by its member (and the lead with --override)";
const REF_WRITE: &str = "only the layer's lead writes /ref";
const TREE_ONLY: &str = "a pod deeper in the tree reaches the root only for tree-wide leases";

pub fn check_read(caller: &Caller, key: &Key) -> Result<(), KvError> {
    let denied = |why| KvError::Denied { who: caller.to_string(), access: Access::Read, key: key.to_string(), why };
    match (caller, key.namespace()) {
        (Caller::TreePod(_), _) => Err(denied(TREE_ONLY)),
        (Caller::Operator | Caller::Lead(_), _) => Ok(()),
        (Caller::Member(_), Namespace::Ref | Namespace::Shared) => Ok(()),
        (Caller::Member(me), Namespace::Peer(owner)) if owner == &me.name => Ok(()),
        (Caller::Member(_), Namespace::Peer(_)) => Err(denied(PEER_READ)),
    }
}

/// `overriding` is `--override`: the lead's (and the operator's) way into
/// a member's slot. A member gains nothing by it.
pub fn check_write(caller: &Caller, key: &Key, overriding: bool) -> Result<(), KvError> {
    let denied = |why| KvError::Denied { who: caller.to_string(), access: Access::Write, key: key.to_string(), why };
    let result = match (caller, key.namespace()) {
        (Caller::TreePod(_), _) => Err(denied(TREE_ONLY)),
        (_, Namespace::Shared) => Ok(()),
        (Caller::Operator | Caller::Lead(_), Namespace::Ref) => Ok(()),
        (Caller::Member(_), Namespace::Ref) => Err(denied(REF_WRITE)),
        (Caller::Member(me) | Caller::Lead(me), Namespace::Peer(owner)) if owner == &me.name => Ok(()),
        (Caller::Member(_), Namespace::Peer(_)) => Err(denied(PEER_WRITE)),
        (Caller::Operator | Caller::Lead(_), Namespace::Peer(_)) if overriding => Ok(()),
        (Caller::Operator | Caller::Lead(_), Namespace::Peer(_)) => {
            Err(KvError::OverrideRequired { who: caller.to_string(), key: key.to_string() })
        }
    };
    debug_assert!(result.is_err() || check_read(caller, key).is_ok(), "{caller} may write {key} but not read it");
    result
}

/// The key prefixes a caller may read, in key order; `None`: all of them.
/// A list walks only these ranges, so what it costs, like what it returns,
/// depends only on keys the caller may read.
pub(crate) fn readable_prefixes(caller: &Caller) -> Result<Option<Vec<String>>, KvError> {
    match caller {
        Caller::Operator | Caller::Lead(_) => Ok(None),
        Caller::Member(me) => {
            let prefixes = vec![format!("/peer/{}/", me.name), "/ref/".to_string(), "/shared/".to_string()];
            debug_assert!(prefixes.windows(2).all(|w| w[0] < w[1]), "readable prefixes out of key order");
            Ok(Some(prefixes))
        }
        Caller::TreePod(_) => Err(KvError::Denied {
            who: caller.to_string(),
            access: Access::Read,
            key: "/**".to_string(),
            why: TREE_ONLY,
        }),
    }
}
