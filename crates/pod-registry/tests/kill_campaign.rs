//! The registry under kill -9, twenty times: 8 clients delegate and reclaim
//! in a loop, the daemon is killed with SIGKILL at a random moment of each
//! round and restarted. After every restart, every acknowledged operation is
//! there and no half operation is visible (a child without its parent's
//! layer, or a layer without its child).
//!
//! The moments come from a seed printed at the start; `POD_KILL_SEED=N`
//! replays a run.

mod common;

use std::sync::atomic::Ordering;

use common::*;

const KILLS: usize = 20;
const CLIENTS: usize = 8;

/// xorshift64*: enough randomness for kill moments, reproducible by seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_lose_no_acknowledged_operation() {
    let seed: u64 = std::env::var("POD_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    println!("POD_KILL_SEED={seed}");
    let mut rng = seed;
    let home = Home::new();
    let mut daemon = Daemon::start(&home).await;
    client(&home).await.register(&reg("lead", vec![w("/d")])).await.expect("lead");
    let journal = Journal::default();
    let mut total_ops = 0;
    for round in 0..KILLS {
        // Kill after a random number of acknowledged operations this round.
        let moment = journal.count.load(Ordering::SeqCst) + 5 + (next(&mut rng) % 120) as usize;
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(delegate_reclaim_until_error(home.dirs.clone(), format!("c{round}-{i}"), journal.clone()))
            })
            .collect();
        let seen = journal.count.clone();
        wait_until(|| {
            let seen = seen.clone();
            async move { seen.load(Ordering::SeqCst) >= moment }
        })
        .await;
        daemon.kill9();
        for t in tasks {
            t.await.expect("client task");
        }
        total_ops = journal.count.load(Ordering::SeqCst);
        daemon = Daemon::start(&home).await;
        let all = client(&home).await.list().await.expect("list");
        check_journal(&all, &journal, &format!("round {round}"));
    }
    println!("{KILLS} kills, {total_ops} acknowledged operations, none lost");
    assert!(total_ops >= KILLS * 5);
}
