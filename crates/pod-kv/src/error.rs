//! Why a call to the store was refused, and the one table that turns a
//! refusal into an exit code.
//!
//! Every variant has a stable `area.reason` code (it crosses the IPC as the
//! code of a `WireError`) and a [`Kind`], which fixes the exit code of
//! `pod kv` and `pod lease` and the error class the MCP front end reports.
//! The store is unchanged whenever one of these is returned.
//!
//! Messages never carry anything the caller may not read: a refusal about a
//! key names only the key the caller spelled, and the capacity refusals
//! (`kv.too_many_keys`, `kv.layer_too_large`, ...) state the limit, never
//! how much of it is used.

use scope::NameError;

use crate::caller::Reach;

use crate::limits::{
    MAX_KEYS, MAX_KEY_BYTES, MAX_LAYER_BYTES, MAX_LEASES, MAX_PATTERN_SEGMENTS, MAX_SLOTS, MAX_TTL_MS, MAX_VALUE_BYTES,
    MAX_WAITERS, MAX_WAIT_MS, MIN_TTL_MS,
};

/// The class of an outcome: what a script can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The caller may not do this (exit 1).
    Denied,
    /// The request is malformed or past a limit (exit 2).
    BadInput,
    /// A version did not match, or a lease is held (exit 3).
    Conflict,
    /// No such key, lease or layer (exit 4).
    NotFound,
    /// A wait ended before its condition held (exit 124, as `timeout(1)`).
    TimedOut,
    /// The store could not answer: its data is damaged, or (in the shell)
    /// the lead is not running or its storage failed (exit 69,
    /// `EX_UNAVAILABLE`: try again once the lead is back).
    Unavailable,
}

/// The exit code of a call that succeeded.
pub const EXIT_OK: u8 = 0;

impl Kind {
    /// The exit code of `pod kv` / `pod lease` for this class.
    pub const fn exit_code(self) -> u8 {
        match self {
            Kind::Denied => 1,
            Kind::BadInput => 2,
            Kind::Conflict => 3,
            Kind::NotFound => 4,
            Kind::TimedOut => 124,
            Kind::Unavailable => 69,
        }
    }

    /// The class of an error code received over the IPC, so that the CLI
    /// and the MCP front end need no table of their own. `None` for a code
    /// this store never returns (the caller then treats it as
    /// [`Kind::Unavailable`], or by its own area).
    pub fn of_code(code: &str) -> Option<Kind> {
        CODES.iter().find(|(c, _)| *c == code).map(|(_, k)| *k)
    }
}

/// Every code this crate returns, with its class. The unit tests check that
/// it lists each variant exactly once; `docs/coordination.md` prints it.
pub const CODES: &[(&str, Kind)] = &[
    ("kv.key_empty", Kind::BadInput),
    ("kv.key_not_absolute", Kind::BadInput),
    ("kv.key_empty_segment", Kind::BadInput),
    ("kv.key_dot_segment", Kind::BadInput),
    ("kv.key_dotdot_segment", Kind::BadInput),
    ("kv.key_bad_char", Kind::BadInput),
    ("kv.key_too_long", Kind::BadInput),
    ("kv.key_namespace", Kind::BadInput),
    ("kv.key_incomplete", Kind::BadInput),
    ("kv.key_bad_member", Kind::BadInput),
    ("kv.key_lease_namespace", Kind::BadInput),
    ("kv.pattern_empty", Kind::BadInput),
    ("kv.pattern_not_absolute", Kind::BadInput),
    ("kv.pattern_empty_segment", Kind::BadInput),
    ("kv.pattern_dot_segment", Kind::BadInput),
    ("kv.pattern_dotdot_segment", Kind::BadInput),
    ("kv.pattern_bad_char", Kind::BadInput),
    ("kv.pattern_too_long", Kind::BadInput),
    ("kv.pattern_namespace", Kind::BadInput),
    ("kv.pattern_incomplete", Kind::BadInput),
    ("kv.pattern_bad_member", Kind::BadInput),
    ("kv.pattern_lease_namespace", Kind::BadInput),
    ("kv.pattern_partial_wildcard", Kind::BadInput),
    ("kv.pattern_too_many_segments", Kind::BadInput),
    ("kv.lease_bad_name", Kind::BadInput),
    ("kv.value_too_large", Kind::BadInput),
    ("kv.ttl_out_of_range", Kind::BadInput),
    ("kv.wait_out_of_range", Kind::BadInput),
    ("kv.layer_required", Kind::BadInput),
    ("kv.not_root", Kind::BadInput),
    ("kv.too_many_keys", Kind::BadInput),
    ("kv.layer_too_large", Kind::BadInput),
    ("kv.too_many_slots", Kind::BadInput),
    ("kv.too_many_leases", Kind::BadInput),
    ("kv.too_many_waiters", Kind::BadInput),
    ("kv.denied", Kind::Denied),
    ("kv.override_required", Kind::Denied),
    ("kv.not_in_layer", Kind::Denied),
    ("kv.no_slot", Kind::Denied),
    ("kv.version_mismatch", Kind::Conflict),
    ("kv.lease_held", Kind::Conflict),
    ("kv.lease_stale", Kind::Conflict),
    ("kv.not_found", Kind::NotFound),
    ("kv.lease_not_held", Kind::NotFound),
    ("kv.no_such_layer", Kind::NotFound),
    ("kv.timed_out", Kind::TimedOut),
    ("kv.request_stale", Kind::BadInput),
    ("kv.corrupt", Kind::Unavailable),
    ("kv.storage", Kind::Unavailable),
];

