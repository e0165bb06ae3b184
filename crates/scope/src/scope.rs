//! A Pod's scope: the user's base rules plus one delegation layer per live
//! child, and the two operations that change it, `delegate` and `reclaim`.
//!
//! Architecture invariant: nothing in this module ever modifies the base
//! (`allow`, `deny`) after construction. Delegation adds a layer, reclaim
//! removes exactly one layer; the effective permission is always recomputed
//! from base + layers, never stored. That is what makes reclaim reversible and
//! what keeps a user's deny rules exactly as written.

use std::collections::BTreeMap;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_BASE_RULES, MAX_LAYERS, MAX_LAYER_RULES};
use crate::path::parent_of;
use crate::{Permission, PodName, ScopeError, ScopePath, ScopeRule};

/// The serializable form of a scope: exactly what a `pod.scope` event stores.
/// Layers are keyed by child name in a `BTreeMap` so that equal scopes encode
/// to equal bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSnapshot {
    pub allow: Vec<ScopeRule>,
    pub deny: Vec<ScopeRule>,
    pub layers: BTreeMap<PodName, Vec<ScopeRule>>,
}

/// A Pod's scope. Built only through [`Scope::new`] or
/// [`Scope::from_snapshot`], both of which validate limits and invariants.
#[derive(Clone)]
pub struct Scope {
    state: ScopeSnapshot,
    index: RuleIndex,
}

/// The answer to "what may this Pod do at this path, and which rule says so".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict<'a> {
    /// `None`: no access at all.
    pub permission: Option<Permission>,
    pub decided_by: Decider<'a>,
}

impl Verdict<'_> {
    pub fn allows(&self, wanted: Permission) -> bool {
        self.permission.is_some_and(|p| p >= wanted)
    }
}

/// The rule that set a verdict: the strongest cap that lowered it, or else the
/// allow rule that granted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decider<'a> {
    Allow { rule: &'a ScopeRule },
    Deny { rule: &'a ScopeRule },
    Layer { child: &'a PodName, rule: &'a ScopeRule },
    NoRule,
}

impl fmt::Display for Decider<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decider::Allow { rule } => write!(f, "allow {rule}"),
            Decider::Deny { rule } => write!(f, "deny {rule}"),
            Decider::Layer { child, rule } => write!(f, "delegated to {child}: {rule}"),
            Decider::NoRule => f.write_str("no rule covers this path"),
        }
    }
}

impl Scope {
    /// A scope with the given base and no layers.
    pub fn new(allow: Vec<ScopeRule>, deny: Vec<ScopeRule>) -> Result<Scope, ScopeError> {
        Scope::from_snapshot(ScopeSnapshot { allow, deny, layers: BTreeMap::new() })
    }

    /// Rebuilds a scope from a stored snapshot, re-checking what a snapshot
    /// must satisfy: limits, valid names (by type), and pairwise disjoint
    /// write layers. A snapshot that fails is corrupt and is refused.
    pub fn from_snapshot(snapshot: ScopeSnapshot) -> Result<Scope, ScopeError> {
        check_count("the base allow list", snapshot.allow.len(), MAX_BASE_RULES)?;
        check_count("the base deny list", snapshot.deny.len(), MAX_BASE_RULES)?;
        if snapshot.layers.len() > MAX_LAYERS {
            return Err(ScopeError::TooManyLayers { max: MAX_LAYERS });
        }
        for rules in snapshot.layers.values() {
            check_count("a delegation layer", rules.len(), MAX_LAYER_RULES)?;
        }
        let writes: Vec<(&PodName, &ScopeRule)> = snapshot
            .layers
            .iter()
            .flat_map(|(c, rules)| rules.iter().filter(|r| r.permission == Permission::Write).map(move |r| (c, r)))
            .collect();
        for (i, (a, ra)) in writes.iter().enumerate() {
            if let Some((b, rb)) = writes[i + 1..].iter().find(|(b, rb)| b != a && ra.overlaps(rb)) {
                return Err(ScopeError::LayersOverlap {
                    a: (*a).clone(),
                    rule_a: (*ra).clone(),
                    b: (*b).clone(),
                    rule_b: (*rb).clone(),
                });
            }
        }
        let index = RuleIndex::build(&snapshot);
        Ok(Scope { state: snapshot, index })
    }

