//! Model-based randomized test of the in-process cores (issue 6, item 3).
//!
//! Random sequences of operations (start, spawn, stop, shutdown callback,
//! crashes, noticed deaths, registry sweeps, resume with prune, registry
//! restart) drive the REAL pure cores composed in one process, in the order
//! the running system uses (crates/pod/src/process/owner.rs and mod.rs:
//! registry first, then one log batch, then the plan's state):
//! - `scope::Scope` (through `pod::core::PodCore`),
//! - `pod::core::PodCore::{plan_spawn, plan_reclaim}`,
//! - `session_log::PodState` (each Pod's durable log is a `Vec<Event>`;
//!   resume folds it from scratch),
//! - `pod_registry::ops::plan` + `State::apply` (the daemon's pure core),
//!   `State::from_records` for a registry restart, and `Op::Forget` for its
//!   sweep, with liveness taken from the simulated processes instead of
//!   `/proc` (that is the only seam replaced).
//!
//! A small reference model (a tree of Pods with their base and delegated
//! rules, contracted when a Pod goes away) says what the brief expects; the
//! brief's invariants are checked after every step and named in every
//! assertion message. Cases: `POD_MODEL_CASES` (default 2000); seed:
//! `POD_MODEL_SEED` (default fixed, so CI is deterministic).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt;

use pod::core::{Adoption, PodCore};
use pod_registry::ops::{self, Adopt, Delegate, Op as RegOp, Register};
use pod_registry::state::State;
use pod_registry::{AllocState, RegistryError, Reply};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use scope::{Permission, PodName, Scope, ScopePath, ScopeRule};
use session_log::{Event, PodState, RemovalReason};

// ---------------------------------------------------------------------------
// The path universe: small, so operations collide often.

const UNIVERSE: [&str; 16] = [
    "/r", "/r/a", "/r/b", "/r/c", "/r/a/a", "/r/a/b", "/r/a/c", "/r/b/a", "/r/b/b", "/r/b/c", "/r/c/a", "/r/c/b",
    "/r/c/c", "/r/a/a/a", "/r/a/b/c", "/r/c/c/c",
];

fn universe() -> Vec<ScopePath> {
    UNIVERSE.iter().map(|p| ScopePath::new(p).unwrap()).collect()
}

/// `path` lies in `target/**`.
fn within(path: &str, target: &str) -> bool {
    path == target || (path.starts_with(target) && path[target.len()..].starts_with('/')) || target == "/"
}

fn parent_str(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(i) if i > 0 => Some(&path[..i]),
        _ => None,
    }
}

/// The reference's own coverage test (independent of `ScopeRule`).
fn ref_covers(rule: &ScopeRule, path: &str) -> bool {
    let t = rule.target.as_str();
    if rule.recursive {
        within(path, t)
    } else {
        path == t || parent_str(path) == Some(t)
    }
}

// ---------------------------------------------------------------------------
// Operations, as proptest generates and shrinks them. Selectors (`u8`) pick
// among the candidates the current state offers, so every prefix of a
// sequence stays meaningful while shrinking.

#[derive(Clone, Copy)]
struct Target {
    idx: u8,
    recursive: bool,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = UNIVERSE[self.idx as usize % UNIVERSE.len()];
        write!(f, "{p}{}", if self.recursive { "/**" } else { "/*" })
    }
}

#[derive(Clone, Copy)]
struct RuleGen {
    target: Target,
    write: bool,
}

impl fmt::Debug for RuleGen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", if self.write { "w" } else { "r" }, self.target)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `pod start`: a top-level Pod registers allow-write rules and
    /// optional deny rules.
    Start { allow: Vec<Target>, deny: Option<RuleGen> },
    /// A live Pod spawns a child. `guided`: write targets are picked among
    /// paths the parent can write now (else raw, often refused).
    Spawn { parent: u8, rules: Vec<RuleGen>, guided: bool },
    /// The parent crashes in the middle of a spawn: stage 0 after the
    /// registry delegate, stage 1 after the log batch (child never started).
    SpawnCrash { parent: u8, rules: Vec<RuleGen>, stage: u8 },
    /// `pod stop`: through the registry's parent if it is running, else the
    /// Pod itself (as `commands::lifecycle::stop`).
    Stop(u8),
    /// A Pod's workload exits: it stops its children, calls its parent back
    /// (a top-level Pod releases instead) and exits.
    ShutDown(u8),
    /// A child dies without a word and its watching parent reclaims it (lost).
    CrashChild(u8),
    /// Any Pod dies without a word; nobody notices yet.
    Crash(u8),
    /// A live Pod notices the death of one of its children (pidfd, OS wait).
    Notice(u8),
    /// The registry's periodic sweep.
    Sweep,
    /// `pod resume` of a dead top-level Pod.
    Resume(u8),
    /// The registry daemon restarts: its state is rebuilt from its records.
    RegistryRestart,
}

fn target(max: u8) -> impl Strategy<Value = Target> {
    (0..max, prop::bool::weighted(0.8)).prop_map(|(idx, recursive)| Target { idx, recursive })
}

