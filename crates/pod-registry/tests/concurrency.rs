//! Many clients at once: exactly one wins each race, and the group-commit
//! writer loses nothing acknowledged when the daemon is killed mid-burst.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use pod_registry::{Allocation, ClientError};
use tokio::sync::Barrier;

const RACERS: usize = 32;
const ROUNDS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_race_and_exactly_one_wins_each_round() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let dirs = home.dirs.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut c = pod_registry::Client::connect_running(&dirs).await.expect("connect");
            let mut outcomes = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                barrier.wait().await;
                // Targets on one chain (/race/rN, /race/rN/a, /race/rN/a/a,
                // ...): every pair overlaps, so exactly one can win.
                let target = format!("/race/r{round}{}", "/a".repeat(i % 8));
                let res = c.register(&reg(&format!("r{round}-c{i}"), vec![w(&target)])).await;
                outcomes.push(res.map(|a| a.name.to_string()).map_err(|e| (e.code().to_string(), e.to_string())));
            }
            outcomes
        }));
    }
    let mut per_round: Vec<Vec<Result<String, (String, String)>>> = vec![Vec::new(); ROUNDS];
    for t in tasks {
        for (round, outcome) in t.await.expect("racer").into_iter().enumerate() {
            per_round[round].push(outcome);
        }
    }
    for (round, outcomes) in per_round.iter().enumerate() {
        let winners: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = format!("pod {},", winners[0]);
        for (code, message) in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            assert_eq!(code, "registry.write_conflict", "round {round}: {message}");
            assert!(message.contains(&winner), "round {round}: {message} does not name {winner}");
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Delegate,
    Reclaim,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acknowledged_operation_and_leaves_no_half_one() {
    let home = Home::new();
    let mut daemon = Daemon::start(&home).await;
    client(&home).await.register(&reg("lead", vec![w("/d")])).await.expect("lead");
    // Per child name: the acknowledged steps, and the step in flight when
    // the daemon died (if any).
    let acked: Arc<Mutex<BTreeMap<String, Vec<Step>>>> = Arc::default();
    let in_flight: Arc<Mutex<BTreeMap<String, Step>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (dirs, acked, in_flight, count) = (home.dirs.clone(), acked.clone(), in_flight.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = pod_registry::Client::connect_running(&dirs).await.expect("connect");
            for k in 0.. {
                let name = format!("c{i}-{k}");
                for step in [Step::Delegate, Step::Reclaim] {
                    in_flight.lock().expect("lock").insert(name.clone(), step);
                    let res: Result<(), ClientError> = match step {
                        Step::Delegate => {
                            c.delegate(&n("lead"), &n(&name), &[w(&format!("/d/{name}"))], &[]).await.map(drop)
                        }
                        Step::Reclaim => c.reclaim(&n("lead"), &n(&name)).await.map(drop),
                    };
                    match res {
                        Ok(()) => {
                            in_flight.lock().expect("lock").remove(&name);
                            acked.lock().expect("lock").entry(name.clone()).or_default().push(step);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    let seen = count.clone();
    wait_until(|| {
        let seen = seen.clone();
        async move { seen.load(Ordering::SeqCst) >= 400 }
    })
    .await;
    daemon.kill9();
    for t in tasks {
        t.await.expect("client task");
    }
    let _restarted = Daemon::start(&home).await;
    let all = client(&home).await.list().await.expect("list");
    let by_name: BTreeMap<String, &Allocation> = all.iter().map(|a| (a.name.to_string(), a)).collect();
    let lead = by_name.get("lead").expect("lead survives");
    // No half operation: every child has its parent's layer, every layer
    // its child.
    for a in &all {
        if a.name.as_str() != "lead" {
            assert_eq!(a.parent, Some(n("lead")));
            assert!(lead.layers.contains_key(&a.name), "child {} without the parent's layer", a.name);
        }
    }
    for child in lead.layers.keys() {
        assert!(by_name.contains_key(child.as_str()), "layer for {child} without its allocation");
    }
    // Every acknowledged operation is there.
    let acked = acked.lock().expect("lock");
    let in_flight = in_flight.lock().expect("lock");
    let mut checked = 0;
    for (name, steps) in acked.iter() {
        let exists = by_name.contains_key(name.as_str());
        match (steps.last(), in_flight.get(name)) {
            (Some(Step::Reclaim), _) => assert!(!exists, "{name}: acknowledged reclaim lost"),
            (Some(Step::Delegate), None) => assert!(exists, "{name}: acknowledged delegate lost"),
            // The reclaim was in flight: either outcome is allowed.
            (Some(Step::Delegate), Some(_)) => {}
            (None, _) => {}
        }
        checked += 1;
    }
    assert!(checked >= 200, "too few operations checked: {checked}");
}