    pub fn snapshot(&self) -> &ScopeSnapshot {
        &self.state
    }

    pub fn into_snapshot(self) -> ScopeSnapshot {
        self.state
    }

    pub fn allow(&self) -> &[ScopeRule] {
        &self.state.allow
    }

    pub fn deny(&self) -> &[ScopeRule] {
        &self.state.deny
    }

    pub fn layers(&self) -> &BTreeMap<PodName, Vec<ScopeRule>> {
        &self.state.layers
    }

    pub fn layer(&self, child: &PodName) -> Option<&[ScopeRule]> {
        self.state.layers.get(child).map(Vec::as_slice)
    }

    /// Checks, without changing anything, whether `rules` may be delegated to
    /// `child`: every write rule inside the parent's effective write scope
    /// (covered by one base write rule, overlapping no deny and no other
    /// layer's write rule), every read rule inside the readable scope.
    pub fn check_delegation(&self, child: &PodName, rules: &[ScopeRule]) -> Result<(), ScopeError> {
        if self.state.layers.contains_key(child) {
            return Err(ScopeError::DuplicateChild(child.clone()));
        }
        if self.state.layers.len() >= MAX_LAYERS {
            return Err(ScopeError::TooManyLayers { max: MAX_LAYERS });
        }
        if rules.is_empty() {
            return Err(ScopeError::EmptyDelegation(child.clone()));
        }
        check_count("the delegation", rules.len(), MAX_LAYER_RULES)?;
        rules.iter().try_for_each(|rule| match rule.permission {
            Permission::Write => self.check_delegated_write(rule),
            Permission::Read => self.check_delegated_read(rule),
        })
    }