/// A top-level allow target: mostly one of `/r/{a,b,c}`, so several
/// top-level Pods coexist; sometimes `/r` itself.
fn top_target() -> impl Strategy<Value = Target> {
    (prop_oneof![1 => Just(0u8), 6 => 1..4u8], prop::bool::weighted(0.8))
        .prop_map(|(idx, recursive)| Target { idx, recursive })
}

fn rule_gen(write_p: f64) -> impl Strategy<Value = RuleGen> {
    (target(UNIVERSE.len() as u8), prop::bool::weighted(write_p)).prop_map(|(target, write)| RuleGen { target, write })
}

fn delegation() -> impl Strategy<Value = Vec<RuleGen>> {
    prop::collection::vec(rule_gen(0.85), 1..=2)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop::collection::vec(top_target(), 1..=2), prop::option::weighted(0.5, rule_gen(0.7)))
            .prop_map(|(allow, deny)| Op::Start { allow, deny }),
        9 => (any::<u8>(), delegation(), prop::bool::weighted(0.9))
            .prop_map(|(parent, rules, guided)| Op::Spawn { parent, rules, guided }),
        1 => (any::<u8>(), delegation(), 0..2u8).prop_map(|(parent, rules, stage)| Op::SpawnCrash { parent, rules, stage }),
        2 => any::<u8>().prop_map(Op::Stop),
        2 => any::<u8>().prop_map(Op::ShutDown),
        2 => any::<u8>().prop_map(Op::CrashChild),
        3 => any::<u8>().prop_map(Op::Crash),
        2 => any::<u8>().prop_map(Op::Notice),
        2 => Just(Op::Sweep),
        3 => any::<u8>().prop_map(Op::Resume),
        1 => Just(Op::RegistryRestart),
    ]
}

// ---------------------------------------------------------------------------
// The simulated machine.

struct Proc {
    pid: u32,
    start_time: u64,
    core: PodCore,
}

struct SimPod {
    /// The parent named in `pod.created` (`None`: top-level).
    parent: Option<PodName>,
    base_allow: Vec<ScopeRule>,
    base_deny: Vec<ScopeRule>,
    /// The durable log: exactly the acknowledged batches.
    log: Vec<Event>,
    /// The log folded batch by batch, as `append` does.
    folded: PodState,
    proc: Option<Proc>,
    /// The in-memory state when the process died.
    at_death: Option<PodCore>,
}

/// The reference: what the brief says the tree is. A Pod that goes away
/// (reclaimed, pruned, swept, released) hands its remaining children, with
/// the rules it gave them, to its own parent.
#[derive(Debug, Clone)]
struct RefPod {
    allow: Vec<ScopeRule>,
    deny: Vec<ScopeRule>,
    parent: Option<PodName>,
    layers: BTreeMap<PodName, Vec<ScopeRule>>,
}

impl RefPod {
    fn permission(&self, path: &str) -> Option<Permission> {
        let granted = self.allow.iter().filter(|r| ref_covers(r, path)).map(|r| r.permission).max()?;
        let mut cap = Some(granted);
        for d in self.deny.iter().filter(|r| ref_covers(r, path)) {
            cap = cap.min(match d.permission {
                Permission::Write => Some(Permission::Read),
                Permission::Read => None,
            });
        }
        if self.layers.values().flatten().any(|r| r.permission == Permission::Write && ref_covers(r, path)) {
            cap = cap.min(Some(Permission::Read));
        }
        cap
    }
}

struct World {
    reg: State,
    pods: BTreeMap<PodName, SimPod>,
    reference: BTreeMap<PodName, RefPod>,
    next_id: u64,
    names: u32,
    universe: Vec<ScopePath>,
}

fn socket(name: &PodName) -> String {
    format!("/run/pod/{name}/sock")
}

fn session(name: &PodName) -> String {
    format!("/data/pod/{name}/log")
}

fn rule_of(g: &RuleGen) -> ScopeRule {
    let target = ScopePath::new(UNIVERSE[g.target.idx as usize % UNIVERSE.len()]).unwrap();
    let perm = if g.write { Permission::Write } else { Permission::Read };
    ScopeRule::new(target, perm, g.target.recursive)
}

