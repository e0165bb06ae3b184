//! Keys, patterns and lease names: every rule of their spelling, each
//! refusal with its own code and whole message, and `/peer/self` resolved
//! before anything else.

mod common;

use common::*;
use pod_kv::{Caller, Key, KvError, LeaseName, Namespace, Pattern};

fn table(rows: Vec<(String, Result<String, KvError>)>) -> String {
    let spelled = |raw: &str| if raw.len() > 80 { format!("<{} bytes>", raw.len()) } else { format!("{raw:?}") };
    rows.into_iter()
        .map(|(raw, r)| match r {
            Ok(resolved) => format!("{} -> {}\n", spelled(&raw), spelled(&resolved)),
            Err(e) => format!("{} -> [{}] {e}\n", spelled(&raw), e.code()),
        })
        .collect()
}

#[test]
fn keys_are_validated_never_normalized() {
    let long = format!("/shared/{}", "x".repeat(505));
    let spellings = [
        "/shared/progress",
        "/ref/tasks/1",
        "/peer/w1/result",
        "/peer/self/result",
        "/shared/A.b_c-9",
        "",
        "shared/x",
        "/peer//w2/x",
        "/peer/./w2/x",
        "/peer/w2/../w2/x",
        "/shared/x/",
        "/",
        "/shared/a b",
        "/shared/caf\u{e9}",
        "/shared/x*",
        "/shared/a\0b",
        &long,
        "/secret/x",
        "/Shared/x",
        "/shared",
        "/ref",
        "/peer/w1",
        "/peer",
        "/peer/W1/x",
        "/peer/-w/x",
        "/leases/build",
    ];
    let caller = member("w1");
    let rows =
        spellings.iter().map(|raw| (raw.to_string(), Key::resolve(raw, &caller).map(|k| k.to_string()))).collect();
    insta::assert_snapshot!(table(rows));
}

#[test]
fn the_limit_is_on_the_stored_key_after_self_is_resolved() {
    let long_name = "w".repeat(64);
    let caller = Caller::Member(pod(&long_name));
    // 512 bytes as spelled, 572 once `self` becomes the 64-byte name.
    let raw = format!("/peer/self/{}", "k".repeat(512 - "/peer/self/".len()));
    assert_eq!(raw.len(), 512);
    let e = Key::resolve(&raw, &caller).expect_err("too long once resolved");
    assert_eq!(e.code(), "kv.key_too_long");
    assert_eq!(e.to_string().split(": ").nth(1), Some("it is 572 bytes long; the limit is 512"));
    let fits = format!("/peer/self/{}", "k".repeat(512 - "/peer/self/".len() - 60));
    let key = Key::resolve(&fits, &caller).expect("fits");
    assert_eq!(key.as_str().len(), 512);
    assert_eq!(key.namespace(), &Namespace::Peer(name(&long_name)));
}

#[test]
fn self_names_the_callers_own_slot_and_the_operator_has_none() {
    for (caller, expect) in [(member("w1"), "/peer/w1/r"), (lead(), "/peer/lead/r")] {
        assert_eq!(Key::resolve("/peer/self/r", &caller).expect("own slot").as_str(), expect);
    }
    let e = Key::resolve("/peer/self/r", &operator()).expect_err("no slot");
    insta::assert_snapshot!(format!("[{}] {e}", e.code()), @"[kv.no_slot] the operator has no /peer/self slot: it never acts as a member (write /peer/MEMBER/... with --override)");
    // Only the member segment: elsewhere `self` is an ordinary segment.
    assert_eq!(Key::resolve("/shared/self", &operator()).expect("plain").as_str(), "/shared/self");
    assert_eq!(Key::resolve("/peer/w1/self", &member("w1")).expect("plain").as_str(), "/peer/w1/self");
}

#[test]
fn a_stored_key_is_checked_again_when_read_back() {
    let key: Key = rmp_serde::from_slice(&rmp_serde::to_vec(&"/shared/x").expect("encode")).expect("decode");
    assert_eq!(key.as_str(), "/shared/x");
    for bad in ["/peer//w2/x", "/leases/x", "/other/x"] {
        let bytes = rmp_serde::to_vec(&bad).expect("encode");
        assert!(rmp_serde::from_slice::<Key>(&bytes).is_err(), "{bad} decoded as a key");
    }
}

#[test]
fn patterns_allow_whole_segment_wildcards_only() {
    let long = format!("/shared/{}", "x".repeat(505));
    let many = "/*".repeat(33);
    let spellings = [
        "/**",
        "/*/*",
        "/peer/*/*",
        "/peer/self/**",
        "/shared/tasks/*",
        "/shared/x",
        "/pee[r]/*/*",
        "/shared/task-*",
        "/shared/?",
        "/peer//w2/*",
        "/peer/./w2/*",
        "/peer/w2/../*",
        "",
        "**",
        "/leases/*",
        "/secret/**",
        "/shared",
        "/peer/w1",
        "/peer/W1/*",
        &long,
        &many,
    ];
    let caller = member("w1");
    let rows = spellings
        .iter()
        .map(|raw| (raw.to_string(), Pattern::resolve(raw, &caller).map(|p| p.as_str().to_string())))
        .collect();
    insta::assert_snapshot!(table(rows));
    let e = Pattern::resolve("/peer/self/*", &operator()).expect_err("no slot");
    assert_eq!(e.code(), "kv.no_slot");
}

#[test]
fn lease_names_are_one_segment() {
    let long = "n".repeat(512 - "/leases/".len() + 1);
    let spellings = ["build", "deploy.lock", "", ".", "..", "a/b", "a b", &long];
    let rows = spellings.iter().map(|raw| (raw.to_string(), LeaseName::new(raw).map(|n| n.key()))).collect();
    insta::assert_snapshot!(table(rows));
}
