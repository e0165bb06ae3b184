//! `register`: a top-level Pod takes its scope.
//!
//! A restored Pod registers with the layers its session log records. For
//! each layer:
//! - the child is still allocated and top-level (it was made top-level when
//!   this Pod went away): it becomes this Pod's child again;
//! - the child is allocated under another parent: refused;
//! - the child is gone (a stale layer): the layer is not recorded and hides
//!   nothing from the conflict check (it would otherwise cover a region some
//!   other Pod may have taken meanwhile). Survivors moved out of that child
//!   (top-level Pods whose former parent it was) whose write rules lie inside
//!   the layer come back as this Pod's children; the Pod's prune of the gone
//!   child (a reclaim) then reports them as reparented.

use std::collections::BTreeMap;

use scope::{Permission, PodName, Scope, ScopeRule, ScopeSnapshot};

use super::{check_room, check_session, Register};
use crate::conflict::{self, Claim};
use crate::record::{AllocState, Allocation};
use crate::state::{Held, Plan, PlanBuilder, State};
use crate::wire::Reply;
use crate::RegistryError;

pub fn plan(state: &State, req: &Register) -> Result<(Plan, Reply), RegistryError> {
    check_room(state)?;
    if state.get(&req.name).is_some() {
        return Err(RegistryError::DuplicateName(req.name.clone()));
    }
    check_session(state, &req.session, &req.name)?;
    // The layers as the Pod holds them must form a valid scope.
    Scope::from_snapshot(ScopeSnapshot {
        allow: req.allow.clone(),
        deny: req.deny.clone(),
        layers: req.layers.clone(),
    })?;
    let mut layers: BTreeMap<PodName, Vec<ScopeRule>> = BTreeMap::new();
    // (child, keep its former parent): named children forget it (this Pod
    // knows them); children found through a stale layer keep it until the
    // prune reports them.
    let mut adopted: Vec<(&Held, bool)> = Vec::new();
    for (child, rules) in &req.layers {
        match state.get(child) {
            Some(held) => match &held.rec.parent {
                // Only a Pod made top-level when this one went away comes
                // back: any other top-level Pod is nobody's to take.
                None if held.rec.former_parent.as_ref() != Some(&req.name) => {
                    return Err(RegistryError::NotFormerChild { child: child.clone(), parent: req.name.clone() })
                }
                None => {
                    layers.insert(child.clone(), rules.clone());
                    adopted.push((held, false));
                }
                Some(other) => {
                    return Err(RegistryError::NotParent {
                        child: child.clone(),
                        parent: req.name.clone(),
                        actual: other.to_string(),
                    })
                }
            },
            None => {
                for moved in state.moved_from(child).filter(|h| h.rec.parent.is_none()) {
                    let inside = moved
                        .rec
                        .allow_writes()
                        .all(|w| rules.iter().any(|l| l.permission == Permission::Write && l.covers(w)));
                    if inside && !req.layers.contains_key(&moved.rec.name) {
                        layers.insert(moved.rec.name.clone(), moved.rec.allow.clone());
                        adopted.push((moved, true));
                    }
                }
            }
        }
    }
    let scope = Scope::from_snapshot(ScopeSnapshot { allow: req.allow.clone(), deny: req.deny.clone(), layers })?;
    let rec = Allocation {
        name: req.name.clone(),
        parent: None,
        state: AllocState::Live,
        pid: req.pid,
        start_time: req.start_time,
        socket: req.socket.clone(),
        session: req.session.clone(),
        allow: req.allow.clone(),
        deny: req.deny.clone(),
        layers: scope.layers().clone(),
        fence: 0,
        former_parent: None,
        node: state.local_node().cloned(),
        containment: None,
        scratch: req.scratch.clone(),
    };
    conflict::check(
        state,
        &Claim { name: &rec.name, allow: &rec.allow, caps: rec.write_caps().collect(), skip: None },
    )?;
    crate::scratch::check(state, &rec.name, &rec.allow, &rec.scratch)?;
    let mut plan = PlanBuilder::new(state);
    for (held, keep_former) in adopted {
        let mut child = held.rec.clone();
        child.parent = Some(req.name.clone());
        if !keep_former {
            child.former_parent = None;
        }
        plan.put(child, held.scope.clone());
    }
    let reply = Reply::Allocation(plan.put(rec, scope).clone());
    Ok((plan.finish(), reply))
}
