//! Replay is a pure fold: the layer the running store holds equals the fold
//! of the commits it made, the fold of its own records, and the fold of
//! those commits read back from their encoding; a commit applied over any
//! prefix of itself (what a crash leaves in sled) gives the same layer as
//! applying it once; each key's version only grows, across deletes; a
//! damaged commit is refused whole; a write wakes only the waiters of its own
//! key that it satisfies.

mod common;

use std::collections::BTreeMap;

use common::*;
use pod_kv::{Caller, Change, Commit, Entry, Event, Expect, Key, Layer, Op, Outcome, Partition, Wanted, Writer};
use proptest::prelude::*;

const KEYS: &[&str] = &["/shared/a", "/shared/b/c", "/ref/r", "/peer/self/x", "/peer/self/y", "/peer/w1/z"];

#[derive(Debug, Clone)]
enum Step {
    Call(usize, Op),
    Advance(u64),
    Gone(usize),
    Restart,
}

fn callers() -> Vec<Caller> {
    vec![lead(), member("w1"), member("w2"), operator()]
}

fn step() -> impl Strategy<Value = Step> {
    let kv = (0..4usize, 0..4u8, 0..KEYS.len(), 0..5u64, any::<bool>()).prop_map(|(who, kind, key, n, o)| {
        let key = KEYS[key].to_string();
        let op = match kind {
            0 => Op::Set { key, value: vec![n as u8; n as usize * 3], expect: Expect::Any, overriding: o },
            1 => Op::Set { key, value: vec![1], expect: Expect::Version(n % 3), overriding: o },
            2 => Op::Delete { key, overriding: o },
            _ => Op::Wait { key, min_version: n, timeout_ms: 300 },
        };
        Step::Call(who, op)
    });
    let lease = (0..4usize, 0..3u8, prop_oneof![Just("l1"), Just("l2")]).prop_map(|(who, kind, name)| {
        let op = match kind {
            0 => acquire(name, 500, Some(800)),
            1 => release(name),
            _ => renew(name),
        };
        Step::Call(who, op)
    });
    prop_oneof![
        6 => kv,
        3 => lease,
        2 => (0..700u64).prop_map(Step::Advance),
        1 => (1..3usize).prop_map(Step::Gone),
        1 => Just(Step::Restart),
    ]
}

