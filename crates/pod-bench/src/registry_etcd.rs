//! Suite `registry --store etcd`: registry operations on a table shared
//! through etcd, next to their peer measured in the same run: one bare
//! guarded transaction (a compare on a key's revision and a put) through
//! the same etcd client, sampled between the timed calls. Also how fast a
//! dead node's paths are free on another node.
//!
//! The etcd cluster is a throwaway three-member one on loopback (data in
//! the run's temporary directory) unless `--etcd URLS` names one. Two nodes
//! run: `a`, which is timed, and `b`, which is killed with SIGKILL while it
//! holds a path; `expiry_to_free_ms` runs from that kill (the last moment
//! `b` could have kept its lease alive) until `a` is granted the path, so
//! it includes the lease's TTL: the goal is at most TTL + 1 s.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use pod_registry::store::etcd::cluster::Cluster;
use scope::{Permission, ScopePath};
use serde_json::{json, Value};

use crate::registry_suite::{
    concurrent, connect, dirs_for, name, populate, registration, round2, us, write, Args, Daemon, Layout,
};
use crate::stats::quantile;

const CHECK_SAMPLES: usize = 5000;

pub fn run(args: &Args) -> Result<Value, String> {
    if !(2..=3600).contains(&args.lease_ttl) {
        return Err(format!("--lease-ttl {}: 2..=3600 s", args.lease_ttl));
    }
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), std::path::PathBuf::from),
    };
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("reg-etcd-bench-")
        .tempdir_in(&base)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", base.display()))?;
    let (cluster, endpoints) = match &args.etcd {
        Some(urls) => (None, urls.split(',').map(str::to_string).collect::<Vec<_>>()),
        None => {
            let etcd_dir = tmp.path().join("etcd");
            std::fs::create_dir_all(&etcd_dir).map_err(|e| format!("{}: {e}", etcd_dir.display()))?;
            let c = Cluster::start(&etcd_dir)?;
            let eps = c.endpoints();
            (Some(c), eps)
        }
    };
    let run_id = std::process::id();
    let env = |node: &str| {
        vec![
            ("POD_ETCD", endpoints.join(",")),
            ("POD_NODE", format!("{node}-{run_id}")),
            ("POD_LEASE_TTL", args.lease_ttl.to_string()),
        ]
    };
    let (home_a, home_b) = (tmp.path().join("a"), tmp.path().join("b"));
    for home in [&home_a, &home_b] {
        dirs_for(home).ensure().map_err(|e| e.to_string())?;
    }
    let mut a = Daemon::start(&home_a, &env("a"))?;
    let mut b = Daemon::start(&home_b, &env("b"))?;
    let sequential_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let concurrent_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let root = format!("/bench-{run_id}");
    let result = sequential_rt.block_on(sequential(args, &home_a, &endpoints, &root)).and_then(|samples| {
        let ops = concurrent_rt.block_on(concurrent(&dirs_for(&home_a), args.concurrent_pairs, Layout::OwnParent))?;
        let expiry = sequential_rt.block_on(expiry(&home_a, &home_b, &mut b, &root))?;
        Ok(report(args, samples, ops, expiry, endpoints.len()))
    });
    a.stop();
    b.stop();
    drop(cluster);
    result
}

struct Samples {
    delegate: Vec<u64>,
    reclaim: Vec<u64>,
    check: Vec<u64>,
    txn: Vec<u64>,
}

/// A guarded transaction as bare as one can be: a compare on the key's mod
/// revision and a put of it, through a client connected as the daemon's.
struct BareTxn {
    client: etcd_client::Client,
    key: String,
    revision: i64,
}

impl BareTxn {
    async fn open(endpoints: &[String], key: String) -> Result<BareTxn, String> {
        let mut client = pod_registry::store::etcd::connect(endpoints).await.map_err(|e| e.to_string())?;
        let put = client.put(key.clone(), "0", None).await.map_err(|e| format!("etcd put: {e}"))?;
        let revision = put.header().map_or(0, |h| h.revision());
        Ok(BareTxn { client, key, revision })
    }

    async fn sample(&mut self) -> Result<u64, String> {
        let txn = Txn::new()
            .when([Compare::mod_revision(self.key.clone(), CompareOp::Equal, self.revision)])
            .and_then([TxnOp::put(self.key.clone(), self.revision.to_string(), None)]);
        let start = Instant::now();
        let resp = self.client.txn(txn).await.map_err(|e| format!("etcd txn: {e}"))?;
        let took = us(start);
        if !resp.succeeded() {
            return Err("the bare transaction's guard failed: someone else wrote its key".into());
        }
        self.revision = resp.header().map_or(0, |h| h.revision());
        Ok(took)
    }

