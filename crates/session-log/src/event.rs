//! The events of a Pod's history and their stored body.
//!
//! A body is the event as a MessagePack map with a `kind` string and named
//! fields, so that a future kind, or a future optional field, does not make
//! an old log unreadable: an unknown kind decodes to [`Event::Unknown`],
//! which the fold skips. The JSON form (`pod log --json`) is the same shape.

use scope::{PodName, ScopeRule, ScopeSnapshot};
use serde::{Deserialize, Serialize};

use crate::LogError;

/// One event of a Pod's history. Kind strings and field names are part of
/// the stored format: never rename them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Event {
    /// The first record of every log. `base` holds the user's allow and deny
    /// rules; its `layers` are empty.
    #[serde(rename = "pod.created")]
    PodCreated { name: PodName, parent: Option<PodName>, base: ScopeSnapshot, workload: Option<Vec<String>> },
    /// The Pod's whole scope (base + layers) after a change.
    #[serde(rename = "pod.scope")]
    PodScope { scope: ScopeSnapshot },
    #[serde(rename = "child.spawned")]
    ChildSpawned { name: PodName, socket: String, rules: Vec<ScopeRule>, callback: String },
    /// `exit`: how the child's workload ended, when the child said so in
    /// its shutdown callback (empty otherwise).
    #[serde(rename = "child.removed")]
    ChildRemoved {
        name: PodName,
        reason: RemovalReason,
        #[serde(flatten)]
        exit: Exit,
    },
    /// A grandchild adopted after its own parent (`from`) vanished.
    #[serde(rename = "child.reparented")]
    ChildReparented { name: PodName, from: PodName, rules: Vec<ScopeRule>, socket: String },
    /// The Pod stopped; `exit`: how its workload ended (empty for a Pod
    /// without one, or whose workload's end was not seen).
    #[serde(rename = "pod.stopped")]
    PodStopped {
        #[serde(flatten)]
        exit: Exit,
    },
    /// The Pod failed closed: from here on it answers every check "denied"
    /// and refuses to spawn. The one event of every fencing cause (an
    /// allocation change it cannot explain, its allocation vanishing, later
    /// a lost registry lease); `reason` says which, in words.
    #[serde(rename = "pod.fenced")]
    PodFenced { reason: String },
    /// A Pod fenced for its node's lost etcd lease took its paths back
    /// under the node's new lease (or was refused): `reclaimed` names this
    /// Pod, when its own claim is back, and the children whose part it
    /// delegated again (each then takes it with its own consent and logs
    /// its own `pod.rejoined`); `fenced` names those that stay fenced, and
    /// why.
    #[serde(rename = "pod.rejoined")]
    PodRejoined { reclaimed: Vec<PodName>, fenced: std::collections::BTreeMap<PodName, String> },
    /// How strongly the kernel holds this Pod's workload to its scope,
    /// decided once when the Pod is created (`--enforce`).
    #[serde(rename = "pod.enforced")]
    PodEnforced(Enforced),
    /// A kind this build does not know, written by a newer one. Read-only:
    /// `append` refuses it.
    #[serde(untagged)]
    Unknown { kind: String },
}

/// Why a child left the children list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// `pod stop CHILD`, run by this Pod.
    Stopped,
    /// The child's own shutdown callback.
    ShutDown,
    /// Found unreachable when this Pod resumed.
    Pruned,
    /// Noticed dead without a word.
    Lost,
}

/// How a workload ended: its exit code, or the number of the signal that
/// killed it; neither when there was no workload or its end was not seen.
/// Stored as optional fields of the event (`exit_code`, `signal`), so logs
/// written before they existed read as "not seen".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Exit {
    pub fn code(code: i32) -> Exit {
        Exit { exit_code: Some(code), signal: None }
    }

    pub fn signal(signal: i32) -> Exit {
        Exit { exit_code: None, signal: Some(signal) }
    }
}

/// An enforcement level as the log stores it: `level` is `full`,
/// `landlock` or `off` (the `pod-sandbox` level's name); `landlock_abi` the
/// kernel's Landlock ABI when Landlock is applied; `scratch` the paths
/// outside every allocation the workload may write (`--scratch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforced {
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock_abi: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<scope::ScopePath>,
}

