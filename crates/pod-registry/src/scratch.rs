//! The scratch rule: a scratch path (`--scratch`) is written by workloads
//! outside every allocation, so no scratch path may overlap any Pod's write
//! allow rules, in either direction (a new scratch path against every
//! allocation, a new allocation against every scratch path). Several Pods
//! may share one scratch path: scratch paths never conflict with each
//! other. Pure: a function of the state and the claim.

use scope::{PodName, ScopePath, ScopeRule};

use crate::state::{Held, State};
use crate::RegistryError;

fn overlaps(scratch: &ScopePath, rule: &ScopeRule) -> bool {
    rule.permission == scope::Permission::Write && ScopeRule::write(scratch.clone()).overlaps(rule)
}

/// `Ok` when the newcomer `name` (its write `allow` and its `scratch`)
/// keeps scratch and allocations apart; else the first overlap found.
/// `allow` is empty for an adopt: its rules were checked by the delegate.
pub fn check(state: &State, name: &PodName, allow: &[ScopeRule], scratch: &[ScopePath]) -> Result<(), RegistryError> {
    for path in scratch {
        if let Some(rule) = allow.iter().find(|r| overlaps(path, r)) {
            return Err(RegistryError::ScratchOverlap {
                scratch: path.clone(),
                holder: name.clone(),
                rule: rule.clone(),
            });
        }
    }
    // A newcomer without scratch (every delegate) can only meet others'
    // scratch: only their holders are visited, not every allocation.
    if scratch.is_empty() {
        return taken_by_others(state.scratch_holders().filter(|h| &h.rec.name != name), allow);
    }
    for held in state.iter().filter(|h| &h.rec.name != name) {
        for path in scratch {
            if let Some(rule) = held.rec.allow.iter().find(|r| overlaps(path, r)) {
                return Err(RegistryError::ScratchOverlap {
                    scratch: path.clone(),
                    holder: held.rec.name.clone(),
                    rule: rule.clone(),
                });
            }
        }
        taken_by_others(std::iter::once(held), allow)?;
    }
    Ok(())
}

/// `Err` when one of `allow` overlaps a scratch path of one of `others`.
fn taken_by_others<'a>(others: impl Iterator<Item = &'a Held>, allow: &[ScopeRule]) -> Result<(), RegistryError> {
    for held in others {
        for path in &held.rec.scratch {
            if let Some(rule) = allow.iter().find(|r| overlaps(path, r)) {
                return Err(RegistryError::ScratchTaken {
                    rule: rule.clone(),
                    holder: held.rec.name.clone(),
                    scratch: path.clone(),
                });
            }
        }
    }
    Ok(())
}
