//! Many clients at once: exactly one wins each race, and the group-commit
//! writer loses nothing acknowledged when the daemon is killed mid-burst.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
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
        // Every loser's whole line names the winner and the winner's rule:
        // the targets lie on one chain, so the region both cover is the
        // deeper one.
        let target = |pod: &str| {
            let i: usize = pod.rsplit_once("-c").and_then(|(_, i)| i.parse().ok()).expect("racer index");
            format!("/race/r{round}{}", "/a".repeat(i % 8))
        };
        let theirs = target(winners[0]);
        for (i, outcome) in outcomes.iter().enumerate() {
            let Err((code, message)) = outcome else { continue };
            let mine = format!("/race/r{round}{}", "/a".repeat(i % 8));
            let deeper = if mine.len() > theirs.len() { &mine } else { &theirs };
            let expected = format!(
                "write {mine}/** conflicts with pod {}, which holds write {theirs}/** (both cover {deeper}/**)",
                winners[0]
            );
            assert_eq!((code.as_str(), message), ("registry.write_conflict", &expected), "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acknowledged_operation_and_leaves_no_half_one() {
    let home = Home::new();
    let mut daemon = Daemon::start(&home).await;
    client(&home).await.register(&reg("lead", vec![w("/d")])).await.expect("lead");
    let journal = Journal::default();
    let tasks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(delegate_reclaim_until_error(home.dirs.clone(), format!("c{i}"), journal.clone())))
        .collect();
    let seen = journal.count.clone();
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
    let checked = check_journal(&all, &journal, "after the kill");
    assert!(checked >= 200, "too few operations checked: {checked}");
}
