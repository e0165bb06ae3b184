//! The registry's key space in etcd, and the ranges its guards cover.
//!
//! Everything lives under [`PREFIX`]:
//!
//! - `n/<node>`: the node record, bound to the node's lease; its create
//!   revision fences the node.
//! - `p/<pod>`: an allocation, bound to its node's lease; the create
//!   revision is its fencing token, the mod revision its fence.
//! - `c<target>/\0<pod>\0<s|l>`: one claim per write allow rule of an
//!   allocation (`s`: subtree, `l`: level), written and deleted with it.
//!   Laid out as the path tree, so the claims on one target are a range
//!   and the claims on a target and everything below it are another.
//! - `a/<node>/<stream>`: a request stream's remembered answer on that node.
//!
//! Pure.

use scope::{PodName, Region, ScopePath};

use crate::answers::StreamId;
use crate::record::NodeName;

/// Where the registry's keys live in etcd (a version, so a future layout
/// can live beside this one).
pub const PREFIX: &str = "/pod-registry/v1/";

pub fn node(node: &NodeName) -> Vec<u8> {
    format!("{PREFIX}n/{node}").into_bytes()
}

pub fn pods() -> Vec<u8> {
    format!("{PREFIX}p/").into_bytes()
}

pub fn pod(name: &PodName) -> Vec<u8> {
    format!("{PREFIX}p/{name}").into_bytes()
}

/// The pod a `p/` key names.
pub fn pod_name(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok()?.strip_prefix(PREFIX)?.strip_prefix("p/")
}

pub fn answers(node: &NodeName) -> Vec<u8> {
    format!("{PREFIX}a/{node}/").into_bytes()
}

pub fn answer(node: &NodeName, stream: &StreamId) -> Vec<u8> {
    format!("{PREFIX}a/{node}/{stream}").into_bytes()
}

/// The stream an answer key of `node` names.
pub fn answer_stream(node: &NodeName, key: &[u8]) -> Option<StreamId> {
    let text = std::str::from_utf8(key).ok()?;
    let rest = text.strip_prefix(std::str::from_utf8(&answers(node)).ok()?)?;
    StreamId::try_from(rest.to_string()).ok()
}

/// `c<target>/`: where the claims on `target` and below it start.
fn dir(target: &ScopePath) -> String {
    let t = target.as_str();
    if t == "/" {
        format!("{PREFIX}c/")
    } else {
        format!("{PREFIX}c{t}/")
    }
}

/// The claim key of one write allow rule of `pod`.
pub fn claim(pod: &PodName, region: &Region) -> Vec<u8> {
    let shape = match region {
        Region::Subtree(_) => 's',
        Region::Level(_) => 'l',
        Region::Point(_) => 'p',
    };
    format!("{}\0{pod}\0{shape}", dir(region.target())).into_bytes()
}

/// A key range `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

/// The claims on exactly `target`.
fn on(target: &ScopePath) -> Range {
    let d = dir(target);
    Range { start: format!("{d}\0").into_bytes(), end: format!("{d}\u{1}").into_bytes() }
}

/// The claims on `target` and everything below it.
fn at_and_below(target: &ScopePath) -> Range {
    let mut d = dir(target).into_bytes();
    let start = d.clone();
    // The directory ends in '/'; '0' is the byte after it.
    if let Some(last) = d.last_mut() {
        *last = b'0';
    }
    Range { start, end: d }
}

/// Every range whose claims may overlap `region`: the claims on each
/// ancestor of its target, and those on the target and below it (for a
/// level or a point too: a superset, so a guard errs on the safe side).
pub fn overlapping(region: &Region) -> Vec<Range> {
    let target = region.target();
    let mut out: Vec<Range> = ancestors(target).iter().map(on).collect();
    match region {
        Region::Point(_) => out.push(on(target)),
        Region::Subtree(_) | Region::Level(_) => out.push(at_and_below(target)),
    }
    out
}

/// The proper ancestors of `target`, root first.
fn ancestors(target: &ScopePath) -> Vec<ScopePath> {
    let t = target.as_str();
    if t == "/" {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut end = 0;
    while let Some(i) = t[end..].find('/') {
        let cut = end + i;
        let prefix = if cut == 0 { "/" } else { &t[..cut] };
        if let Ok(p) = ScopePath::new(prefix) {
            out.push(p);
        }
        end = cut + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ScopePath {
        ScopePath::new(s).expect("path")
    }

    fn inside(r: &Range, key: &[u8]) -> bool {
        r.start.as_slice() <= key && key < r.end.as_slice()
    }

    fn n(s: &str) -> PodName {
        PodName::new(s).expect("name")
    }

    #[test]
    fn the_ranges_of_a_region_hold_exactly_the_claims_that_may_overlap_it() {
        let ranges = overlapping(&Region::Subtree(p("/repo/src")));
        let hit = |target: &str| {
            let key = claim(&n("x"), &Region::Subtree(p(target)));
            ranges.iter().any(|r| inside(r, &key))
        };
        for target in ["/", "/repo", "/repo/src", "/repo/src/net", "/repo/src/net/tcp"] {
            assert!(hit(target), "{target} may overlap /repo/src/**");
        }
        for target in ["/repo/srcs", "/repo/sr", "/other", "/repo/src-old/x", "/repo/doc"] {
            assert!(!hit(target), "{target} cannot overlap /repo/src/**");
        }
    }

    #[test]
    fn the_root_covers_every_claim_and_ancestors_are_root_first() {
        assert_eq!(ancestors(&p("/a/b/c")), vec![p("/"), p("/a"), p("/a/b")]);
        assert!(ancestors(&p("/")).is_empty());
        let all = overlapping(&Region::Subtree(p("/")));
        assert_eq!(all.len(), 1);
        assert!(inside(&all[0], &claim(&n("x"), &Region::Level(p("/deep/down")))));
        assert!(!inside(&all[0], &pod(&n("x"))));
    }

    #[test]
    fn names_round_trip_through_their_keys() {
        assert_eq!(pod_name(&pod(&n("lead"))), Some("lead"));
        let node = NodeName::new("n1").expect("node");
        let stream = StreamId(7);
        assert_eq!(answer_stream(&node, &answer(&node, &stream)), Some(stream));
    }
}
