//! The key operations, rule by rule: get, set, cas, delete, list, wait, and
//! every limit (each refused with its code, nothing changed).

mod common;

use common::*;
use pod_kv::limits::{MAX_KEYS, MAX_LIST, MAX_SLOTS, MAX_VALUE_BYTES, MAX_WAITERS, MAX_WAIT_MS};
use pod_kv::{Event, Expect, Found, KvError, Op, Outcome, Ticket, Writer};

fn found(outcome: Outcome) -> Found {
    match outcome {
        Outcome::Found(f) => f,
        other => panic!("expected a value, got {other:?}"),
    }
}

fn listed(outcome: Outcome) -> (Vec<String>, bool) {
    match outcome {
        Outcome::Listed(l) => (l.entries.iter().map(|e| e.key.to_string()).collect(), l.truncated),
        other => panic!("expected a listing, got {other:?}"),
    }
}

fn ticket(outcome: Outcome) -> Ticket {
    match outcome {
        Outcome::Waiting { ticket } | Outcome::Queued { ticket } => ticket,
        other => panic!("expected a wait, got {other:?}"),
    }
}

#[test]
fn get_returns_the_value_as_written_with_its_version_writer_and_time() {
    let mut w = World::new();
    assert_eq!(version(&w.ok(&member("w1"), &set("/peer/self/result", "42"), &at(10))), 1);
    let f = found(w.ok(&member("w1"), &get("/peer/w1/result"), &at(11)));
    assert_eq!(f.value, b"42");
    assert_eq!((f.version, f.written_by, f.written_at_ms), (1, Writer::Pod(name("w1")), EPOCH_MS + 10));
    w.ok(&operator(), &set("/ref/plan", "p"), &at(12));
    let f = found(w.ok(&member("w1"), &get("/ref/plan"), &at(13)));
    assert_eq!((f.written_by.to_string(), f.version), ("operator".to_string(), 1));
    let e = w.refused(&member("w1"), &get("/shared/none"), &at(14));
    assert_eq!((e.code(), e.to_string()), ("kv.not_found", "no key /shared/none".to_string()));
}

#[test]
fn set_returns_a_new_version_each_time() {
    let mut w = World::new();
    let versions: Vec<u64> =
        (0..3).map(|i| version(&w.ok(&member("w1"), &set("/shared/n", &i.to_string()), &at(i)))).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert_eq!(found(w.ok(&lead(), &get("/shared/n"), &at(9))).value, b"2");
}

#[test]
fn cas_on_version_and_on_absence() {
    let mut w = World::new();
    let m = member("w1");
    assert_eq!(version(&w.ok(&m, &cas("/shared/lock", 0, "a"), &at(1))), 1);
    let e = w.refused(&m, &cas("/shared/lock", 0, "b"), &at(2));
    assert_eq!(e, KvError::VersionMismatch { key: "/shared/lock".into(), expected: 0, actual: Some(1) });
    let e = w.refused(&m, &cas("/shared/lock", 7, "b"), &at(3));
    assert_eq!(e.code(), "kv.version_mismatch");
    assert_eq!(version(&w.ok(&m, &cas("/shared/lock", 1, "b"), &at(4))), 2);
    let e = w.refused(&m, &cas("/shared/absent", 3, "x"), &at(5));
    assert_eq!(e, KvError::VersionMismatch { key: "/shared/absent".into(), expected: 3, actual: None });
}

#[test]
fn delete_then_write_again_gives_a_higher_version() {
    let mut w = World::new();
    let m = member("w1");
    for _ in 0..3 {
        w.ok(&m, &set("/peer/self/x", "v"), &at(1));
    }
    assert_eq!(w.ok(&m, &rm("/peer/self/x"), &at(2)), Outcome::Deleted { key: key("/peer/w1/x"), version: 3 });
    assert_eq!(w.refused(&m, &get("/peer/w1/x"), &at(3)).code(), "kv.not_found");
    assert_eq!(w.refused(&m, &rm("/peer/w1/x"), &at(3)).code(), "kv.not_found");
    // Absent again, so cas 0 applies; the version is above every earlier one.
    assert_eq!(version(&w.ok(&m, &cas("/peer/w1/x", 0, "again"), &at(4))), 4);
}