impl World {
    fn new() -> World {
        World {
            reg: State::new(),
            pods: BTreeMap::new(),
            reference: BTreeMap::new(),
            next_id: 1,
            names: 0,
            universe: universe(),
        }
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The next name, taken only when `commit_name` is called, so a refused
    /// operation does not shift later names (and shrinking stays stable).
    /// Zero-padded: name order is creation order.
    fn next_name(&self) -> PodName {
        PodName::new(format!("p{:03}", self.names + 1)).unwrap()
    }

    fn commit_name(&mut self) {
        self.names += 1;
    }

    fn alive(&self, name: &PodName) -> bool {
        self.pods.get(name).is_some_and(|p| p.proc.is_some())
    }

    fn core(&self, name: &PodName) -> &PodCore {
        &self.pods[name].proc.as_ref().expect("a live pod").core
    }

    fn live(&self) -> Vec<PodName> {
        self.pods.iter().filter(|(_, p)| p.proc.is_some()).map(|(n, _)| n.clone()).collect()
    }

    /// The registry daemon's mutation path, without the daemon: plan, apply.
    fn reg_apply(&mut self, op: RegOp) -> Result<Reply, RegistryError> {
        let (plan, reply) = ops::plan(&self.reg, &op)?;
        self.reg.apply(plan);
        Ok(reply)
    }

    /// One durable log batch: the fold runs first (as `SessionLog::append`
    /// does) and must accept what a core planned.
    fn append(&mut self, name: &PodName, events: Vec<Event>) {
        let pod = self.pods.get_mut(name).unwrap();
        let first = pod.folded.last_seq + 1;
        pod.folded.apply_batch(first, &events).unwrap_or_else(|e| {
            panic!("inv8 (acknowledged = durable): the fold refused {name}'s batch {events:?}: {e}")
        });
        pod.log.extend(events);
    }

    fn set_core(&mut self, name: &PodName, core: PodCore) {
        self.pods.get_mut(name).unwrap().proc.as_mut().unwrap().core = core;
    }

    fn kill(&mut self, name: &PodName) {
        let pod = self.pods.get_mut(name).unwrap();
        let proc = pod.proc.take().expect("killing a live pod");
        pod.at_death = Some(proc.core);
    }

    /// The watcher of `child`: the live Pod whose children hold it.
    fn watchers(&self, child: &PodName) -> Vec<PodName> {
        self.live().into_iter().filter(|w| self.core(w).children.contains_key(child)).collect()
    }

    // -- reference ----------------------------------------------------------

    fn ref_remove(&mut self, x: &PodName) {
        let Some(node) = self.reference.remove(x) else { return };
        if let Some(p) = &node.parent {
            if let Some(pn) = self.reference.get_mut(p) {
                pn.layers.remove(x);
            }
        }
        for (g, rules) in node.layers {
            // A child that never started (still only reserved) goes with its
            // parent: nobody is left to finish starting it.
            if self.pods.get(&g).is_some_and(|p| p.log.is_empty()) {
                self.reference.remove(&g);
                continue;
            }
            let Some(gn) = self.reference.get_mut(&g) else { continue };
            gn.parent = node.parent.clone();
            if let Some(pn) = node.parent.as_ref().and_then(|p| self.reference.get_mut(p)) {
                pn.layers.insert(g, rules);
            }
        }
    }

    fn ref_remove_child(&mut self, parent: &PodName, child: &PodName) {
        if self.reference.get(child).is_some_and(|c| c.parent.as_ref() == Some(parent)) {
            self.ref_remove(child);
        }
    }

    // -- the one reclaim operation (Owner::reclaim_all) ----------------------

    fn reclaim_all(&mut self, p: &PodName, children: &[PodName], reason: RemovalReason) -> usize {
        let mut results = Vec::new();
        for c in children {
            let reply =
                self.reg_apply(RegOp::Reclaim { parent: p.clone(), child: c.clone() }).unwrap_or_else(|e| {
                    panic!("one reclaim: the registry refused {p}'s reclaim of {c} ({reason:?}): {e}; the running Pod keeps it recorded forever")
                });
            let Reply::Reclaimed(r) = reply else { panic!("reclaim answered {reply:?}") };
            results.push((c.clone(), r.reparented));
        }
        // As `Registry::reclaim_many`: everything about an orphan comes in
        // the reclaim's answer; its rules are the layer the registry now
        // holds for it in the parent.
        let layers = self.reg.get(p).map(|h| h.rec.layers.clone()).unwrap_or_default();
        let reclaimed: Vec<(PodName, Vec<Adoption>)> = results
            .into_iter()
            .map(|(c, survivors)| {
                let adoptions = survivors
                    .into_iter()
                    .map(|s| {
                        assert_eq!(
                            layers.get(&s.name),
                            Some(&s.rules),
                            "survivor {} reported with other rules",
                            s.name
                        );
                        Adoption { name: s.name, rules: s.rules, socket: s.socket }
                    })
                    .collect();
                (c, adoptions)
            })
            .collect();
        for c in children {
            self.ref_remove_child(p, c);
        }
        let plan = self
            .core(p)
            .plan_reclaim(&reclaimed, reason)
            .unwrap_or_else(|e| panic!("one reclaim: {p}'s plan_reclaim({reclaimed:?}) refused: {e}"));
        if std::env::var("POD_MODEL_TRACE").is_ok() {
            eprintln!("reclaim {p} {reclaimed:?} -> {plan:?}");
        }
        let Some(plan) = plan else { return 0 };
        self.append(p, plan.events);
        self.set_core(p, plan.next);
        plan.removed.len()
    }

    // -- the registry's sweep, with simulated liveness ----------------------

    fn process_alive(&self, name: &PodName, pid: u32, start_time: u64) -> bool {
        self.pods
            .get(name)
            .and_then(|p| p.proc.as_ref())
            .is_some_and(|proc| proc.pid == pid && proc.start_time == start_time)
    }

    /// As `daemon::session::Ctx::sweep`: every live allocation whose process
    /// is gone, in name order, through `Op::Forget`.
    fn sweep(&mut self) -> Vec<PodName> {
        let dead: Vec<(PodName, u32, u64)> = self
            .reg
            .iter()
            .filter(|h| h.rec.state == AllocState::Live)
            .filter(|h| !self.process_alive(&h.rec.name, h.rec.pid, h.rec.start_time))
            .map(|h| (h.rec.name.clone(), h.rec.pid, h.rec.start_time))
            .collect();
        let mut gone = Vec::new();
        for (name, pid, start_time) in dead {
            let reply = self
                .reg_apply(RegOp::Forget { name: name.clone(), pid, start_time })
                .unwrap_or_else(|e| panic!("sweep: forget {name} refused: {e}"));
            if matches!(reply, Reply::Reclaimed(ref r) if r.removed) {
                gone.push(name);
            }
        }
        for g in &gone {
            // A top-level Pod outlives its allocation (it resumes); any other
            // Pod is gone and its children go to its parent.
            let top_level = self.pods.get(g).is_some_and(|p| p.parent.is_none());
            if !top_level {
                self.ref_remove(g);
            }
        }
        gone
    }

    // -- operations ---------------------------------------------------------

    fn start(&mut self, allow: &[Target], deny: &Option<RuleGen>) {
        let allow: Vec<ScopeRule> = allow.iter().map(|t| rule_of(&RuleGen { target: *t, write: true })).collect();
        let deny: Vec<ScopeRule> = deny.iter().map(rule_of).collect();
        let Ok(scope) = Scope::new(allow.clone(), deny.clone()) else { return };
        let name = self.next_name();
        let (pid, start_time) = (self.fresh() as u32, self.fresh());
        let registered = self.reg_apply(RegOp::Register(Register {
            name: name.clone(),
            pid,
            start_time,
            socket: socket(&name),
            session: session(&name),
            allow: allow.clone(),
            deny: deny.clone(),
            layers: BTreeMap::new(),
            scratch: vec![],
        }));
        if registered.is_err() {
            return;
        }
        self.commit_name();
        let mut pod = SimPod {
            parent: None,
            base_allow: allow.clone(),
            base_deny: deny.clone(),
            log: Vec::new(),
            folded: PodState::new(),
            proc: Some(Proc { pid, start_time, core: PodCore::new(scope.clone(), BTreeMap::new()) }),
            at_death: None,
        };
        let created = vec![
            Event::PodCreated { name: name.clone(), parent: None, base: scope.snapshot().clone(), workload: None },
            Event::PodScope { scope: scope.snapshot().clone() },
        ];
        pod.folded.apply_batch(1, &created).unwrap();
        pod.log = created;
        self.pods.insert(name.clone(), pod);
        self.reference.insert(name, RefPod { allow, deny, parent: None, layers: BTreeMap::new() });
    }

    fn resolve_rules(&self, parent: &PodName, rules: &[RuleGen], guided: bool) -> Vec<ScopeRule> {
        let writable: Vec<&ScopePath> = self.universe.iter().filter(|p| self.core(parent).scope.can_write(p)).collect();
        rules
            .iter()
            .map(|g| {
                if guided && g.write && !writable.is_empty() {
                    let t = writable[g.target.idx as usize % writable.len()].clone();
                    ScopeRule::new(t, Permission::Write, g.target.recursive)
                } else {
                    rule_of(g)
                }
            })
            .collect()
    }

    /// `Owner::spawn`: local check, registry delegate, log batch, memory;
    /// then the child's startup (registry adopt, its own log). `crash_at`:
    /// the parent dies after the delegate (0) or after the log batch (1).
    fn spawn(&mut self, sel: u8, rules: &[RuleGen], guided: bool, crash_at: Option<u8>) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let p = live[sel as usize % live.len()].clone();
        let rules = self.resolve_rules(&p, rules, guided);
        let child = self.next_name();
        if self.core(&p).scope.check_delegation(&child, &rules).is_err() {
            return;
        }
        // inv2: what the parent hands out lies within its effective scope
        // (the reference's, independent of the scope crate's algebra).
        if let Some(rp) = self.reference.get(&p) {
            for r in &rules {
                for path in self.universe.iter().filter(|x| ref_covers(r, x.as_str())) {
                    let have = rp.permission(path.as_str());
                    assert!(
                        have >= Some(r.permission),
                        "inv2 (delegated within parent's effective scope): {p} delegated {r} to {child} but has {have:?} at {path}"
                    );
                }
            }
        }
        let delegated = self.reg_apply(RegOp::Delegate(Delegate {
            parent: p.clone(),
            child: child.clone(),
            rules: rules.clone(),
            deny: Vec::new(),
        }));
        if delegated.is_err() {
            return;
        }
        self.commit_name();
        if crash_at == Some(0) {
            self.kill(&p);
            return;
        }
        let callback = socket(&p);
        let plan = self
            .core(&p)
            .plan_spawn(&child, &rules, &socket(&child), &callback)
            .unwrap_or_else(|e| panic!("plan_spawn refused what check_delegation accepted: {e}"));
        self.append(&p, plan.events);
        self.set_core(&p, plan.next);
        self.reference.get_mut(&p).expect("reference knows the parent").layers.insert(child.clone(), rules.clone());
        self.reference.insert(
            child.clone(),
            RefPod { allow: rules.clone(), deny: Vec::new(), parent: Some(p.clone()), layers: BTreeMap::new() },
        );
        let scope = Scope::new(rules.clone(), Vec::new()).expect("a delegation is a valid base");
        let mut pod = SimPod {
            parent: Some(p.clone()),
            base_allow: rules,
            base_deny: Vec::new(),
            log: Vec::new(),
            folded: PodState::new(),
            proc: None,
            at_death: None,
        };
        if crash_at == Some(1) {
            self.pods.insert(child, pod);
            self.kill(&p);
            return;
        }
        let (pid, start_time) = (self.fresh() as u32, self.fresh());
        self.reg_apply(RegOp::Adopt(Adopt {
            name: child.clone(),
            pid,
            start_time,
            session: session(&child),
            socket: socket(&child),
            scratch: vec![],
        }))
        .unwrap_or_else(|e| panic!("spawn: the registry refused {child}'s adopt: {e}"));
        let created = vec![
            Event::PodCreated {
                name: child.clone(),
                parent: Some(p.clone()),
                base: scope.snapshot().clone(),
                workload: None,
            },
            Event::PodScope { scope: scope.snapshot().clone() },
        ];
        pod.folded.apply_batch(1, &created).unwrap();
        pod.log = created;
        pod.proc = Some(Proc { pid, start_time, core: PodCore::new(scope, BTreeMap::new()) });
        self.pods.insert(child, pod);
    }