    fn check_delegated_write(&self, rule: &ScopeRule) -> Result<(), ScopeError> {
        if !self.state.allow.iter().any(|a| a.permission == Permission::Write && a.covers(rule)) {
            return Err(ScopeError::WriteOutsideScope { rule: rule.clone() });
        }
        if let Some(deny) = self.state.deny.iter().find(|d| d.overlaps(rule)) {
            return Err(ScopeError::OverlapsDeny { rule: rule.clone(), deny: deny.clone() });
        }
        for (child, layer) in &self.state.layers {
            if let Some(other) = layer.iter().find(|l| l.permission == Permission::Write && l.overlaps(rule)) {
                return Err(ScopeError::OverlapsLayer {
                    rule: rule.clone(),
                    child: child.clone(),
                    other: other.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_delegated_read(&self, rule: &ScopeRule) -> Result<(), ScopeError> {
        if !self.state.allow.iter().any(|a| a.covers(rule)) {
            return Err(ScopeError::ReadOutsideScope { rule: rule.clone() });
        }
        match self.state.deny.iter().find(|d| d.permission == Permission::Read && d.overlaps(rule)) {
            Some(deny) => Err(ScopeError::ReadDenied { rule: rule.clone(), deny: deny.clone() }),
            None => Ok(()),
        }
    }

    /// Adds `child`'s layer. On error the scope is unchanged.
    pub fn delegate(&mut self, child: PodName, rules: Vec<ScopeRule>) -> Result<(), ScopeError> {
        self.check_delegation(&child, &rules)?;
        self.index.add_layer(&child, &rules);
        self.state.layers.insert(child, rules);
        Ok(())
    }

    /// Removes exactly `child`'s layer and returns it; `None` when there was
    /// none (idempotent: reclaiming twice is reclaiming once).
    pub fn reclaim(&mut self, child: &PodName) -> Option<Vec<ScopeRule>> {
        let removed = self.state.layers.remove(child)?;
        self.index.remove_layer(child);
        Some(removed)
    }

    /// Reclaims `child` while keeping the regions of its still-live children
    /// (`orphans`, each with the rules `child` had delegated to it) excluded:
    /// each orphan becomes a layer of this scope. Every orphan write rule must
    /// lie inside `child`'s layer, so nothing is excluded that was not before.
    /// Idempotent like [`Scope::reclaim`]: an orphan already adopted is kept.
    pub fn reclaim_adopting(
        &mut self,
        child: &PodName,
        orphans: &BTreeMap<PodName, Vec<ScopeRule>>,
    ) -> Result<Option<Vec<ScopeRule>>, ScopeError> {
        let Some(layer) = self.state.layers.get(child) else {
            return Ok(None);
        };
        for (orphan, rules) in orphans {
            if orphan != child && self.state.layers.contains_key(orphan) {
                return Err(ScopeError::DuplicateChild(orphan.clone()));
            }
            check_count("an adopted layer", rules.len(), MAX_LAYER_RULES)?;
            if let Some(rule) =
                rules.iter().find(|r| r.permission == Permission::Write && !layer.iter().any(|l| l.covers(r)))
            {
                return Err(ScopeError::WriteOutsideScope { rule: rule.clone() });
            }
        }
        if self.state.layers.len() - 1 + orphans.len() > MAX_LAYERS {
            return Err(ScopeError::TooManyLayers { max: MAX_LAYERS });
        }
        let removed = self.state.layers.remove(child);
        self.index.remove_layer(child);
        for (orphan, rules) in orphans {
            self.index.add_layer(orphan, rules);
            self.state.layers.insert(orphan.clone(), rules.clone());
        }
        Ok(removed)
    }

    /// The effective permission at an already normalized (and, for real
    /// files, resolved) path, and the rule that decided it. Effective =
    /// the strongest allow, capped by every deny and every layer that covers
    /// the path. Costs one hash lookup per path component.
    pub fn permission_at<'a>(&'a self, path: &ScopePath) -> Verdict<'a> {
        self.index.verdict(&self.state, path.as_str())
    }

    pub fn can_write(&self, path: &ScopePath) -> bool {
        self.permission_at(path).allows(Permission::Write)
    }
}

impl PartialEq for Scope {
    fn eq(&self, other: &Scope) -> bool {
        self.state == other.state
    }
}

impl Eq for Scope {}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.state, f)
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), ScopeError> {
    if count > max {
        return Err(ScopeError::TooManyRules { what, count, max });
    }
    Ok(())
}

/// Where an indexed rule came from. Base indices point into the scope's
/// state (the base never changes); layers live in slots of the index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Allow(u32),
    Deny(u32),
    Layer { slot: u32, rule: u32 },
}

#[derive(Clone, Copy)]
struct Entry {
    source: Source,
    permission: Permission,
    recursive: bool,
}

/// Rules grouped by target, so a check walks the path's ancestors (one
/// lookup per component) instead of scanning every rule. Maintained
/// incrementally: delegating adds a layer's write rules, reclaiming removes
/// them, so neither costs more than the layer's own size.
#[derive(Clone, Default)]
struct RuleIndex {
    by_target: FxHashMap<Box<str>, Vec<Entry>>,
    slots: Vec<Option<(PodName, Vec<ScopeRule>)>>,
    slot_of: FxHashMap<PodName, u32>,
    free_slots: Vec<u32>,
}