/// What is wrong with the spelling of a key, a list pattern or a lease name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spelling {
    Empty,
    NotAbsolute,
    EmptySegment,
    DotSegment,
    DotDotSegment,
    BadChar {
        ch: char,
        pos: usize,
    },
    TooLong {
        len: usize,
    },
    UnknownNamespace {
        top: String,
    },
    /// Nothing below the namespace (or below the member of `/peer`).
    Incomplete,
    /// The member segment of `/peer/<member>` is not a Pod name.
    BadMember {
        why: NameError,
    },
    /// `/leases` is reached only through the lease calls.
    LeaseNamespace,
    /// A `*` inside a segment (`task-*`): only whole-segment `*` and `**`.
    PartialWildcard {
        segment: String,
    },
    TooManySegments {
        count: usize,
    },
}

impl Spelling {
    fn key_code(&self) -> &'static str {
        match self {
            Spelling::Empty => "kv.key_empty",
            Spelling::NotAbsolute => "kv.key_not_absolute",
            Spelling::EmptySegment => "kv.key_empty_segment",
            Spelling::DotSegment => "kv.key_dot_segment",
            Spelling::DotDotSegment => "kv.key_dotdot_segment",
            Spelling::BadChar { .. } => "kv.key_bad_char",
            Spelling::TooLong { .. } => "kv.key_too_long",
            Spelling::UnknownNamespace { .. } => "kv.key_namespace",
            Spelling::Incomplete => "kv.key_incomplete",
            Spelling::BadMember { .. } => "kv.key_bad_member",
            Spelling::LeaseNamespace => "kv.key_lease_namespace",
            // Keys are parsed without wildcards: a `*` is a bad character.
            Spelling::PartialWildcard { .. } | Spelling::TooManySegments { .. } => "kv.key_bad_char",
        }
    }

    fn pattern_code(&self) -> &'static str {
        match self {
            Spelling::Empty => "kv.pattern_empty",
            Spelling::NotAbsolute => "kv.pattern_not_absolute",
            Spelling::EmptySegment => "kv.pattern_empty_segment",
            Spelling::DotSegment => "kv.pattern_dot_segment",
            Spelling::DotDotSegment => "kv.pattern_dotdot_segment",
            Spelling::BadChar { .. } => "kv.pattern_bad_char",
            Spelling::TooLong { .. } => "kv.pattern_too_long",
            Spelling::UnknownNamespace { .. } => "kv.pattern_namespace",
            Spelling::Incomplete => "kv.pattern_incomplete",
            Spelling::BadMember { .. } => "kv.pattern_bad_member",
            Spelling::LeaseNamespace => "kv.pattern_lease_namespace",
            Spelling::PartialWildcard { .. } => "kv.pattern_partial_wildcard",
            Spelling::TooManySegments { .. } => "kv.pattern_too_many_segments",
        }
    }
}

