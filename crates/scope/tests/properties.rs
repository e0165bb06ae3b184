//! Property tests of the scope algebra. Paths are drawn from a small universe
//! (components a, b, c; depth <= 3) so that random rules overlap often and
//! region operations can be checked against brute-force membership over the
//! whole universe.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use scope::{Permission, PodName, Region, Scope, ScopePath, ScopeRule};

const CASES: u32 = 1000;

fn universe() -> Vec<ScopePath> {
    let mut out = vec![ScopePath::root()];
    let mut frontier = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for prefix in &frontier {
            for c in ["a", "b", "c"] {
                let p = format!("{prefix}/{c}");
                out.push(ScopePath::new(&p).unwrap());
                next.push(p);
            }
        }
        frontier = next;
    }
    out
}

fn path() -> impl Strategy<Value = ScopePath> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..=3)
        .prop_map(|parts| ScopePath::new(&format!("/{}", parts.join("/"))).unwrap())
}

fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![Just(Permission::Read), Just(Permission::Write)]
}

fn rule() -> impl Strategy<Value = ScopeRule> {
    (path(), permission(), any::<bool>()).prop_map(|(t, p, r)| ScopeRule::new(t, p, r))
}

fn region() -> impl Strategy<Value = Region> {
    (path(), 0..3u8).prop_map(|(p, k)| match k {
        0 => Region::Subtree(p),
        1 => Region::Level(p),
        _ => Region::Point(p),
    })
}

fn child() -> impl Strategy<Value = PodName> {
    (0..6u8).prop_map(|i| PodName::new(format!("c{i}")).unwrap())
}

/// A base that grants write somewhere, with some deny rules.
fn base() -> impl Strategy<Value = Scope> {
    (prop::collection::vec(rule(), 1..4), prop::collection::vec(rule(), 0..3)).prop_map(|(mut allow, deny)| {
        allow.push(ScopeRule::write(ScopePath::new("/a").unwrap()));
        Scope::new(allow, deny).unwrap()
    })
}

#[derive(Debug, Clone)]
enum Op {
    Delegate(PodName, Vec<ScopeRule>),
    Reclaim(PodName),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (child(), prop::collection::vec(rule(), 1..3)).prop_map(|(c, r)| Op::Delegate(c, r)),
        2 => child().prop_map(Op::Reclaim),
    ]
}

fn apply(scope: &mut Scope, op: &Op) {
    match op {
        Op::Delegate(c, rules) => {
            let before = scope.clone();
            if scope.delegate(c.clone(), rules.clone()).is_err() {
                assert_eq!(*scope, before, "a refused delegation changed the scope");
            }
        }
        Op::Reclaim(c) => {
            scope.reclaim(c);
        }
    }
}

