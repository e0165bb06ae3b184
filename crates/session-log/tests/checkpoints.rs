//! Checkpoint + tail replay equals full replay, over random histories,
//! random batch splits, random checkpoint intervals and reopenings.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use session_log::{Event, LogOptions, PodState, RemovalReason, SessionLog};

#[derive(Debug, Clone)]
enum Op {
    Spawn,
    Remove(usize),
    Reparent,
    Scope,
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Spawn),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => Just(Op::Reparent),
        2 => Just(Op::Scope),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

fn fold(events: &[Event]) -> PodState {
    let mut state = PodState::new();
    state.apply_batch(1, events).unwrap();
    state
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn checkpoint_plus_tail_equals_full_replay(
        ops in proptest::collection::vec((op(), 1usize..4), 1..24),
        checkpoint_every in 0u64..6,
        stop in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions { checkpoint_every, ..options(0) };
        let mut log = SessionLog::open(dir.path(), options).unwrap();
        let mut all = vec![created()];
        log.append(vec![created()]).unwrap();
        let mut live: Vec<String> = Vec::new();
        let mut serial = 0;
        let mut pending = Vec::new();
        for (op, batch_len) in ops {
            match op {
                Op::Spawn | Op::Reparent => {
                    serial += 1;
                    let child = format!("c{serial}");
                    pending.push(if matches!(op, Op::Spawn) {
                        spawned(&child)
                    } else {
                        Event::ChildReparented { name: name(&child), from: name("gone"), rules: vec![], socket: "s".into() }
                    });
                    live.push(child);
                }
                Op::Remove(i) if !live.is_empty() => {
                    let child = live.remove(i % live.len());
                    pending.push(Event::ChildRemoved { name: name(&child), reason: RemovalReason::Pruned, exit: session_log::Exit::default() });
                }
                Op::Remove(_) => {}
                Op::Scope => pending.push(scope_with(&live.iter().map(String::as_str).collect::<Vec<_>>())),
                Op::Checkpoint => { log.checkpoint().unwrap(); }
                Op::Reopen => {
                    drop(log);
                    log = SessionLog::open(dir.path(), options).unwrap();
                    prop_assert_eq!(log.replay().unwrap(), fold(&all));
                }
            }
            if pending.len() >= batch_len {
                all.extend(pending.iter().cloned());
                log.append(std::mem::take(&mut pending)).unwrap();
            }
        }
        if stop {
            pending.push(Event::PodStopped { exit: session_log::Exit::default() });
        }
        if !pending.is_empty() {
            all.extend(pending.iter().cloned());
            log.append(pending).unwrap();
        }
        let expected = fold(&all);
        prop_assert_eq!(&log.replay().unwrap(), &expected);
        let read: Vec<Event> = log.read_from(1).map(|r| r.unwrap().event).collect();
        prop_assert_eq!(&fold(&read), &expected);
        drop(log);
        let log = SessionLog::open(dir.path(), options).unwrap();
        prop_assert_eq!(&log.replay().unwrap(), &expected);
        let report = log.verify().unwrap();
        prop_assert_eq!(report.last_seq, expected.last_seq);
        prop_assert!(report.ignored_checkpoints.is_empty());
    }
}
