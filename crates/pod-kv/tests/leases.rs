//! Leases: grants, fencing tokens, renew and release, TTL expiry, holders
//! that go away, FIFO queues, the lease list, and deadlines across a
//! restart of the lead and a reboot. The properties at the end run random
//! schedules against a model of what a holder may observe.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use pod_kv::limits::{MAX_LEASES, MAX_TTL_MS, MIN_TTL_MS};
use pod_kv::{BootId, Caller, Event, Holder, LeaseView, Now, Op, Outcome, Ticket, Wake};
use proptest::prelude::*;

fn granted(outcome: Outcome) -> LeaseView {
    match outcome {
        Outcome::Granted(v) | Outcome::Renewed(v) => v,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn queued(outcome: Outcome) -> Ticket {
    match outcome {
        Outcome::Queued { ticket } => ticket,
        other => panic!("expected a queue place, got {other:?}"),
    }
}

/// Who the wakes granted the lease to, by ticket.
fn grants_of(wakes: &[Wake]) -> Vec<(Ticket, u64)> {
    wakes
        .iter()
        .filter_map(|w| match &w.answer {
            Ok(Outcome::Granted(v)) => Some((w.ticket, v.token)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_free_lease_is_granted_with_a_token_and_an_expiry() {
    let mut w = World::new();
    let v = granted(w.ok(&member("w1"), &acquire("build", 2000, None), &at(100)));
    assert_eq!(v.name.as_str(), "build");
    assert_eq!((v.token, v.ttl_ms, v.remaining_ms, v.expires_at_ms), (1, 2000, 2000, EPOCH_MS + 2100));
    assert_eq!(v.holder, Holder::Pod(pod("w1")));
    let e = w.refused(&member("w2"), &acquire("build", 2000, None), &at(200));
    assert_eq!(e.to_string(), "lease build is held by w1 for another 1900 ms");
    assert_eq!(e.exit_code(), 3);
    let e = w.refused(&member("w1"), &acquire("build", 2000, Some(5000)), &at(200));
    assert_eq!(e.to_string(), "lease build is held by w1 (you; a lease is not re-entrant) for another 1900 ms");
    // Another incarnation of w1 (a later run of the Pod) is another holder.
    let later = Caller::Member(pod_run("w1", 99));
    queued(w.ok(&later, &acquire("build", 2000, Some(5000)), &at(200)));
}

#[test]
fn renew_extends_only_the_holders_own_live_grant() {
    let mut w = World::new();
    let v = granted(w.ok(&member("w1"), &acquire("l", 1000, None), &at(0)));
    let r = granted(w.ok(&member("w1"), &renew("l"), &at(900)));
    assert_eq!((r.token, r.remaining_ms, r.expires_at_ms), (v.token, 1000, EPOCH_MS + 1900));
    let longer = Op::Renew { name: "l".into(), token: Some(v.token), ttl_ms: Some(5000) };
    assert_eq!(granted(w.ok(&member("w1"), &longer, &at(1000))).remaining_ms, 5000);
    assert_eq!(w.refused(&member("w2"), &renew("l"), &at(1000)).code(), "kv.lease_held");
    let stale = Op::Renew { name: "l".into(), token: Some(v.token + 1), ttl_ms: None };
    assert_eq!(w.refused(&member("w1"), &stale, &at(1000)).code(), "kv.lease_stale");
    // Past its deadline a grant is over, even before the tick frees it.
    let e = w.refused(&member("w1"), &renew("l"), &at(6000));
    assert_eq!((e.code(), e.exit_code()), ("kv.lease_not_held", 4));
    assert_eq!(w.refused(&member("w1"), &renew("none"), &at(0)).code(), "kv.lease_not_held");
}

#[test]
fn release_hands_the_lease_to_the_first_in_line() {
    let mut w = World::new();
    let first = granted(w.ok(&member("w1"), &acquire("l", 1000, None), &at(0)));
    let t2 = queued(w.ok(&member("w2"), &acquire("l", 3000, Some(10_000)), &at(1)));
    let t3 = queued(w.ok(&member("w3"), &acquire("l", 3000, Some(10_000)), &at(2)));
    let listed = w.ok(&member("w3"), &Op::Leases, &at(3));
    let Outcome::Leases(views) = listed else { panic!("{listed:?}") };
    assert_eq!((views.len(), views[0].waiting), (1, 2));
    assert_eq!(w.refused(&member("w2"), &release("l"), &at(4)).code(), "kv.lease_held");
    let (out, wakes) = w.run(&member("w1"), &release("l"), &at(5));
    assert_eq!(
        out.expect("released"),
        Outcome::Released { name: pod_kv::LeaseName::new("l").expect("n"), token: first.token }
    );
    assert_eq!(grants_of(&wakes), vec![(t2, first.token + 1)]);
    let Ok(Outcome::Granted(v)) = &wakes[0].answer else { panic!("{wakes:?}") };
    assert_eq!((v.holder.clone(), v.ttl_ms, v.waiting), (Holder::Pod(pod("w2")), 3000, 1));
    let (_, wakes) = w.run(&member("w2"), &release("l"), &at(6));
    assert_eq!(grants_of(&wakes), vec![(t3, first.token + 2)]);
    w.ok(&member("w3"), &release("l"), &at(7));
    assert_eq!(w.refused(&member("w3"), &release("l"), &at(8)).code(), "kv.lease_not_held");
    assert_eq!(w.core.layer().grants().count(), 0);
}

#[test]
fn only_the_lead_and_the_operator_break_another_holders_lease() {
    let mut w = World::new();
    w.ok(&member("w1"), &acquire("l", 1000, None), &at(0));
    let break_it = Op::Release { name: "l".into(), token: None, overriding: true };
    let e = w.refused(&member("w2"), &break_it, &at(1));
    assert_eq!(
        e.to_string(),
        "member w2 may not write /leases/l: only the lead and the operator release another holder's lease"
    );
    w.ok(&lead(), &break_it, &at(1));
    w.ok(&member("w1"), &acquire("l", 1000, None), &at(2));
    w.ok(&operator(), &break_it, &at(3));
}

#[test]
fn a_lease_is_freed_when_its_ttl_passes_and_goes_to_the_next_waiter_still_waiting() {
    let mut w = World::new();
    w.ok(&member("w1"), &acquire("l", 1000, None), &at(0));
    let short = queued(w.ok(&member("w2"), &acquire("l", 1000, Some(500)), &at(0)));
    let long = queued(w.ok(&member("w3"), &acquire("l", 1000, Some(5000)), &at(0)));
    assert_eq!(w.core.next_deadline(&at(0)), Some(500));
    let wakes = w.event(&Event::Tick, &at(500));
    assert_eq!(wakes.len(), 1);
    assert_eq!(wakes[0].ticket, short);
    assert_eq!(wakes[0].answer.clone().expect_err("timed out").to_string(), "lease l was not granted within 500 ms");
    assert_eq!(w.core.next_deadline(&at(500)), Some(1000));
    assert_eq!(w.event(&Event::Tick, &at(999)), vec![]);
    let wakes = w.event(&Event::Tick, &at(1000));
    assert_eq!(grants_of(&wakes), vec![(long, 2)]);
    // With nobody waiting, the tick frees it.
    w.event(&Event::Tick, &at(2000));
    assert_eq!(w.core.layer().grants().count(), 0);
    assert_eq!(granted(w.ok(&member("w1"), &acquire("l", 1000, None), &at(2001))).token, 3);
}

#[test]
fn an_expired_grant_goes_to_the_queue_before_a_newcomer() {
    let mut w = World::new();
    w.ok(&member("w1"), &acquire("l", 1000, None), &at(0));
    let t2 = queued(w.ok(&member("w2"), &acquire("l", 1000, Some(5000)), &at(0)));
    // The tick is late: at 1200 the grant is over, w2 is first in line.
    let e = w.refused(&member("w3"), &acquire("l", 1000, None), &at(1200));
    assert_eq!(e.to_string(), "lease l is held by w2 for another 1000 ms");
    let (out, wakes) = w.run(&member("w3"), &acquire("l", 1000, Some(5000)), &at(1200));
    queued(out.expect("queued"));
    assert_eq!(grants_of(&wakes), vec![(t2, 2)]);
}

#[test]
fn a_holder_that_is_gone_frees_its_leases_and_its_place_in_line() {
    let mut w = World::new();
    w.ok(&member("w1"), &acquire("a", 60_000, None), &at(0));
    w.ok(&member("w1"), &acquire("b", 60_000, None), &at(0));
    w.ok(&member("w2"), &acquire("c", 60_000, None), &at(0));
    let w1_waits = queued(w.ok(&member("w1"), &acquire("c", 1000, Some(5000)), &at(0)));
    let w3_waits = queued(w.ok(&member("w3"), &acquire("a", 1000, Some(5000)), &at(0)));
    // A later run of w1 is not the one that died.
    assert_eq!(w.event(&Event::HolderGone(pod_run("w1", 2)), &at(10)), vec![]);
    let wakes = w.event(&Event::HolderGone(pod("w1")), &at(10));
    assert_eq!(grants_of(&wakes), vec![(w3_waits, 4)]);
    assert!(w.core.waits().get(w1_waits).is_none());
    let held: BTreeSet<String> = w.core.layer().grants().map(|g| format!("{}={}", g.name, g.holder)).collect();
    assert_eq!(held, BTreeSet::from(["a=w3".to_string(), "c=w2".to_string()]));
    assert_eq!(w.core.parties(), BTreeSet::from([pod("w2"), pod("w3")]));
}

#[test]
fn the_lease_list_shows_live_grants_to_everyone() {
    let mut w = World::new();
    w.ok(&member("w1"), &acquire("a", 1000, None), &at(0));
    w.ok(&operator(), &acquire("b", 5000, None), &at(0));
    for caller in [member("w2"), lead(), operator(), Caller::TreePod(pod("g"))] {
        let Outcome::Leases(views) = w.ok(&caller, &Op::Leases, &at(1500)) else { panic!() };
        let seen: Vec<String> = views.iter().map(|v| format!("{} {} {}", v.name, v.holder, v.remaining_ms)).collect();
        assert_eq!(seen, vec!["b operator 3500"], "the expired grant of a is not shown");
    }
}

#[test]
fn ttl_and_wait_limits_and_the_lease_limit() {
    let mut w = World::new();
    for ttl in [0, MIN_TTL_MS - 1, MAX_TTL_MS + 1] {
        assert_eq!(w.refused(&member("w1"), &acquire("l", ttl, None), &at(0)).code(), "kv.ttl_out_of_range");
    }
    let e = w.refused(&member("w1"), &acquire("l", 1000, Some(pod_kv::limits::MAX_WAIT_MS + 1)), &at(0));
    assert_eq!(e.code(), "kv.wait_out_of_range");
    assert_eq!(w.refused(&member("w1"), &acquire("a/b", 1000, None), &at(0)).code(), "kv.lease_bad_name");
    for i in 0..MAX_LEASES {
        w.ok(&member("w1"), &acquire(&format!("l{i}"), 1000, None), &at(0));
    }
    assert_eq!(w.refused(&member("w2"), &acquire("one-more", 1000, None), &at(0)).code(), "kv.too_many_leases");
}

#[test]
fn grants_and_tokens_survive_a_restart_of_the_lead() {
    let mut w = World::new();
    let v = granted(w.ok(&member("w1"), &acquire("l", 10_000, None), &at(0)));
    w.ok(&member("w2"), &acquire("l", 1000, Some(5000)), &at(1));
    // Same boot: the monotonic clock went on; waiters are gone with their
    // connections; the grant is as it was.
    assert_eq!(w.restart(&at(4000)), vec![]);
    assert!(w.core.waits().is_empty());
    let e = w.refused(&member("w2"), &acquire("l", 1000, None), &at(4000));
    assert_eq!(e.to_string(), "lease l is held by w1 for another 6000 ms");
    w.ok(&member("w1"), &release("l"), &at(5000));
    assert!(granted(w.ok(&member("w2"), &acquire("l", 1000, None), &at(5001))).token > v.token);
}

fn in_boot(boot: BootId, wall_ms: u64, mono_ms: u64) -> Now {
    Now { wall_ms: EPOCH_MS + wall_ms, mono_ms, boot }
}

#[test]
fn expiry_survives_a_reboot_by_the_wall_clock() {
    let mut w = World::new();
    w.ok(&operator(), &acquire("keep", 60_000, None), &at(1000));
    w.ok(&operator(), &acquire("gone", 5_000, None), &at(1000));
    // Rebooted 10 s of wall time later; the monotonic clock restarted.
    let after = in_boot(OTHER_BOOT, 11_000, 20);
    w.restart(&after);
    let names: Vec<String> = w.core.layer().grants().map(|g| g.name.to_string()).collect();
    assert_eq!(names, vec!["keep"]);
    let g = w.core.layer().grants().next().expect("keep").clone();
    assert_eq!((g.deadline.boot, g.deadline.mono_ms, g.remaining_ms(&after)), (OTHER_BOOT, 50_020, 50_000));
    assert_eq!(w.core.next_deadline(&after), Some(50_020));
    w.event(&Event::Tick, &in_boot(OTHER_BOOT, 61_000, 50_020));
    assert_eq!(w.core.layer().grants().count(), 0);
}

#[test]
fn a_wall_clock_set_back_at_a_reboot_cannot_stretch_a_lease() {
    let mut w = World::new();
    w.ok(&operator(), &acquire("l", 5_000, None), &at(100_000_000));
    let skewed = Now { wall_ms: EPOCH_MS, mono_ms: 10, boot: OTHER_BOOT };
    w.restart(&skewed);
    let g = w.core.layer().grants().next().expect("still held").clone();
    assert_eq!(g.remaining_ms(&skewed), 5_000);
    w.event(&Event::Tick, &Now { mono_ms: 5_010, ..skewed });
    assert_eq!(w.core.layer().grants().count(), 0);
}

// ---- properties ----

const HOLDERS: usize = 3;
const NAMES: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Step {
    Acquire { who: usize, lease: usize, ttl_ms: u64, wait_ms: Option<u64> },
    Renew { who: usize, lease: usize },
    Release { who: usize, lease: usize },
    Gone { who: usize },
    Cancel { pick: usize },
    Advance { ms: u64 },
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0..HOLDERS;
    let lease = 0..NAMES.len();
    prop_oneof![
        4 => (who.clone(), lease.clone(), prop_oneof![Just(100u64), Just(700), Just(3000)],
              prop_oneof![Just(None), Just(Some(200u64)), Just(Some(4000))])
            .prop_map(|(who, lease, ttl_ms, wait_ms)| Step::Acquire { who, lease, ttl_ms, wait_ms }),
        1 => (who.clone(), lease.clone()).prop_map(|(who, lease)| Step::Renew { who, lease }),
        2 => (who.clone(), lease).prop_map(|(who, lease)| Step::Release { who, lease }),
        1 => who.prop_map(|who| Step::Gone { who }),
        1 => (0..8usize).prop_map(|pick| Step::Cancel { pick }),
        3 => (0..1500u64).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Restart),
    ]
}

/// What holders have observed of one lease name.
#[derive(Default)]
struct Seen {
    /// The grant believed current: its holder (caller index and run), its
    /// token, and the monotonic instant it ends.
    current: Option<(usize, u64, u64, u64)>,
    /// Tickets queued, in order, not yet answered.
    queue: Vec<Ticket>,
}

struct Model {
    world: World,
    runs: [u64; HOLDERS],
    seen: BTreeMap<usize, Seen>,
    last_token: u64,
    now_ms: u64,
    /// Who waits behind which ticket, and for which lease.
    tickets: BTreeMap<Ticket, (usize, usize)>,
}

impl Model {
    fn caller(&self, who: usize) -> Caller {
        Caller::Member(pod_run(&format!("p{who}"), self.runs[who]))
    }

    fn now(&self) -> Now {
        at(self.now_ms)
    }

    /// Checks and records a grant to `who` of `lease`.
    fn granted(&mut self, who: usize, lease: usize, view: &LeaseView) -> Result<(), TestCaseError> {
        let now = self.now_ms;
        prop_assert!(view.token > self.last_token, "token {} after {}", view.token, self.last_token);
        self.last_token = view.token;
        let seen = self.seen.entry(lease).or_default();
        if let Some((prev, run, token, end)) = seen.current {
            prop_assert!(
                end <= now,
                "lease {} granted at {now} while p{prev} (run {run}, token {token}) holds it until {end}",
                NAMES[lease]
            );
        }
        seen.current = Some((who, self.runs[who], view.token, now + view.remaining_ms));
        Ok(())
    }

    fn wakes(&mut self, wakes: Vec<Wake>) -> Result<(), TestCaseError> {
        for wake in wakes {
            let (who, lease) = self.tickets.remove(&wake.ticket).expect("a ticket we queued");
            let seen = self.seen.entry(lease).or_default();
            let place = seen.queue.iter().position(|t| *t == wake.ticket).expect("queued");
            if let Ok(Outcome::Granted(view)) = &wake.answer {
                // Everyone ahead in line has been answered or has gone.
                prop_assert_eq!(place, 0, "ticket {:?} granted ahead of {:?}", wake.ticket, &seen.queue[..place]);
                seen.queue.remove(place);
                let view = view.clone();
                self.granted(who, lease, &view)?;
            } else {
                prop_assert_eq!(wake.answer.clone().map_err(|e| e.code()), Err("kv.timed_out"));
                seen.queue.remove(place);
            }
        }
        Ok(())
    }

    fn forget_tickets(&mut self, gone: impl Fn(&(usize, usize)) -> bool) {
        let dropped: Vec<Ticket> = self.tickets.iter().filter(|(_, v)| gone(v)).map(|(t, _)| *t).collect();
        for t in dropped {
            let (_, lease) = self.tickets.remove(&t).expect("ticket");
            self.seen.entry(lease).or_default().queue.retain(|q| *q != t);
        }
    }

    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let now = self.now();
        match *step {
            Step::Acquire { who, lease, ttl_ms, wait_ms } => {
                let (out, wakes) = self.world.run(&self.caller(who), &acquire(NAMES[lease], ttl_ms, wait_ms), &now);
                self.wakes(wakes)?;
                match out {
                    Ok(Outcome::Granted(view)) => self.granted(who, lease, &view)?,
                    Ok(Outcome::Queued { ticket }) => {
                        self.tickets.insert(ticket, (who, lease));
                        self.seen.entry(lease).or_default().queue.push(ticket);
                    }
                    Ok(other) => prop_assert!(false, "{other:?}"),
                    Err(e) => prop_assert!(matches!(e.code(), "kv.lease_held"), "{e}"),
                }
            }
            Step::Renew { who, lease } => {
                let (out, _) = self.world.run(&self.caller(who), &renew(NAMES[lease]), &now);
                if let Ok(Outcome::Renewed(view)) = out {
                    let seen = self.seen.entry(lease).or_default();
                    let cur = seen.current.as_mut().expect("a renewed lease is current");
                    prop_assert_eq!((cur.0, cur.1, cur.2), (who, self.runs[who], view.token));
                    prop_assert!(cur.3 > now.mono_ms, "renewed a grant that had ended");
                    cur.3 = now.mono_ms + view.remaining_ms;
                }
            }
            Step::Release { who, lease } => {
                let (out, wakes) = self.world.run(&self.caller(who), &release(NAMES[lease]), &now);
                if out.is_ok() {
                    let seen = self.seen.entry(lease).or_default();
                    let cur = seen.current.as_mut().expect("a released lease is current");
                    prop_assert_eq!((cur.0, cur.1), (who, self.runs[who]));
                    cur.3 = now.mono_ms;
                }
                self.wakes(wakes)?;
            }
            Step::Gone { who } => {
                let pod = pod_run(&format!("p{who}"), self.runs[who]);
                let run = self.runs[who];
                for seen in self.seen.values_mut() {
                    if let Some(cur) = seen.current.as_mut() {
                        if cur.0 == who && cur.1 == run {
                            cur.3 = cur.3.min(now.mono_ms);
                        }
                    }
                }
                self.forget_tickets(|(w, _)| *w == who);
                let wakes = self.world.event(&Event::HolderGone(pod), &now);
                self.wakes(wakes)?;
                self.runs[who] += 1;
            }
            Step::Cancel { pick } => {
                if let Some(ticket) = self.tickets.keys().nth(pick).copied() {
                    self.forget_tickets(|_| false);
                    let (_, lease) = self.tickets.remove(&ticket).expect("ticket");
                    self.seen.entry(lease).or_default().queue.retain(|q| *q != ticket);
                    prop_assert_eq!(self.world.event(&Event::Cancel(ticket), &now), vec![]);
                }
            }
            Step::Advance { ms } => {
                self.now_ms += ms;
                let wakes = self.world.event(&Event::Tick, &self.now());
                self.wakes(wakes)?;
            }
            Step::Restart => {
                self.forget_tickets(|_| true);
                let wakes = self.world.restart(&now);
                prop_assert_eq!(wakes, vec![]);
            }
        }
        // At most one live grant per name, and it is the one holders saw.
        let now = self.now();
        for (lease, name) in NAMES.iter().enumerate() {
            let grant = self.world.core.layer().grants().find(|g| g.name.as_str() == *name).filter(|g| g.is_live(&now));
            let seen = self.seen.entry(lease).or_default();
            match (grant, seen.current) {
                (Some(g), Some((_, _, token, end))) => {
                    prop_assert_eq!(g.token, token);
                    prop_assert_eq!(now.mono_ms + g.remaining_ms(&now), end);
                }
                (Some(g), None) => prop_assert!(false, "lease {name} held under token {} nobody saw granted", g.token),
                (None, Some((_, _, _, end))) => prop_assert!(end <= now.mono_ms, "lease {name} lost before its end"),
                (None, None) => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Tokens strictly increase; a lease is granted only once the last
    /// grant has ended (released, holder gone, TTL passed), so at every
    /// `now` at most one holder has a live grant; a freed lease goes to the
    /// first caller still in line; restarts lose no grant.
    #[test]
    fn one_holder_at_a_time_fifo_and_growing_tokens(steps in proptest::collection::vec(step(), 1..80)) {
        let mut model = Model {
            world: World::new(),
            runs: [1; HOLDERS],
            seen: BTreeMap::new(),
            last_token: 0,
            now_ms: 0,
            tickets: BTreeMap::new(),
        };
        for step in &steps {
            model.run(step)?;
        }
    }
}
