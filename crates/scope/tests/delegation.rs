//! Every refusal of the scope model, and the deciding rule `pod check` prints.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use scope::limits::{MAX_BASE_RULES, MAX_LAYERS, MAX_LAYER_RULES};
use scope::{Decider, Permission, PodName, Scope, ScopeError, ScopePath, ScopeRule, ScopeSnapshot};

fn p(s: &str) -> ScopePath {
    ScopePath::new(s).unwrap()
}
fn n(s: &str) -> PodName {
    PodName::new(s).unwrap()
}
fn w(s: &str) -> ScopeRule {
    ScopeRule::write(p(s))
}
fn r(s: &str) -> ScopeRule {
    ScopeRule::read(p(s))
}

/// allow write /repo, read /usr; deny write /repo/vendor, deny read /repo/secrets.
fn repo() -> Scope {
    Scope::new(
        vec![w("/repo"), r("/usr")],
        vec![w("/repo/vendor"), ScopeRule::new(p("/repo/secrets"), Permission::Read, true)],
    )
    .unwrap()
}

fn refusal(scope: &mut Scope, child: &str, rules: Vec<ScopeRule>) -> ScopeError {
    let before = scope.clone();
    let err = scope.delegate(n(child), rules).unwrap_err();
    assert_eq!(*scope, before, "a refused delegation changed the scope");
    err
}

#[test]
fn delegate_then_reclaim_restores_parent_write() {
    let mut s = repo();
    assert!(s.can_write(&p("/repo/src/main.rs")));
    s.delegate(n("helper"), vec![w("/repo/src")]).unwrap();
    let v = s.permission_at(&p("/repo/src/main.rs"));
    assert_eq!(v.permission, Some(Permission::Read));
    assert_eq!(v.decided_by.to_string(), "delegated to helper: write /repo/src/**");
    assert_eq!(s.reclaim(&n("helper")), Some(vec![w("/repo/src")]));
    assert!(s.can_write(&p("/repo/src/main.rs")));
    assert_eq!(s.reclaim(&n("helper")), None);
}

#[test]
fn duplicate_child_is_refused() {
    let mut s = repo();
    s.delegate(n("helper"), vec![w("/repo/a")]).unwrap();
    let e = refusal(&mut s, "helper", vec![w("/repo/b")]);
    assert_eq!(e.code(), "scope.duplicate_child");
}

#[test]
fn write_outside_base_is_refused() {
    let mut s = repo();
    let e = refusal(&mut s, "helper", vec![w("/etc")]);
    assert_eq!(e.code(), "scope.write_outside");
    insta::assert_snapshot!("write_outside", e);
    // A read-only allow does not make write delegable.
    assert_eq!(refusal(&mut s, "helper", vec![w("/usr/lib")]).code(), "scope.write_outside");
    // Recursive rule under a non-recursive allow is not inside it.
    let mut flat = Scope::new(vec![ScopeRule::new(p("/repo"), Permission::Write, false)], vec![]).unwrap();
    assert_eq!(refusal(&mut flat, "helper", vec![w("/repo")]).code(), "scope.write_outside");
}

#[test]
fn write_overlapping_a_deny_is_refused_and_names_the_deny() {
    let mut s = repo();
    let e = refusal(&mut s, "helper", vec![w("/repo")]);
    assert_eq!(e.code(), "scope.overlaps_deny");
    insta::assert_snapshot!("overlaps_deny", e);
    assert_eq!(refusal(&mut s, "helper", vec![w("/repo/vendor/x")]).code(), "scope.overlaps_deny");
}

#[test]
fn write_overlapping_a_sibling_layer_is_refused() {
    let mut s = repo();
    s.delegate(n("a"), vec![w("/repo/src")]).unwrap();
    let e = refusal(&mut s, "b", vec![w("/repo/src/lib")]);
    assert_eq!(e.code(), "scope.overlaps_layer");
    insta::assert_snapshot!("overlaps_layer", e);
    assert_eq!(
        refusal(&mut s, "b", vec![ScopeRule::new(p("/repo"), Permission::Write, false)]).code(),
        "scope.overlaps_deny"
    );
    // Siblings may share read.
    s.delegate(n("b"), vec![r("/repo/src"), w("/repo/docs")]).unwrap();
}

