//! Every event kind through the real log and back; the stored and JSON forms
//! pinned by snapshots; limits; concurrent appenders; following.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use session_log::limits::{MAX_BATCH_EVENTS, MAX_RECORD_BYTES};
use session_log::{trees, AppendReceipt, Event, LogOptions, Record, SessionLog};

fn records(log: &SessionLog) -> Vec<Record> {
    log.read_from(1).collect::<Result<_, _>>().unwrap()
}

#[test]
fn session_log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SessionLog>();
}

#[test]
fn every_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let events = every_kind();
    {
        let log = SessionLog::open(dir.path(), options(1000)).unwrap();
        for (i, e) in events.iter().enumerate() {
            let seq = i as u64 + 1;
            assert_eq!(log.append(vec![e.clone()]).unwrap(), AppendReceipt { first_seq: seq, last_seq: seq });
        }
    }
    let log = SessionLog::open(dir.path(), options(1000)).unwrap();
    let read = records(&log);
    assert_eq!(read.iter().map(|r| r.event.clone()).collect::<Vec<_>>(), events);
    assert!(read.iter().all(|r| r.timestamp_ms == FIXED_MS));
    assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());

    let state = log.replay().unwrap();
    assert_eq!(state.name(), Some(&name("lead")));
    assert_eq!(state.identity.as_ref().unwrap().parent, Some(name("root")));
    assert_eq!(state.children.keys().collect::<Vec<_>>(), vec![&name("g")]);
    assert_eq!(state.children[&name("g")].adopted_from, Some(name("b")));
    assert!(state.stopped);
    assert_eq!(state.last_seq, 6);
    assert_eq!(log.verify().unwrap().last_seq, 6);
    assert_eq!(log.read_from(5).map(|r| r.unwrap().seq).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(log.read_from(7).count(), 0);
}

/// The stored bytes are the format: a change here is a format change and
/// needs a schema version bump, not a snapshot update.
#[test]
fn stored_envelopes_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let receipt = SessionLog::open(dir.path(), options(1000)).unwrap().append(every_kind()).unwrap();
    assert_eq!(receipt, AppendReceipt { first_seq: 1, last_seq: 6 });
    let db = open_raw(dir.path());
    let tree = db.open_tree(trees::RECORDS).unwrap();
    let mut out = String::new();
    for kv in tree.iter() {
        let (k, v) = kv.unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        out.push_str(&format!("{} {}\n", hex(&k), hex(&v)));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn json_form_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let log = SessionLog::open(dir.path(), options(1000)).unwrap();
    log.append(every_kind()).unwrap();
    let read = records(&log);
    insta::assert_json_snapshot!(read);
    let text = serde_json::to_string(&read).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Record>>(&text).unwrap(), read);
}

#[test]
fn unknown_kinds_serialize_as_their_kind() {
    let event = Event::Unknown { kind: "pod.painted".into() };
    assert_eq!(serde_json::to_string(&event).unwrap(), r#"{"kind":"pod.painted"}"#);
    let back: Event = serde_json::from_str(r#"{"kind":"pod.painted","color":3}"#).unwrap();
    assert_eq!(back, event);
}

#[test]
fn limits_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = SessionLog::open(dir.path(), options(1000)).unwrap();
    log.append(vec![created()]).unwrap();

    let code = |r: Result<AppendReceipt, session_log::LogError>| r.unwrap_err().code();
    assert_eq!(code(log.append(vec![])), "log.empty_batch");
    let many = (0..=MAX_BATCH_EVENTS).map(|i| spawned(&format!("c{i}"))).collect();
    assert_eq!(code(log.append(many)), "log.batch_too_large");
    let huge = Event::ChildSpawned {
        name: name("big"),
        socket: "x".repeat(MAX_RECORD_BYTES),
        rules: vec![],
        callback: String::new(),
    };
    assert_eq!(code(log.append(vec![spawned("ok"), huge])), "log.record_too_large");
    assert_eq!(code(log.append(vec![Event::Unknown { kind: "pod.painted".into() }])), "log.unknown_event");
    // A batch the fold refuses is refused whole, even its valid first half.
    let err = log.append(vec![spawned("x"), spawned("x")]).unwrap_err();
    assert_eq!((err.code(), err.seq()), ("log.refused", None));
    insta::assert_snapshot!("refused_duplicate_child", err);

    assert_eq!(log.last_seq(), 1);
    assert_eq!(log.append(vec![spawned("x")]).unwrap(), AppendReceipt { first_seq: 2, last_seq: 2 });
    assert_eq!(log.verify().unwrap().last_seq, 2);
}

#[test]
fn a_first_event_other_than_created_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = SessionLog::open(dir.path(), options(1000)).unwrap();
    let err = log.append(vec![spawned("a")]).unwrap_err();
    insta::assert_snapshot!("refused_before_created", err);
    assert_eq!(log.last_seq(), 0);
    assert_eq!(log.replay().unwrap(), session_log::PodState::new());
}

#[test]
fn concurrent_appenders_get_contiguous_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SessionLog::open(dir.path(), options(7)).unwrap());
    log.append(vec![created()]).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let batch = (0..1 + i % 3).map(|j| spawned(&format!("t{t}-{i}-{j}"))).collect();
                        log.append(batch).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut receipts: Vec<AppendReceipt> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    receipts.sort_by_key(|r| r.first_seq);
    let mut next = 2;
    for r in &receipts {
        assert_eq!(r.first_seq, next);
        next = r.last_seq + 1;
    }
    let state = log.replay().unwrap();
    assert_eq!(state.last_seq, next - 1);
    assert_eq!(state.children.len() as u64, next - 2);
    let report = log.verify().unwrap();
    assert!(!report.checkpoints.is_empty());
    assert!(report.ignored_checkpoints.is_empty());
}

#[test]
fn followers_are_woken_by_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SessionLog::open(dir.path(), LogOptions::default()).unwrap());
    assert!(!log.wait_for_seq(0, Duration::from_millis(10)).unwrap());
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.append(vec![created()]).unwrap())
    };
    assert!(log.wait_for_seq(0, Duration::from_secs(30)).unwrap());
    writer.join().unwrap();
    assert_eq!(log.read_from(1).count(), 1);
    assert!(log.wait_for_seq(0, Duration::ZERO).unwrap());
}

#[test]
fn checkpoint_on_demand_is_used_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let log = SessionLog::open(dir.path(), options(0)).unwrap();
    assert_eq!(log.checkpoint().unwrap(), 0);
    log.append(vec![created(), spawned("a")]).unwrap();
    assert_eq!(log.checkpoint().unwrap(), 2);
    log.append(vec![spawned("b")]).unwrap();
    let report = log.verify().unwrap();
    assert_eq!(report.checkpoints, vec![2]);
    assert_eq!(log.replay().unwrap().children.len(), 2);
}

/// Opening and closing a log that was closed cleanly makes no write (a
/// stopped Pod's log is opened by read commands): its write-ahead file stays
/// byte for byte what it was, and so does what it holds.
#[test]
fn a_clean_reopen_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SessionLog::open(dir.path(), options(0)).unwrap();
        log.append(vec![created()]).unwrap();
        log.append(vec![spawned("c0")]).unwrap();
    }
    let wal = std::fs::read(dir.path().join("wal")).unwrap();
    {
        let log = SessionLog::open(dir.path(), options(0)).unwrap();
        assert_eq!(log.replay().unwrap().last_seq, 2);
    }
    assert!(std::fs::read(dir.path().join("wal")).unwrap() == wal, "a read-only open changed the write-ahead file");
}
