//! `contain`: a Pod records its workload's containment in its allocation,
//! right after the workload started, so that whoever finds the Pod process
//! gone (the sweep, its parent's reclaim) can end the workload from the
//! record before the region is given up. Only the Pod's own process may
//! record it (see `auth.rs`); repeating the same record is a no-op success.

use super::Contain;
use crate::record::AllocState;
use crate::state::{Plan, PlanBuilder, State};
use crate::wire::Reply;
use crate::RegistryError;

pub fn plan(state: &State, req: &Contain) -> Result<(Plan, Reply), RegistryError> {
    check_record(req)?;
    let held = state.get(&req.name).ok_or_else(|| RegistryError::UnknownPod(req.name.clone()))?;
    let same_process =
        held.rec.state == AllocState::Live && held.rec.pid == req.pid && held.rec.start_time == req.start_time;
    if !same_process {
        return Err(RegistryError::BadRequest(format!(
            "{} is not held by process {} any more; its containment is not recorded",
            req.name, req.pid
        )));
    }
    if held.rec.containment.as_ref() == Some(&req.containment) {
        return Ok((PlanBuilder::new(state).finish(), Reply::Allocation(held.rec.clone())));
    }
    let mut rec = held.rec.clone();
    rec.containment = Some(req.containment.clone());
    let mut plan = PlanBuilder::new(state);
    let reply = Reply::Allocation(plan.put(rec, held.scope.clone()).clone());
    Ok((plan.finish(), reply))
}

/// The record must be this Pod's, and its cgroups the runtime's own (a
/// Pod cgroup's directory, `.../pod-sandbox.TAG/POD@INSTANCE`): the sweep
/// signals and kills what they hold.
fn check_record(req: &Contain) -> Result<(), RegistryError> {
    let r = &req.containment;
    let leaf = format!("{}@{}", r.pod, r.instance);
    let ours = |dir: &std::path::Path| {
        let tail: Vec<String> =
            dir.components().rev().take(2).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        dir.is_absolute()
            && tail.len() == 2
            && tail[0] == leaf
            && tail[1] == format!("{}{}", pod_sandbox::cgroup::HOME_PREFIX, r.home_tag)
    };
    let bad = if r.pod != req.name.as_str() {
        Some(format!("it names pod {:?}", r.pod))
    } else if let Some(dir) = r.cgroups.v2.iter().chain(r.cgroups.v1.iter().map(|c| &c.dir)).find(|d| !ours(d)) {
        Some(format!("{} is not a cgroup of this pod's workload", dir.display()))
    } else {
        None
    };
    match bad {
        Some(why) => {
            Err(RegistryError::BadRequest(format!("the containment recorded for {} is refused: {why}", req.name)))
        }
        None => Ok(()),
    }
}
