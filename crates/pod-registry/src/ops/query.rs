//! Reads, answered from memory without going through the writer.

use super::Query;
use crate::limits::MAX_PAGE;
use crate::state::State;
use crate::wire::{CheckReply, Reply};
use crate::RegistryError;

pub fn answer(state: &State, query: &Query) -> Result<Reply, RegistryError> {
    Ok(match query {
        Query::Get(name) => Reply::Found(state.get(name).map(|h| h.rec.clone())),
        Query::List(after) => {
            let mut allocations: Vec<_> = state.page(after.as_ref(), MAX_PAGE + 1).map(|h| h.rec.clone()).collect();
            let more = allocations.len() > MAX_PAGE;
            allocations.truncate(MAX_PAGE);
            Reply::Page { allocations, more }
        }
        Query::Check { name, path, permission } => {
            let held = state.get(name).ok_or_else(|| RegistryError::UnknownPod(name.clone()))?;
            let verdict = held.scope.permission_at(path);
            Reply::Check(CheckReply {
                allowed: verdict.allows(*permission),
                permission: verdict.permission,
                decided_by: verdict.decided_by.to_string(),
            })
        }
        Query::BySession(session) => Reply::Found(state.by_session(session).map(|h| h.rec.clone())),
    })
}
