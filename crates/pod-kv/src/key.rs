//! Keys and lease names: parsing is validation.
//!
//! A key is `/`-separated segments of `[A-Za-z0-9._-]`, none empty, `.` or
//! `..`, at most [`MAX_KEY_BYTES`] bytes. Nothing is ever normalized: a
//! spelling that a path library would clean up (`/peer//w2/x`,
//! `/peer/./w2/x`, `/peer/w2/../w2/x`) is refused with its own code, so the
//! key that is authorized is byte for byte the key that is stored. The one
//! rewrite is `/peer/self/...`, which names the caller's own slot and is
//! resolved to `/peer/<caller>/...` here, before any right is checked; the
//! resolved key is checked against the length limit again.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use scope::PodName;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::{KvError, Spelling};
use crate::limits::MAX_KEY_BYTES;

/// The segment of `/peer/self/...` that names the caller's own slot. The
/// Pod name `self` is reserved so that it never names a real member.
pub const SELF_SEGMENT: &str = "self";

/// Where a key lives; it decides who may read and write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// `/ref/...`: the lead writes, every member reads.
    Ref,
    /// `/shared/...`: every member reads and writes.
    Shared,
    /// `/peer/<member>/...`: that member's slot.
    Peer(PodName),
}

/// Whose counter a key's versions are drawn from. Each partition is read
/// by the same callers in full, so a version never tells a caller about
/// writes it may not see (a layer-wide revision would let a member count
/// another member's writes to its own slot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Partition {
    /// `/ref` and `/shared`.
    Common,
    /// Lease grants (their fencing tokens).
    Leases,
    /// One `/peer/<member>` slot.
    Slot(PodName),
}

/// A valid, resolved key: exactly what is authorized and stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key {
    text: String,
    namespace: Namespace,
}

impl Key {
    /// Parses what a caller spelled, resolving `/peer/self` to the caller's
    /// own slot (refused for the operator, which has none).
    pub fn resolve(raw: &str, caller: &Caller) -> Result<Key, KvError> {
        let bad = |why| KvError::BadKey { key: raw.to_string(), why };
        let parsed = parse_key(raw).map_err(bad)?;
        let Parsed::Peer { member: Member::OwnSlot, .. } = &parsed else {
            return Ok(parsed.into_key(raw.to_string()));
        };
        let own = caller.slot().ok_or(KvError::NoSlot)?;
        let text = format!("/peer/{own}{}", &raw["/peer/self".len()..]);
        if text.len() > MAX_KEY_BYTES {
            return Err(bad(Spelling::TooLong { len: text.len() }));
        }
        Ok(Key { text, namespace: Namespace::Peer(own.clone()) })
    }