    /// `x` stops its children bottom-up (each stops its own first, logs
    /// `pod.stopped`, exits; `x` reclaims it, reason stopped). Children
    /// adopted while stopping are stopped too (see the report: the running
    /// owner does not, it waits for them).
    fn stop_children(&mut self, x: &PodName) {
        loop {
            let kids: Vec<PodName> = self.core(x).children.keys().cloned().collect();
            if kids.is_empty() {
                return;
            }
            for c in kids {
                if !self.core(x).children.contains_key(&c) {
                    continue;
                }
                if self.alive(&c) {
                    self.stop_children(&c);
                    self.append(&c, vec![Event::PodStopped { exit: session_log::Exit::default() }]);
                    self.kill(&c);
                }
                self.reclaim_all(x, std::slice::from_ref(&c), RemovalReason::Stopped);
            }
        }
    }

    /// `x` shuts down on its own (workload exit, or a user's Shutdown):
    /// children first, then release (top-level) or the callback to the
    /// registry's current parent, then `pod.stopped`, then exit.
    fn shut_down(&mut self, x: &PodName) {
        self.stop_children(x);
        if self.pods[x].parent.is_none() {
            self.reg_apply(RegOp::Release { name: x.clone() })
                .unwrap_or_else(|e| panic!("shutdown: release of {x} refused: {e}"));
            self.ref_remove(x);
        } else if let Some(q) = self.reg.get(x).and_then(|h| h.rec.parent.clone()) {
            if self.alive(&q) && self.core(&q).children.contains_key(x) {
                self.reclaim_all(&q, std::slice::from_ref(x), RemovalReason::ShutDown);
            }
        }
        self.append(x, vec![Event::PodStopped { exit: session_log::Exit::default() }]);
        self.kill(x);
    }

