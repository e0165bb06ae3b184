//! `delegate`: a parent hands part of its effective scope to a new child.
//! The child's reserved allocation and the parent's layer are one plan, so
//! they are stored in one transaction.

use scope::Scope;

use super::{check_room, Delegate};
use crate::conflict::{self, Claim};
use crate::limits::MAX_DEPTH;
use crate::record::{AllocState, Allocation};
use crate::state::{Plan, PlanBuilder, State};
use crate::wire::Reply;
use crate::RegistryError;

pub fn plan(state: &State, req: &Delegate) -> Result<(Plan, Reply), RegistryError> {
    check_room(state)?;
    let parent = state.get(&req.parent).ok_or_else(|| RegistryError::UnknownPod(req.parent.clone()))?;
    // Only a started Pod delegates: a reservation has no process to ask,
    // and it goes away with its parent, so it must not have children.
    if parent.rec.state != AllocState::Live {
        return Err(RegistryError::NotLive(req.parent.clone()));
    }
    if state.get(&req.child).is_some() {
        return Err(RegistryError::DuplicateName(req.child.clone()));
    }
    let depth = state.depth(&req.parent) + 1;
    if depth > MAX_DEPTH {
        return Err(RegistryError::TooDeep { name: req.child.clone(), depth, max: MAX_DEPTH });
    }
    parent.scope.check_delegation(&req.child, &req.rules)?;
    let child_scope = Scope::new(req.rules.clone(), req.deny.clone())?;
    let child = Allocation {
        name: req.child.clone(),
        parent: Some(req.parent.clone()),
        state: AllocState::Reserved,
        pid: 0,
        start_time: 0,
        socket: String::new(),
        session: String::new(),
        allow: req.rules.clone(),
        deny: req.deny.clone(),
        layers: Default::default(),
        fence: 0,
        former_parent: None,
        node: state.local_node().cloned(),
        containment: None,
        scratch: Vec::new(),
    };
    conflict::check(
        state,
        &Claim { name: &child.name, allow: &child.allow, caps: child.write_caps().collect(), skip: Some(&req.parent) },
    )?;
    // The parent's rules keep apart from scratch paths; a child's lie in
    // them, so this only matters for a scratch path taken since.
    crate::scratch::check(state, &child.name, &child.allow, &[])?;
    let mut parent_scope = parent.scope.clone();
    parent_scope.delegate(req.child.clone(), req.rules.clone())?;
    let mut parent_rec = parent.rec.clone();
    parent_rec.layers.insert(req.child.clone(), req.rules.clone());
    let mut plan = PlanBuilder::new(state);
    let parent_fence = plan.put(parent_rec, parent_scope).fence;
    let child_after = plan.put(child, child_scope).clone();
    Ok((plan.finish(), Reply::Delegated { parent_fence, child: child_after }))
}
