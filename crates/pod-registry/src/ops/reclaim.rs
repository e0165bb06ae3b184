//! `reclaim`, `release` and `forget`: a Pod's allocation goes away.
//!
//! All three end in the same step: the Pod's allocation is deleted, its
//! parent's layer for it is dropped in the same plan, and its own children
//! that are live are reparented (reserved ones go with it). Reparenting rule: survivors go
//! to the removed Pod's parent, whose scope adopts their layers
//! (`Scope::reclaim_adopting`) so their regions stay excluded from its write;
//! a removed top-level Pod's survivors become top-level Pods, keeping their
//! rules. All three are idempotent: removing what is already gone succeeds
//! and changes nothing.

use scope::PodName;

use crate::record::AllocState;
use crate::state::{Held, Plan, PlanBuilder, State};
use crate::wire::{Reclaimed, Reply, Survivor};
use crate::RegistryError;

/// The parent reclaims `child`: survivors it is told about in the reply.
pub fn plan_reclaim(state: &State, parent: &PodName, child: &PodName) -> Result<(Plan, Reply), RegistryError> {
    plan_removal(state, parent, child, Mark::No)
}

/// Whether survivors moved by a removal are marked with their former parent
/// (`Allocation::former_parent`): needed whenever the Pod that holds a layer
/// for the removed one is not the caller and so does not see the reply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Yes,
    No,
}

fn plan_removal(state: &State, parent: &PodName, child: &PodName, mark: Mark) -> Result<(Plan, Reply), RegistryError> {
    let mut plan = PlanBuilder::new(state);
    let parent_held = state.get(parent);
    let Some(child_held) = state.get(child) else {
        // Already gone (swept, or released). A layer left behind is dropped
        // now, and the child's survivors that were moved to this parent
        // meanwhile are reported as reparented, exactly as if this reclaim
        // had removed the child itself.
        let Some(p) = parent_held else {
            let reply = Reply::Reclaimed(Reclaimed { removed: false, parent_fence: None, reparented: Vec::new() });
            return Ok((plan.finish(), reply));
        };
        let mut reparented = Vec::new();
        for moved in state.moved_from(child).filter(|h| h.rec.parent.as_ref() == Some(parent)) {
            let mut rec = moved.rec.clone();
            rec.former_parent = None;
            let mut survivor = Survivor::of(plan.put(rec, moved.scope.clone()));
            // The layer the parent holds for it is what it is told to adopt.
            if let Some(layer) = p.rec.layers.get(&moved.rec.name) {
                survivor.rules = layer.clone();
            }
            reparented.push(survivor);
        }
        let parent_fence = if p.rec.layers.contains_key(child) {
            let mut scope = p.scope.clone();
            scope.reclaim(child);
            let mut rec = p.rec.clone();
            rec.layers.remove(child);
            plan.put(rec, scope).fence
        } else {
            p.rec.fence
        };
        let reply = Reply::Reclaimed(Reclaimed { removed: false, parent_fence: Some(parent_fence), reparented });
        return Ok((plan.finish(), reply));
    };
    if child_held.rec.parent.as_ref() != Some(parent) {
        return Err(RegistryError::NotParent {
            child: child.clone(),
            parent: parent.clone(),
            actual: child_held.rec.parent.as_ref().map_or_else(|| "none (top-level)".to_string(), |p| p.to_string()),
        });
    }
    let parent_held = parent_held
        .ok_or_else(|| RegistryError::Corrupt(format!("{child} names parent {parent}, which is not registered")))?;
    let reply = remove_child(state, &mut plan, parent_held, child_held, mark)?;
    Ok((plan.finish(), Reply::Reclaimed(reply)))
}

