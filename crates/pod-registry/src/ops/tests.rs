//! The registry's rules, tested on the pure core: no sockets, no disk.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scope::{Permission, PodName, ScopePath, ScopeRule};

use super::*;
use crate::record::AllocState;
use crate::state::State;
use crate::wire::Reclaimed;

fn n(s: &str) -> PodName {
    PodName::new(s).expect("name")
}

fn w(s: &str) -> ScopeRule {
    ScopeRule::write(ScopePath::new(s).expect("path"))
}

fn r(s: &str) -> ScopeRule {
    ScopeRule::read(ScopePath::new(s).expect("path"))
}

fn run(state: &mut State, op: Op) -> Result<Reply, RegistryError> {
    let (plan, reply) = plan(state, &op)?;
    state.apply(plan);
    state.check_links().expect("links consistent after every operation");
    Ok(reply)
}

fn register(
    state: &mut State,
    name: &str,
    allow: Vec<ScopeRule>,
    deny: Vec<ScopeRule>,
) -> Result<Reply, RegistryError> {
    register_full(state, name, allow, deny, BTreeMap::new(), "")
}

fn register_full(
    state: &mut State,
    name: &str,
    allow: Vec<ScopeRule>,
    deny: Vec<ScopeRule>,
    layers: BTreeMap<PodName, Vec<ScopeRule>>,
    session: &str,
) -> Result<Reply, RegistryError> {
    run(
        state,
        Op::Register(Register {
            name: n(name),
            pid: 100,
            start_time: 1,
            socket: String::new(),
            session: session.into(),
            allow,
            deny,
            layers,
            scratch: vec![],
        }),
    )
}

fn delegate(state: &mut State, parent: &str, child: &str, rules: Vec<ScopeRule>) -> Result<Reply, RegistryError> {
    run(state, Op::Delegate(Delegate { parent: n(parent), child: n(child), rules, deny: vec![] }))
}

/// Delegate, then adopt: a started (live) child.
fn spawn(state: &mut State, parent: &str, child: &str, rules: Vec<ScopeRule>) {
    delegate(state, parent, child, rules).expect("delegate");
    let pid = 1000 + state.len() as u32;
    let adopt = Op::Adopt(Adopt {
        name: n(child),
        pid,
        start_time: 1,
        session: format!("s-{child}"),
        socket: "/x".into(),
        scratch: vec![],
    });
    run(state, adopt).expect("adopt");
}

fn reclaim(state: &mut State, parent: &str, child: &str) -> Result<Reply, RegistryError> {
    run(state, Op::Reclaim { parent: n(parent), child: n(child) })
}

fn conflict_holder(e: RegistryError) -> (String, String) {
    match e {
        RegistryError::WriteConflict { holder, holder_rule, .. } => (holder.to_string(), holder_rule.to_string()),
        other => panic!("expected a write conflict, got {other:?}"),
    }
}

#[test]
fn overlapping_writes_conflict_and_name_the_holder() {
    let mut s = State::new();
    register(&mut s, "a", vec![w("/repo")], vec![]).expect("a");
    let e = register(&mut s, "b", vec![w("/repo/src")], vec![]).expect_err("conflict");
    assert_eq!(e.code(), "registry.write_conflict");
    assert_eq!(conflict_holder(e), ("a".into(), "write /repo/**".into()));
    register(&mut s, "c", vec![w("/other")], vec![]).expect("disjoint is fine");
}

#[test]
fn read_rules_never_conflict() {
    let mut s = State::new();
    register(&mut s, "a", vec![w("/repo")], vec![]).expect("a");
    register(&mut s, "b", vec![r("/repo")], vec![]).expect("read only");
    register(&mut s, "c", vec![r("/repo/src"), w("/elsewhere")], vec![]).expect("read plus disjoint write");
}

#[test]
fn a_deny_that_covers_the_overlap_hides_it_but_a_partial_one_does_not() {
    let mut s = State::new();
    register(&mut s, "a", vec![w("/repo")], vec![w("/repo/vendor")]).expect("a");
    register(&mut s, "b", vec![w("/repo/vendor/lib")], vec![]).expect("inside a's deny");
    let e = register(&mut s, "c", vec![w("/repo")], vec![w("/repo/src")]).expect_err("partial deny");
    assert_eq!(conflict_holder(e).0, "a");
}

