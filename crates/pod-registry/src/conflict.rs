//! The write-conflict rule, and whom a conflict blames.
//!
//! A Pod Q's effective write is its allow write rules minus its deny rules
//! minus its layers' write rules. A newcomer N (with its own caps: its deny
//! rules and layers) conflicts with Q when some part of `N.allow ∩ Q.allow`
//! is not covered by one single cap of either side. Testing coverage by one
//! rule (never by a union of rules) is exact for the three region shapes and
//! deliberately conservative otherwise: a deny that hides only part of the
//! overlap does not hide the conflict.
//!
//! Blame: of all Pods that conflict, the deepest in its tree is named, so
//! when a region was delegated further down the error points at the Pod that
//! actually holds it, not at its ancestors.

use scope::{PodName, Region, ScopeRule};

use crate::state::State;
use crate::RegistryError;

/// The newcomer's side of a check.
pub struct Claim<'a> {
    pub name: &'a PodName,
    /// Its allow rules (read rules are ignored: reads never conflict).
    pub allow: &'a [ScopeRule],
    /// Its own caps (deny rules and layer write rules).
    pub caps: Vec<&'a ScopeRule>,
    /// A Pod not to check against (the delegating parent, whose own check
    /// is `Scope::check_delegation`).
    pub skip: Option<&'a PodName>,
}

/// `Ok` when `claim` overlaps nobody's effective write; otherwise the
/// conflict with the deepest holder.
pub fn check(state: &State, claim: &Claim<'_>) -> Result<(), RegistryError> {
    let mut found: Option<(usize, RegistryError)> = None;
    let mut candidates = Vec::new();
    for rule in claim.allow.iter().filter(|r| r.permission == scope::Permission::Write) {
        let region = rule.region();
        candidates.clear();
        state.index().candidates(&region, &mut candidates);
        for &(holder, holder_rule) in &candidates {
            if holder == claim.name || Some(holder) == claim.skip {
                continue;
            }
            let Some(overlap) = region.intersect(&holder_rule.region()) else { continue };
            if covered(&overlap, claim.caps.iter().copied()) {
                continue;
            }
            let Some(q) = state.get(holder) else { continue };
            if covered(&overlap, q.rec.write_caps()) {
                continue;
            }
            let depth = state.depth(holder);
            if found.as_ref().is_none_or(|(d, _)| depth > *d) {
                let error = match &q.rec.node {
                    None => RegistryError::WriteConflict {
                        rule: rule.clone(),
                        holder: holder.clone(),
                        holder_rule: holder_rule.clone(),
                        overlap,
                    },
                    Some(node) => RegistryError::NodeConflict(Box::new(crate::error::NodeConflict {
                        rule: rule.clone(),
                        holder: holder.clone(),
                        node: node.clone(),
                        holder_rule: holder_rule.clone(),
                        overlap,
                    })),
                };
                found = Some((depth, error));
            }
        }
    }
    match found {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn covered<'a>(overlap: &Region, mut caps: impl Iterator<Item = &'a ScopeRule>) -> bool {
    caps.any(|c| c.region().covers(overlap))
}