/// One record as readers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub timestamp_ms: u64,
    pub event: Event,
}

/// The kinds this build writes and decodes strictly.
const KNOWN_KINDS: [&str; 9] = [
    "pod.created",
    "pod.scope",
    "child.spawned",
    "child.removed",
    "child.reparented",
    "pod.stopped",
    "pod.fenced",
    "pod.rejoined",
    "pod.enforced",
];

impl Event {
    /// The kind string, as stored.
    pub fn kind(&self) -> &str {
        match self {
            Event::PodCreated { .. } => "pod.created",
            Event::PodScope { .. } => "pod.scope",
            Event::ChildSpawned { .. } => "child.spawned",
            Event::ChildRemoved { .. } => "child.removed",
            Event::ChildReparented { .. } => "child.reparented",
            Event::PodStopped { .. } => "pod.stopped",
            Event::PodFenced { .. } => "pod.fenced",
            Event::PodRejoined { .. } => "pod.rejoined",
            Event::PodEnforced(_) => "pod.enforced",
            Event::Unknown { kind } => kind,
        }
    }
}

/// Encodes the stored body of an event.
pub(crate) fn encode_body(event: &Event) -> Result<Vec<u8>, LogError> {
    rmp_serde::to_vec_named(event).map_err(|e| LogError::Encode { what: "an event", message: e.to_string() })
}

/// Decodes the stored body of record `seq`.
pub(crate) fn decode_body(seq: u64, body: &[u8]) -> Result<Event, LogError> {
    let event: Event = rmp_serde::from_slice(body)
        .map_err(|e| LogError::corrupt(seq, format!("has a body that does not decode: {e}")))?;
    // Serde falls back to `Unknown` when a known kind's fields do not match
    // its schema too; that is a bad record, not a newer kind.
    match &event {
        Event::Unknown { kind } if KNOWN_KINDS.contains(&kind.as_str()) => {
            Err(LogError::corrupt(seq, format!("is a `{kind}` event whose fields do not match its schema")))
        }
        _ => Ok(event),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_kind_decodes_to_unknown() {
        #[derive(Serialize)]
        struct Future {
            kind: &'static str,
            color: u32,
        }
        let body = rmp_serde::to_vec_named(&Future { kind: "pod.painted", color: 7 }).unwrap();
        assert_eq!(decode_body(3, &body).unwrap(), Event::Unknown { kind: "pod.painted".into() });
    }

    #[test]
    fn known_kind_with_bad_fields_is_corrupt() {
        #[derive(Serialize)]
        struct Bad {
            kind: &'static str,
            name: u32,
        }
        let body = rmp_serde::to_vec_named(&Bad { kind: "child.removed", name: 7 }).unwrap();
        let err = decode_body(9, &body).unwrap_err();
        assert_eq!((err.code(), err.damage(), err.seq()), ("log.corrupt", Some("corrupt_record"), Some(9)));
    }

    #[test]
    fn kind_matches_the_serde_tag() {
        let body = encode_body(&Event::PodStopped { exit: Exit::default() }).unwrap();
        assert_eq!(decode_body(1, &body).unwrap().kind(), "pod.stopped");
    }

    #[test]
    fn an_exit_is_stored_as_optional_fields_and_old_events_read_as_not_seen() {
        #[derive(Serialize)]
        struct Old {
            kind: &'static str,
        }
        let old = rmp_serde::to_vec_named(&Old { kind: "pod.stopped" }).unwrap();
        assert_eq!(decode_body(1, &old).unwrap(), Event::PodStopped { exit: Exit::default() });
        for exit in [Exit::code(3), Exit::signal(9)] {
            let event = Event::ChildRemoved { name: PodName::new("a").unwrap(), reason: RemovalReason::ShutDown, exit };
            assert_eq!(decode_body(2, &encode_body(&event).unwrap()).unwrap(), event);
        }
        let json = serde_json::to_string(&Event::PodStopped { exit: Exit::signal(9) }).unwrap();
        assert_eq!(json, r#"{"kind":"pod.stopped","signal":9}"#);
    }
}
