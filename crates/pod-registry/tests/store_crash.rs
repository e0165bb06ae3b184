//! kill -9 of a process committing to the registry's store, at random
//! moments, over many laps of its write-ahead log: this test binary runs
//! itself again as a child that commits in a loop and prints every
//! acknowledged commit; the parent kills it, reopens the store and checks
//! that every acknowledged commit is there and that no commit is there in
//! part.
//!
//! Each commit `k` writes three keys at once: `a` and `b` with session
//! `k`, and `c{k}` while deleting `c{k-1}`. Commits are padded so that a
//! lap of the log holds a few hundred of them and the children cross from
//! one lap to the next (through a checkpoint of sled) many times.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pod_registry::limits::MAX_FIELD_BYTES;
use pod_registry::store::{Change, SledStore, Store, WAL_BYTES};
use pod_registry::{AllocState, Allocation};
use scope::PodName;

const DIR_ENV: &str = "POD_REGISTRY_STORE_CRASH_DIR";
const KILLS: usize = 25;
/// Bytes of padding per record: three records make a commit of ~12 KiB.
const PAD: usize = MAX_FIELD_BYTES - 64;

fn name(s: &str) -> PodName {
    PodName::new(s).unwrap()
}

fn record(pod: &str, commit: u64) -> Allocation {
    Allocation {
        name: name(pod),
        parent: None,
        state: AllocState::Reserved,
        pid: 0,
        start_time: 0,
        socket: "x".repeat(PAD),
        session: commit.to_string(),
        allow: Vec::new(),
        deny: Vec::new(),
        layers: BTreeMap::new(),
        fence: commit,
        former_parent: None,
        node: None,
    }
}

/// What the store holds: (session of a, session of b, the c records).
fn contents(store: &SledStore) -> (u64, u64, Vec<String>) {
    let stored = store.load().unwrap();
    let mut a = 0;
    let mut b = 0;
    let mut cs = Vec::new();
    for rec in stored.records {
        match rec.name.as_str() {
            "a" => a = rec.session.parse().unwrap(),
            "b" => b = rec.session.parse().unwrap(),
            other => cs.push(other.to_string()),
        }
    }
    (a, b, cs)
}

#[test]
#[ignore = "the child process of acknowledged_commits_survive_kill_9"]
fn store_crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else { return };
    let mut store = SledStore::open(Path::new(&dir)).unwrap();
    let (mut k, _, _) = contents(&store);
    let mut out = std::io::stdout().lock();
    loop {
        k += 1;
        let (a, b, c) = (record("a", k), record("b", k), record(&format!("c{k}"), k));
        let gone = name(&format!("c{}", k - 1));
        let mut changes = vec![Change::Put(&a), Change::Put(&b), Change::Put(&c)];
        if k > 1 {
            changes.push(Change::Delete(&gone));
        }
        store.commit(&changes, k + 1).unwrap();
        writeln!(out, "ack {k}").unwrap();
        out.flush().unwrap();
    }
}

/// Reopens the store and checks it against the last acknowledged commit.
/// Returns the commit the store holds.
fn check(dir: &Path, last_acked: u64) -> u64 {
    let store = SledStore::open(dir).unwrap();
    let (a, b, cs) = contents(&store);
    assert_eq!(a, b, "a and b come from different commits: a commit is there in part");
    assert!(a >= last_acked, "commit {last_acked} was acknowledged but the store holds only up to {a}");
    let expected: Vec<String> = if a == 0 { Vec::new() } else { vec![format!("c{a}")] };
    assert_eq!(cs, expected, "the c records do not match commit {a}");
    assert_eq!(store.load().unwrap().next_fence, a + 1, "the fence counter does not match commit {a}");
    a
}

#[test]
fn acknowledged_commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64) | 1;
    let mut last_acked = 0;
    let mut held = 0;
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["store_crash_child", "--exact", "--nocapture", "--ignored", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("ack ").and_then(|k| k.parse::<u64>().ok()) {
                    let _ = tx.send(k);
                }
            }
        });
        // xorshift64*: up to ~1.5 laps of the log before the kill.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let wait_for = rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % 600;
        for _ in 0..wait_for {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(k) => last_acked = last_acked.max(k),
                Err(e) => panic!("kill {kill}: no ack from the child within 20 s ({e:?})"),
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Printed before the kill: acknowledged too.
        last_acked = rx.try_iter().fold(last_acked, u64::max);
        held = check(dir.path(), last_acked);
    }
    let laps = held * 3 * PAD as u64 / WAL_BYTES;
    eprintln!("{KILLS} kills, {held} commits, about {laps} laps of the write-ahead log");
    assert!(laps >= 3, "the children did not get around the log often enough: {held} commits");
}

#[test]
fn commits_left_unsettled_are_in_the_store_after_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = SledStore::open(dir.path()).unwrap();
        for k in 1..=3 {
            let (a, b) = (record("a", k), record("b", k));
            store.commit(&[Change::Put(&a), Change::Put(&b)], k + 1).unwrap();
        }
        // The last commit is durable in the write-ahead log only; closing
        // writes it to sled and checkpoints.
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(contents(&store), (3, 3, Vec::new()));
    assert_eq!(store.load().unwrap().next_fence, 4);
}

#[test]
fn a_store_that_lost_durable_commits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = SledStore::open(dir.path()).unwrap();
        for k in 1..=2 {
            let (a, b) = (record("a", k), record("b", k));
            store.commit(&[Change::Put(&a), Change::Put(&b)], k + 1).unwrap();
        }
    }
    // sled made durable through commit 2 on close, and the log's header
    // says so; lose sled behind its back.
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    let err = SledStore::open(dir.path()).err().expect("refused");
    assert_eq!(err.code(), "registry.corrupt", "{err}");
    assert!(err.to_string().contains("sled holds commits up to 0 but"), "{err}");
    assert!(err.to_string().contains("held up to 2"), "{err}");
}