/// Paths a rule covers, from the universe.
fn covered(rule: &ScopeRule, universe: &[ScopePath]) -> Vec<ScopePath> {
    universe.iter().filter(|p| rule.covers_path(p)).cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn reclaim_undoes_delegate(s in base(), ops in prop::collection::vec(op(), 0..6), c in child(), rules in prop::collection::vec(rule(), 1..3)) {
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        let before = s.clone();
        if s.delegate(c.clone(), rules).is_ok() {
            prop_assert!(s.reclaim(&c).is_some());
            prop_assert_eq!(s, before);
        }
    }

    #[test]
    fn reclaim_twice_equals_reclaim_once(s in base(), ops in prop::collection::vec(op(), 0..8), c in child()) {
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        s.reclaim(&c);
        let once = s.clone();
        prop_assert!(s.reclaim(&c).is_none(), "second reclaim reported a change");
        prop_assert_eq!(s, once);
    }

    #[test]
    fn reclaims_commute(s in base(), ops in prop::collection::vec(op(), 0..8), order in Just(()).prop_perturb(|_, mut rng| {
        let mut v: Vec<u8> = (0..6).collect();
        for i in (1..v.len()).rev() { v.swap(i, (rng.next_u32() as usize) % (i + 1)); }
        v
    })) {
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        let mut forward = s.clone();
        let mut shuffled = s;
        for i in 0..6u8 { forward.reclaim(&PodName::new(format!("c{i}")).unwrap()); }
        for i in &order { shuffled.reclaim(&PodName::new(format!("c{i}")).unwrap()); }
        prop_assert_eq!(&forward, &shuffled);
        prop_assert!(forward.layers().is_empty());
    }

    #[test]
    fn base_is_unchanged_by_any_sequence(s in base(), ops in prop::collection::vec(op(), 0..12)) {
        let (allow, deny) = (s.allow().to_vec(), s.deny().to_vec());
        let mut s = s;
        for o in &ops {
            apply(&mut s, o);
            prop_assert_eq!(s.allow(), allow.as_slice());
            prop_assert_eq!(s.deny(), deny.as_slice());
        }
    }

    #[test]
    fn delegated_write_leaves_the_parent(s in base(), ops in prop::collection::vec(op(), 0..8)) {
        let universe = universe();
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        for (child, rules) in s.layers() {
            for rule in rules.iter().filter(|r| r.permission == Permission::Write) {
                for p in covered(rule, &universe) {
                    prop_assert!(!s.can_write(&p), "parent can still write {} delegated to {}", p, child);
                }
            }
        }
    }

    #[test]
    fn delegated_rules_were_inside_the_parent(s in base(), ops in prop::collection::vec(op(), 0..8), c in child(), rules in prop::collection::vec(rule(), 1..3)) {
        let universe = universe();
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        let before = s.clone();
        if s.delegate(c, rules.clone()).is_ok() {
            for rule in &rules {
                for p in covered(rule, &universe) {
                    prop_assert!(before.permission_at(&p).allows(rule.permission),
                        "{} delegated but the parent had no {} at {}", rule, rule.permission, p);
                }
            }
        }
    }

    #[test]
    fn effective_is_base_capped_by_layers(s in base(), ops in prop::collection::vec(op(), 0..8), p in path()) {
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        let granted = s.allow().iter().filter(|r| r.covers_path(&p)).map(|r| r.permission).max();
        let mut cap = granted;
        for d in s.deny().iter().filter(|r| r.covers_path(&p)) {
            let limit = if d.permission == Permission::Write { Some(Permission::Read) } else { None };
            cap = cap.min(limit);
        }
        let delegated = s.layers().values().flatten().any(|r| r.permission == Permission::Write && r.covers_path(&p));
        if delegated { cap = cap.min(Some(Permission::Read)); }
        prop_assert_eq!(s.permission_at(&p).permission, cap);
    }

    #[test]
    fn non_recursive_rule_covers_target_and_children_only(t in path(), c1 in "[abc]", c2 in "[abc]") {
        let rule = ScopeRule::new(t.clone(), Permission::Write, false);
        let child = t.join_component(&c1).unwrap();
        let grandchild = child.join_component(&c2).unwrap();
        prop_assert!(rule.covers_path(&t));
        prop_assert!(rule.covers_path(&child));
        prop_assert!(!rule.covers_path(&grandchild));
        let s = Scope::new(vec![rule], vec![]).unwrap();
        prop_assert!(s.can_write(&child));
        prop_assert!(!s.can_write(&grandchild));
    }

    #[test]
    fn normalization_is_idempotent(raw in "(/(a|b|\\.|\\.\\.|)){0,8}/?") {
        let raw = if raw.is_empty() { "/".to_string() } else { raw };
        let once = ScopePath::new(&raw).unwrap();
        let twice = ScopePath::new(once.as_str()).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn region_algebra_matches_membership(a in region(), b in region()) {
        let universe = universe();
        let inter = a.intersect(&b);
        for p in &universe {
            let both = a.contains(p) && b.contains(p);
            prop_assert_eq!(inter.as_ref().is_some_and(|r| r.contains(p)), both, "intersect at {}", p);
        }
        prop_assert_eq!(a.overlaps(&b), universe.iter().any(|p| a.contains(p) && b.contains(p)));
        let covers = universe.iter().all(|p| !b.contains(p) || a.contains(p));
        // Subtrees are infinite; the finite universe is deep enough for every
        // shape except a Level or Point containing a Subtree, which is false.
        prop_assert_eq!(a.covers(&b), covers && (matches!(a, Region::Subtree(_)) || !matches!(b, Region::Subtree(_))));
    }

    #[test]
    fn rule_shortcuts_match_region_algebra(a in rule(), b in rule()) {
        prop_assert_eq!(a.overlaps(&b), a.region().overlaps(&b.region()));
        prop_assert_eq!(a.covers(&b), a.region().covers(&b.region()));
    }

    #[test]
    fn incremental_index_equals_rebuilt_index(s in base(), ops in prop::collection::vec(op(), 0..16)) {
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        let rebuilt = Scope::from_snapshot(s.snapshot().clone()).unwrap();
        for p in universe() {
            prop_assert_eq!(s.permission_at(&p), rebuilt.permission_at(&p), "at {}", p);
        }
    }

    #[test]
    fn snapshot_round_trips_exactly(s in base(), ops in prop::collection::vec(op(), 0..8)) {
        let mut s = s;
        for o in &ops { apply(&mut s, o); }
        let bytes = rmp_serde::to_vec_named(s.snapshot()).unwrap();
        let back: scope::ScopeSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        let json = serde_json::to_string(s.snapshot()).unwrap();
        let back_json: scope::ScopeSnapshot = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, s.snapshot());
        prop_assert_eq!(&back_json, s.snapshot());
        prop_assert_eq!(Scope::from_snapshot(back).unwrap(), s);
    }

    #[test]
    fn adopting_reclaim_keeps_grandchild_regions_excluded(s in base(), g in prop::collection::vec(rule(), 1..3)) {
        let universe = universe();
        let mut s = s;
        let middle = PodName::new("middle").unwrap();
        let mid_rule = ScopeRule::write(ScopePath::new("/a").unwrap());
        if s.delegate(middle.clone(), vec![mid_rule]).is_err() { return Ok(()); }
        let writes: Vec<ScopeRule> = g.into_iter().filter(|r| r.permission == Permission::Write).collect();
        let orphans = BTreeMap::from([(PodName::new("grand").unwrap(), writes.clone())]);
        let result = s.reclaim_adopting(&middle, &orphans);
        if writes.iter().all(|r| r.target.is_within(&ScopePath::new("/a").unwrap())) {
            prop_assert!(result.unwrap().is_some());
            for r in &writes {
                for p in covered(r, &universe) { prop_assert!(!s.can_write(&p)); }
            }
            prop_assert!(s.layer(&middle).is_none());
        } else {
            prop_assert!(result.is_err());
        }
    }
}