impl std::fmt::Display for Spelling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spelling::Empty => f.write_str("it is empty"),
            Spelling::NotAbsolute => f.write_str("it does not start with '/'"),
            Spelling::EmptySegment => {
                f.write_str("it has an empty segment ('//' or a trailing '/'); segments are never collapsed")
            }
            Spelling::DotSegment => f.write_str("it has a '.' segment; segments are never normalized"),
            Spelling::DotDotSegment => f.write_str("it has a '..' segment; segments are never normalized"),
            Spelling::BadChar { ch, pos } => {
                write!(f, "it has {ch:?} at byte {pos}; segments are made of A-Z, a-z, 0-9, '.', '_' and '-'")
            }
            Spelling::TooLong { len } => write!(f, "it is {len} bytes long; the limit is {MAX_KEY_BYTES}"),
            Spelling::UnknownNamespace { top } => {
                write!(f, "its namespace {top:?} is not one of /ref, /peer, /shared (and /leases for leases)")
            }
            Spelling::Incomplete => {
                f.write_str("it names no key below its namespace (/ref/NAME, /shared/NAME, /peer/MEMBER/NAME)")
            }
            Spelling::BadMember { why } => write!(f, "its /peer member is not a pod name: {why}"),
            Spelling::LeaseNamespace => f.write_str("/leases is reached only through `pod lease`"),
            Spelling::PartialWildcard { segment } => {
                write!(f, "its segment {segment:?} mixes '*' with other characters; only whole-segment * and ** match")
            }
            Spelling::TooManySegments { count } => {
                write!(f, "it has {count} segments; the limit is {MAX_PATTERN_SEGMENTS}")
            }
        }
    }
}

/// Which access a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// What a timed-out wait waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaited {
    /// A key at `min_version` or later (0: the key to exist).
    Key {
        key: String,
        min_version: u64,
    },
    Lease {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("bad key {}: {why}", shown(key))]
    BadKey { key: String, why: Spelling },
    #[error("bad pattern {}: {why}", shown(pattern))]
    BadPattern { pattern: String, why: Spelling },
    #[error("bad lease name {}: {why} (a lease name is one key segment)", shown(name))]
    BadLeaseName { name: String, why: Spelling },
    #[error("the value is {len} bytes; the limit is {MAX_VALUE_BYTES}")]
    ValueTooLarge { len: usize },
    #[error("a lease TTL of {ttl_ms} ms is outside {MIN_TTL_MS}..={MAX_TTL_MS} ms")]
    TtlOutOfRange { ttl_ms: u64 },
    #[error("a wait of {wait_ms} ms is longer than the limit of {MAX_WAIT_MS} ms")]
    WaitOutOfRange { wait_ms: u64 },
    #[error("the operator belongs to no layer: name one with --layer LEAD")]
    LayerRequired,
    #[error("tree-wide leases live at the root pod, and {lead} is not a root")]
    NotRoot { lead: String },
    #[error("the layer holds {MAX_KEYS} keys, the limit; delete some first")]
    TooManyKeys,
    #[error("the layer's keys and values would pass {MAX_LAYER_BYTES} bytes, the limit; delete some first")]
    LayerTooLarge,
    #[error("the layer remembers {MAX_SLOTS} /peer slots, the limit; no new slot can be started")]
    TooManySlots,
    #[error("the layer holds {MAX_LEASES} leases, the limit")]
    TooManyLeases,
    #[error("the layer has {MAX_WAITERS} callers waiting, the limit; try again later")]
    TooManyWaiters,
    #[error("{who} may not {access} {key}: {why}")]
    Denied { who: String, access: Access, key: String, why: &'static str },
    #[error("{who} may write {key}, another member's slot, only with --override")]
    OverrideRequired { who: String, key: String },
    #[error("{who} is not in the {} of {lead}: {}", reach_word(*reach), reach_rule(*reach))]
    NotInLayer { who: String, lead: String, reach: Reach },
    #[error("the operator has no /peer/self slot: it never acts as a member (write /peer/MEMBER/... with --override)")]
    NoSlot,
    #[error("{key} {}", mismatch(*expected, *actual))]
    VersionMismatch { key: String, expected: u64, actual: Option<u64> },
    #[error("lease {name} is held by {holder}{} for another {remaining_ms} ms", if *yours { " (you; a lease is not re-entrant)" } else { "" })]
    LeaseHeld { name: String, holder: String, remaining_ms: u64, yours: bool },
    #[error("lease {name} is held under token {current}, not {token}: that grant is over")]
    LeaseStale { name: String, token: u64, current: u64 },
    #[error("no key {key}")]
    NotFound { key: String },
    #[error("lease {name} is not held (a grant whose TTL passed is over, even before anyone else takes it)")]
    LeaseNotHeld { name: String },
    #[error("no pod named {name} to address")]
    NoSuchLayer { name: String },
    #[error("{} within {waited_ms} ms", awaited_text(awaited))]
    TimedOut { awaited: Awaited, waited_ms: u64 },
    #[error("request {seq} of this client is older than its last one ({last}): a late duplicate, not retried")]
    RequestStale { seq: u64, last: u64 },
    #[error("stored coordination data is damaged: {0}")]
    Corrupt(String),
    #[error("the coordination store's storage failed: {0}")]
    Storage(String),
}