    fn stop(&mut self, sel: u8) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let x = live[sel as usize % live.len()].clone();
        match self.reg.get(&x).and_then(|h| h.rec.parent.clone()) {
            Some(p) if self.alive(&p) => {
                if !self.core(&p).children.contains_key(&x) {
                    return; // pod.unknown_child
                }
                self.stop_children(&x);
                self.append(&x, vec![Event::PodStopped { exit: session_log::Exit::default() }]);
                self.kill(&x);
                self.reclaim_all(&p, std::slice::from_ref(&x), RemovalReason::Stopped);
            }
            _ => self.shut_down(&x),
        }
    }

    fn crash_child(&mut self, sel: u8) {
        let watched: Vec<(PodName, PodName)> =
            self.live().into_iter().flat_map(|x| self.watchers(&x).into_iter().map(move |w| (x.clone(), w))).collect();
        if watched.is_empty() {
            return;
        }
        let (x, w) = watched[sel as usize % watched.len()].clone();
        self.kill(&x);
        self.reclaim_all(&w, std::slice::from_ref(&x), RemovalReason::Lost);
    }

    fn notice(&mut self, sel: u8) {
        let pending: Vec<(PodName, PodName)> = self
            .live()
            .into_iter()
            .flat_map(|w| {
                self.core(&w)
                    .children
                    .keys()
                    .filter(|c| !self.alive(c))
                    .map(|c| (w.clone(), c.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        let (w, x) = pending[sel as usize % pending.len()].clone();
        self.reclaim_all(&w, std::slice::from_ref(&x), RemovalReason::Lost);
    }

    /// `process::resume`: fold the log from scratch, sweep, register with
    /// the layers, probe the children, prune the unreachable, log a
    /// `pod.scope` snapshot.
    fn resume(&mut self, sel: u8) {
        let dead: Vec<PodName> =
            self.pods.iter().filter(|(_, p)| p.proc.is_none() && p.parent.is_none()).map(|(n, _)| n.clone()).collect();
        if dead.is_empty() {
            return;
        }
        let name = dead[sel as usize % dead.len()].clone();
        let pod = &self.pods[&name];
        let mut state = PodState::new();
        for (seq, e) in (1..).zip(&pod.log) {
            state.apply(seq, e).unwrap_or_else(|e| panic!("inv8: {name}'s durable log does not fold: {e}"));
        }
        assert_eq!(state, pod.folded, "inv8: {name}'s log folded from scratch differs from its batch-by-batch fold");
        let before = pod.at_death.clone().expect("a dead pod has a state at death");
        assert_eq!(
            &state.scope,
            before.scope.snapshot(),
            "inv8 (acknowledged survives a crash): {name}'s log folds to another scope than it had"
        );
        assert_eq!(
            state.children, before.children,
            "inv8 (acknowledged survives a crash): {name}'s log folds to other children than it had"
        );
        let scope = Scope::from_snapshot(state.scope.clone())
            .unwrap_or_else(|e| panic!("inv7: {name}'s folded scope does not load: {e}"));
        self.sweep();
        let (pid, start_time) = (self.fresh() as u32, self.fresh());
        let registered = self.reg_apply(RegOp::Register(Register {
            name: name.clone(),
            pid,
            start_time,
            socket: socket(&name),
            session: session(&name),
            allow: scope.allow().to_vec(),
            deny: scope.deny().to_vec(),
            layers: scope.layers().clone(),
            scratch: vec![],
        }));
        if let Err(e) = registered {
            // A resume may lose its region to a Pod started over it after it
            // was swept; it must never be blocked by an allocation nobody
            // acknowledged.
            match &e {
                RegistryError::WriteConflict { holder, .. } if self.reference.contains_key(holder) => return,
                _ => panic!(
                    "inv7 (resume reproduces the pre-crash state): {name}'s resume refused by the registry: {e} ({} allocations: {:?})",
                    self.reg.len(),
                    self.reg.iter().map(|h| (&h.rec.name, h.rec.state, &h.rec.parent)).collect::<Vec<_>>()
                ),
            }
        }
        let pod = self.pods.get_mut(&name).unwrap();
        pod.proc = Some(Proc { pid, start_time, core: PodCore::new(scope, state.children.clone()) });
        pod.at_death = None;
        let (allow, deny) = (pod.base_allow.clone(), pod.base_deny.clone());
        self.reference.entry(name.clone()).or_insert(RefPod { allow, deny, parent: None, layers: BTreeMap::new() });
        let unreachable: Vec<PodName> = state.children.keys().filter(|c| !self.alive(c)).cloned().collect();
        let ref_dead: Vec<PodName> = self.reference[&name].layers.keys().filter(|c| !self.alive(c)).cloned().collect();
        if !unreachable.is_empty() {
            self.reclaim_all(&name, &unreachable, RemovalReason::Pruned);
        }
        for c in &ref_dead {
            self.ref_remove_child(&name, c);
        }
        let snapshot = self.core(&name).scope.snapshot().clone();
        self.append(&name, vec![Event::PodScope { scope: snapshot }]);

        // inv7: the pre-crash state, minus the pruned children (plus the
        // grandchildren they handed over).
        let after = self.core(&name);
        assert_eq!(after.scope.allow(), before.scope.allow(), "inv7: {name}'s base allow changed by resume");
        assert_eq!(after.scope.deny(), before.scope.deny(), "inv7: {name}'s base deny changed by resume");
        for (c, rec) in &before.children {
            if unreachable.contains(c) {
                assert!(!after.children.contains_key(c), "inv7: {name} kept pruned child {c}");
                continue;
            }
            assert_eq!(after.children.get(c), Some(rec), "inv7: {name} lost or changed live child {c} on resume");
            assert_eq!(after.scope.layer(c), before.scope.layer(c), "inv7: {name}'s layer for {c} changed on resume");
        }
        for (c, rec) in &after.children {
            if !before.children.contains_key(c) {
                assert!(
                    rec.adopted_from.as_ref().is_some_and(|f| unreachable.contains(f)),
                    "inv7: {name} gained child {c} on resume that no pruned child handed over ({rec:?})"
                );
            }
        }
    }

    fn registry_restart(&mut self) {
        let records: Vec<_> = self.reg.iter().map(|h| h.rec.clone()).collect();
        let reloaded = State::from_records(records.clone(), self.reg.next_fence())
            .unwrap_or_else(|e| panic!("registry restart: its own records do not load: {e}"));
        let again: Vec<_> = reloaded.iter().map(|h| h.rec.clone()).collect();
        assert_eq!(again, records, "registry restart: records changed across a restart");
        self.reg = reloaded;
    }

    /// The live Pod a selector points at, if any Pod is live.
    fn pick_live(&self, s: u8) -> Option<PodName> {
        let live = self.live();
        (!live.is_empty()).then(|| live[s as usize % live.len()].clone())
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Start { allow, deny } => self.start(allow, deny),
            Op::Spawn { parent, rules, guided } => self.spawn(*parent, rules, *guided, None),
            Op::SpawnCrash { parent, rules, stage } => self.spawn(*parent, rules, true, Some(*stage)),
            Op::Stop(s) => self.stop(*s),
            Op::ShutDown(s) => {
                if let Some(x) = self.pick_live(*s) {
                    self.shut_down(&x);
                }
            }
            Op::CrashChild(s) => self.crash_child(*s),
            Op::Crash(s) => {
                if let Some(x) = self.pick_live(*s) {
                    self.kill(&x);
                }
            }
            Op::Notice(s) => self.notice(*s),
            Op::Sweep => {
                self.sweep();
            }
            Op::Resume(s) => self.resume(*s),
            Op::RegistryRestart => self.registry_restart(),
        }
    }

    // -- invariants ---------------------------------------------------------

    fn check(&self) {
        self.reg.check_links().unwrap_or_else(|e| panic!("registry links (parent <-> layer): {e}"));
        let live = self.live();

        // inv1, among the running Pods' own scopes and among the registry's
        // allocations.
        for path in &self.universe {
            let writers: Vec<&PodName> = live.iter().filter(|n| self.core(n).scope.can_write(path)).collect();
            assert!(writers.len() <= 1, "inv1 (one writer per path): live pods {writers:?} can all write {path}");
            let holders: Vec<&PodName> =
                self.reg.iter().filter(|h| h.scope.can_write(path)).map(|h| &h.rec.name).collect();
            assert!(
                holders.len() <= 1,
                "inv1 (one writer per path): registry allocations {holders:?} all write {path}"
            );
        }

        for (name, pod) in &self.pods {
            // inv3: bases never change, anywhere they are kept.
            let base = &pod.folded.identity.as_ref();
            if let Some(id) = base {
                assert_eq!(id.base.allow, pod.base_allow, "inv3 (base unchanged): {name}'s logged base allow");
                assert_eq!(id.base.deny, pod.base_deny, "inv3 (base unchanged): {name}'s logged base deny");
                assert_eq!(pod.folded.scope.deny, pod.base_deny, "inv3 (base unchanged): {name}'s folded deny");
            }
            if let Some(h) = self.reg.get(name) {
                assert_eq!(h.rec.allow, pod.base_allow, "inv3 (base unchanged): registry's allow of {name}");
                assert_eq!(h.rec.deny, pod.base_deny, "inv3 (base unchanged): registry's deny of {name}");
            }
            let Some(proc) = &pod.proc else { continue };
            let core = &proc.core;
            assert_eq!(core.scope.allow(), pod.base_allow, "inv3 (base unchanged): {name}'s allow");
            assert_eq!(core.scope.deny(), pod.base_deny, "inv3 (base unchanged): {name}'s deny");

            // inv6 / inv8: the running state is the fold of the durable log.
            assert_eq!(&pod.folded.scope, core.scope.snapshot(), "inv8 (log = live state): {name}'s scope");
            assert_eq!(pod.folded.children, core.children, "inv6 (children = folded log): {name}");
            assert!(
                core.children.keys().eq(core.scope.layers().keys()),
                "inv6: {name}'s children {:?} and layers {:?} disagree",
                core.children.keys().collect::<Vec<_>>(),
                core.scope.layers().keys().collect::<Vec<_>>()
            );

            // A Pod with a dead child it has not noticed yet is mid-reclaim.
            let settled = core.children.keys().all(|c| self.alive(c));
            if !settled {
                continue;
            }
            // inv4: base + the layers of the remaining live children,
            // nothing more, nothing less.
            let rp = self.reference.get(name).unwrap_or_else(|| panic!("inv4: the reference lost running pod {name}"));
            assert_eq!(
                core.scope.layers(),
                &rp.layers,
                "inv4 (scope = base + remaining children's layers): {name}'s layers differ from the reference"
            );
            for path in &self.universe {
                let got = core.scope.permission_at(path).permission;
                let want = rp.permission(path.as_str());
                assert_eq!(got, want, "inv4: {name}'s effective permission at {path}");
            }
            // inv5: the registry's record equals the Pod's own scope.
            let h = self.reg.get(name).unwrap_or_else(|| panic!("inv5: running pod {name} has no allocation"));
            assert_eq!(h.rec.state, AllocState::Live, "inv5: running pod {name}'s allocation is not live");
            assert_eq!(
                (h.rec.pid, h.rec.start_time),
                (proc.pid, proc.start_time),
                "inv5: {name}'s allocation names another process"
            );
            assert_eq!(&h.rec.layers, core.scope.layers(), "inv5 (registry = pod scope): {name}'s layers");
            for c in core.children.keys() {
                let parent = self.reg.get(c).and_then(|h| h.rec.parent.clone());
                assert_eq!(parent.as_ref(), Some(name), "inv5: registry's parent of {name}'s running child {c}");
            }
        }
    }
}

fn run(ops: &[Op]) {
    let mut world = World::new();
    for (i, op) in ops.iter().enumerate() {
        world.step(op);
        if std::env::var("POD_MODEL_TRACE").is_ok() {
            eprintln!("step {i}: {op:?}");
            for h in world.reg.iter() {
                eprintln!(
                    "   reg {} {:?} parent={:?} layers={:?}",
                    h.rec.name,
                    h.rec.state,
                    h.rec.parent,
                    h.rec.layers.keys().collect::<Vec<_>>()
                );
            }
            for (n, p) in &world.pods {
                eprintln!(
                    "   pod {n} alive={} children={:?}",
                    p.proc.is_some(),
                    p.proc.as_ref().map(|x| x.core.children.keys().collect::<Vec<_>>())
                );
            }
        }
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.check()));
        if let Err(e) = checked {
            eprintln!("invariant broken after step {i}: {op:?}");
            std::panic::resume_unwind(e);
        }
    }
}