#[test]
fn blame_goes_to_the_deepest_holder() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    spawn(&mut s, "lead", "helper", vec![w("/repo/src")]);
    delegate(&mut s, "helper", "sub", vec![w("/repo/src/a")]).expect("sub");
    let e = register(&mut s, "x", vec![w("/repo/src/a/b")], vec![]).expect_err("conflict");
    assert_eq!(conflict_holder(e), ("sub".into(), "write /repo/src/a/**".into()));
    let e = register(&mut s, "y", vec![w("/repo/src/z")], vec![]).expect_err("conflict");
    assert_eq!(conflict_holder(e).0, "helper");
    let e = register(&mut s, "z", vec![w("/repo/docs")], vec![]).expect_err("conflict");
    assert_eq!(conflict_holder(e).0, "lead");
}

#[test]
fn delegation_must_be_a_subset_and_siblings_must_not_overlap() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![w("/repo/secret")]).expect("lead");
    assert_eq!(delegate(&mut s, "lead", "c", vec![w("/etc")]).expect_err("outside").code(), "scope.write_outside");
    assert_eq!(
        delegate(&mut s, "lead", "c", vec![w("/repo/secret/x")]).expect_err("denied").code(),
        "scope.overlaps_deny"
    );
    delegate(&mut s, "lead", "c1", vec![w("/repo/src")]).expect("c1");
    assert_eq!(
        delegate(&mut s, "lead", "c2", vec![w("/repo/src/x")]).expect_err("sibling").code(),
        "scope.overlaps_layer"
    );
    assert_eq!(delegate(&mut s, "nobody", "c3", vec![w("/repo")]).expect_err("unknown").code(), "registry.unknown_pod");
    assert_eq!(
        delegate(&mut s, "lead", "c1", vec![w("/repo/doc")]).expect_err("dup").code(),
        "registry.duplicate_name"
    );
}

#[test]
fn delegate_creates_child_and_layer_together_and_reclaim_removes_both() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![w("/repo/secret")]).expect("lead");
    let fence0 = s.get(&n("lead")).expect("lead").rec.fence;
    delegate(&mut s, "lead", "c", vec![w("/repo/src")]).expect("c");
    let lead = s.get(&n("lead")).expect("lead");
    assert!(lead.rec.fence > fence0, "fence increases on every change");
    assert!(!lead.scope.can_write(&ScopePath::new("/repo/src/x").expect("p")));
    assert_eq!(s.get(&n("c")).expect("c").rec.state, AllocState::Reserved);
    reclaim(&mut s, "lead", "c").expect("reclaim");
    assert!(s.get(&n("c")).is_none());
    let lead = s.get(&n("lead")).expect("lead");
    assert!(lead.rec.layers.is_empty());
    assert_eq!(lead.rec.deny, vec![w("/repo/secret")], "base deny exactly as given");
    assert!(lead.scope.can_write(&ScopePath::new("/repo/src/x").expect("p")));
    // Idempotent: again, and for a child that never existed.
    let again = reclaim(&mut s, "lead", "c").expect("again");
    assert!(matches!(again, Reply::Reclaimed(Reclaimed { removed: false, .. })));
    reclaim(&mut s, "lead", "never").expect("unknown child is success");
}

#[test]
fn reclaim_reparents_live_grandchildren_and_keeps_them_excluded() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    spawn(&mut s, "lead", "mid", vec![w("/repo/src")]);
    spawn(&mut s, "mid", "leaf", vec![w("/repo/src/a")]);
    let Reply::Reclaimed(out) = reclaim(&mut s, "lead", "mid").expect("reclaim") else { panic!("reply") };
    assert_eq!(out.reparented.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), vec![n("leaf")]);
    assert_eq!(s.get(&n("leaf")).expect("leaf").rec.parent, Some(n("lead")));
    let lead = s.get(&n("lead")).expect("lead");
    assert!(lead.scope.can_write(&ScopePath::new("/repo/src/b").expect("p")));
    assert!(!lead.scope.can_write(&ScopePath::new("/repo/src/a/x").expect("p")));
    let e = register(&mut s, "x", vec![w("/repo/src/a")], vec![]).expect_err("leaf still holds it");
    assert_eq!(conflict_holder(e).0, "leaf");
}