impl KvError {
    pub fn code(&self) -> &'static str {
        match self {
            KvError::BadKey { why, .. } => why.key_code(),
            KvError::BadPattern { why, .. } => why.pattern_code(),
            KvError::BadLeaseName { .. } => "kv.lease_bad_name",
            KvError::ValueTooLarge { .. } => "kv.value_too_large",
            KvError::TtlOutOfRange { .. } => "kv.ttl_out_of_range",
            KvError::WaitOutOfRange { .. } => "kv.wait_out_of_range",
            KvError::LayerRequired => "kv.layer_required",
            KvError::NotRoot { .. } => "kv.not_root",
            KvError::TooManyKeys => "kv.too_many_keys",
            KvError::LayerTooLarge => "kv.layer_too_large",
            KvError::TooManySlots => "kv.too_many_slots",
            KvError::TooManyLeases => "kv.too_many_leases",
            KvError::TooManyWaiters => "kv.too_many_waiters",
            KvError::Denied { .. } => "kv.denied",
            KvError::OverrideRequired { .. } => "kv.override_required",
            KvError::NotInLayer { .. } => "kv.not_in_layer",
            KvError::NoSlot => "kv.no_slot",
            KvError::VersionMismatch { .. } => "kv.version_mismatch",
            KvError::LeaseHeld { .. } => "kv.lease_held",
            KvError::LeaseStale { .. } => "kv.lease_stale",
            KvError::NotFound { .. } => "kv.not_found",
            KvError::LeaseNotHeld { .. } => "kv.lease_not_held",
            KvError::NoSuchLayer { .. } => "kv.no_such_layer",
            KvError::TimedOut { .. } => "kv.timed_out",
            KvError::RequestStale { .. } => "kv.request_stale",
            KvError::Corrupt(_) => "kv.corrupt",
            KvError::Storage(_) => "kv.storage",
        }
    }

    pub fn kind(&self) -> Kind {
        match Kind::of_code(self.code()) {
            Some(kind) => kind,
            None => unreachable!("{} is missing from CODES", self.code()),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }
}

fn reach_word(reach: Reach) -> &'static str {
    match reach {
        Reach::Layer => "layer",
        Reach::Tree => "tree",
    }
}

fn reach_rule(reach: Reach) -> &'static str {
    match reach {
        Reach::Layer => "a layer is its lead and the lead's direct children",
        Reach::Tree => "tree-wide leases are for the pods of that tree",
    }
}

fn mismatch(expected: u64, actual: Option<u64>) -> String {
    match (expected, actual) {
        (_, None) => format!("is absent, not at the expected version {expected}"),
        (0, Some(v)) => format!("is at version {v}, not absent as expected (version 0)"),
        (_, Some(v)) => format!("is at version {v}, not at the expected version {expected}"),
    }
}

fn awaited_text(awaited: &Awaited) -> String {
    match awaited {
        Awaited::Key { key, min_version: 0 } => format!("{key} did not come to exist"),
        Awaited::Key { key, min_version } => format!("{key} did not reach version {min_version}"),
        Awaited::Lease { name } => format!("lease {name} was not granted"),
    }
}

/// A caller's spelling as it appears in a message: quoted (so control
/// characters show), and cut at 80 characters so that an oversized key
/// cannot make an oversized message.
pub(crate) fn shown(raw: &str) -> String {
    const MAX: usize = 80;
    match raw.char_indices().nth(MAX) {
        None => format!("{raw:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &raw[..cut], raw.len()),
    }
}