fn key(raw: &str) -> pod_kv::Key {
    pod_kv::Key::stored(raw).expect("key")
}

#[test]
fn versions_come_from_the_keys_partition_so_they_tell_nothing_of_other_slots() {
    let mut w = World::new();
    assert_eq!(version(&w.ok(&member("w1"), &set("/shared/a", "1"), &at(1))), 1);
    for i in 0..5 {
        w.ok(&member("w2"), &set("/peer/self/secret", &i.to_string()), &at(2));
    }
    w.ok(&lead(), &set_override("/peer/w2/note", "n"), &at(3));
    // /ref and /shared share one counter; w2's slot has its own.
    assert_eq!(version(&w.ok(&member("w1"), &set("/shared/a", "2"), &at(4))), 2);
    assert_eq!(version(&w.ok(&member("w1"), &set("/peer/self/mine", "m"), &at(5))), 1);
    assert_eq!(version(&w.ok(&lead(), &set("/ref/plan", "p"), &at(6))), 3);
}

#[test]
fn the_lead_and_the_operator_enter_a_members_slot_only_with_override() {
    let mut w = World::new();
    let e = w.refused(&lead(), &set("/peer/w1/input", "x"), &at(1));
    assert_eq!(e.code(), "kv.override_required");
    w.ok(&lead(), &set_override("/peer/w1/input", "from lead"), &at(2));
    let e = w.refused(&operator(), &set("/peer/w1/input", "x"), &at(3));
    assert_eq!(e.code(), "kv.override_required");
    assert_eq!(w.refused(&operator(), &set("/peer/self/x", "x"), &at(3)).code(), "kv.no_slot");
    w.ok(&operator(), &Op::Delete { key: "/peer/w1/input".into(), overriding: true }, &at(4));
    // A member gains nothing by --override.
    let e = w.refused(&member("w2"), &set_override("/peer/w1/x", "x"), &at(5));
    assert_eq!(e.code(), "kv.denied");
    assert_eq!(w.refused(&member("w1"), &set("/ref/plan", "x"), &at(6)).code(), "kv.denied");
}

#[test]
fn list_walks_only_what_the_caller_may_read_in_key_order() {
    let mut w = World::new();
    for (caller, k) in [
        (lead(), "/ref/tasks/1"),
        (lead(), "/ref/tasks/2"),
        (member("w1"), "/shared/progress"),
        (member("w1"), "/peer/w1/result"),
        (member("w2"), "/peer/w2/result"),
        (member("w2"), "/peer/w2/deep/er"),
        (lead(), "/peer/lead/own"),
    ] {
        w.ok(&caller, &set(k, "v"), &at(1));
    }
    let as_w1 = |w: &mut World, p: &str| listed(w.ok(&member("w1"), &ls(p), &at(2))).0;
    assert_eq!(as_w1(&mut w, "/**"), vec!["/peer/w1/result", "/ref/tasks/1", "/ref/tasks/2", "/shared/progress"]);
    assert_eq!(as_w1(&mut w, "/peer/*/*"), vec!["/peer/w1/result"]);
    assert_eq!(as_w1(&mut w, "/peer/w2/*"), Vec::<String>::new());
    assert_eq!(as_w1(&mut w, "/*/*/*"), vec!["/peer/w1/result", "/ref/tasks/1", "/ref/tasks/2"]);
    assert_eq!(as_w1(&mut w, "/ref/tasks/2"), vec!["/ref/tasks/2"]);
    let all = listed(w.ok(&lead(), &ls("/peer/**"), &at(2))).0;
    assert_eq!(all, vec!["/peer/lead/own", "/peer/w1/result", "/peer/w2/deep/er", "/peer/w2/result"]);
    assert_eq!(listed(w.ok(&operator(), &ls("/**"), &at(2))).0.len(), 7);
}