#[test]
fn release_makes_children_top_level_and_frees_the_rest() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    spawn(&mut s, "lead", "c", vec![w("/repo/src")]);
    run(&mut s, Op::Release { name: n("lead") }).expect("release");
    assert!(s.get(&n("lead")).is_none());
    assert_eq!(s.get(&n("c")).expect("c").rec.parent, None);
    register(&mut s, "again", vec![w("/repo/docs")], vec![]).expect("released scope can be taken");
    assert_eq!(conflict_holder(register(&mut s, "no", vec![w("/repo")], vec![]).expect_err("c holds src")).0, "c");
    run(&mut s, Op::Release { name: n("lead") }).expect("release is idempotent");
}

#[test]
fn a_restored_pod_registers_with_layers_over_its_live_children() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    spawn(&mut s, "lead", "c", vec![w("/repo/src")]);
    run(&mut s, Op::Release { name: n("lead") }).expect("lead crashed");
    let layers = BTreeMap::from([(n("c"), vec![w("/repo/src")])]);
    register_full(&mut s, "lead", vec![w("/repo")], vec![], layers, "").expect("restored");
    assert_eq!(s.get(&n("c")).expect("c").rec.parent, Some(n("lead")), "child re-adopted");
    assert_eq!(
        conflict_holder(register(&mut s, "lead2", vec![w("/repo")], vec![]).expect_err("held")).0,
        "c",
        "the deepest holder is blamed"
    );
    // Without its layers the restored Pod would claim the child's region back.
    run(&mut s, Op::Release { name: n("lead") }).expect("release");
    let e = register(&mut s, "lead", vec![w("/repo")], vec![]).expect_err("would claim c's region");
    assert_eq!(conflict_holder(e).0, "c");
}

#[test]
fn sessions_are_unique_among_live_pods() {
    let mut s = State::new();
    register_full(&mut s, "a", vec![w("/a")], vec![], BTreeMap::new(), "sess-1").expect("a");
    let e = register_full(&mut s, "b", vec![w("/b")], vec![], BTreeMap::new(), "sess-1").expect_err("taken");
    assert_eq!(e.code(), "registry.session_taken");
    assert_eq!(
        query::answer(&s, &Query::BySession("sess-1".into())).expect("q"),
        Reply::Found(s.get(&n("a")).map(|h| h.rec.clone()))
    );
    run(&mut s, Op::Release { name: n("a") }).expect("release");
    register_full(&mut s, "b", vec![w("/b")], vec![], BTreeMap::new(), "sess-1").expect("free again");
}

#[test]
fn reserved_children_go_with_their_parent() {
    // The parent died between delegate and the child's adopt: nobody can
    // finish the spawn, and the reservation must not outlive it.
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    delegate(&mut s, "lead", "half", vec![w("/repo/src")]).expect("reserved");
    spawn(&mut s, "lead", "whole", vec![w("/repo/docs")]);
    run(&mut s, Op::Release { name: n("lead") }).expect("lead gone");
    assert!(s.get(&n("half")).is_none(), "reservation removed with its parent");
    assert_eq!(s.get(&n("whole")).expect("whole").rec.parent, None, "live child survives, top-level");
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect_err("whole still holds docs");
    let layers = BTreeMap::from([(n("whole"), vec![w("/repo/docs")])]);
    register_full(&mut s, "lead", vec![w("/repo")], vec![], layers, "").expect("restored without the reservation");
}

#[test]
fn a_reservation_does_not_delegate() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    delegate(&mut s, "lead", "half", vec![w("/repo/src")]).expect("reserved");
    let e = delegate(&mut s, "half", "sub", vec![w("/repo/src/a")]).expect_err("not started");
    assert_eq!(e.code(), "registry.not_live");
}

/// Dies as a sweep would find it: `Forget` with the recorded process.
fn die(state: &mut State, name: &str) {
    let rec = &state.get(&n(name)).expect("allocated").rec;
    let op = Op::Forget { name: n(name), pid: rec.pid, start_time: rec.start_time };
    run(state, op).expect("forget");
}

