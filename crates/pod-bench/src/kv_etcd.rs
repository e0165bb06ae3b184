//! The etcd half of suite `kv` (feature `etcd`): the same two figures the
//! coordination store is held against, on a throwaway single-member etcd
//! on loopback with its data on the same disk as the store's, in the same
//! run: one put at a time on one client (`etcd_put_us_p50`, `_p99`), and
//! 32 clients, each a loop of puts of its own key
//! (`etcd_concurrent32_ops_per_s`). A put is etcd's durable write (its
//! WAL is fsynced before the answer), as a set is ours.
//!
//! Why a single member: the store is one process on one disk; a
//! three-member cluster on one machine would add the peers' round trips
//! and their disk writes to etcd's figures.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pod_registry::store::etcd::cluster::Cluster;

use crate::stats::quantile;

/// What was measured.
pub struct Figures {
    pub put_us_p50: u64,
    pub put_us_p99: u64,
    pub concurrent32_ops_per_s: f64,
}

/// Starts the member under `dir`, measures, stops it.
pub async fn measure(dir: &Path, rounds: usize, concurrent_secs: u64) -> Result<Figures, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Returns once the member leads (bounded), so the first put is answered.
    let member = Cluster::start_members(dir, 1)?;
    let endpoints = member.endpoints();
    let mut client = pod_registry::store::etcd::connect(&endpoints).await.map_err(|e| e.to_string())?;
    let mut put_us = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        client.put("/shared/bench", format!("value {i}"), None).await.map_err(|e| format!("etcd put: {e}"))?;
        put_us.push(t.elapsed().as_micros() as u64);
    }
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(32);
    for _ in 0..32 {
        clients.push(pod_registry::store::etcd::connect(&endpoints).await.map_err(|e| e.to_string())?);
    }
    let until = Instant::now() + Duration::from_secs(concurrent_secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let key = format!("/shared/c{c}");
            let mut n = 0u64;
            while Instant::now() < until {
                client.put(key.as_str(), n.to_le_bytes().to_vec(), None).await.map_err(|e| format!("etcd put: {e}"))?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let ops = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok(Figures {
        put_us_p50: quantile(&mut put_us, 0.5),
        put_us_p99: quantile(&mut put_us, 0.99),
        concurrent32_ops_per_s: ops.round(),
    })
}