impl RuleIndex {
    fn build(state: &ScopeSnapshot) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (i, r) in state.allow.iter().enumerate() {
            index.add(r, Source::Allow(i as u32));
        }
        for (i, r) in state.deny.iter().enumerate() {
            index.add(r, Source::Deny(i as u32));
        }
        for (child, rules) in &state.layers {
            index.add_layer(child, rules);
        }
        index
    }

    fn add(&mut self, rule: &ScopeRule, source: Source) {
        self.by_target.entry(rule.target.as_str().into()).or_default().push(Entry {
            source,
            permission: rule.permission,
            recursive: rule.recursive,
        });
    }

    fn add_layer(&mut self, child: &PodName, rules: &[ScopeRule]) {
        let slot = self.free_slots.pop().unwrap_or(self.slots.len() as u32);
        for (i, r) in rules.iter().enumerate().filter(|(_, r)| r.permission == Permission::Write) {
            self.add(r, Source::Layer { slot, rule: i as u32 });
        }
        let entry = Some((child.clone(), rules.to_vec()));
        match self.slots.get_mut(slot as usize) {
            Some(free) => *free = entry,
            None => self.slots.push(entry),
        }
        self.slot_of.insert(child.clone(), slot);
    }

    fn remove_layer(&mut self, child: &PodName) {
        let Some(slot) = self.slot_of.remove(child) else { return };
        let Some((_, rules)) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return };
        for r in &rules {
            if let Some(entries) = self.by_target.get_mut(r.target.as_str()) {
                entries.retain(|e| !matches!(e.source, Source::Layer { slot: s, .. } if s == slot));
                if entries.is_empty() {
                    self.by_target.remove(r.target.as_str());
                }
            }
        }
        self.free_slots.push(slot);
    }

    fn verdict<'a>(&'a self, state: &'a ScopeSnapshot, path: &str) -> Verdict<'a> {
        let parent = parent_of(path);
        let mut best_allow: Option<(Permission, u32)> = None;
        // `None` in the cap means "no access"; a write cap leaves read.
        let mut cap: Option<(Option<Permission>, Source)> = None;
        for ancestor in ancestors(path) {
            let Some(entries) = self.by_target.get(ancestor) else { continue };
            let exact = ancestor == path || Some(ancestor) == parent;
            for e in entries.iter().filter(|e| e.recursive || exact) {
                match e.source {
                    Source::Allow(i) => {
                        if best_allow.is_none_or(|(p, _)| e.permission >= p) {
                            best_allow = Some((e.permission, i));
                        }
                    }
                    Source::Deny(_) | Source::Layer { .. } => {
                        let limit = match e.permission {
                            Permission::Write => Some(Permission::Read),
                            Permission::Read => None,
                        };
                        // Strictly lower caps win; on a tie the first found (a
                        // shallower rule, base deny before layer) is kept.
                        if cap.is_none_or(|(c, _)| limit < c) {
                            cap = Some((limit, e.source));
                        }
                    }
                }
            }
        }
        let Some((granted, allow_idx)) = best_allow else {
            return Verdict { permission: None, decided_by: Decider::NoRule };
        };
        match cap {
            Some((limit, source)) if limit < Some(granted) => {
                Verdict { permission: limit, decided_by: self.decider(state, source) }
            }
            _ => Verdict { permission: Some(granted), decided_by: self.decider(state, Source::Allow(allow_idx)) },
        }
    }

    fn decider<'a>(&'a self, state: &'a ScopeSnapshot, source: Source) -> Decider<'a> {
        match source {
            Source::Allow(i) => Decider::Allow { rule: &state.allow[i as usize] },
            Source::Deny(i) => Decider::Deny { rule: &state.deny[i as usize] },
            Source::Layer { slot, rule } => match &self.slots[slot as usize] {
                Some((child, rules)) => Decider::Layer { child, rule: &rules[rule as usize] },
                None => unreachable!("index entry points at a freed layer slot"),
            },
        }
    }
}

/// `/`, `/a`, `/a/b`, ... up to and including `path` itself, as slices of
/// `path`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let root = std::iter::once("/");
    let inner = path.match_indices('/').skip(1).map(move |(i, _)| &path[..i]).chain((path != "/").then_some(path));
    root.chain(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_walks_from_root() {
        assert_eq!(ancestors("/").collect::<Vec<_>>(), vec!["/"]);
        assert_eq!(ancestors("/a").collect::<Vec<_>>(), vec!["/", "/a"]);
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), vec!["/", "/a", "/a/b", "/a/b/c"]);
    }
}
