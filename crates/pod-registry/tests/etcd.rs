//! The registry shared through a real three-member etcd cluster on
//! loopback: several POD_HOMEs on this machine, each its own node with its
//! own daemon process. Contention across nodes, the etcd leader killed
//! under load, a node frozen past its lease, a node's registry killed and
//! restarted, a compaction while a node's watch is down. After every step
//! the one-writer invariant holds on the whole table and every node's view
//! equals what etcd holds.
//!
//! Skipped, with the reason printed, when there is no etcd binary, unless
//! POD_TEST_REQUIRE names `etcd`.
#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pod_registry::conflict::{self, Claim};
use pod_registry::store::etcd::{cluster::Cluster, keys};
use pod_registry::{Allocation, Client, Reply, Request, RequestId, StreamId, WireRule};
use tokio::sync::Barrier;

/// The etcd cluster of one test, or `None` (skipped, reason printed).
fn cluster(dir: &std::path::Path) -> Option<Cluster> {
    if let Err(why) = pod_registry::store::etcd::cluster::binary() {
        let required = std::env::var("POD_TEST_REQUIRE").unwrap_or_default();
        assert!(!required.split(',').any(|r| r.trim() == "etcd"), "POD_TEST_REQUIRE names etcd: {why}");
        println!("skipped: {why}");
        return None;
    }
    Some(Cluster::start(dir).expect("etcd cluster"))
}

/// One node: its own POD_HOME and daemon process.
struct Node {
    name: String,
    home: Home,
    endpoints: Vec<String>,
    ttl: u64,
    extra: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    async fn start(name: &str, endpoints: Vec<String>, ttl: u64) -> Node {
        Node::start_with(name, endpoints, ttl, Vec::new()).await
    }