    async fn close(mut self) {
        let _ = self.client.delete(self.key.clone(), None).await;
    }
}

async fn sequential(args: &Args, home: &std::path::Path, endpoints: &[String], root: &str) -> Result<Samples, String> {
    let e = |what: &'static str| move |err: pod_registry::ClientError| format!("{what}: {err}");
    let dirs = dirs_for(home);
    let mut c = connect(&dirs).await?;
    populate(&dirs, args.n).await?;
    c.register(&registration("lead", &format!("{root}/work"))?).await.map_err(e("register lead"))?;
    let mut txn = BareTxn::open(endpoints, format!("/pod-bench/{}/txn", std::process::id())).await?;
    let lead = name("lead")?;
    let mut samples =
        Samples { delegate: Vec::new(), reclaim: Vec::new(), check: Vec::new(), txn: Vec::with_capacity(args.rounds) };
    for k in 0..args.rounds {
        let child = name(&format!("d-{k}"))?;
        let rules = [write(&format!("{root}/work/seq/{k}"))?];
        samples.txn.push(txn.sample().await?);
        let start = Instant::now();
        c.delegate(&lead, &child, &rules, &[]).await.map_err(e("delegate"))?;
        samples.delegate.push(us(start));
        let start = Instant::now();
        c.reclaim(&lead, &child).await.map_err(e("reclaim"))?;
        samples.reclaim.push(us(start));
    }
    txn.close().await;
    let probe = ScopePath::new(&format!("{root}/work/src/lib.rs")).map_err(|e| e.to_string())?;
    for _ in 0..CHECK_SAMPLES {
        let start = Instant::now();
        let verdict = c.check(&lead, &probe, Permission::Write).await.map_err(e("check"))?;
        samples.check.push(us(start));
        if !verdict.allowed {
            return Err(format!("lead should be able to write {probe}: {verdict:?}"));
        }
    }
    Ok(samples)
}

/// Node b holds a path and is killed; a asks for the path until granted.
async fn expiry(home_a: &std::path::Path, home_b: &std::path::Path, b: &mut Daemon, root: &str) -> Result<u64, String> {
    let target = format!("{root}/expiry");
    connect(&dirs_for(home_b))
        .await?
        .register(&registration("expiry-holder", &target)?)
        .await
        .map_err(|e| format!("register on b: {e}"))?;
    let mut a = connect(&dirs_for(home_a)).await?;
    // a must know of b's claim before b dies (its feed brings it).
    let wanted = registration("expiry-taker", &target)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.get(&name("expiry-holder")?).await.map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            return Err("node a never saw node b's claim".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.kill9();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(3600 + 60);
    loop {
        match a.register(&wanted).await {
            Ok(_) => return Ok(killed.elapsed().as_millis() as u64),
            Err(e) if e.code() == "registry.write_conflict" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(format!("a's registration after b died: {e}")),
        }
    }
}

fn report(args: &Args, s: Samples, concurrent32: u64, expiry_to_free_ms: u64, members: usize) -> Value {
    let Samples { mut delegate, mut reclaim, mut check, mut txn } = s;
    let delegate_p50 = quantile(&mut delegate, 0.50);
    let txn_p50 = quantile(&mut txn, 0.50);
    json!({
        "suite": "registry",
        "store": "etcd",
        "etcd_members": members,
        "n": args.n,
        "rounds": args.rounds,
        "lease_ttl_s": args.lease_ttl,
        "delegate_us_p50": delegate_p50,
        "delegate_us_p99": quantile(&mut delegate, 0.99),
        "reclaim_us_p50": quantile(&mut reclaim, 0.50),
        "reclaim_us_p99": quantile(&mut reclaim, 0.99),
        "check_us_p50": quantile(&mut check, 0.50),
        "check_us_p99": quantile(&mut check, 0.99),
        "concurrent32_ops_per_s": concurrent32,
        "etcd_txn_us_p50": txn_p50,
        "etcd_txn_us_p99": quantile(&mut txn, 0.99),
        "delegate_over_etcd_txn": round2(delegate_p50 as f64 / txn_p50.max(1) as f64),
        "expiry_to_free_ms": expiry_to_free_ms,
        "expiry_goal_ms": args.lease_ttl * 1000 + 1000,
    })
}
