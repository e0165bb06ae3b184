//! What every test of the core drives it with: callers, clocks, and a
//! `World` that plans and applies like the store will (plan, apply, keep
//! the commit), so that a test can also replay what it did.

#![allow(dead_code)] // each test file uses its own part of this

use pod_kv::{BootId, Caller, Commit, Core, Event, Incarnation, KvError, Layer, Now, Op, Outcome, PodRef, Wake};
use scope::PodName;

pub const BOOT: BootId = BootId([7; 16]);
pub const OTHER_BOOT: BootId = BootId([8; 16]);
/// Wall clock of `at(0)`.
pub const EPOCH_MS: u64 = 1_800_000_000_000;

pub fn name(s: &str) -> PodName {
    PodName::new(s).expect("pod name")
}

/// One run of Pod `s` (the pid derived from the name, start time 1).
pub fn pod(s: &str) -> PodRef {
    pod_run(s, 1)
}

pub fn pod_run(s: &str, start_time: u64) -> PodRef {
    let pid = s.bytes().fold(1000u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    PodRef { name: name(s), incarnation: Incarnation { pid, start_time } }
}

pub fn lead() -> Caller {
    Caller::Lead(pod("lead"))
}

pub fn member(s: &str) -> Caller {
    Caller::Member(pod(s))
}

pub fn operator() -> Caller {
    Caller::Operator
}

/// `ms` into the test's boot.
pub fn at(ms: u64) -> Now {
    Now { wall_ms: EPOCH_MS + ms, mono_ms: ms, boot: BOOT }
}

pub fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

pub fn set(key: &str, value: &str) -> Op {
    Op::Set { key: key.into(), value: value.as_bytes().to_vec(), expect: pod_kv::Expect::Any, overriding: false }
}

pub fn set_override(key: &str, value: &str) -> Op {
    Op::Set { key: key.into(), value: value.as_bytes().to_vec(), expect: pod_kv::Expect::Any, overriding: true }
}

pub fn cas(key: &str, expected: u64, value: &str) -> Op {
    Op::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expect: pod_kv::Expect::Version(expected),
        overriding: false,
    }
}

pub fn rm(key: &str) -> Op {
    Op::Delete { key: key.into(), overriding: false }
}

pub fn ls(pattern: &str) -> Op {
    Op::List { pattern: pattern.into() }
}

pub fn wait(key: &str, min_version: u64, timeout_ms: u64) -> Op {
    Op::Wait { key: key.into(), min_version, timeout_ms }
}

pub fn acquire(lease: &str, ttl_ms: u64, wait_ms: Option<u64>) -> Op {
    Op::Acquire { name: lease.into(), ttl_ms, wait_ms }
}

pub fn release(lease: &str) -> Op {
    Op::Release { name: lease.into(), token: None, overriding: false }
}

pub fn renew(lease: &str) -> Op {
    Op::Renew { name: lease.into(), token: None, ttl_ms: None }
}

/// The core as the store drives it, plus the commits it made.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub core: Core,
    pub commits: Vec<Commit>,
}

impl World {
    pub fn new() -> World {
        World::default()
    }

    /// Plans and applies `op`. A refusal must leave everything as it was.
    pub fn run(&mut self, caller: &Caller, op: &Op, now: &Now) -> (Result<Outcome, KvError>, Vec<Wake>) {
        match self.core.plan(caller, op, now) {
            Ok((plan, outcome)) => {
                let wakes = self.apply(plan);
                (Ok(outcome), wakes)
            }
            Err(e) => (Err(e), Vec::new()),
        }
    }

    /// `run`, for a call that must succeed and wake nobody.
    pub fn ok(&mut self, caller: &Caller, op: &Op, now: &Now) -> Outcome {
        let (outcome, wakes) = self.run(caller, op, now);
        let outcome = outcome.unwrap_or_else(|e| panic!("{} by {caller}: {e} [{}]", short(op), e.code()));
        assert_eq!(wakes, vec![], "{} woke callers", short(op));
        outcome
    }

    /// `run`, for a call that must be refused; checks nothing changed.
    pub fn refused(&mut self, caller: &Caller, op: &Op, now: &Now) -> KvError {
        let before = self.core.clone();
        let (outcome, _) = self.run(caller, op, now);
        let e = outcome.expect_err("refused");
        assert!(self.core == before, "a refused {} changed the store", short(op));
        e
    }

    pub fn event(&mut self, event: &Event, now: &Now) -> Vec<Wake> {
        let plan = self.core.plan_event(event, now);
        self.apply(plan)
    }

    fn apply(&mut self, plan: pod_kv::Plan) -> Vec<Wake> {
        self.core.apply(&plan);
        if !plan.commit.is_empty() {
            self.commits.push(plan.commit.clone());
        }
        plan.wakes
    }

    /// The lead restarts: waiters are gone, the layer is what the commits
    /// fold to, and the store rebases its deadlines at `now`.
    pub fn restart(&mut self, now: &Now) -> Vec<Wake> {
        let layer = Layer::replay(&self.commits).expect("the commits replay");
        assert_eq!(&layer, self.core.layer(), "replay differs from the running layer");
        self.core = Core::new(layer);
        self.event(&Event::Rebase, now)
    }
}

/// An op as a failure message shows it: values can be a megabyte.
pub fn short(op: &Op) -> String {
    let full = format!("{op:?}");
    match full.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &full[..cut]),
        None => full,
    }
}

/// The version a `set` returned.
pub fn version(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Written { version, .. } => *version,
        other => panic!("expected a write, got {other:?}"),
    }
}