fn reparented(reply: Reply) -> Vec<PodName> {
    match reply {
        Reply::Reclaimed(r) => r.reparented.into_iter().map(|s| s.name).collect(),
        other => panic!("expected reclaimed, got {other:?}"),
    }
}

#[test]
fn a_parent_reclaiming_a_swept_child_learns_of_its_survivors() {
    // The sweep removes mid before lead notices; lead's reclaim of the gone
    // mid must still report leaf, or lead would drop the layer and write
    // where leaf writes.
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/r")], vec![]).expect("lead");
    spawn(&mut s, "lead", "mid", vec![w("/r/a")]);
    spawn(&mut s, "mid", "leaf", vec![w("/r/a/x")]);
    die(&mut s, "mid");
    assert_eq!(s.get(&n("leaf")).expect("leaf").rec.parent, Some(n("lead")));
    assert_eq!(reparented(reclaim(&mut s, "lead", "mid").expect("reclaim")), vec![n("leaf")]);
    assert_eq!(reparented(reclaim(&mut s, "lead", "mid").expect("again")), Vec::<PodName>::new(), "told once");
    assert_eq!(s.get(&n("leaf")).expect("leaf").rec.former_parent, None);
    // A reclaim the parent asked for itself reports survivors directly.
    spawn(&mut s, "lead", "mid2", vec![w("/r/b")]);
    spawn(&mut s, "mid2", "leaf2", vec![w("/r/b/y")]);
    assert_eq!(reparented(reclaim(&mut s, "lead", "mid2").expect("reclaim")), vec![n("leaf2")]);
    assert_eq!(s.get(&n("leaf2")).expect("leaf2").rec.former_parent, None, "nothing left to tell");
}

#[test]
fn a_restored_pod_gets_back_the_survivors_of_its_dead_children() {
    // lead -> mid -> leaf; lead dies, then mid: leaf ends top-level. lead
    // restores with its logged layer for mid only: leaf must come back
    // under it, or lead and leaf would both write /r/a/x.
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/r")], vec![]).expect("lead");
    spawn(&mut s, "lead", "mid", vec![w("/r/a")]);
    spawn(&mut s, "mid", "leaf", vec![w("/r/a/x")]);
    die(&mut s, "lead");
    die(&mut s, "mid");
    assert_eq!(s.get(&n("leaf")).expect("leaf").rec.parent, None);
    let layers = BTreeMap::from([(n("mid"), vec![w("/r/a")])]);
    let Reply::Allocation(lead) = register_full(&mut s, "lead", vec![w("/r")], vec![], layers, "").expect("restored")
    else {
        panic!("reply")
    };
    assert_eq!(lead.layers.keys().cloned().collect::<Vec<_>>(), vec![n("leaf")], "stale mid dropped, leaf adopted");
    assert_eq!(s.get(&n("leaf")).expect("leaf").rec.parent, Some(n("lead")));
    assert!(!s.get(&n("lead")).expect("lead").scope.can_write(&ScopePath::new("/r/a/x/f").expect("p")));
    // Its prune of mid reports leaf, so the Pod adopts it too.
    assert_eq!(reparented(reclaim(&mut s, "lead", "mid").expect("prune")), vec![n("leaf")]);
}

#[test]
fn a_stale_layer_hides_no_conflict() {
    // lead's child died and was swept; someone took its region; lead
    // restores with the stale layer: refused, not silently overlapping.
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/r")], vec![]).expect("lead");
    spawn(&mut s, "lead", "kid", vec![w("/r/a")]);
    die(&mut s, "kid");
    die(&mut s, "lead");
    register(&mut s, "other", vec![w("/r/a")], vec![]).expect("region is free");
    let layers = BTreeMap::from([(n("kid"), vec![w("/r/a")])]);
    let e = register_full(&mut s, "lead", vec![w("/r")], vec![], layers, "").expect_err("stale layer");
    assert_eq!(conflict_holder(e).0, "other");
}

