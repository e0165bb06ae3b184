//! The functional core of a Pod: what a spawn or a reclaim changes, as pure
//! functions from the Pod's durable state (scope and children) to a plan
//! (the events to log and the state after them).
//!
//! The owner task is the imperative shell around this: it asks the
//! registry, asks the core for a plan, makes the plan's events durable, and
//! only then adopts the plan's state. The model-based tests drive the same
//! functions, so what they prove holds for the running Pod.

use std::collections::BTreeMap;

use scope::{PodName, Scope, ScopeError, ScopeRule};
use session_log::{ChildRecord, Event, RemovalReason};

/// A Pod's durable state, as its log folds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCore {
    pub scope: Scope,
    pub children: BTreeMap<PodName, ChildRecord>,
}

/// A grandchild the registry handed to this Pod when its parent went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub name: PodName,
    pub rules: Vec<ScopeRule>,
    pub socket: String,
}

/// What to log, and the state once it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub events: Vec<Event>,
    pub next: PodCore,
    /// Children this plan removes (for the shell's bookkeeping of pids).
    pub removed: Vec<PodName>,
}

impl PodCore {
    pub fn new(scope: Scope, children: BTreeMap<PodName, ChildRecord>) -> PodCore {
        PodCore { scope, children }
    }

    /// Is `child` recorded here (as a child or, after a partial failure, as a
    /// layer only)?
    pub fn knows(&self, child: &PodName) -> bool {
        self.children.contains_key(child) || self.scope.layer(child).is_some()
    }

    /// Spawning `child` with `rules`: `child.spawned` + `pod.scope`.
    pub fn plan_spawn(
        &self,
        child: &PodName,
        rules: &[ScopeRule],
        socket: &str,
        callback: &str,
    ) -> Result<Plan, ScopeError> {
        let mut next = self.clone();
        next.scope.delegate(child.clone(), rules.to_vec())?;
        let record = ChildRecord {
            socket: socket.to_string(),
            rules: rules.to_vec(),
            callback: Some(callback.to_string()),
            adopted_from: None,
        };
        next.children.insert(child.clone(), record);
        let events = vec![
            Event::ChildSpawned {
                name: child.clone(),
                socket: socket.to_string(),
                rules: rules.to_vec(),
                callback: callback.to_string(),
            },
            Event::PodScope { scope: next.scope.snapshot().clone() },
        ];
        Ok(Plan { events, next, removed: Vec::new() })
    }

    /// Reclaiming the children of `reclaimed` (each with the grandchildren
    /// the registry reparented to us): for every child still recorded, its
    /// layer goes, its live grandchildren's layers come in, `child.removed`
    /// and `child.reparented` are logged; then one `pod.scope`. Children not
    /// recorded are skipped (idempotence); `None` when nothing changes.
    pub fn plan_reclaim(
        &self,
        reclaimed: &[(PodName, Vec<Adoption>)],
        reason: RemovalReason,
    ) -> Result<Option<Plan>, ScopeError> {
        let mut next = self.clone();
        let mut events = Vec::new();
        let mut removed = Vec::new();
        for (child, adoptions) in reclaimed {
            if !next.knows(child) {
                continue;
            }
            let adopted: BTreeMap<PodName, Vec<ScopeRule>> =
                adoptions.iter().map(|a| (a.name.clone(), a.rules.clone())).collect();
            next.scope.reclaim_adopting(child, &adopted)?;
            next.children.remove(child);
            events.push(Event::ChildRemoved { name: child.clone(), reason, exit: session_log::Exit::default() });
            for a in adoptions {
                events.push(Event::ChildReparented {
                    name: a.name.clone(),
                    from: child.clone(),
                    rules: a.rules.clone(),
                    socket: a.socket.clone(),
                });
                next.children.insert(
                    a.name.clone(),
                    ChildRecord {
                        socket: a.socket.clone(),
                        rules: a.rules.clone(),
                        callback: None,
                        adopted_from: Some(child.clone()),
                    },
                );
            }
            removed.push(child.clone());
        }
        if removed.is_empty() {
            return Ok(None);
        }
        events.push(Event::PodScope { scope: next.scope.snapshot().clone() });
        Ok(Some(Plan { events, next, removed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scope::{ScopePath, ScopeSnapshot};
    use session_log::PodState;

    fn n(s: &str) -> PodName {
        PodName::new(s).unwrap()
    }
    fn w(s: &str) -> ScopeRule {
        ScopeRule::write(ScopePath::new(s).unwrap())
    }

    fn lead() -> PodCore {
        PodCore::new(Scope::new(vec![w("/r")], vec![w("/r/deny")]).unwrap(), BTreeMap::new())
    }

    /// The plan's events, folded onto the state before, give the plan's
    /// state: the log and the running Pod agree.
    fn fold_agrees(before: &PodCore, plan: &Plan) {
        let mut state = PodState::new();
        let base = ScopeSnapshot {
            allow: before.scope.allow().to_vec(),
            deny: before.scope.deny().to_vec(),
            layers: BTreeMap::new(),
        };
        state.apply(1, &Event::PodCreated { name: n("lead"), parent: None, base, workload: None }).unwrap();
        state.apply(2, &Event::PodScope { scope: before.scope.snapshot().clone() }).unwrap();
        state.children = before.children.clone();
        state.apply_batch(3, &plan.events).unwrap();
        assert_eq!(&state.scope, plan.next.scope.snapshot());
        assert_eq!(state.children, plan.next.children);
    }

    #[test]
    fn spawn_then_reclaim_is_the_identity() {
        let core = lead();
        let spawn = core.plan_spawn(&n("a"), &[w("/r/a")], "/run/a/sock", "/run/lead/sock").unwrap();
        fold_agrees(&core, &spawn);
        let reclaim = spawn.next.plan_reclaim(&[(n("a"), vec![])], RemovalReason::Stopped).unwrap().unwrap();
        fold_agrees(&spawn.next, &reclaim);
        assert_eq!(reclaim.next, core);
        assert_eq!(reclaim.next.plan_reclaim(&[(n("a"), vec![])], RemovalReason::Lost).unwrap(), None);
    }

    #[test]
    fn reclaim_adopts_grandchildren() {
        let core = lead().plan_spawn(&n("mid"), &[w("/r/m")], "s", "c").unwrap().next;
        let adoption = Adoption { name: n("g"), rules: vec![w("/r/m/g")], socket: "/run/g/sock".into() };
        let plan = core.plan_reclaim(&[(n("mid"), vec![adoption])], RemovalReason::Lost).unwrap().unwrap();
        fold_agrees(&core, &plan);
        assert_eq!(plan.next.children.keys().cloned().collect::<Vec<_>>(), vec![n("g")]);
        assert!(plan.next.scope.can_write(&ScopePath::new("/r/m/x").unwrap()));
        assert!(!plan.next.scope.can_write(&ScopePath::new("/r/m/g/x").unwrap()));
    }

    #[test]
    fn refused_spawn_plans_nothing() {
        let core = lead();
        assert!(core.plan_spawn(&n("a"), &[w("/r/deny/x")], "s", "c").is_err());
        assert!(core.plan_spawn(&n("a"), &[w("/elsewhere")], "s", "c").is_err());
    }
}
