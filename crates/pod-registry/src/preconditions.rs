//! What a plan read, and at which revision: the guards of a shared store's
//! transaction.
//!
//! Why: on a registry shared by several nodes, a node plans on its own view
//! of the table, which the others change meanwhile. A plan is only valid if
//! nothing it depended on changed between the view and the commit, so the
//! commit carries what the plan read and the store refuses it (the node then
//! catches up and plans again) if any of it changed. What an operation
//! depends on, beyond the records it writes:
//!
//! - every record it writes or deletes, as it was read: absent, or the
//!   incarnation whose token (create revision) and fence (mod revision) it
//!   saw. A stale node's write then fails instead of overwriting a new
//!   holder's key, and two nodes creating the same name cannot both win;
//! - for every write rule a new record claims, the claims that could
//!   overlap it: those on its ancestors, on its target and inside it, as of
//!   the revision the view is complete through. A conflicting claim another
//!   node made meanwhile is new in one of those ranges.
//!
//! A removed claim only frees space, so it never invalidates a plan (at
//! worst the node refuses on a view a moment old, which it re-checks before
//! answering). Records the plan only looked at belong to this node (only
//! its own registry changes them, one commit at a time), except other
//! nodes' claims, which the second rule covers.
//!
//! Pure: derived from the state before the plan and the plan itself.

use rustc_hash::FxHashSet;
use scope::{PodName, Region};

use crate::state::{Plan, State};

/// A record as a plan read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Create revision of its key: the allocation's fencing token.
    pub token: u64,
    /// Mod revision of its key: the record's fence.
    pub fence: u64,
}

/// One thing a plan read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `name`'s record is as read: absent (`None`) or that incarnation at
    /// that version.
    Record { name: PodName, seen: Option<Seen> },
    /// No claim that may overlap `region` (on an ancestor of its target,
    /// on its target, or inside it) changed after revision `through`.
    Claims { region: Region, through: u64 },
}

/// The preconditions of `plan`, made against `state`.
pub fn of(state: &State, plan: &Plan) -> Vec<Precondition> {
    let mut out = Vec::new();
    let mut seen_names: FxHashSet<&PodName> = FxHashSet::default();
    let names = plan.puts.iter().map(|h| &h.rec.name).chain(plan.deletes.iter());
    for name in names {
        if !seen_names.insert(name) {
            continue;
        }
        let seen = state.get(name).map(|h| Seen { token: state.token(name), fence: h.rec.fence });
        out.push(Precondition::Record { name: name.clone(), seen });
    }
    let mut regions: FxHashSet<Region> = FxHashSet::default();
    for held in plan.puts.iter().filter(|h| state.get(&h.rec.name).is_none()) {
        for rule in held.rec.allow_writes() {
            let region = rule.region();
            if regions.insert(region.clone()) {
                out.push(Precondition::Claims { region, through: state.through() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use scope::{ScopePath, ScopeRule};

    use super::*;
    use crate::ops::{self, Delegate, Op, Register};

    fn n(s: &str) -> PodName {
        PodName::new(s).expect("name")
    }

    fn w(s: &str) -> ScopeRule {
        ScopeRule::write(ScopePath::new(s).expect("path"))
    }

    fn register(name: &str, allow: Vec<ScopeRule>) -> Op {
        Op::Register(Register {
            name: n(name),
            pid: 10,
            start_time: 1,
            socket: String::new(),
            session: String::new(),
            allow,
            deny: vec![],
            layers: Default::default(),
            scratch: vec![],
        })
    }

    #[test]
    fn a_new_record_is_read_absent_and_guards_the_claims_around_its_rules() {
        let state = State::new();
        let (plan, _) = ops::plan(&state, &register("lead", vec![w("/repo")])).expect("plan");
        assert_eq!(
            of(&state, &plan),
            vec![
                Precondition::Record { name: n("lead"), seen: None },
                Precondition::Claims { region: w("/repo").region(), through: 0 },
            ]
        );
    }

    #[test]
    fn a_delegation_reads_the_parent_as_it_was_and_the_child_absent() {
        let mut state = State::new();
        let (plan, _) = ops::plan(&state, &register("lead", vec![w("/repo")])).expect("plan");
        state.apply(plan);
        let fence = state.get(&n("lead")).expect("lead").rec.fence;
        let delegate =
            Op::Delegate(Delegate { parent: n("lead"), child: n("c"), rules: vec![w("/repo/src")], deny: vec![] });
        let (plan, _) = ops::plan(&state, &delegate).expect("plan");
        assert_eq!(
            of(&state, &plan),
            vec![
                Precondition::Record { name: n("lead"), seen: Some(Seen { token: 0, fence }) },
                Precondition::Record { name: n("c"), seen: None },
                // Only the new record's claims: the parent's are its own.
                Precondition::Claims { region: w("/repo/src").region(), through: 0 },
            ]
        );
    }
}