#[test]
fn list_filters_before_it_caps() {
    let mut w = World::new();
    // 2,000 keys w1 may not read, sorted before its own.
    for i in 0..2000 {
        w.ok(&member("a"), &set(&format!("/peer/self/k{i:04}"), "v"), &at(1));
    }
    for i in 0..MAX_LIST {
        w.ok(&member("w1"), &set(&format!("/shared/k{i:04}"), "v"), &at(1));
    }
    let (keys, truncated) = listed(w.ok(&member("w1"), &ls("/**"), &at(2)));
    assert_eq!((keys.len(), truncated), (MAX_LIST, false));
    assert!(keys.iter().all(|k| k.starts_with("/shared/")));
    w.ok(&member("w1"), &set("/shared/one-more", "v"), &at(3));
    let (keys, truncated) = listed(w.ok(&member("w1"), &ls("/**"), &at(4)));
    assert_eq!((keys.len(), truncated), (MAX_LIST, true));
    // The lead reads them all: the first thousand are a's.
    let (keys, truncated) = listed(w.ok(&lead(), &ls("/**"), &at(5)));
    assert_eq!((keys[0].as_str(), keys.len(), truncated), ("/peer/a/k0000", MAX_LIST, true));
}

#[test]
fn a_wait_is_answered_at_once_when_the_key_is_there() {
    let mut w = World::new();
    let v = version(&w.ok(&member("w1"), &set("/shared/x", "1"), &at(1)));
    assert_eq!(found(w.ok(&member("w2"), &wait("/shared/x", 0, 1000), &at(2))).version, v);
    assert_eq!(found(w.ok(&member("w2"), &wait("/shared/x", v, 1000), &at(2))).value, b"1");
    let e = w.refused(&member("w2"), &wait("/shared/x", v + 1, 0), &at(2));
    insta::assert_snapshot!(format!("[{}] {e}", e.code()), @"[kv.timed_out] /shared/x did not reach version 2 within 0 ms");
}

#[test]
fn a_set_wakes_only_the_waiters_of_its_key_that_it_satisfies() {
    let mut w = World::new();
    let exists = ticket(w.ok(&member("w1"), &wait("/shared/x", 0, 5000), &at(0)));
    let later = ticket(w.ok(&member("w2"), &wait("/shared/x", 2, 5000), &at(0)));
    let other = ticket(w.ok(&member("w2"), &wait("/shared/y", 0, 5000), &at(0)));
    let (outcome, wakes) = w.run(&member("w1"), &set("/shared/x", "first"), &at(10));
    assert_eq!(version(&outcome.expect("set")), 1);
    assert_eq!(wakes.iter().map(|k| k.ticket).collect::<Vec<_>>(), vec![exists]);
    let answer = wakes[0].answer.clone().map(found).expect("value");
    assert_eq!((answer.value.as_slice(), answer.version), (b"first".as_slice(), 1));
    let (_, wakes) = w.run(&member("w1"), &set("/shared/x", "second"), &at(11));
    assert_eq!(wakes.iter().map(|k| k.ticket).collect::<Vec<_>>(), vec![later]);
    assert_eq!(w.core.waits().len(), 1);
    assert!(w.core.waits().get(other).is_some());
    // A delete wakes nobody.
    w.ok(&member("w1"), &rm("/shared/x"), &at(12));
}

#[test]
fn waits_end_at_their_deadline_or_when_their_caller_goes() {
    let mut w = World::new();
    let t1 = ticket(w.ok(&member("w1"), &wait("/shared/x", 0, 100), &at(0)));
    let t2 = ticket(w.ok(&member("w2"), &wait("/shared/x", 0, 300), &at(0)));
    let t3 = ticket(w.ok(&operator(), &wait("/shared/x", 0, 300), &at(0)));
    assert_eq!(w.core.next_deadline(&at(1)), Some(100));
    assert_eq!(w.event(&Event::Tick, &at(99)), vec![]);
    let wakes = w.event(&Event::Tick, &at(100));
    assert_eq!(wakes.len(), 1);
    assert_eq!(wakes[0].ticket, t1);
    let e = wakes[0].answer.clone().expect_err("timed out");
    assert_eq!(e.to_string(), "/shared/x did not come to exist within 100 ms");
    assert_eq!(e.exit_code(), 124);
    assert_eq!(w.event(&Event::Cancel(t2), &at(150)), vec![]);
    assert!(w.core.waits().get(t2).is_none());
    w.event(&Event::HolderGone(pod("w2")), &at(150));
    assert_eq!(w.core.waits().len(), 1);
    assert!(w.core.waits().get(t3).is_some(), "the operator's wait stays");
    assert!(w.commits.is_empty(), "waits are not durable");
}

