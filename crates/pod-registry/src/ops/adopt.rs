//! `adopt`: a started child takes the reservation its parent made.
//! Repeating the same adopt is a no-op success, so a child may retry after
//! a lost reply.

use super::{check_session, Adopt};
use crate::record::AllocState;
use crate::state::{Plan, PlanBuilder, State};
use crate::wire::Reply;
use crate::RegistryError;

pub fn plan(state: &State, req: &Adopt) -> Result<(Plan, Reply), RegistryError> {
    let held = state.get(&req.name).ok_or_else(|| RegistryError::UnknownPod(req.name.clone()))?;
    if held.rec.state == AllocState::Live {
        let same = held.rec.pid == req.pid && held.rec.start_time == req.start_time && held.rec.session == req.session;
        if same {
            return Ok((PlanBuilder::new(state).finish(), Reply::Allocation(held.rec.clone())));
        }
        return Err(RegistryError::AlreadyLive(req.name.clone()));
    }
    check_session(state, &req.session, &req.name)?;
    crate::scratch::check(state, &req.name, &held.rec.allow, &req.scratch)?;
    let mut rec = held.rec.clone();
    rec.state = AllocState::Live;
    rec.pid = req.pid;
    rec.start_time = req.start_time;
    rec.session = req.session.clone();
    rec.socket = req.socket.clone();
    rec.scratch = req.scratch.clone();
    let mut plan = PlanBuilder::new(state);
    let reply = Reply::Allocation(plan.put(rec, held.scope.clone()).clone());
    Ok((plan.finish(), reply))
}
