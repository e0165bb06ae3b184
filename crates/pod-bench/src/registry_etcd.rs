//! Suite `registry --store etcd`: registry operations on a table shared
//! through etcd, next to their peer measured in the same run: one bare
//! guarded transaction (a compare on a key's revision and a put) through
//! the same etcd client, sampled between the timed calls. Also how fast a
//! dead node's paths are free on another node.
//!
//! To say where a delegate's time goes, the same rounds also time a bare
//! transaction of the delegate's shape (`delegate_shaped_txn_us`: its
//! compares and its lease-bound puts, of the sizes the real records have,
//! on keys of the bench's own): the delegate minus that is the daemon's
//! share (its socket round trip, planning, and the hops between its
//! writer and the etcd client), the shaped minus the bare is what the
//! delegate's bigger transaction costs etcd. The same shape once more on
//! keys inside the registry's prefix (`delegate_shaped_watched_txn_us`),
//! which both nodes' feeds watch and skip, says what etcd's notifying
//! those watchers adds.
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
    let node_a = format!("a-{run_id}");
    let result = sequential_rt.block_on(sequential(args, &home_a, &endpoints, &node_a, &root)).and_then(|samples| {
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
    shaped: Vec<u64>,
    shaped_watched: Vec<u64>,
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

/// A bare transaction of a delegate's shape (see the module comment): the
/// node record's create revision, the parent's token and fence, the child
/// absent, one range guard per claim range the child's rule needs; puts of
/// the parent, the child, its claim and the remembered answer, bound to a
/// lease. Keys under the bench's own prefix, through a client connected as
/// the daemon's.
struct ShapedTxn {
    client: etcd_client::Client,
    base: String,
    lease: i64,
    node_token: i64,
    parent_token: i64,
    parent_fence: i64,
    through: i64,
    ranges: usize,
    sizes: RecordSizes,
    round: usize,
}

/// Value sizes of a delegate's puts, read from what the daemon wrote.
#[derive(Clone, Copy)]
struct RecordSizes {
    parent: usize,
    child: usize,
    answer: usize,
}

impl ShapedTxn {
    async fn open(endpoints: &[String], base: String, ranges: usize, sizes: RecordSizes) -> Result<ShapedTxn, String> {
        let mut client = pod_registry::store::etcd::connect(endpoints).await.map_err(|e| e.to_string())?;
        let lease = client.lease_grant(600, None).await.map_err(|e| format!("etcd lease: {e}"))?.id();
        let with_lease = || Some(etcd_client::PutOptions::new().with_lease(lease));
        let node = client.put(format!("{base}/n"), "node", with_lease()).await.map_err(|e| format!("etcd put: {e}"))?;
        let node_token = node.header().map_or(0, |h| h.revision());
        let parent = client
            .put(format!("{base}/p/parent"), vec![b'p'; sizes.parent], with_lease())
            .await
            .map_err(|e| format!("etcd put: {e}"))?;
        let parent_token = parent.header().map_or(0, |h| h.revision());
        Ok(ShapedTxn {
            client,
            base,
            lease,
            node_token,
            parent_token,
            parent_fence: parent_token,
            through: parent_token,
            ranges,
            sizes,
            round: 0,
        })
    }

    async fn sample(&mut self) -> Result<u64, String> {
        self.round += 1;
        let (base, k) = (&self.base, self.round);
        let parent = format!("{base}/p/parent");
        let child = format!("{base}/p/child-{k}");
        let mut compares = vec![
            Compare::create_revision(format!("{base}/n"), CompareOp::Equal, self.node_token),
            Compare::create_revision(parent.clone(), CompareOp::Equal, self.parent_token),
            Compare::mod_revision(parent.clone(), CompareOp::Equal, self.parent_fence),
            Compare::version(child.clone(), CompareOp::Equal, 0),
        ];
        for r in 0..self.ranges {
            compares.push(
                Compare::mod_revision(format!("{base}/c/{r}/\0"), CompareOp::Less, self.through + 1)
                    .with_range(format!("{base}/c/{r}/\u{1}")),
            );
        }
        let with_lease = || Some(etcd_client::PutOptions::new().with_lease(self.lease));
        let ops = vec![
            TxnOp::put(parent, vec![b'p'; self.sizes.parent], with_lease()),
            TxnOp::put(child, vec![b'c'; self.sizes.child], with_lease()),
            TxnOp::put(format!("{base}/c/{}/\0child-{k}\0s", self.ranges), Vec::new(), with_lease()),
            TxnOp::put(format!("{base}/a/stream"), vec![b'a'; self.sizes.answer], with_lease()),
        ];
        let txn = Txn::new().when(compares).and_then(ops);
        let start = Instant::now();
        let resp = self.client.txn(txn).await.map_err(|e| format!("etcd txn: {e}"))?;
        let took = us(start);
        if !resp.succeeded() {
            return Err("the delegate-shaped transaction's guards failed: someone else wrote its keys".into());
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        (self.parent_fence, self.through) = (revision, revision);
        Ok(took)
    }

    async fn close(mut self) {
        let _ = self.client.lease_revoke(self.lease).await;
    }
}

/// The value sizes of a delegate's puts: the parent's and the child's
/// records and the largest remembered answer of node `node`, as etcd holds
/// them now.
async fn record_sizes(
    endpoints: &[String],
    node: &str,
    parent: &scope::PodName,
    child: &scope::PodName,
) -> Result<RecordSizes, String> {
    use pod_registry::store::etcd::keys;
    let mut client = pod_registry::store::etcd::connect(endpoints).await.map_err(|e| e.to_string())?;
    let size = |kvs: &[etcd_client::KeyValue]| kvs.iter().map(|kv| kv.value().len()).max().unwrap_or(0);
    let p = client.get(keys::pod(parent), None).await.map_err(|e| format!("etcd get: {e}"))?;
    let parent = size(p.kvs());
    let c = client.get(keys::pod(child), None).await.map_err(|e| format!("etcd get: {e}"))?;
    let child = size(c.kvs());
    let node = pod_registry::NodeName::new(node.to_string())?;
    let a = client
        .get(keys::answers(&node), Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("etcd get: {e}"))?;
    let answer = size(a.kvs());
    Ok(RecordSizes { parent, child, answer })
}

async fn sequential(
    args: &Args,
    home: &std::path::Path,
    endpoints: &[String],
    node: &str,
    root: &str,
) -> Result<Samples, String> {
    let e = |what: &'static str| move |err: pod_registry::ClientError| format!("{what}: {err}");
    let dirs = dirs_for(home);
    let mut c = connect(&dirs).await?;
    populate(&dirs, args.n).await?;
    c.register(&registration("lead", &format!("{root}/work"))?).await.map_err(e("register lead"))?;
    let mut txn = BareTxn::open(endpoints, format!("/pod-bench/{}/txn", std::process::id())).await?;
    let lead = name("lead")?;
    // One delegate untimed, to read the sizes of what it writes.
    let probe = name("d-probe")?;
    let probe_rule = write(&format!("{root}/work/seq/probe"))?;
    c.delegate(&lead, &probe, std::slice::from_ref(&probe_rule), &[]).await.map_err(e("delegate"))?;
    let sizes = record_sizes(endpoints, node, &lead, &probe).await?;
    c.reclaim(&lead, &probe).await.map_err(e("reclaim"))?;
    let ranges = pod_registry::store::etcd::keys::overlapping(&probe_rule.region()).len();
    let mut shaped =
        ShapedTxn::open(endpoints, format!("/pod-bench/{}/shaped", std::process::id()), ranges, sizes).await?;
    // The same shape on keys inside the registry's prefix, which both
    // nodes' feeds watch (and skip: they name no pod and no answer).
    let watched_base = format!("{}zbench-{}/shaped", pod_registry::store::etcd::keys::PREFIX, std::process::id());
    let mut shaped_watched = ShapedTxn::open(endpoints, watched_base, ranges, sizes).await?;
    let mut samples = Samples {
        delegate: Vec::new(),
        reclaim: Vec::new(),
        check: Vec::new(),
        txn: Vec::with_capacity(args.rounds),
        shaped: Vec::with_capacity(args.rounds),
        shaped_watched: Vec::with_capacity(args.rounds),
    };
    for k in 0..args.rounds {
        let child = name(&format!("d-{k}"))?;
        let rules = [write(&format!("{root}/work/seq/{k}"))?];
        samples.txn.push(txn.sample().await?);
        samples.shaped.push(shaped.sample().await?);
        samples.shaped_watched.push(shaped_watched.sample().await?);
        let start = Instant::now();
        c.delegate(&lead, &child, &rules, &[]).await.map_err(e("delegate"))?;
        samples.delegate.push(us(start));
        let start = Instant::now();
        c.reclaim(&lead, &child).await.map_err(e("reclaim"))?;
        samples.reclaim.push(us(start));
    }
    txn.close().await;
    shaped.close().await;
    shaped_watched.close().await;
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
    let Samples { mut delegate, mut reclaim, mut check, mut txn, mut shaped, mut shaped_watched } = s;
    let delegate_p50 = quantile(&mut delegate, 0.50);
    let txn_p50 = quantile(&mut txn, 0.50);
    let shaped_p50 = quantile(&mut shaped, 0.50);
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
        "delegate_shaped_txn_us_p50": shaped_p50,
        "delegate_shaped_txn_us_p99": quantile(&mut shaped, 0.99),
        "delegate_shaped_over_etcd_txn": round2(shaped_p50 as f64 / txn_p50.max(1) as f64),
        "delegate_daemon_share_us_p50": delegate_p50.saturating_sub(shaped_p50),
        "delegate_shaped_watched_txn_us_p50": quantile(&mut shaped_watched, 0.50),
        "delegate_shaped_watched_txn_us_p99": quantile(&mut shaped_watched, 0.99),
        "expiry_to_free_ms": expiry_to_free_ms,
        "expiry_goal_ms": args.lease_ttl * 1000 + 1000,
    })
}
