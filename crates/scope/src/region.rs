//! The set of paths a rule covers, and the algebra on those sets.
//!
//! Three shapes are enough to describe every rule and every pairwise
//! intersection of rules, so `overlaps`, `covers` and `intersect` are exact
//! (no approximation) and are shared with the registry's conflict checks.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::path::{is_within, parent_of};
use crate::ScopePath;

/// A set of paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "shape", content = "path", rename_all = "snake_case")]
pub enum Region {
    /// The path and everything below it (`target/**`).
    Subtree(ScopePath),
    /// The path and its direct children (`target/*`).
    Level(ScopePath),
    /// Exactly one path. Arises only as the intersection of other shapes.
    Point(ScopePath),
}

impl Region {
    pub fn target(&self) -> &ScopePath {
        match self {
            Region::Subtree(p) | Region::Level(p) | Region::Point(p) => p,
        }
    }

    /// Does the region contain `path`?
    pub fn contains(&self, path: &ScopePath) -> bool {
        contains_str(self, path.as_str())
    }

    /// Is there a path in both regions?
    pub fn overlaps(&self, other: &Region) -> bool {
        self.intersect(other).is_some()
    }

    /// Is every path of `inner` in `self`?
    pub fn covers(&self, inner: &Region) -> bool {
        use Region::*;
        match (self, inner) {
            (Subtree(t), x) => x.target().is_within(t),
            (Level(t), Point(p)) => p == t || p.parent() == Some(t.as_str()),
            (Level(t), Level(u)) => t == u,
            (Level(_), Subtree(_)) => false,
            (Point(t), Point(p)) => t == p,
            (Point(_), _) => false,
        }
    }

    /// The paths in both regions, or `None` when they are disjoint.
    pub fn intersect(&self, other: &Region) -> Option<Region> {
        use Region::*;
        match (self, other) {
            (Point(p), r) | (r, Point(p)) => r.contains(p).then(|| Point(p.clone())),
            (Subtree(t), Subtree(u)) => {
                if u.is_within(t) {
                    Some(Subtree(u.clone()))
                } else if t.is_within(u) {
                    Some(Subtree(t.clone()))
                } else {
                    None
                }
            }
            (Subtree(t), Level(u)) | (Level(u), Subtree(t)) => {
                if u.is_within(t) {
                    Some(Level(u.clone()))
                } else if t.parent() == Some(u.as_str()) {
                    Some(Point(t.clone()))
                } else {
                    None
                }
            }
            (Level(t), Level(u)) => {
                if t == u {
                    Some(Level(t.clone()))
                } else if t.parent() == Some(u.as_str()) {
                    Some(Point(t.clone()))
                } else if u.parent() == Some(t.as_str()) {
                    Some(Point(u.clone()))
                } else {
                    None
                }
            }
        }
    }
}

/// Membership on a normalized path string, the hot path of permission checks.
pub(crate) fn contains_str(region: &Region, path: &str) -> bool {
    match region {
        Region::Subtree(t) => is_within(path, t.as_str()),
        Region::Level(t) => path == t.as_str() || parent_of(path) == Some(t.as_str()),
        Region::Point(t) => path == t.as_str(),
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, suffix) = match self {
            Region::Subtree(t) => (t, "**"),
            Region::Level(t) => (t, "*"),
            Region::Point(t) => return write!(f, "{t}"),
        };
        if t.is_root() {
            write!(f, "/{suffix}")
        } else {
            write!(f, "{t}/{suffix}")
        }
    }
}