#[test]
fn adopt_takes_a_reservation_once() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    delegate(&mut s, "lead", "c", vec![w("/repo/src")]).expect("c");
    let adopt = |pid| {
        Op::Adopt(Adopt { name: n("c"), pid, start_time: 5, session: "s".into(), socket: "/x".into(), scratch: vec![] })
    };
    run(&mut s, adopt(7)).expect("adopt");
    assert_eq!(s.get(&n("c")).expect("c").rec.state, AllocState::Live);
    run(&mut s, adopt(7)).expect("same adopt again is fine");
    assert_eq!(run(&mut s, adopt(8)).expect_err("other process").code(), "registry.already_live");
}

#[test]
fn forget_applies_only_to_the_process_it_names() {
    let mut s = State::new();
    register(&mut s, "a", vec![w("/a")], vec![]).expect("a");
    let Reply::Reclaimed(out) = run(&mut s, Op::Forget { name: n("a"), pid: 100, start_time: 2 }).expect("f") else {
        panic!("reply")
    };
    assert!(!out.removed, "another start time is another process");
    run(&mut s, Op::Forget { name: n("a"), pid: 100, start_time: 1 }).expect("forget");
    assert!(s.get(&n("a")).is_none());
}

#[test]
fn check_answers_from_the_pods_effective_scope() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![w("/repo/secret")]).expect("lead");
    delegate(&mut s, "lead", "c", vec![w("/repo/src")]).expect("c");
    let check = |s: &State, name: &str, path: &str| {
        let q = Query::Check { name: n(name), path: ScopePath::new(path).expect("p"), permission: Permission::Write };
        match query::answer(s, &q).expect("answer") {
            Reply::Check(c) => c.allowed,
            other => panic!("{other:?}"),
        }
    };
    assert!(check(&s, "lead", "/repo/README"));
    assert!(!check(&s, "lead", "/repo/src/main.rs"));
    assert!(!check(&s, "lead", "/repo/secret/key"));
    assert!(check(&s, "c", "/repo/src/main.rs"));
}

// ---- invariant 1 under random operation sequences ----

const DIRS: [&str; 7] = ["/r", "/r/a", "/r/a/x", "/r/b", "/r/b/y", "/s", "/s/c"];

#[derive(Debug, Clone)]
enum RandOp {
    Register(usize, usize, Option<usize>, bool),
    Delegate(usize, usize, usize, bool),
    Reclaim(usize, usize),
    Release(usize),
    Adopt(usize),
    Die(usize),
}

fn rand_op() -> impl Strategy<Value = RandOp> {
    let pod = 0..6usize;
    let dir = 0..DIRS.len();
    prop_oneof![
        (pod.clone(), dir.clone(), proptest::option::of(dir.clone()), any::<bool>())
            .prop_map(|(p, d, deny, rec)| RandOp::Register(p, d, deny, rec)),
        (pod.clone(), pod.clone(), dir, any::<bool>()).prop_map(|(p, c, d, rec)| RandOp::Delegate(p, c, d, rec)),
        (pod.clone(), pod.clone()).prop_map(|(p, c)| RandOp::Reclaim(p, c)),
        pod.clone().prop_map(RandOp::Release),
        pod.clone().prop_map(RandOp::Adopt),
        pod.prop_map(RandOp::Die),
    ]
}

fn pod_name(i: usize) -> PodName {
    n(&format!("p{i}"))
}

fn rule(d: usize, recursive: bool) -> ScopeRule {
    ScopeRule::new(ScopePath::new(DIRS[d]).expect("path"), Permission::Write, recursive)
}

