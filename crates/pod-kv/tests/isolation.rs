//! Strict peer visibility, as non-interference: two layers that differ
//! only in what happens in member w2's slot (w2's own calls there, and the
//! lead's, with --override) must look exactly the same to member w1,
//! whatever w1 does: every answer, every refusal (code and whole message),
//! every version, every list and its truncation flag, every wake of w1's
//! waits and when it comes. So no sequence of calls lets w1 read, list,
//! count or wait on w2's slot, including through every bad spelling of a
//! key and every glob.
//!
//! Out of this property by design (see docs/coordination.md): the shared
//! capacity of a layer (10,000 keys, 64 MiB, 1,024 waiters), which a member
//! that fills it can measure in total, and timing. The schedules here stay
//! far below every capacity limit.

mod common;

use std::collections::BTreeMap;

use common::*;
use pod_kv::limits::MAX_LIST;
use pod_kv::rights::check_read;
use pod_kv::{Caller, Event, Expect, KvError, Op, Outcome, Ticket, Wake};
use proptest::prelude::*;

/// Spellings w1 tries: its own and public keys, and every way around the
/// rules towards w2's slot a path library would allow.
const W1_KEYS: &[&str] = &[
    "/shared/a",
    "/shared/b",
    "/ref/r",
    "/peer/self/x",
    "/peer/w1/x",
    "/peer/w2/x",
    "/peer/w2/y",
    "/peer//w2/x",
    "/peer/./w2/x",
    "/peer/w2/../w2/x",
    "/peer/self/../w2/x",
    "/peer/self/../../peer/w2/x",
    "/peer/W2/x",
    "/peer/w2",
    "/peer/w2/x/",
    "//peer/w2/x",
    "/peer/w2/./x",
];

const W1_PATTERNS: &[&str] = &[
    "/**",
    "/*/*",
    "/*/*/*",
    "/*/**",
    "/peer/*/*",
    "/peer/**",
    "/peer/*/x",
    "/pee[r]/*/*",
    "/peer/w2/*",
    "/peer/w2/**",
    "/*/w2/*",
    "/peer/self/*",
    "/peer//w2/*",
    "/peer/w?/*",
    "/shared/*",
];

/// Keys of w2's slot, as the secret side spells them.
const SECRET_KEYS: &[&str] = &["/peer/w2/x", "/peer/w2/y", "/peer/w2/z/deep"];

fn op(kind: u8, key: &str, pattern: &str, n: u64, overriding: bool) -> Op {
    match kind % 6 {
        0 => get(key),
        1 => Op::Set { key: key.into(), value: format!("v{n}").into_bytes(), expect: Expect::Any, overriding },
        2 => {
            Op::Set { key: key.into(), value: format!("c{n}").into_bytes(), expect: Expect::Version(n % 4), overriding }
        }
        3 => Op::Delete { key: key.into(), overriding },
        4 => ls(pattern),
        _ => wait(key, n % 4, if n % 2 == 0 { 150 } else { 2000 }),
    }
}

#[derive(Debug, Clone)]
enum Public {
    W1(Op),
    /// The lead on what w1 may see (/ref, /shared, w1's slot).
    Lead(Op),
    Operator(Op),
    Advance(u64),
}

fn public() -> impl Strategy<Value = Public> {
    let w1 = (any::<u8>(), 0..W1_KEYS.len(), 0..W1_PATTERNS.len(), 0..6u64, any::<bool>())
        .prop_map(|(k, key, pat, n, o)| Public::W1(op(k, W1_KEYS[key], W1_PATTERNS[pat], n, o)));
    let visible = ["/shared/a", "/shared/b", "/ref/r", "/peer/w1/x", "/peer/lead/x"];
    let lead = (any::<u8>(), 0..visible.len(), 0..6u64)
        .prop_map(move |(k, key, n)| Public::Lead(op(k % 4, visible[key], "/**", n, true)));
    let operator = (any::<u8>(), 0..visible.len(), 0..6u64)
        .prop_map(move |(k, key, n)| Public::Operator(op(k % 4, visible[key], "/**", n, true)));
    prop_oneof![6 => w1, 2 => lead, 1 => operator, 1 => (0..400u64).prop_map(Public::Advance)]
}

#[derive(Debug, Clone)]
enum Secret {
    W2(Op),
    Lead(Op),
}

fn secret() -> impl Strategy<Value = Secret> {
    let w2_keys = ["/peer/self/x", "/peer/w2/y", "/peer/w2/z/deep"];
    let w2 = (any::<u8>(), 0..w2_keys.len(), 0..6u64)
        .prop_map(move |(k, key, n)| Secret::W2(op(k, w2_keys[key], "/peer/self/**", n, false)));
    let lead = (any::<u8>(), 0..SECRET_KEYS.len(), 0..6u64)
        .prop_map(|(k, key, n)| Secret::Lead(op(k % 4, SECRET_KEYS[key], "/peer/w2/**", n, true)));
    prop_oneof![3 => w2, 1 => lead]
}

/// One step of w1's view.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Answer(Result<Outcome, (String, String)>),
    Woken(usize, Result<Outcome, (String, String)>),
}

