//! The fold: a Pod's state as a pure function of its history.
//!
//! No I/O and no clock here, so the history rules are tested on their own and
//! the same code runs in `replay`, in `verify` and, before anything is
//! written, in `append` (which is how the log never holds a history that
//! `replay` would refuse). Each `apply` checks everything before it changes
//! anything; `apply_batch` undoes its earlier events when a later one is
//! refused, so a refused batch leaves the state exactly as it was.

use std::collections::BTreeMap;

use scope::{PodName, ScopeRule, ScopeSnapshot};
use serde::{Deserialize, Serialize};

use crate::{Event, FoldError};

/// Who the Pod is, fixed by `pod.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentity {
    pub name: PodName,
    pub parent: Option<PodName>,
    pub workload: Option<Vec<String>>,
    /// The user's allow and deny rules (no layers). Never changes.
    pub base: ScopeSnapshot,
}

/// A live child as the Pod knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRecord {
    pub socket: String,
    /// What was delegated to it.
    pub rules: Vec<ScopeRule>,
    /// How the child reaches this Pod; `None` for an adopted grandchild,
    /// which was given its vanished parent's.
    pub callback: Option<String>,
    /// The vanished parent of an adopted grandchild.
    pub adopted_from: Option<PodName>,
}

/// The folded state of a Pod's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    /// `None` only for an empty log.
    pub identity: Option<PodIdentity>,
    /// The current scope: base + one layer per live child.
    pub scope: ScopeSnapshot,
    pub children: BTreeMap<PodName, ChildRecord>,
    /// The last run ended with `pod.stopped`. Not terminal: a resumed Pod
    /// logs again, and any later event clears it.
    pub stopped: bool,
    /// The sequence number of the last record folded in; 0 for none.
    pub last_seq: u64,
    /// The enforcement level recorded by `pod.enforced` (none in logs
    /// written before levels existed).
    #[serde(default)]
    pub enforced: Option<crate::Enforced>,
}

/// How to take one applied event back.
struct Undo {
    change: Change,
    was_stopped: bool,
}

enum Change {
    Nothing,
    Created,
    Scope(ScopeSnapshot),
    Added(PodName),
    Removed(PodName, ChildRecord),
    Enforced(Option<crate::Enforced>),
}

impl PodState {
    /// The state of an empty log.
    pub fn new() -> PodState {
        PodState::default()
    }

    pub fn name(&self) -> Option<&PodName> {
        self.identity.as_ref().map(|i| &i.name)
    }