    async fn start_with(name: &str, endpoints: Vec<String>, ttl: u64, extra: Vec<(String, String)>) -> Node {
        let mut node = Node { name: name.into(), home: Home::new(), endpoints, ttl, extra, child: None };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.home.dirs.registry_log()).expect("log");
        let child = Command::new(BIN)
            .arg("serve")
            .env("POD_HOME", self.home.path())
            .env("POD_ETCD", self.endpoints.join(","))
            .env("POD_NODE", &self.name)
            .env("POD_LEASE_TTL", self.ttl.to_string())
            .env("RUST_LOG", "info")
            .envs(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        let dirs = self.home.dirs.clone();
        wait_until(|| {
            let dirs = dirs.clone();
            async move { Client::connect_running(&dirs).await.is_ok() }
        })
        .await;
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn client(&self) -> Client {
        client(&self.home).await
    }

    async fn list(&self) -> Vec<Allocation> {
        self.client().await.list().await.expect("list")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Everything etcd holds under the registry's prefix: allocations by name.
/// (Retried, bounded: a member that was just restarted may refuse at first.)
async fn in_etcd(endpoints: &[String]) -> BTreeMap<String, Allocation> {
    let deadline = Instant::now() + BOUND;
    let resp = loop {
        let read = async {
            let mut c = pod_registry::store::etcd::connect(endpoints).await.map_err(|e| e.to_string())?;
            c.get(keys::pods(), Some(etcd_client::GetOptions::new().with_prefix())).await.map_err(|e| e.to_string())
        };
        match read.await {
            Ok(resp) => break resp,
            Err(e) => assert!(Instant::now() < deadline, "cannot read etcd: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    resp.kvs()
        .iter()
        .map(|kv| pod_registry::store::etcd::decode_record(kv).expect("record").0)
        .map(|a| (a.name.to_string(), a))
        .collect()
}

/// The invariants on the whole table, after every step: every node's view
/// equals what etcd holds (once the feeds caught up, bounded), and at every
/// path at most one Pod has effective write.
async fn check_cluster(nodes: &[&Node], endpoints: &[String], what: &str) -> BTreeMap<String, Allocation> {
    let deadline = Instant::now() + BOUND;
    let truth = loop {
        let truth = in_etcd(endpoints).await;
        let mut agree = true;
        for node in nodes {
            let view: BTreeMap<String, Allocation> =
                node.list().await.into_iter().map(|a| (a.name.to_string(), a)).collect();
            agree &= view == truth;
        }
        if agree {
            break truth;
        }
        assert!(Instant::now() < deadline, "{what}: the nodes' views did not converge on etcd's table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let records: Vec<Allocation> = truth.values().cloned().collect();
    let next = records.iter().map(|a| a.fence).max().unwrap_or(0) + 1;
    let state = pod_registry::state::State::from_records(records, next).expect("a consistent table");
    for held in state.iter() {
        let claim =
            Claim { name: &held.rec.name, allow: &held.rec.allow, caps: held.rec.write_caps().collect(), skip: None };
        if let Err(e) = conflict::check(&state, &claim) {
            panic!("{what}: two writers: {e}");
        }
    }
    truth
}

fn refusal(e: pod_registry::ClientError) -> (String, String) {
    (e.code().to_string(), e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_for_the_same_paths_get_one_winner_and_the_losers_name_it_and_its_node() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = cluster(tmp.path()) else { return };
    let eps = etcd.endpoints();
    let nodes = [
        Node::start("n1", eps.clone(), 10).await,
        Node::start("n2", eps.clone(), 10).await,
        Node::start("n3", eps.clone(), 10).await,
    ];
    const ROUNDS: usize = 20;
    for racers in [2usize, 3] {
        let barrier = Arc::new(Barrier::new(racers));
        let mut tasks = Vec::new();
        for (i, node) in nodes.iter().enumerate().take(racers) {
            let (dirs, barrier) = (node.home.dirs.clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect_running(&dirs).await.expect("connect");
                let mut outcomes = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait().await;
                    let target = race_target(racers, round, i);
                    let res = c.register(&reg(&format!("k{racers}-r{round}-n{}", i + 1), vec![w(&target)])).await;
                    outcomes.push(res.map(|a| a.name.to_string()).map_err(refusal));
                }
                outcomes
            }));
        }
        let mut per_round: Vec<Vec<Result<String, (String, String)>>> = vec![Vec::new(); ROUNDS];
        for t in tasks {
            for (round, o) in t.await.expect("racer").into_iter().enumerate() {
                per_round[round].push(o);
            }
        }
        for (round, outcomes) in per_round.iter().enumerate() {
            // Racer i's outcome is outcomes[i] (the tasks were awaited in order).
            let winners: Vec<(usize, &String)> =
                outcomes.iter().enumerate().filter_map(|(i, o)| o.as_ref().ok().map(|w| (i, w))).collect();
            assert_eq!(winners.len(), 1, "{racers} nodes, round {round}: winners {winners:?} of {outcomes:?}");
            let (w, winner) = winners[0];
            let node = winner.rsplit('-').next().expect("node suffix");
            for (i, outcome) in outcomes.iter().enumerate() {
                let Err((code, message)) = outcome else { continue };
                assert_eq!(code, "registry.write_conflict", "round {round}: {message}");
                let (asked, held) = (race_target(racers, round, i), race_target(racers, round, w));
                // The variable parts by their role: the loser's path, the
                // winner's, the overlap (the deeper of the two), the winner
                // and its node (a message naming another node keeps it).
                let deeper = if asked.len() > held.len() { &asked } else { &held };
                let mut settings = insta::Settings::clone_current();
                settings.add_filter(&format!(r"both cover {deeper}/\*\*\)"), "both cover [the deeper path]/**)");
                settings.add_filter(&format!(r"^write {asked}/\*\* conflicts"), "write [asked]/** conflicts");
                settings.add_filter(&format!(r"holds write {held}/\*\* "), "holds write [held]/** ");
                settings.add_filter(
                    &format!(r"with pod {winner} on node {node}, "),
                    "with pod [winner] on node [its node], ",
                );
                settings.bind(|| {
                    insta::allow_duplicates! {
                        insta::assert_snapshot!(message, @"write [asked]/** conflicts with pod [winner] on node [its node], which holds write [held]/** (both cover [the deeper path]/**)");
                    }
                });
            }
        }
        check_cluster(&nodes.iter().collect::<Vec<_>>(), &eps, &format!("after {racers} nodes raced")).await;
    }
    // The whole message, once: the holder and its node.
    nodes[2].client().await.register(&reg("holder", vec![w("/fixed")])).await.expect("holder");
    let e = nodes[0].client().await.register(&reg("late", vec![w("/fixed/deep")])).await.expect_err("held");
    insta::assert_snapshot!(refusal(e).1, @"write /fixed/deep/** conflicts with pod holder on node n3, which holds write /fixed/** (both cover /fixed/deep/**)");
}

/// What racer `i` of `racers` asks for in `round`. Even rounds: the same
/// path; odd rounds: a parent and its child paths (rN, rN/a, rN/a/a).
fn race_target(racers: usize, round: usize, i: usize) -> String {
    if round % 2 == 0 {
        format!("/race{racers}/r{round}")
    } else {
        format!("/race{racers}/r{round}{}", "/a".repeat(i))
    }
}

/// One client of one node delegating and reclaiming children of its lead
/// until told to stop; errors (etcd electing a leader) are counted, not
/// fatal: the next step goes on.
async fn churn(
    dirs: pod_proto::RuntimeDirs,
    lead: String,
    journal: Journal,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
) {
    let mut c = Client::connect_running(&dirs).await.expect("connect");
    for k in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let name = format!("{lead}-c{k}");
        for step in [Step::Delegate, Step::Reclaim] {
            journal.in_flight.lock().expect("lock").insert(name.clone(), step);
            loop {
                let res = match step {
                    Step::Delegate => {
                        c.delegate(&n(&lead), &n(&name), &[w(&format!("/load/{lead}/{k}"))], &[]).await.map(drop)
                    }
                    Step::Reclaim => c.reclaim(&n(&lead), &n(&name)).await.map(drop),
                };
                match res {
                    Ok(()) => break,
                    // A delegate whose outcome was unknown and that did apply.
                    Err(e) if e.code() == "registry.duplicate_name" && step == Step::Delegate => break,
                    Err(e) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        assert!(
                            matches!(e.code(), "registry.etcd_unavailable"),
                            "only etcd's unavailability may refuse a step: {e} [{}]",
                            e.code()
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            journal.in_flight.lock().expect("lock").remove(&name);
            journal.acked.lock().expect("lock").entry(name.clone()).or_default().push(step);
            journal.count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Every acknowledged step is in the table, and no half operation.
fn check_journal_of(lead: &str, table: &BTreeMap<String, Allocation>, journal: &Journal, what: &str) {
    let lead_rec = table.get(lead).expect("lead survives");
    for a in table.values().filter(|a| a.parent.as_ref().map(|p| p.as_str()) == Some(lead)) {
        assert!(lead_rec.layers.contains_key(&a.name), "{what}: {} without its parent's layer", a.name);
    }
    for child in lead_rec.layers.keys() {
        assert!(table.contains_key(child.as_str()), "{what}: layer for {child} without its allocation");
    }
    let acked = journal.acked.lock().expect("lock");
    for (name, steps) in acked.iter().filter(|(n, _)| n.starts_with(&format!("{lead}-"))) {
        match steps.last() {
            Some(Step::Reclaim) => assert!(!table.contains_key(name), "{what}: acknowledged reclaim of {name} lost"),
            Some(Step::Delegate) => assert!(table.contains_key(name), "{what}: acknowledged delegate of {name} lost"),
            None => {}
        }
    }
}

async fn wait_count(journal: &Journal, at_least: usize) {
    let count = journal.count.clone();
    wait_until(|| {
        let count = count.clone();
        async move { count.load(Ordering::SeqCst) >= at_least }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_etcd_leader_under_load_loses_nothing_acknowledged_and_work_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(mut etcd) = cluster(tmp.path()) else { return };
    let eps = etcd.endpoints();
    let nodes = [Node::start("n1", eps.clone(), 10).await, Node::start("n2", eps.clone(), 10).await];
    let journal = Journal::default();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..3 {
            let lead = format!("lead{i}{j}");
            node.client().await.register(&reg(&lead, vec![w(&format!("/load/{lead}"))])).await.expect("lead");
            tasks.push(tokio::spawn(churn(
                node.home.dirs.clone(),
                lead,
                journal.clone(),
                stop.clone(),
                errors.clone(),
            )));
        }
    }
    wait_count(&journal, 60).await;
    let leader = etcd.leader().expect("leader");
    etcd.kill9(leader);
    let at_kill = journal.count.load(Ordering::SeqCst);
    wait_count(&journal, at_kill + 120).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client");
    }
    let survivors: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| etcd.endpoint(i)).collect();
    let table = check_cluster(&nodes.iter().collect::<Vec<_>>(), &survivors, "after the leader was killed").await;
    for i in 0..2 {
        for j in 0..3 {
            check_journal_of(&format!("lead{i}{j}"), &table, &journal, "after the leader was killed");
        }
    }
    etcd.restart(leader).expect("restart the old leader");
    etcd.wait_leader().expect("a leader again");
    check_cluster(&nodes.iter().collect::<Vec<_>>(), &eps, "after the old leader came back").await;
    println!(
        "{} steps acknowledged, {} after the kill, {} refused while etcd elected a leader",
        journal.count.load(Ordering::SeqCst),
        journal.count.load(Ordering::SeqCst) - at_kill,
        errors.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_ttl_loses_its_paths_only_at_expiry_and_is_fenced_after() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = cluster(tmp.path()) else { return };
    let eps = etcd.endpoints();
    let ttl = 3;
    let (a, b) = (Node::start("a", eps.clone(), ttl).await, Node::start("b", eps.clone(), ttl).await);
    a.client().await.register(&reg("x", vec![w("/shared/p")])).await.expect("x on a");
    check_cluster(&[&a, &b], &eps, "x registered on a").await;
    let mut etcd_client = pod_registry::store::etcd::connect(&eps).await.expect("etcd");
    let node_a = String::from_utf8(keys::node(&pod_registry::NodeName::new("a").expect("node"))).expect("utf8");

    signal(a.pid(), rustix::process::Signal::STOP);
    let frozen = Instant::now();
    let mut b_client = b.client().await;
    let mut refusals = 0;
    let granted = loop {
        match b_client.register(&reg("y", vec![w("/shared/p")])).await {
            Ok(rec) => break rec,
            Err(e) => {
                let (code, message) = refusal(e);
                assert_eq!(code, "registry.write_conflict", "{message}");
                insta::allow_duplicates! {
                    insta::assert_snapshot!(message, @"write /shared/p/** conflicts with pod x on node a, which holds write /shared/p/** (both cover /shared/p/**)");
                }
                refusals += 1;
                // a's node record still exists: its lease has not expired.
                assert!(frozen.elapsed() < Duration::from_secs(ttl + 5), "b was never granted a's path");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let waited = frozen.elapsed();
    // Granted only once etcd had expired a's lease (its node record, bound
    // to the same lease, is gone), and not before the lease could expire.
    let node_record = etcd_client.get(node_a.clone(), None).await.expect("read").kvs().len();
    assert_eq!(node_record, 0, "b was granted a's path while a's lease lived");
    assert!(refusals > 0, "b was refused while a's lease lived");
    assert!(
        waited >= Duration::from_millis(ttl * 1000 * 2 / 3),
        "granted after {waited:?}, before a's lease could expire"
    );
    assert_eq!(granted.node.as_ref().map(|n| n.as_str()), Some("b"));
    let y_before = in_etcd(&eps).await.get("y").cloned().expect("y in etcd");

    signal(a.pid(), rustix::process::Signal::CONT);
    let mut a_client = a.client().await;
    // Once a's feed has applied the deletes (x gone from its view), x is
    // fenced there, and every request about it says so.
    let dirs = a.home.dirs.clone();
    wait_until(|| {
        let dirs = dirs.clone();
        async move {
            let mut c = Client::connect_running(&dirs).await.expect("connect");
            c.get(&n("x")).await.is_ok_and(|x| x.is_none())
        }
    })
    .await;
    let fenced = a_client.delegate(&n("x"), &n("x-child"), &[w("/shared/p/sub")], &[]).await.expect_err("fenced");
    assert_eq!(fenced.code(), "registry.fenced", "{fenced}");
    insta::with_settings!({filters => vec![(r"revision \d+", "revision [n]")]}, {
        insta::assert_snapshot!(fenced.to_string(), @"fenced: pod x: its allocation went with node a's etcd lease (deleted at revision [n]); its paths may be another Pod's now");
    });
    let fenced = a_client.release(&n("x")).await.expect_err("fenced");
    assert_eq!(fenced.code(), "registry.fenced", "{fenced}");
    insta::with_settings!({filters => vec![(r"revision \d+", "revision [n]")]}, {
        insta::assert_snapshot!(fenced.to_string(), @"fenced: pod x: its allocation went with node a's etcd lease (deleted at revision [n]); its paths may be another Pod's now");
    });
    // The stale node touched none of the new holder's keys.
    assert_eq!(in_etcd(&eps).await.get("y"), Some(&y_before));
    let table = check_cluster(&[&a, &b], &eps, "after a woke up").await;
    assert_eq!(table.keys().collect::<Vec<_>>(), ["y"]);
    // a takes a new lease; until then its writes stay fenced, after it a
    // new registration there works.
    let deadline = Instant::now() + BOUND;
    while let Err(e) = a_client.register(&reg("z", vec![w("/shared/q")])).await {
        assert_eq!(e.code(), "registry.fenced", "{e}");
        assert!(Instant::now() < deadline, "a never took a new lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_cluster(&[&a, &b], &eps, "after a registered again").await;
    println!("b refused {refusals} times, granted after {waited:?} (TTL {ttl} s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_nodes_registry_and_a_restart_within_the_ttl_lose_and_double_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = cluster(tmp.path()) else { return };
    let eps = etcd.endpoints();
    let mut a = Node::start("a", eps.clone(), 10).await;
    let b = Node::start("b", eps.clone(), 10).await;
    a.client().await.register(&reg("lead", vec![w("/d")])).await.expect("lead");
    // A request whose answer is asked for again after the restart.
    let id = RequestId { stream: StreamId::random().expect("random"), seq: 1 };
    let request = Request::Register {
        id: Some(id),
        name: "once".into(),
        pid: std::process::id(),
        socket: String::new(),
        session: String::new(),
        allow: vec![WireRule::from(&w("/load/once"))],
        deny: vec![],
        layers: BTreeMap::new(),
        scratch: vec![],
    };
    let first = a.client().await.call(&request).await.expect("first");
    let journal = Journal::default();
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(delegate_reclaim_until_error(a.home.dirs.clone(), "lead".into(), journal.clone())))
        .collect();
    wait_count(&journal, 40).await;
    a.kill9();
    for t in tasks {
        t.await.expect("client");
    }
    // What etcd holds with a's daemon dead (nothing can change it now).
    let before = in_etcd(&eps).await;
    a.spawn().await;
    let table = check_cluster(&[&a, &b], &eps, "after a's registry restarted").await;
    let by_name: Vec<Allocation> = table.values().cloned().collect();
    check_journal(
        &by_name.iter().filter(|r| r.name.as_str() != "once").cloned().collect::<Vec<_>>(),
        &journal,
        "after the restart",
    );
    // The lease was taken back: records untouched since the kill kept their
    // fences (and so their keys, tokens and lease).
    for name in ["lead", "once"] {
        assert_eq!(table.get(name).map(|r| r.fence), before.get(name).map(|r| r.fence), "{name} was rewritten");
    }
    let again = a.client().await.call(&request).await.expect("the same request again");
    assert_eq!(again, first, "a retried request gets the first answer");
    assert!(matches!(again, Reply::Allocation(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_while_a_nodes_watch_is_down_loses_no_delete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(mut etcd) = cluster(tmp.path()) else { return };
    let eps = etcd.endpoints();
    // a talks to member 0 only, with the reconcile pass off: only its
    // watch's recovery can bring the delete.
    let no_reconcile = vec![("POD_TEST_NO_RECONCILE".to_string(), "1".to_string())];
    let a = Node::start_with("a", vec![etcd.endpoint(0)], 10, no_reconcile).await;
    let b = Node::start("b", vec![etcd.endpoint(1), etcd.endpoint(2)], 10).await;
    b.client().await.register(&reg("x", vec![w("/c/x")])).await.expect("x");
    check_cluster(&[&a, &b], &eps, "x registered").await;

    etcd.kill9(0);
    let mut bc = b.client().await;
    bc.release(&n("x")).await.expect("release x");
    for k in 0..20 {
        bc.register(&reg(&format!("z{k}"), vec![w(&format!("/c/z{k}"))])).await.expect("z");
    }
    let mut direct = pod_registry::store::etcd::connect(&[etcd.endpoint(1)]).await.expect("etcd");
    let revision = direct.get("x", None).await.expect("read").header().expect("header").revision();
    direct.compact(revision, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    etcd.restart(0).expect("member 0 back");

    let live: Vec<String> = (0..3).map(|i| etcd.endpoint(i)).collect();
    let table = check_cluster(&[&a, &b], &live, "after the compaction").await;
    assert!(!table.contains_key("x"), "x was released");
    // It was a's watch that recovered (the reconcile pass is off): it broke
    // with member 0 and the table was read again at a fresh revision.
    assert!(a.home.log().contains("the watch stopped; reading the table again"), "{}", a.home.log());
    assert!(!a.home.log().contains("periodic reconcile"), "the reconcile pass ran");
}

/// The request a Pod on a shared registry holds: answered at once with the
/// node's lease, and again as soon as a keepalive moves the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_watch_carries_the_nodes_deadline_and_each_renewal() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = cluster(tmp.path()) else { return };
    let a = Node::start("a", etcd.endpoints(), 3).await;
    let mut c = a.client().await;
    let rec = c.register(&reg("x", vec![w("/l/x")])).await.expect("x");
    let watch = |deadline_after| Request::WatchLease { name: "x".into(), after_fence: rec.fence, deadline_after };
    let Reply::WatchedLease { record, lease: Some(first) } = c.call(&watch(0)).await.expect("watch") else {
        panic!("a lease watch is answered with the lease")
    };
    assert_eq!(record.as_ref().map(|r| r.fence), Some(rec.fence));
    let now = pod_registry::store::etcd::boottime_ms();
    assert!(first.deadline_ms > now && first.deadline_ms <= now + 3000, "{first:?} at {now}");
    assert_eq!((first.ttl_ms, first.margin_ms, first.lost.as_deref()), (3000, 300, None));
    let started = Instant::now();
    let Reply::WatchedLease { lease: Some(next), .. } = c.call(&watch(first.deadline_ms)).await.expect("watch") else {
        panic!("a lease watch is answered with the lease")
    };
    assert!(next.deadline_ms > first.deadline_ms, "{next:?} after {first:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at the renewal, not at the watch bound");
}