/// Every path the generated rules can touch, plus children of each.
fn probes() -> Vec<ScopePath> {
    DIRS.iter()
        .flat_map(|d| [d.to_string(), format!("{d}/f"), format!("{d}/f/g")])
        .map(|p| ScopePath::new(&p).expect("probe"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn at_most_one_live_pod_writes_any_path(ops in proptest::collection::vec(rand_op(), 1..40)) {
        let mut s = State::new();
        let probes = probes();
        for op in ops {
            let op = match op {
                RandOp::Register(p, d, deny, rec) => Op::Register(Register {
                    name: pod_name(p),
                    pid: 1,
                    start_time: 1,
                    socket: String::new(),
                    session: String::new(),
                    allow: vec![rule(d, rec)],
                    deny: deny.map(|x| vec![rule(x, true)]).unwrap_or_default(),
                    layers: BTreeMap::new(),
                    scratch: vec![],
                }),
                RandOp::Delegate(p, c, d, rec) => Op::Delegate(Delegate {
                    parent: pod_name(p), child: pod_name(c), rules: vec![rule(d, rec)], deny: vec![],
                }),
                RandOp::Reclaim(p, c) => Op::Reclaim { parent: pod_name(p), child: pod_name(c) },
                RandOp::Release(p) => Op::Release { name: pod_name(p) },
                RandOp::Adopt(p) => Op::Adopt(Adopt {
                    name: pod_name(p), pid: 100 + p as u32, start_time: 1, session: String::new(), socket: String::new(),
                    scratch: vec![],
                }),
                RandOp::Die(p) => match s.get(&pod_name(p)) {
                    Some(h) => Op::Forget { name: pod_name(p), pid: h.rec.pid, start_time: h.rec.start_time },
                    None => continue,
                },
            };
            if let Ok((plan, _)) = plan(&s, &op) {
                s.apply(plan);
            }
            prop_assert!(s.check_links().is_ok(), "{:?}", s.check_links());
            for path in &probes {
                let writers: Vec<String> = s.iter().filter(|h| h.scope.can_write(path)).map(|h| h.rec.name.to_string()).collect();
                prop_assert!(writers.len() <= 1, "{} writable by {:?}", path, writers);
            }
        }
    }
}

// -- request ids and authorization (plan_submission) -------------------------

mod submissions {
    use std::collections::BTreeMap;

    use super::*;
    use crate::answers::{RequestId, StreamId};
    use crate::auth::{Caller, Kernel, ProcId, Seen};

    /// The kernel as a table: pid -> what it says (absent: gone).
    #[derive(Default)]
    struct FakeKernel(BTreeMap<u32, Seen>);

    impl Kernel for FakeKernel {
        fn process(&self, pid: u32) -> Seen {
            self.0.get(&pid).copied().unwrap_or(Seen::Gone)
        }
    }

    impl FakeKernel {
        fn runs(mut self, pid: u32, start: u64, parent: u32) -> FakeKernel {
            self.0.insert(pid, Seen::Running { start, parent });
            self
        }
    }

    fn caller(pid: u32, start: u64, parent: Option<(u32, u64)>) -> Caller {
        Caller { process: ProcId { pid, start }, parent: parent.map(|(pid, start)| ProcId { pid, start }) }
    }

    fn submit(
        state: &mut State,
        op: Op,
        id: Option<RequestId>,
        who: Caller,
        kernel: &FakeKernel,
    ) -> Result<Reply, RegistryError> {
        let (plan, reply) = plan_submission(state, &Submission { op, id, caller: Some(who) }, kernel)?;
        state.apply(plan);
        state.check_links().expect("links consistent");
        Ok(reply)
    }

    fn pid_of(state: &State, name: &str) -> u32 {
        state.get(&n(name)).expect("registered").rec.pid
    }

    /// lead (pid 100) -> mid -> leaf, all running; the kernel knows them.
    fn tree() -> (State, FakeKernel) {
        let mut s = State::new();
        register(&mut s, "lead", vec![w("/r")], vec![]).expect("lead");
        spawn(&mut s, "lead", "mid", vec![w("/r/m")]);
        spawn(&mut s, "mid", "leaf", vec![w("/r/m/l")]);
        let kernel = FakeKernel::default().runs(100, 1, 50).runs(pid_of(&s, "mid"), 1, 100).runs(
            pid_of(&s, "leaf"),
            1,
            pid_of(&s, "mid"),
        );
        (s, kernel)
    }

    fn reclaim_op(parent: &str, child: &str) -> Op {
        Op::Reclaim { parent: n(parent), child: n(child) }
    }

    #[test]
    fn a_retried_reclaim_gets_the_first_answer_with_its_survivors() {
        let (mut s, kernel) = tree();
        let lead = caller(100, 1, Some((50, 9)));
        let id = RequestId { stream: StreamId(7), seq: 1 };
        let first = submit(&mut s, reclaim_op("lead", "mid"), Some(id), lead, &kernel).expect("reclaim");
        let Reply::Reclaimed(out) = &first else { panic!("{first:?}") };
        assert_eq!(out.reparented.len(), 1);
        let leaf = &out.reparented[0];
        assert_eq!((leaf.name.clone(), leaf.rules.clone(), leaf.start_time), (n("leaf"), vec![w("/r/m/l")], 1));
        let fence = s.next_fence();
        let again = submit(&mut s, reclaim_op("lead", "mid"), Some(id), lead, &kernel).expect("retry");
        assert_eq!(again, first, "the retry gets the first answer");
        assert_eq!(s.next_fence(), fence, "and changes nothing");
        // Without the id, a second reclaim finds mid gone and reports nobody:
        // the answer a retry must never get.
        let fresh = RequestId { stream: StreamId(7), seq: 2 };
        let Reply::Reclaimed(second) =
            submit(&mut s, reclaim_op("lead", "mid"), Some(fresh), lead, &kernel).expect("new")
        else {
            panic!("reply")
        };
        assert_eq!((second.removed, second.reparented.len()), (false, 0));
        let e = submit(&mut s, reclaim_op("lead", "mid"), Some(id), lead, &kernel).expect_err("stale");
        assert_eq!(e.code(), "registry.stale_request");
    }

    #[test]
    fn a_live_pods_allocation_changes_only_from_its_process_or_its_starter() {
        let (mut s, kernel) = tree();
        let stranger = caller(7, 3, Some((6, 2)));
        let release = || Op::Release { name: n("lead") };
        let e = submit(&mut s, release(), None, stranger, &kernel).expect_err("stranger");
        assert_eq!(e.code(), "registry.not_pod_process");
        let e = submit(&mut s, reclaim_op("lead", "mid"), None, stranger, &kernel).expect_err("stranger");
        assert_eq!(e.code(), "registry.not_parent_process");
        let delegate =
            Op::Delegate(Delegate { parent: n("lead"), child: n("x"), rules: vec![w("/r/x")], deny: vec![] });
        let e = submit(&mut s, delegate, None, stranger, &kernel).expect_err("stranger");
        assert_eq!(e.code(), "registry.not_pod_process");
        // The mid's own process may not reclaim itself from its parent...
        let mid = caller(pid_of(&s, "mid"), 1, Some((100, 1)));
        let e = submit(&mut s, reclaim_op("lead", "mid"), None, mid, &kernel).expect_err("not the parent");
        assert_eq!(e.code(), "registry.not_parent_process");
        // ...but the process that started lead (pid 50) acts for it.
        let starter = caller(50, 9, None);
        submit(&mut s, reclaim_op("lead", "mid"), None, starter, &kernel).expect("the starter");
    }

    #[test]
    fn pods_that_do_not_run_may_be_changed_by_anyone() {
        let (mut s, _) = tree();
        // The kernel has none of them: every process is gone.
        let nobody = FakeKernel::default();
        let stranger = caller(7, 3, None);
        submit(&mut s, reclaim_op("mid", "leaf"), None, stranger, &nobody).expect("both gone");
        submit(&mut s, Op::Release { name: n("lead") }, None, stranger, &nobody).expect("gone");
    }

    #[test]
    fn a_live_child_of_a_dead_parent_waits_for_its_parent() {
        let (mut s, _) = tree();
        let kernel = FakeKernel::default().runs(pid_of(&s, "leaf"), 1, 1);
        let e = submit(&mut s, reclaim_op("mid", "leaf"), None, caller(7, 3, None), &kernel).expect_err("live child");
        assert_eq!(e.code(), "registry.not_parent_process");
    }

    #[test]
    fn a_reservation_is_adopted_by_a_process_its_parent_started() {
        let (mut s, kernel) = tree();
        delegate(&mut s, "lead", "new", vec![w("/r/n")]).expect("delegate");
        let adopt = |pid| {
            Op::Adopt(Adopt {
                name: n("new"),
                pid,
                start_time: 4,
                session: "sn".into(),
                socket: "/n".into(),
                scratch: vec![],
            })
        };
        let e = submit(&mut s, adopt(7), None, caller(7, 4, Some((6, 2))), &kernel).expect_err("stranger");
        assert_eq!(e.code(), "registry.not_spawned_by_parent");
        submit(&mut s, adopt(8), None, caller(8, 4, Some((100, 1))), &kernel).expect("started by lead's process");
    }

    #[test]
    fn a_restored_pod_takes_back_only_pods_reparented_away_from_it() {
        let mut s = State::new();
        register(&mut s, "loner", vec![w("/l")], vec![]).expect("top-level of its own");
        let layers = [(n("loner"), vec![w("/l")])].into();
        let e = register_full(&mut s, "greedy", vec![w("/")], vec![], layers, "").expect_err("not its child");
        assert_eq!(e.code(), "registry.not_former_child");
    }
}

fn with_scratch(
    state: &mut State,
    name: &str,
    allow: Vec<ScopeRule>,
    scratch: &[&str],
) -> Result<Reply, RegistryError> {
    let scratch = scratch.iter().map(|s| ScopePath::new(s).expect("path")).collect();
    run(
        state,
        Op::Register(Register {
            name: n(name),
            pid: 100,
            start_time: 1,
            socket: String::new(),
            session: String::new(),
            allow,
            deny: vec![],
            layers: BTreeMap::new(),
            scratch,
        }),
    )
}

#[test]
fn scratch_paths_stay_apart_from_every_allocation_both_ways() {
    let mut s = State::new();
    with_scratch(&mut s, "lead", vec![w("/repo")], &["/cache"]).expect("disjoint");
    // Shared by several Pods.
    with_scratch(&mut s, "other", vec![w("/elsewhere")], &["/cache"]).expect("shared scratch");
    // A new allocation over an existing scratch path.
    let err = register(&mut s, "greedy", vec![w("/cache/sub")], vec![]).expect_err("over scratch");
    assert_eq!(err.code(), "registry.scratch_overlap");
    assert_eq!(
        err.to_string(),
        "write /cache/sub/** overlaps scratch path /cache of pod lead; no allocation may cover a scratch path"
    );
    // A new scratch path over an existing allocation, and over its own.
    let err = with_scratch(&mut s, "tool", vec![w("/tmp/t")], &["/repo/target"]).expect_err("inside lead");
    assert_eq!(
        err.to_string(),
        "scratch path /repo/target overlaps pod lead's write /repo/**; a scratch path lies outside every allocation"
    );
    let err = with_scratch(&mut s, "mine", vec![w("/own")], &["/"]).expect_err("around its own");
    assert_eq!(err.code(), "registry.scratch_overlap");
    assert!(err.to_string().starts_with("scratch path / overlaps pod "), "{err}");
    // A refused claim changed nothing.
    assert!(s.get(&n("greedy")).is_none() && s.get(&n("tool")).is_none() && s.get(&n("mine")).is_none());
    // Read rules never conflict with scratch.
    with_scratch(&mut s, "reader", vec![w("/r2"), r("/cache")], &[]).expect("reads are fine");
}

#[test]
fn a_child_takes_its_scratch_at_adopt() {
    let mut s = State::new();
    register(&mut s, "lead", vec![w("/repo")], vec![]).expect("lead");
    with_scratch(&mut s, "other", vec![w("/o")], &[]).expect("other");
    delegate(&mut s, "lead", "c", vec![w("/repo/c")]).expect("delegate");
    let adopt = |scratch: Vec<ScopePath>| {
        Op::Adopt(Adopt { name: n("c"), pid: 7, start_time: 1, session: "sc".into(), socket: "/x".into(), scratch })
    };
    let err = run(&mut s, adopt(vec![ScopePath::new("/o/cache").expect("path")])).expect_err("in other");
    assert_eq!(err.code(), "registry.scratch_overlap");
    run(&mut s, adopt(vec![ScopePath::new("/c-cache").expect("path")])).expect("outside");
    assert_eq!(s.get(&n("c")).expect("c").rec.scratch, vec![ScopePath::new("/c-cache").expect("path")]);
    let err = register(&mut s, "late", vec![w("/c-cache")], vec![]).expect_err("covers the child's scratch");
    assert_eq!(err.code(), "registry.scratch_overlap");
    // Reclaimed, the child's scratch path is nobody's any more.
    reclaim(&mut s, "lead", "c").expect("reclaim");
    assert_eq!(s.scratch_holders().count(), 0);
    register(&mut s, "late", vec![w("/c-cache")], vec![]).expect("free now");
}