#[test]
fn read_outside_base_or_read_denied_is_refused() {
    let mut s = repo();
    assert_eq!(refusal(&mut s, "h", vec![r("/etc")]).code(), "scope.read_outside");
    let e = refusal(&mut s, "h", vec![r("/repo/secrets/key")]);
    assert_eq!(e.code(), "scope.read_denied");
    // A write-deny leaves read: reading vendor may be delegated.
    s.delegate(n("h"), vec![r("/repo/vendor")]).unwrap();
}

#[test]
fn empty_and_oversized_delegations_are_refused() {
    let mut s = repo();
    assert_eq!(refusal(&mut s, "h", vec![]).code(), "scope.empty_delegation");
    let many: Vec<ScopeRule> = (0..=MAX_LAYER_RULES).map(|i| w(&format!("/repo/m{i}"))).collect();
    assert_eq!(refusal(&mut s, "h", many).code(), "scope.too_many_rules");
}

#[test]
fn too_many_layers_is_refused() {
    let mut s = Scope::new(vec![w("/r")], vec![]).unwrap();
    for i in 0..MAX_LAYERS {
        s.delegate(n(&format!("c{i}")), vec![w(&format!("/r/{i}"))]).unwrap();
    }
    assert_eq!(refusal(&mut s, "one-more", vec![w("/r/x")]).code(), "scope.too_many_layers");
}

#[test]
fn oversized_base_is_refused() {
    let many: Vec<ScopeRule> = (0..=MAX_BASE_RULES).map(|i| w(&format!("/r/{i}"))).collect();
    assert_eq!(Scope::new(many.clone(), vec![]).unwrap_err().code(), "scope.too_many_rules");
    assert_eq!(Scope::new(vec![], many).unwrap_err().code(), "scope.too_many_rules");
}

#[test]
fn snapshot_with_overlapping_layers_is_corrupt() {
    let snapshot = ScopeSnapshot {
        allow: vec![w("/r")],
        deny: vec![],
        layers: BTreeMap::from([(n("a"), vec![w("/r/x")]), (n("b"), vec![w("/r/x/y")])]),
    };
    let e = Scope::from_snapshot(snapshot).unwrap_err();
    assert_eq!(e.code(), "scope.layers_overlap");
}

#[test]
fn deciding_rule_for_each_outcome() {
    let mut s = repo();
    s.delegate(n("h"), vec![w("/repo/src")]).unwrap();
    let cases = [
        ("/repo/README.md", Some(Permission::Write), "allow write /repo/**"),
        ("/repo/vendor/lib.rs", Some(Permission::Read), "deny write /repo/vendor/**"),
        ("/repo/secrets/key", None, "deny read /repo/secrets/**"),
        ("/repo/src/x", Some(Permission::Read), "delegated to h: write /repo/src/**"),
        ("/usr/bin/ls", Some(Permission::Read), "allow read /usr/**"),
        ("/etc/passwd", None, "no rule covers this path"),
    ];
    for (path, perm, decider) in cases {
        let v = s.permission_at(&p(path));
        assert_eq!((v.permission, v.decided_by.to_string().as_str()), (perm, decider), "at {path}");
    }
    assert!(matches!(s.permission_at(&p("/etc")).decided_by, Decider::NoRule));
}

#[test]
fn read_deny_beats_write_deny_and_layers() {
    let mut s =
        Scope::new(vec![w("/r")], vec![w("/r/a"), ScopeRule::new(p("/r/a/b"), Permission::Read, true)]).unwrap();
    s.delegate(n("c"), vec![w("/r/x")]).unwrap();
    let v = s.permission_at(&p("/r/a/b/c"));
    assert_eq!(v.permission, None);
    assert_eq!(v.decided_by.to_string(), "deny read /r/a/b/**");
}

#[test]
fn adopting_reclaim_refuses_orphans_outside_the_layer_and_changes_nothing() {
    let mut s = repo();
    s.delegate(n("mid"), vec![w("/repo/src")]).unwrap();
    let before = s.clone();
    let outside = BTreeMap::from([(n("g"), vec![w("/repo/docs")])]);
    assert_eq!(s.reclaim_adopting(&n("mid"), &outside).unwrap_err().code(), "scope.write_outside");
    assert_eq!(s, before);
    let inside = BTreeMap::from([(n("g"), vec![w("/repo/src/ui")])]);
    assert_eq!(s.reclaim_adopting(&n("mid"), &inside).unwrap(), Some(vec![w("/repo/src")]));
    assert!(s.can_write(&p("/repo/src/lib.rs")));
    assert!(!s.can_write(&p("/repo/src/ui/app.rs")));
    assert_eq!(s.reclaim_adopting(&n("mid"), &inside).unwrap(), None);
}
