//! The registry under kill -9, twenty times: 8 clients delegate and reclaim
//! in a loop, the daemon is killed with SIGKILL at a random moment of each
//! round and restarted. After every restart, every acknowledged operation is
//! there and no half operation is visible (a child without its parent's
//! layer, or a layer without its child).
//!
//! The moments come from a seed printed at the start; `POD_KILL_SEED=N`
//! replays a run.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use pod_registry::{Allocation, ClientError};

const KILLS: usize = 20;
const CLIENTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Delegate,
    Reclaim,
}

/// xorshift64*: enough randomness for kill moments, reproducible by seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

type Acked = Arc<Mutex<BTreeMap<String, Vec<Step>>>>;
type InFlight = Arc<Mutex<BTreeMap<String, Step>>>;

fn check(all: &[Allocation], acked: &Acked, in_flight: &InFlight, round: usize) -> usize {
    let by_name: BTreeMap<String, &Allocation> = all.iter().map(|a| (a.name.to_string(), a)).collect();
    let lead = by_name.get("lead").expect("lead survives every kill");
    for a in all.iter().filter(|a| a.name.as_str() != "lead") {
        assert_eq!(a.parent, Some(n("lead")), "round {round}: {} lost its parent", a.name);
        assert!(lead.layers.contains_key(&a.name), "round {round}: child {} without the parent's layer", a.name);
    }
    for child in lead.layers.keys() {
        assert!(by_name.contains_key(child.as_str()), "round {round}: layer for {child} without its allocation");
    }
    let acked = acked.lock().expect("lock");
    let in_flight = in_flight.lock().expect("lock");
    for (name, steps) in acked.iter() {
        let exists = by_name.contains_key(name.as_str());
        match (steps.last(), in_flight.get(name)) {
            (Some(Step::Reclaim), _) => assert!(!exists, "round {round}: {name}: acknowledged reclaim lost"),
            (Some(Step::Delegate), None) => assert!(exists, "round {round}: {name}: acknowledged delegate lost"),
            // Its reclaim was in flight at the kill: either outcome is fine.
            (Some(Step::Delegate), Some(_)) | (None, _) => {}
        }
    }
    acked.len()
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
    let acked: Acked = Arc::default();
    let in_flight: InFlight = Arc::default();
    let mut total_ops = 0;
    for round in 0..KILLS {
        // Kill after a random number of acknowledged operations this round.
        let moment = 5 + (next(&mut rng) % 120) as usize;
        let count = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..CLIENTS {
            let (dirs, acked, in_flight, count) = (home.dirs.clone(), acked.clone(), in_flight.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = pod_registry::Client::connect_running(&dirs).await else { return };
                for k in 0.. {
                    let name = format!("c{round}-{i}-{k}");
                    for step in [Step::Delegate, Step::Reclaim] {
                        in_flight.lock().expect("lock").insert(name.clone(), step);
                        let res: Result<(), ClientError> = match step {
                            Step::Delegate => {
                                c.delegate(&n("lead"), &n(&name), &[w(&format!("/d/{name}"))], &[]).await.map(drop)
                            }
                            Step::Reclaim => c.reclaim(&n("lead"), &n(&name)).await.map(drop),
                        };
                        if res.is_err() {
                            return;
                        }
                        in_flight.lock().expect("lock").remove(&name);
                        acked.lock().expect("lock").entry(name.clone()).or_default().push(step);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        let seen = count.clone();
        wait_until(|| {
            let seen = seen.clone();
            async move { seen.load(Ordering::SeqCst) >= moment }
        })
        .await;
        daemon.kill9();
        for t in tasks {
            t.await.expect("client task");
        }
        total_ops += count.load(Ordering::SeqCst);
        daemon = Daemon::start(&home).await;
        let all = client(&home).await.list().await.expect("list");
        check(&all, &acked, &in_flight, round);
    }
    println!("{KILLS} kills, {total_ops} acknowledged operations, none lost");
    assert!(total_ops >= KILLS * 5);
}