    /// Parses a key read back from storage: no `self` to resolve (a stored
    /// `/peer/self/...` would be the slot of a Pod named `self`).
    pub fn stored(text: &str) -> Result<Key, KvError> {
        let bad = |why| KvError::BadKey { key: text.to_string(), why };
        match parse_key(text).map_err(bad)? {
            Parsed::Peer { member: Member::OwnSlot, .. } => match PodName::new(SELF_SEGMENT) {
                Ok(name) => Ok(Key { text: text.to_string(), namespace: Namespace::Peer(name) }),
                Err(why) => Err(bad(Spelling::BadMember { why })),
            },
            parsed => Ok(parsed.into_key(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn partition(&self) -> Partition {
        match &self.namespace {
            Namespace::Ref | Namespace::Shared => Partition::Common,
            Namespace::Peer(member) => Partition::Slot(member.clone()),
        }
    }

    /// The key's segments, the namespace first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.text[1..].split('/')
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.text == other.text
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.text.cmp(&other.text)
    }
}
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl TryFrom<String> for Key {
    type Error = KvError;
    fn try_from(text: String) -> Result<Key, KvError> {
        Key::stored(&text)
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.text
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// A lease name: one key segment. The lease lives at `/leases/NAME`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LeaseName(String);

/// `/leases/`, the prefix of every lease's key.
const LEASES_PREFIX: &str = "/leases/";

impl LeaseName {
    pub fn new(raw: &str) -> Result<LeaseName, KvError> {
        let bad = |why| KvError::BadLeaseName { name: raw.to_string(), why };
        let len = LEASES_PREFIX.len() + raw.len();
        if len > MAX_KEY_BYTES {
            return Err(bad(Spelling::TooLong { len }));
        }
        if raw.is_empty() {
            return Err(bad(Spelling::Empty));
        }
        check_segment(raw, 0).map_err(bad)?;
        Ok(LeaseName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the lease lives: `/leases/NAME`.
    pub fn key(&self) -> String {
        format!("{LEASES_PREFIX}{}", self.0)
    }
}

impl TryFrom<String> for LeaseName {
    type Error = KvError;
    fn try_from(raw: String) -> Result<LeaseName, KvError> {
        LeaseName::new(&raw)
    }
}

impl From<LeaseName> for String {
    fn from(name: LeaseName) -> String {
        name.0
    }
}

impl fmt::Display for LeaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Is `c` allowed in a segment?
pub(crate) fn segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks one literal segment; `offset` is where it starts in the whole
/// spelling, so that a bad character is reported at its real position.
pub(crate) fn check_segment(segment: &str, offset: usize) -> Result<(), Spelling> {
    match segment {
        "" => Err(Spelling::EmptySegment),
        "." => Err(Spelling::DotSegment),
        ".." => Err(Spelling::DotDotSegment),
        _ => match segment.char_indices().find(|&(_, c)| !segment_char(c)) {
            Some((pos, ch)) => Err(Spelling::BadChar { ch, pos: offset + pos }),
            None => Ok(()),
        },
    }
}

/// Splits an absolute spelling into segments with their byte offsets,
/// checking its length and shape but not the segments themselves.
pub(crate) fn split(raw: &str) -> Result<Vec<(usize, &str)>, Spelling> {
    if raw.len() > MAX_KEY_BYTES {
        return Err(Spelling::TooLong { len: raw.len() });
    }
    if raw.is_empty() {
        return Err(Spelling::Empty);
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(Spelling::NotAbsolute);
    };
    let mut out = Vec::new();
    let mut at = 1;
    for segment in rest.split('/') {
        out.push((at, segment));
        at += segment.len() + 1;
    }
    Ok(out)
}

/// The member segment of a `/peer` key.
pub(crate) enum Member {
    OwnSlot,
    Named(PodName),
}

/// The top segment of a key or pattern, as far as it decides rights.
pub(crate) fn namespace_of(top: &str) -> Result<Top, Spelling> {
    match top {
        "ref" => Ok(Top::Ref),
        "shared" => Ok(Top::Shared),
        "peer" => Ok(Top::Peer),
        "leases" => Err(Spelling::LeaseNamespace),
        other => Err(Spelling::UnknownNamespace { top: other.to_string() }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Top {
    Ref,
    Shared,
    Peer,
}

/// A member segment: `self`, or a Pod name.
pub(crate) fn member_of(segment: &str) -> Result<Member, Spelling> {
    if segment == SELF_SEGMENT {
        return Ok(Member::OwnSlot);
    }
    PodName::new(segment).map(Member::Named).map_err(|why| Spelling::BadMember { why })
}

enum Parsed {
    Ref,
    Shared,
    Peer { member: Member },
}

impl Parsed {
    fn into_key(self, text: String) -> Key {
        let namespace = match self {
            Parsed::Ref => Namespace::Ref,
            Parsed::Shared => Namespace::Shared,
            Parsed::Peer { member: Member::Named(name) } => Namespace::Peer(name),
            Parsed::Peer { member: Member::OwnSlot } => unreachable!("own-slot keys are resolved by the caller"),
        };
        Key { text, namespace }
    }
}

fn parse_key(raw: &str) -> Result<Parsed, Spelling> {
    let segments = split(raw)?;
    for &(at, segment) in &segments {
        check_segment(segment, at)?;
    }
    let top = namespace_of(segments[0].1)?;
    match top {
        Top::Ref | Top::Shared if segments.len() < 2 => Err(Spelling::Incomplete),
        Top::Ref => Ok(Parsed::Ref),
        Top::Shared => Ok(Parsed::Shared),
        Top::Peer if segments.len() < 3 => Err(Spelling::Incomplete),
        Top::Peer => Ok(Parsed::Peer { member: member_of(segments[1].1)? }),
    }
}

/// Keys are ordered and compared by their text, so a map of keys can be
/// searched by a `&str` prefix.
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.text
    }
}
