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
/// For `commits_then_abort_child`: how many commits to make before the abort.
const COMMITS_ENV: &str = "POD_REGISTRY_STORE_COMMITS";
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
        containment: None,
        node: None,
        scratch: Vec::new(),
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
    let dir = std::env::var(DIR_ENV)
        .unwrap_or_else(|_| panic!("{DIR_ENV} is not set: this test is the child process of another, not run alone"));
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
    insta::assert_snapshot!(err.to_string().replace(&dir.path().to_string_lossy().into_owned(), "[dir]"));
}

#[test]
#[ignore = "the child process of the damaged-entry tests"]
fn commits_then_abort_child() {
    let dir = std::env::var(DIR_ENV)
        .unwrap_or_else(|_| panic!("{DIR_ENV} is not set: this test is the child process of another, not run alone"));
    let commits: u64 = std::env::var(COMMITS_ENV).unwrap().parse().unwrap();
    let mut store = SledStore::open(Path::new(&dir)).unwrap();
    for k in 1..=commits {
        let (a, b) = (record("a", k), record("b", k));
        store.commit(&[Change::Put(&a), Change::Put(&b)], k + 1).unwrap();
    }
    // A real crash: no close, no checkpoint; the commits are durable in
    // the write-ahead log only.
    std::process::abort();
}

/// Runs `commits_then_abort_child` on `dir` and waits for its abort.
fn commit_then_crash(dir: &Path, commits: u64) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["commits_then_abort_child", "--exact", "--nocapture", "--ignored", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(COMMITS_ENV, commits.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child did not abort");
}

/// Where each entry of the write-ahead log's current lap starts (the
/// format of the `wal` crate: `len: u32 | crc32: u32 | seq: u64 | payload`
/// from `ENTRIES_START`), up to the first that is not there.
fn entry_offsets(wal: &[u8]) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let mut at = wal::ENTRIES_START as usize;
    while at + wal::ENTRY_OVERHEAD as usize <= wal.len() {
        let len = u32::from_le_bytes(wal[at..at + 4].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(wal[at + 8..at + 16].try_into().unwrap());
        if len == 0 {
            break;
        }
        out.push((seq, at));
        at += wal::ENTRY_OVERHEAD as usize + len;
    }
    out
}

/// Flips one byte in the payload of commit `seq`'s entry.
fn flip_commit(dir: &Path, seq: u64) {
    let path = dir.join("wal");
    let mut bytes = std::fs::read(&path).unwrap();
    let (_, at) = *entry_offsets(&bytes).iter().find(|(s, _)| *s == seq).expect("the commit's entry");
    bytes[at + wal::ENTRY_OVERHEAD as usize + 1] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
}

/// Commits 1 to 5 are acknowledged (durable in the write-ahead log only),
/// the process crashes, and a byte of commit 3 flips on disk: the store
/// does not open as if the log ended at commit 2 (losing 3, 4 and 5); it
/// refuses with `registry.corrupt` naming commit 3 and where it is, writes
/// nothing, and refuses again the same way.
#[test]
fn a_damaged_commit_with_whole_ones_after_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    commit_then_crash(dir.path(), 5);
    // sled had none of them made durable; take away what the killed
    // process may have left of it, so that only the log holds them.
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    flip_commit(dir.path(), 3);
    let wal_before = std::fs::read(dir.path().join("wal")).unwrap();
    let err = SledStore::open(dir.path()).err().expect("refused");
    assert_eq!(err.code(), "registry.corrupt", "{err}");
    let line = err.to_string().replace(&dir.path().to_string_lossy().into_owned(), "[dir]");
    insta::assert_snapshot!(line, @"stored registry data is corrupt: the write-ahead log [dir]/wal is damaged at byte 24474: commit 3 is in neither the log nor sled (sled holds commits up to 0; whole commits up to 5 follow the damage)");
    assert_eq!(std::fs::read(dir.path().join("wal")).unwrap(), wal_before, "a refused open wrote to the log");
    let again = SledStore::open(dir.path()).err().expect("refused again");
    assert_eq!(again.to_string(), err.to_string());
}

/// The same damage when sled holds every commit already (a crash after
/// sled was made durable, before the log's header said so): nothing
/// acknowledged is lost, so the store opens with commit 5, and a later
/// open finds a fresh lap.
#[test]
fn a_damaged_commit_sled_holds_already_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    commit_then_crash(dir.path(), 5);
    let crashed_log = std::fs::read(dir.path().join("wal")).unwrap();
    // A clean open and close puts commits 1 to 5 in sled, durably...
    drop(SledStore::open(dir.path()).unwrap());
    // ...and the log as the crash left it, its header older than sled.
    std::fs::write(dir.path().join("wal"), crashed_log).unwrap();
    flip_commit(dir.path(), 3);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(contents(&store), (5, 5, Vec::new()));
    assert_eq!(store.load().unwrap().next_fence, 6);
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(contents(&store), (5, 5, Vec::new()));
}
