//! The scratch rule: a scratch path (`--scratch`) is written by workloads
//! outside every allocation, so no scratch path may overlap any Pod's write
//! allow rules, in either direction (a new scratch path against every
//! allocation, a new allocation against every scratch path). Several Pods
//! may share one scratch path: scratch paths never conflict with each
//! other. Pure: a function of the state and the claim.

use scope::{PodName, ScopePath, ScopeRule};

use crate::state::State;
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