/// Runs the steps, checking every commit against the layer before it, and
/// returns the world and the layer after each commit.
fn drive(steps: &[Step]) -> Result<(World, Vec<Layer>), TestCaseError> {
    let callers = callers();
    let mut w = World::new();
    let mut now = 0;
    let mut layers = vec![Layer::new()];
    for step in steps {
        let before = w.commits.len();
        match step {
            Step::Call(who, op) => {
                let waits = w.core.waits().clone();
                let (out, wakes) = w.run(&callers[*who], op, &at(now));
                // A write wakes only waiters of its own key that it satisfies.
                for wake in &wakes {
                    let waiter = waits.get(wake.ticket).expect("a woken waiter was waiting");
                    match (&waiter.wanted, &wake.answer, &out) {
                        (
                            Wanted::Key { key, min_version },
                            Ok(Outcome::Found(f)),
                            Ok(Outcome::Written { key: written, version }),
                        ) => {
                            prop_assert_eq!(key, written);
                            prop_assert_eq!(&f.key, written);
                            prop_assert!(*version >= *min_version && f.version == *version);
                        }
                        (Wanted::Lease { .. }, Ok(Outcome::Granted(_)) | Err(_), _) => {}
                        other => prop_assert!(false, "unexpected wake {:?}", other),
                    }
                }
            }
            Step::Advance(ms) => {
                now += ms;
                w.event(&Event::Tick, &at(now));
            }
            Step::Gone(who) => drop(w.event(&Event::HolderGone(callers[*who].pod().expect("a pod").clone()), &at(now))),
            Step::Restart => drop(w.restart(&at(now))),
        }
        prop_assert!(w.commits.len() <= before + 1, "one step, one commit");
        if w.commits.len() > before {
            layers.push(w.core.layer().clone());
        }
    }
    Ok((w, layers))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_running_layer_is_the_fold_of_its_commits_and_of_its_records(steps in proptest::collection::vec(step(), 1..60)) {
        let (w, layers) = drive(&steps)?;
        let layer = w.core.layer();
        prop_assert_eq!(&Layer::replay(&w.commits).expect("replay"), layer);
        let mut records = layer.records();
        records.entries.reverse();
        records.counters.reverse();
        prop_assert_eq!(&Layer::restore(records).expect("restore"), layer);
        let decoded: Vec<Commit> = w
            .commits
            .iter()
            .map(|c| rmp_serde::from_slice(&rmp_serde::to_vec(c).expect("encode")).expect("decode"))
            .collect();
        prop_assert_eq!(&decoded, &w.commits);
        prop_assert_eq!(&Layer::replay(&decoded).expect("replay decoded"), layer);
        prop_assert_eq!(layers.last(), Some(layer));
    }

    #[test]
    fn a_commit_applied_over_any_prefix_of_itself_is_applied_once(steps in proptest::collection::vec(step(), 1..60)) {
        let (w, layers) = drive(&steps)?;
        for (i, commit) in w.commits.iter().enumerate() {
            for cut in 0..=commit.changes.len() {
                let mut layer = layers[i].clone();
                layer.apply(&Commit { changes: commit.changes[..cut].to_vec() }).expect("a prefix applies");
                layer.apply(commit).expect("the whole commit applies again");
                prop_assert_eq!(&layer, &layers[i + 1]);
            }
        }
    }

    #[test]
    fn each_keys_version_only_grows(steps in proptest::collection::vec(step(), 1..80)) {
        let (w, _) = drive(&steps)?;
        let mut last: BTreeMap<Key, u64> = BTreeMap::new();
        let mut max_token = 0;
        let mut tokens = BTreeMap::new();
        for commit in &w.commits {
            for change in &commit.changes {
                match change {
                    Change::Put { key, entry } => {
                        let before = last.insert(key.clone(), entry.version).unwrap_or(0);
                        prop_assert!(entry.version > before, "{} went from {} to {}", key, before, entry.version);
                    }
                    // A renewal keeps its token; a new grant draws one
                    // above every token drawn before.
                    Change::Grant(g) if tokens.get(&g.name) != Some(&g.token) => {
                        prop_assert!(g.token > max_token, "token {} after {}", g.token, max_token);
                        max_token = g.token;
                        tokens.insert(g.name.clone(), g.token);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn entry(version: u64) -> Entry {
    Entry { value: b"v".to_vec(), version, written_by: Writer::Operator, written_at_ms: 0 }
}

fn k(raw: &str) -> Key {
    Key::stored(raw).expect("key")
}

#[test]
fn a_damaged_commit_is_refused_whole() {
    let mut layer = Layer::new();
    let good = Commit {
        changes: vec![
            Change::Counter { partition: Partition::Common, value: 5 },
            Change::Put { key: k("/shared/a"), entry: entry(5) },
        ],
    };
    layer.apply(&good).expect("good");
    let damaged = [
        // The counter moves back.
        vec![Change::Counter { partition: Partition::Common, value: 4 }],
        // A version above its counter.
        vec![Change::Put { key: k("/shared/b"), entry: entry(6) }],
        // A version below the key's.
        vec![Change::Put { key: k("/shared/a"), entry: entry(3) }],
        // A slot key without a counter for its slot.
        vec![Change::Put { key: k("/peer/w1/x"), entry: entry(1) }],
        // The same record twice, and out of order.
        vec![Change::Delete { key: k("/shared/a") }, Change::Delete { key: k("/shared/a") }],
        vec![
            Change::Put { key: k("/shared/a"), entry: entry(5) },
            Change::Counter { partition: Partition::Common, value: 6 },
        ],
        // A value past the limit.
        vec![
            Change::Counter { partition: Partition::Common, value: 6 },
            Change::Put {
                key: k("/shared/big"),
                entry: Entry { value: vec![0; pod_kv::limits::MAX_VALUE_BYTES + 1], ..entry(6) },
            },
        ],
    ];
    let mut messages = String::new();
    for changes in damaged {
        let before = layer.clone();
        let e = layer.apply(&Commit { changes }).expect_err("damaged");
        assert_eq!(layer, before, "a refused commit changed the layer");
        messages.push_str(&format!("[{}] {e}\n", e.code()));
    }
    insta::assert_snapshot!(messages);
}
