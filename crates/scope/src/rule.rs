//! Rules: a region of paths and a permission.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::path::{is_within, parent_of};
use crate::{Region, ScopePath};

/// What a rule grants or caps. Ordered: `Read < Write` (write implies read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    Write,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
        })
    }
}

/// One scope rule. A recursive rule covers `target/**` (the target and
/// everything below); a non-recursive rule covers `target/*` (the target and
/// its direct children).
///
/// In an allow list the rule grants `permission`. In a deny list it caps:
/// a write-deny leaves read, a read-deny removes all access. In a delegation
/// layer a write rule removes the parent's write; a read rule only records
/// what the child may read and takes nothing from the parent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopeRule {
    pub target: ScopePath,
    pub permission: Permission,
    pub recursive: bool,
}

impl ScopeRule {
    pub fn new(target: ScopePath, permission: Permission, recursive: bool) -> ScopeRule {
        ScopeRule { target, permission, recursive }
    }

    pub fn write(target: ScopePath) -> ScopeRule {
        ScopeRule::new(target, Permission::Write, true)
    }

    pub fn read(target: ScopePath) -> ScopeRule {
        ScopeRule::new(target, Permission::Read, true)
    }

    /// The paths this rule covers.
    pub fn region(&self) -> Region {
        if self.recursive {
            Region::Subtree(self.target.clone())
        } else {
            Region::Level(self.target.clone())
        }
    }

    pub fn covers_path(&self, path: &ScopePath) -> bool {
        self.applies_to(path.as_str())
    }

    /// True when the two rules share at least one path (permissions aside).
    /// Equal to `self.region().overlaps(&other.region())`, without allocating.
    pub fn overlaps(&self, other: &ScopeRule) -> bool {
        let (t, u) = (self.target.as_str(), other.target.as_str());
        match (self.recursive, other.recursive) {
            (true, true) => is_within(t, u) || is_within(u, t),
            (true, false) => is_within(u, t) || parent_of(t) == Some(u),
            (false, true) => is_within(t, u) || parent_of(u) == Some(t),
            (false, false) => t == u || parent_of(t) == Some(u) || parent_of(u) == Some(t),
        }
    }

    /// True when every path of `inner` is covered by `self` (permissions aside).
    /// Equal to `self.region().covers(&inner.region())`, without allocating.
    pub fn covers(&self, inner: &ScopeRule) -> bool {
        let (t, u) = (self.target.as_str(), inner.target.as_str());
        match (self.recursive, inner.recursive) {
            (true, _) => is_within(u, t),
            (false, false) => t == u,
            (false, true) => false,
        }
    }

    /// Membership test on a normalized path string without allocating.
    pub(crate) fn applies_to(&self, path: &str) -> bool {
        let t = self.target.as_str();
        if self.recursive {
            is_within(path, t)
        } else {
            path == t || parent_of(path) == Some(t)
        }
    }
}

impl fmt::Display for ScopeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.permission, self.region())
    }
}