    /// Folds record `seq` in. On error the state is unchanged.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), FoldError> {
        self.apply_undoable(seq, event).map(drop)
    }

    /// Folds `events` in as records `first_seq..`, all or none: on error the
    /// state is unchanged.
    pub fn apply_batch(&mut self, first_seq: u64, events: &[Event]) -> Result<(), FoldError> {
        let mut undo = Vec::with_capacity(events.len());
        for (seq, event) in (first_seq..).zip(events) {
            match self.apply_undoable(seq, event) {
                Ok(u) => undo.push(u),
                Err(e) => {
                    while let Some(u) = undo.pop() {
                        self.undo(u);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn apply_undoable(&mut self, seq: u64, event: &Event) -> Result<Undo, FoldError> {
        let expected = self.last_seq + 1;
        if seq != expected {
            return Err(FoldError::SeqGap { expected, found: seq });
        }
        let was_stopped = self.stopped;
        let change = self.check_and_apply(seq, event)?;
        if !matches!(event, Event::Unknown { .. }) {
            self.stopped = matches!(event, Event::PodStopped { .. });
        }
        self.last_seq = seq;
        Ok(Undo { change, was_stopped })
    }

    fn check_and_apply(&mut self, seq: u64, event: &Event) -> Result<Change, FoldError> {
        // A newer build's event: skipped, wherever it is.
        if let Event::Unknown { .. } = event {
            return Ok(Change::Nothing);
        }
        let identity = match (&self.identity, event) {
            (None, Event::PodCreated { name, parent, base, workload }) => {
                if !base.layers.is_empty() {
                    return Err(FoldError::BaseHasLayers { seq });
                }
                self.scope = base.clone();
                self.identity = Some(PodIdentity {
                    name: name.clone(),
                    parent: parent.clone(),
                    workload: workload.clone(),
                    base: base.clone(),
                });
                return Ok(Change::Created);
            }
            (Some(_), Event::PodCreated { .. }) => return Err(FoldError::AlreadyCreated { seq }),
            (None, _) => return Err(FoldError::BeforeCreated { seq, kind: event.kind().to_owned() }),
            (Some(identity), _) => identity,
        };
        match event {
            Event::PodScope { scope } => {
                if scope.allow != identity.base.allow || scope.deny != identity.base.deny {
                    return Err(FoldError::BaseChanged { seq });
                }
                Ok(Change::Scope(std::mem::replace(&mut self.scope, scope.clone())))
            }
            Event::ChildSpawned { name, socket, rules, callback } => self.add_child(
                seq,
                name,
                ChildRecord {
                    socket: socket.clone(),
                    rules: rules.clone(),
                    callback: Some(callback.clone()),
                    adopted_from: None,
                },
            ),
            Event::ChildReparented { name, from, rules, socket } => self.add_child(
                seq,
                name,
                ChildRecord {
                    socket: socket.clone(),
                    rules: rules.clone(),
                    callback: None,
                    adopted_from: Some(from.clone()),
                },
            ),
            Event::ChildRemoved { name, .. } => match self.children.remove(name) {
                Some(record) => Ok(Change::Removed(name.clone(), record)),
                None => Err(FoldError::UnknownChild { seq, name: name.clone() }),
            },
            Event::PodEnforced(enforced) => Ok(Change::Enforced(self.enforced.replace(enforced.clone()))),
            Event::PodStopped { .. }
            | Event::PodFenced { .. }
            | Event::PodRejoined { .. }
            | Event::PodCreated { .. }
            | Event::Unknown { .. } => Ok(Change::Nothing),
        }
    }

    fn add_child(&mut self, seq: u64, name: &PodName, record: ChildRecord) -> Result<Change, FoldError> {
        if self.children.contains_key(name) {
            return Err(FoldError::DuplicateChild { seq, name: name.clone() });
        }
        self.children.insert(name.clone(), record);
        Ok(Change::Added(name.clone()))
    }

    fn undo(&mut self, undo: Undo) {
        self.last_seq -= 1;
        self.stopped = undo.was_stopped;
        match undo.change {
            Change::Nothing => {}
            Change::Created => {
                self.identity = None;
                self.scope = ScopeSnapshot::default();
            }
            Change::Scope(old) => self.scope = old,
            Change::Added(name) => {
                self.children.remove(&name);
            }
            Change::Removed(name, record) => {
                self.children.insert(name, record);
            }
            Change::Enforced(old) => self.enforced = old,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use scope::ScopePath;

    use super::*;
    use crate::RemovalReason;

    fn name(s: &str) -> PodName {
        PodName::new(s).unwrap()
    }

    fn rule(p: &str) -> ScopeRule {
        ScopeRule::write(ScopePath::new(p).unwrap())
    }

    fn base() -> ScopeSnapshot {
        ScopeSnapshot { allow: vec![rule("/work")], deny: vec![rule("/work/secret")], layers: BTreeMap::new() }
    }

    fn created() -> Event {
        Event::PodCreated { name: name("lead"), parent: None, base: base(), workload: Some(vec!["make".into()]) }
    }

    fn spawned(n: &str) -> Event {
        Event::ChildSpawned {
            name: name(n),
            socket: format!("/run/{n}.sock"),
            rules: vec![rule("/work/a")],
            callback: "cb".into(),
        }
    }

    fn fold(events: &[Event]) -> Result<PodState, FoldError> {
        let mut s = PodState::new();
        for (seq, e) in (1..).zip(events) {
            s.apply(seq, e)?;
        }
        Ok(s)
    }

    #[test]
    fn created_sets_identity_and_scope() {
        let s = fold(&[created()]).unwrap();
        assert_eq!(s.name(), Some(&name("lead")));
        assert_eq!(s.scope, base());
        assert_eq!(s.identity.unwrap().workload, Some(vec!["make".to_owned()]));
        assert_eq!(s.last_seq, 1);
    }

    #[test]
    fn children_come_and_go() {
        let mut layered = base();
        layered.layers.insert(name("a"), vec![rule("/work/a")]);
        let s = fold(&[
            created(),
            spawned("a"),
            Event::PodScope { scope: layered.clone() },
            Event::ChildReparented { name: name("g"), from: name("b"), rules: vec![], socket: "/run/g".into() },
        ])
        .unwrap();
        assert_eq!(s.scope, layered);
        assert_eq!(s.children.keys().collect::<Vec<_>>(), vec![&name("a"), &name("g")]);
        assert_eq!(s.children[&name("a")].callback.as_deref(), Some("cb"));
        assert_eq!(s.children[&name("g")].adopted_from, Some(name("b")));

        let s = fold(&[
            created(),
            spawned("a"),
            Event::ChildRemoved { name: name("a"), reason: RemovalReason::ShutDown, exit: crate::Exit::default() },
            Event::PodStopped { exit: crate::Exit::default() },
        ])
        .unwrap();
        assert!(s.children.is_empty());
        assert!(s.stopped);
    }

    #[test]
    fn unknown_events_are_skipped_but_counted() {
        let unknown = Event::Unknown { kind: "pod.painted".into() };
        let s = fold(&[
            unknown.clone(),
            created(),
            unknown.clone(),
            Event::PodStopped { exit: crate::Exit::default() },
            unknown,
        ])
        .unwrap();
        assert_eq!(s.last_seq, 5);
        assert!(s.stopped);
    }

    #[test]
    fn impossible_histories_are_refused() {
        let cases: Vec<(Vec<Event>, &str, u64)> = vec![
            (vec![spawned("a")], "fold.before_created", 1),
            (vec![created(), created()], "fold.already_created", 2),
            (vec![created(), spawned("a"), spawned("a")], "fold.duplicate_child", 3),
            (
                vec![
                    created(),
                    Event::ChildRemoved { name: name("a"), reason: RemovalReason::Lost, exit: crate::Exit::default() },
                ],
                "fold.unknown_child",
                2,
            ),
            (vec![created(), Event::PodScope { scope: ScopeSnapshot::default() }], "fold.base_changed", 2),
        ];
        for (events, code, seq) in cases {
            let err = fold(&events).unwrap_err();
            assert_eq!((err.code(), err.seq()), (code, seq), "{err}");
        }
        let mut with_layers = base();
        with_layers.layers.insert(name("a"), vec![]);
        let err = fold(&[Event::PodCreated { name: name("x"), parent: None, base: with_layers, workload: None }])
            .unwrap_err();
        assert_eq!(err.code(), "fold.base_has_layers");
    }

    #[test]
    fn a_resumed_pod_is_no_longer_stopped() {
        let s = fold(&[
            created(),
            Event::PodStopped { exit: crate::Exit::default() },
            Event::PodStopped { exit: crate::Exit::default() },
        ])
        .unwrap();
        assert!(s.stopped);
        let s = fold(&[created(), Event::PodStopped { exit: crate::Exit::default() }, scope_of(&base())]).unwrap();
        assert!(!s.stopped);
        let s = fold(&[
            created(),
            Event::PodStopped { exit: crate::Exit::default() },
            Event::Unknown { kind: "pod.painted".into() },
        ])
        .unwrap();
        assert!(s.stopped);
    }

    fn scope_of(s: &ScopeSnapshot) -> Event {
        Event::PodScope { scope: s.clone() }
    }

    #[test]
    fn the_enforcement_level_is_folded_and_a_refused_batch_takes_it_back() {
        let enforced = |level: &str| {
            Event::PodEnforced(crate::Enforced {
                level: level.into(),
                landlock_abi: Some(7),
                scratch: vec![ScopePath::new("/cache").unwrap()],
            })
        };
        let mut s = fold(&[created(), enforced("full")]).unwrap();
        assert_eq!(s.enforced.as_ref().map(|e| e.level.as_str()), Some("full"));
        let before = s.clone();
        // The second event is refused (a child twice): the whole batch goes.
        let err = s.apply_batch(3, &[enforced("off"), spawned("a"), spawned("a")]);
        assert!(err.is_err());
        assert_eq!(s, before);
        // A log written before levels existed folds to none.
        assert_eq!(fold(&[created()]).unwrap().enforced, None);
    }

    #[test]
    fn gaps_are_refused() {
        let mut s = PodState::new();
        s.apply(1, &created()).unwrap();
        let err = s.apply(3, &spawned("a")).unwrap_err();
        assert_eq!(err, FoldError::SeqGap { expected: 2, found: 3 });
        assert_eq!(s.last_seq, 1);
        assert_eq!(s.apply(1, &spawned("a")).unwrap_err().code(), "fold.seq_gap");
    }

    #[test]
    fn a_refused_batch_changes_nothing() {
        let mut s = fold(&[created(), spawned("a")]).unwrap();
        let before = s.clone();
        let mut layered = base();
        layered.layers.insert(name("b"), vec![rule("/work/b")]);
        let batch = vec![
            Event::ChildRemoved { name: name("a"), reason: RemovalReason::Stopped, exit: crate::Exit::default() },
            spawned("b"),
            Event::PodScope { scope: layered },
            Event::PodStopped { exit: crate::Exit::default() },
            spawned("b"),
        ];
        let err = s.apply_batch(3, &batch).unwrap_err();
        assert_eq!(err.seq(), 7);
        assert_eq!(s, before);
        let mut stopped = s.clone();
        stopped.apply(3, &Event::PodStopped { exit: crate::Exit::default() }).unwrap();
        let snapshot = stopped.clone();
        assert!(stopped.apply_batch(4, &[spawned("b"), spawned("b")]).is_err());
        assert_eq!(stopped, snapshot, "a refused batch keeps `stopped` too");
        s.apply_batch(3, &batch[..4]).unwrap();
        assert_eq!(s.last_seq, 6);
        assert!(s.stopped);

        let mut empty = PodState::new();
        assert!(empty.apply_batch(1, &[created(), created()]).is_err());
        assert_eq!(empty, PodState::new());
    }
}
