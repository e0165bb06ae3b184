//! `register`: a top-level Pod takes its scope.
//!
//! A restored Pod registers with its layers; children named there that are
//! still allocated (and were made top-level when the Pod went away) become
//! its children again, and their regions stay excluded from its write.

use scope::{Scope, ScopeSnapshot};

use super::{check_room, check_session, Register};
use crate::conflict::{self, Claim};
use crate::record::{AllocState, Allocation};
use crate::state::{Plan, PlanBuilder, State};
use crate::wire::Reply;
use crate::RegistryError;

pub fn plan(state: &State, req: &Register) -> Result<(Plan, Reply), RegistryError> {
    check_room(state)?;
    if state.get(&req.name).is_some() {
        return Err(RegistryError::DuplicateName(req.name.clone()));
    }
    check_session(state, &req.session, &req.name)?;
    let scope = Scope::from_snapshot(ScopeSnapshot {
        allow: req.allow.clone(),
        deny: req.deny.clone(),
        layers: req.layers.clone(),
    })?;
    let mut readopted = Vec::new();
    for child in req.layers.keys() {
        let Some(held) = state.get(child) else { continue };
        match &held.rec.parent {
            None => readopted.push(held),
            Some(other) => {
                return Err(RegistryError::NotParent {
                    child: child.clone(),
                    parent: req.name.clone(),
                    actual: other.to_string(),
                })
            }
        }
    }
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
        layers: req.layers.clone(),
        fence: 0,
    };
    conflict::check(
        state,
        &Claim { name: &rec.name, allow: &rec.allow, caps: rec.write_caps().collect(), skip: None },
    )?;
    let mut plan = PlanBuilder::new(state);
    for held in readopted {
        let mut child = held.rec.clone();
        child.parent = Some(req.name.clone());
        plan.put(child, held.scope.clone());
    }
    let reply = Reply::Allocation(plan.put(rec, scope).clone());
    Ok((plan.finish(), reply))
}