fn remove_child(
    state: &State,
    plan: &mut PlanBuilder,
    parent: &Held,
    child: &Held,
    mark: Mark,
) -> Result<Reclaimed, RegistryError> {
    let orphans = survivors(state, plan, &child.rec.name);
    let mut scope = parent.scope.clone();
    if scope.reclaim_adopting(&child.rec.name, &orphans)?.is_none() {
        return Err(RegistryError::Corrupt(format!(
            "{} is a child of {} but {} holds no layer for it",
            child.rec.name, parent.rec.name, parent.rec.name
        )));
    }
    let mut parent_rec = parent.rec.clone();
    parent_rec.layers = scope.layers().clone();
    let parent_fence = plan.put(parent_rec, scope).fence;
    plan.delete(child.rec.name.clone());
    let reparented =
        reparent(state, plan, &orphans, (mark == Mark::Yes).then_some(&child.rec.name), Some(&parent.rec.name));
    Ok(Reclaimed { removed: true, parent_fence: Some(parent_fence), reparented })
}

/// The children of a Pod that is going away which survive it: the live
/// ones. A child still only reserved goes with its parent: nobody is left to
/// finish starting it (its process, if any, fails to adopt and exits), and a
/// reservation kept for a dead parent would block the region forever.
fn survivors(
    state: &State,
    plan: &mut PlanBuilder,
    name: &PodName,
) -> std::collections::BTreeMap<PodName, Vec<scope::ScopeRule>> {
    let (live, reserved): (std::collections::BTreeMap<_, _>, std::collections::BTreeMap<_, _>) = state
        .live_children(name)
        .into_iter()
        .partition(|(c, _)| state.get(c).is_some_and(|h| h.rec.state == AllocState::Live));
    for child in reserved.into_keys() {
        plan.delete(child);
    }
    live
}

/// Moves surviving children to `new_parent` (or makes them top-level). With
/// `gone`, they remember it as their former parent: whoever holds a layer
/// for `gone` and did not ask for this removal learns of them that way.
/// Returns each survivor with the rules of the layer it had (which its new
/// parent now holds for it).
fn reparent(
    state: &State,
    plan: &mut PlanBuilder,
    orphans: &std::collections::BTreeMap<PodName, Vec<scope::ScopeRule>>,
    gone: Option<&PodName>,
    new_parent: Option<&PodName>,
) -> Vec<Survivor> {
    let mut moved = Vec::new();
    for (name, layer) in orphans {
        let Some(held) = state.get(name) else { continue };
        let mut rec = held.rec.clone();
        rec.parent = new_parent.cloned();
        if let Some(gone) = gone {
            rec.former_parent = Some(gone.clone());
        }
        let mut survivor = Survivor::of(plan.put(rec, held.scope.clone()));
        survivor.rules = layer.clone();
        moved.push(survivor);
    }
    moved
}

pub fn plan_release(state: &State, name: &PodName) -> Result<(Plan, Reply), RegistryError> {
    let Some(held) = state.get(name) else {
        let reply = Reply::Reclaimed(Reclaimed { removed: false, parent_fence: None, reparented: Vec::new() });
        return Ok((PlanBuilder::new(state).finish(), reply));
    };
    if let Some(parent) = &held.rec.parent {
        return plan_removal(state, parent, name, Mark::Yes);
    }
    let mut plan = PlanBuilder::new(state);
    let orphans = survivors(state, &mut plan, name);
    plan.delete(name.clone());
    let reparented = reparent(state, &mut plan, &orphans, Some(name), None);
    Ok((plan.finish(), Reply::Reclaimed(Reclaimed { removed: true, parent_fence: None, reparented })))
}

pub fn plan_forget(state: &State, name: &PodName, pid: u32, start_time: u64) -> Result<(Plan, Reply), RegistryError> {
    let same_process = state
        .get(name)
        .is_some_and(|h| h.rec.state == AllocState::Live && h.rec.pid == pid && h.rec.start_time == start_time);
    if !same_process {
        let reply = Reply::Reclaimed(Reclaimed { removed: false, parent_fence: None, reparented: Vec::new() });
        return Ok((PlanBuilder::new(state).finish(), reply));
    }
    plan_release(state, name)
}
