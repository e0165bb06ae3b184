//! Who may do what: the rights matrix on resolved keys, the caller's
//! standing in a layer, and which lead a call addresses.

mod common;

use common::*;
use pod_kv::rights::{check_read, check_write};
use pod_kv::{address, role, Asker, Caller, Identity, Key, Lineage, Reach, Relation, Route};

#[test]
fn the_rights_matrix() {
    let callers = [operator(), lead(), member("w1"), member("w2"), Caller::TreePod(pod("g"))];
    let keys = ["/ref/x", "/shared/x", "/peer/w1/x", "/peer/lead/x"];
    let mut out = String::new();
    for caller in &callers {
        for raw in keys {
            let key = Key::resolve(raw, caller).expect("valid key");
            let cell = |r: Result<(), pod_kv::KvError>| match r {
                Ok(()) => "yes".to_string(),
                Err(e) => e.code().trim_start_matches("kv.").to_string(),
            };
            out.push_str(&format!(
                "{:<14} {:<13} read {:<16} write {:<18} write --override {}\n",
                caller.to_string(),
                raw,
                cell(check_read(caller, &key)),
                cell(check_write(caller, &key, false)),
                cell(check_write(caller, &key, true)),
            ));
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn a_write_right_always_comes_with_the_read_right() {
    let callers = [operator(), lead(), member("w1"), member("w2"), Caller::TreePod(pod("g"))];
    for caller in &callers {
        for raw in ["/ref/a", "/shared/a", "/peer/w1/a", "/peer/w2/a", "/peer/lead/a", "/peer/g/a"] {
            let key = Key::resolve(raw, caller).expect("valid key");
            for overriding in [false, true] {
                if check_write(caller, &key, overriding).is_ok() {
                    assert!(check_read(caller, &key).is_ok(), "{caller} writes {raw} but cannot read it");
                }
            }
        }
    }
}

#[test]
fn standing_comes_from_the_kernels_identity_and_the_leads_children() {
    let lead_name = name("lead");
    let as_pod = |relation| Identity::Pod { pod: pod("p"), relation };
    let cases = [
        (Identity::Operator, Reach::Layer, false),
        (as_pod(Relation::Lead), Reach::Layer, false),
        (as_pod(Relation::Child), Reach::Layer, false),
        (as_pod(Relation::Descendant), Reach::Layer, false),
        (as_pod(Relation::Outside), Reach::Layer, false),
        (Identity::Operator, Reach::Tree, true),
        (as_pod(Relation::Descendant), Reach::Tree, true),
        (as_pod(Relation::Outside), Reach::Tree, true),
        (as_pod(Relation::Child), Reach::Tree, false),
    ];
    let out: String = cases
        .iter()
        .map(|(identity, reach, root)| {
            let standing = match role(identity, &lead_name, *reach, *root) {
                Ok(caller) => caller.to_string(),
                Err(e) => format!("[{}] {e}", e.code()),
            };
            let who = match identity {
                Identity::Operator => "operator".to_string(),
                Identity::Pod { relation, .. } => format!("pod p ({relation:?})"),
            };
            format!("{who:<22} {reach:?} lead_is_root={root}: {standing}\n")
        })
        .collect();
    insta::assert_snapshot!(out);
}

#[test]
fn which_lead_a_call_goes_to() {
    let lineage = |n: &str, parent: Option<&str>, root: &str| {
        Asker::Pod(Lineage { name: name(n), parent: parent.map(name), root: name(root) })
    };
    let w1 = lineage("w1", Some("s1"), "root");
    let s1 = lineage("s1", Some("root"), "root");
    let root = lineage("root", None, "root");
    let route = |layer: Option<&str>, reach| Route { layer: layer.map(name), reach };
    let cases = [
        ("w1", &w1, route(None, Reach::Layer), None),
        ("w1", &w1, route(Some("s1"), Reach::Layer), None),
        ("w1", &w1, route(Some("w1"), Reach::Layer), None),
        ("w1", &w1, route(Some("root"), Reach::Layer), None),
        ("w1", &w1, route(Some("s2"), Reach::Layer), None),
        ("s1", &s1, route(None, Reach::Layer), None),
        ("s1", &s1, route(Some("s1"), Reach::Layer), None),
        ("root", &root, route(None, Reach::Layer), None),
        ("operator", &Asker::Operator, route(None, Reach::Layer), None),
        ("operator", &Asker::Operator, route(Some("s1"), Reach::Layer), None),
        ("w1", &w1, route(None, Reach::Tree), None),
        ("w1", &w1, route(Some("s2"), Reach::Tree), Some("root")),
        ("w1", &w1, route(Some("x"), Reach::Tree), Some("other")),
        ("w1", &w1, route(Some("ghost"), Reach::Tree), None),
        ("operator", &Asker::Operator, route(None, Reach::Tree), None),
        ("operator", &Asker::Operator, route(Some("w1"), Reach::Tree), Some("root")),
    ];
    let out: String = cases
        .iter()
        .map(|(who, asker, route, named_root)| {
            let target = match address(asker, route, named_root.map(name).as_ref()) {
                Ok(lead) => lead.to_string(),
                Err(e) => format!("[{}] {e}", e.code()),
            };
            format!("{who} --layer {:?} {:?}: {target}\n", route.layer.as_ref().map(|l| l.to_string()), route.reach)
        })
        .collect();
    insta::assert_snapshot!(out);
}