/// A world and what w1 has seen of it. Tickets are the shell's handles,
/// drawn from one counter for the whole layer, so they are never shown to
/// a caller; w1's are renamed to the order it got them.
struct Observed {
    world: World,
    now_ms: u64,
    w1_tickets: BTreeMap<Ticket, usize>,
    seen: Vec<Seen>,
}

fn plain(r: Result<Outcome, KvError>) -> Result<Outcome, (String, String)> {
    r.map_err(|e| (e.code().to_string(), e.to_string()))
}

impl Observed {
    fn new() -> Observed {
        Observed { world: World::new(), now_ms: 0, w1_tickets: BTreeMap::new(), seen: Vec::new() }
    }

    fn note_wakes(&mut self, wakes: Vec<Wake>) {
        for wake in wakes {
            if let Some(&n) = self.w1_tickets.get(&wake.ticket) {
                self.seen.push(Seen::Woken(n, plain(wake.answer)));
            }
        }
    }

    fn call(&mut self, caller: &Caller, op: &Op) -> Result<Outcome, KvError> {
        let (out, wakes) = self.world.run(caller, op, &at(self.now_ms));
        self.note_wakes(wakes);
        out
    }

    fn public(&mut self, step: &Public) {
        match step {
            Public::W1(op) => {
                let out = self.call(&member("w1"), op);
                let out = match out {
                    Ok(Outcome::Waiting { ticket }) => {
                        let n = self.w1_tickets.len();
                        self.w1_tickets.insert(ticket, n);
                        Ok(Outcome::Waiting { ticket: Ticket(n as u64) })
                    }
                    other => other,
                };
                self.seen.push(Seen::Answer(plain(out)));
            }
            Public::Lead(op) => drop(self.call(&lead(), op)),
            Public::Operator(op) => drop(self.call(&operator(), op)),
            Public::Advance(ms) => {
                self.now_ms += ms;
                let wakes = self.world.event(&Event::Tick, &at(self.now_ms));
                self.note_wakes(wakes);
            }
        }
    }

    fn secret(&mut self, step: &Secret) {
        let (caller, op) = match step {
            Secret::W2(op) => (member("w2"), op),
            Secret::Lead(op) => (lead(), op),
        };
        drop(self.call(&caller, op));
    }

    /// Everything w1 may read, as it is stored.
    fn readable(&self) -> Vec<(String, pod_kv::Entry)> {
        let w1 = member("w1");
        self.world
            .core
            .layer()
            .entries()
            .filter(|(k, _)| check_read(&w1, k).is_ok())
            .map(|(k, e)| (k.to_string(), e.clone()))
            .collect()
    }
}

type Schedule = Vec<(Vec<Secret>, Public)>;

fn schedule() -> impl Strategy<Value = (Schedule, Vec<Vec<Secret>>)> {
    proptest::collection::vec((proptest::collection::vec(secret(), 0..4), public()), 1..40).prop_flat_map(|a| {
        let n = a.len();
        (Just(a), proptest::collection::vec(proptest::collection::vec(secret(), 0..4), n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn what_happens_in_another_members_slot_is_invisible_to_a_member((a, other) in schedule()) {
        let mut left = Observed::new();
        let mut right = Observed::new();
        for ((secrets_left, step), secrets_right) in a.iter().zip(&other) {
            for s in secrets_left {
                left.secret(s);
            }
            for s in secrets_right {
                right.secret(s);
            }
            left.public(step);
            right.public(step);
            prop_assert_eq!(&left.seen, &right.seen, "after {:?}", step);
        }
        prop_assert_eq!(left.readable(), right.readable());
    }
}

/// The cap of a list and its filter cannot be combined to learn anything:
/// with any number of keys w1 may not read, before, among and after its
/// own, w1's listing is the first thousand of its own matches and
/// `truncated` says only whether it has more.
#[test]
fn list_truncation_tells_nothing_about_hidden_keys() {
    for readable in [MAX_LIST - 1, MAX_LIST, MAX_LIST + 1] {
        let mut answers = Vec::new();
        for hidden in [0, 1, 999, 1000, 1001, 3000] {
            let mut w = World::new();
            for i in 0..hidden {
                // Keys that sort before, between and after w1's.
                let k = match i % 3 {
                    0 => format!("/peer/a{i}/k"),
                    1 => format!("/peer/w1x/k{i}"),
                    _ => format!("/peer/zz/k{i}"),
                };
                w.ok(&lead(), &set_override(&k, "h"), &at(0));
            }
            for i in 0..readable {
                let k = if i % 2 == 0 { format!("/shared/k{i:05}") } else { format!("/peer/w1/k{i:05}") };
                w.ok(&member("w1"), &set(&k, "r"), &at(0));
            }
            let listings: Vec<Outcome> =
                ["/**", "/peer/*/*", "/peer/**", "/*/*"].iter().map(|p| w.ok(&member("w1"), &ls(p), &at(1))).collect();
            answers.push(listings);
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{readable} readable keys: answers vary with hidden keys");
        let Outcome::Listed(all) = &answers[0][0] else { panic!() };
        assert_eq!((all.entries.len(), all.truncated), (readable.min(MAX_LIST), readable > MAX_LIST));
    }
}