#[test]
fn a_wait_on_a_key_the_caller_may_not_read_is_refused_before_anything_else() {
    let mut w = World::new();
    let e = w.refused(&member("w1"), &wait("/peer/w2/x", 0, 1000), &at(0));
    assert_eq!(e.code(), "kv.denied");
    let e = w.refused(&member("w1"), &wait("/peer/w2/x", 0, MAX_WAIT_MS + 1), &at(0));
    assert_eq!(e.code(), "kv.denied");
    let e = w.refused(&member("w1"), &wait("/shared/x", 0, MAX_WAIT_MS + 1), &at(0));
    assert_eq!(e.code(), "kv.wait_out_of_range");
}

#[test]
fn the_waiter_limit() {
    let mut w = World::new();
    w.ok(&member("w2"), &acquire("l", 1000, None), &at(0));
    for _ in 0..MAX_WAITERS {
        w.ok(&member("w1"), &wait("/shared/x", 0, 1000), &at(0));
    }
    assert_eq!(w.refused(&member("w1"), &wait("/shared/x", 0, 1000), &at(0)).code(), "kv.too_many_waiters");
    assert_eq!(w.refused(&member("w1"), &acquire("l", 1000, Some(10)), &at(0)).code(), "kv.too_many_waiters");
}

#[test]
fn a_value_past_the_limit_is_refused() {
    let mut w = World::new();
    let big = |len| Op::Set { key: "/shared/v".into(), value: vec![7; len], expect: Expect::Any, overriding: false };
    w.ok(&member("w1"), &big(MAX_VALUE_BYTES), &at(0));
    let e = w.refused(&member("w1"), &big(MAX_VALUE_BYTES + 1), &at(0));
    assert_eq!(e.to_string(), "the value is 1048577 bytes; the limit is 1048576");
}

#[test]
fn the_key_limit_is_refused_past_but_overwrites_still_go() {
    let mut w = World::new();
    for i in 0..MAX_KEYS {
        w.ok(&member("w1"), &set(&format!("/shared/{i}"), "v"), &at(0));
    }
    assert_eq!(w.refused(&member("w1"), &set("/shared/new", "v"), &at(0)).code(), "kv.too_many_keys");
    w.ok(&member("w1"), &set("/shared/0", "overwrite"), &at(0));
    w.ok(&member("w1"), &rm("/shared/1"), &at(0));
    w.ok(&member("w1"), &set("/shared/new", "v"), &at(0));
}

#[test]
fn the_byte_limit_counts_keys_and_values() {
    let mut w = World::new();
    let mib =
        |k: &str| Op::Set { key: k.into(), value: vec![1; MAX_VALUE_BYTES], expect: Expect::Any, overriding: false };
    // 63 values of 1 MiB, plus their keys.
    for i in 0..63 {
        w.ok(&member("w1"), &mib(&format!("/shared/{i:02}")), &at(0));
    }
    let room = (64 << 20) - w.core.layer().bytes() as usize - "/shared/last".len();
    let fill = Op::Set { key: "/shared/last".into(), value: vec![1; room], expect: Expect::Any, overriding: false };
    w.ok(&member("w1"), &fill, &at(0));
    assert_eq!(w.core.layer().bytes(), 64 << 20);
    assert_eq!(w.refused(&member("w1"), &set("/shared/z", ""), &at(0)).code(), "kv.layer_too_large");
    // Shrinking a value always goes.
    w.ok(&member("w1"), &set("/shared/00", "small"), &at(0));
}

#[test]
fn the_slot_limit_counts_slots_ever_written() {
    let mut w = World::new();
    for i in 0..MAX_SLOTS {
        let k = format!("/peer/p{i}/k");
        w.ok(&lead(), &set_override(&k, "v"), &at(0));
        w.ok(&lead(), &Op::Delete { key: k, overriding: true }, &at(0));
    }
    assert_eq!(w.core.layer().key_count(), 0);
    let e = w.refused(&member("late"), &set("/peer/self/k", "v"), &at(0));
    assert_eq!(e.code(), "kv.too_many_slots");
    // A slot the layer remembers goes on, above its old versions.
    assert_eq!(version(&w.ok(&member("p7"), &set("/peer/self/k", "v"), &at(0))), 2);
}