fn config() -> Config {
    let cases = std::env::var("POD_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let seed = std::env::var("POD_MODEL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0006);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 20_000,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cores_keep_the_invariants(ops in prop::collection::vec(op(), 1..=30)) {
        run(&ops);
    }
}

/// The reference itself: `within` and `ref_covers` agree with the scope
/// crate on the universe (so a disagreement in inv4 is about layers, not
/// about path algebra).
#[test]
fn reference_coverage_matches_scope_rules() {
    for t in UNIVERSE {
        for recursive in [true, false] {
            let rule = ScopeRule::new(ScopePath::new(t).unwrap(), Permission::Write, recursive);
            for p in universe() {
                assert_eq!(ref_covers(&rule, p.as_str()), rule.covers_path(&p), "{rule} at {p}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The bugs the model found, as their shrunk sequences: regression tests now
// that the registry keeps former parents, drops stale layers at register and
// lets only live Pods delegate.

fn t(idx: u8, recursive: bool) -> Target {
    Target { idx, recursive }
}

fn w(idx: u8, recursive: bool) -> RuleGen {
    RuleGen { target: t(idx, recursive), write: true }
}

/// Bug 1: a grandchild is lost on resume. p001 -> p002 (/r/a/**) -> p003
/// (/r/a/*); p001 crashes, then p002; p001 resumes: the sweep forgets both
/// dead allocations (p003 becomes top-level), p001 re-registers with its
/// logged layer for p002 only, prunes p002, and the registry drops that
/// layer without handing p003 back: p001 and p003 both write /r/a (inv1).
#[test]
fn known_bug_lost_grandchild() {
    run(&[
        Op::Start { allow: vec![t(0, true)], deny: None },
        Op::Spawn { parent: 0, rules: vec![w(1, true)], guided: false },
        Op::Spawn { parent: 1, rules: vec![w(1, false)], guided: false },
        Op::Crash(0),
        Op::Crash(0),
        Op::Resume(0),
    ]);
}

/// Bug 2: a sweep that forgets a dead child before its running parent
/// notices the death. The registry reparents the grandchild to the parent
/// (layer in the registry), then the parent's own reclaim finds the child
/// gone, gets no `reparented` list, and drops the layer without adopting:
/// p001 and p003 both write /r/a/a (inv1, inv5).
#[test]
fn known_bug_sweep_before_notice() {
    run(&[
        Op::Start { allow: vec![t(0, true)], deny: None },
        Op::Spawn { parent: 0, rules: vec![w(1, true)], guided: false },
        Op::Spawn { parent: 1, rules: vec![w(4, true)], guided: false },
        Op::Crash(1),
        Op::Sweep,
        Op::Notice(0),
    ]);
}

/// Bug 3: a resuming Pod re-registers with a layer for a child that has no
/// allocation any more; the layer hides the conflict with a Pod started on
/// that region meanwhile, and the prune then drops the layer with no
/// conflict check: p001 and p003 both write /r (inv1).
#[test]
fn known_bug_stale_layer_hides_a_conflict() {
    run(&[
        Op::Start { allow: vec![t(0, false)], deny: None },
        Op::SpawnCrash { parent: 0, rules: vec![w(12, false)], stage: 1 },
        Op::Sweep,
        Op::Start { allow: vec![t(0, false)], deny: None },
        Op::Resume(0),
    ]);
}
