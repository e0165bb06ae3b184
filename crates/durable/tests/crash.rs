//! kill -9 of a writer on the shared commit path: this test binary runs
//! itself again as a child that commits on a toy store (a key per commit,
//! the head last) across many laps of a small write-ahead file and prints
//! every acknowledged commit; the parent kills it after a random number of
//! acknowledgements, reopens, and checks that every acknowledged commit is
//! there, whole, and that commits form a prefix (no gap).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable::{Durable, DurableError, Entry, Fill, Logged, Options, Records, WalOptions};

const DIR_ENV: &str = "DURABLE_CRASH_DIR";
const KILLS: usize = 25;

struct Toy;

const HEAD: &[u8] = b"m/head";

impl Records for Toy {
    type Commit = Vec<u8>;
    type Error = DurableError;

    fn head(&self, db: &sled::Db) -> Result<u64, DurableError> {
        Ok(db.get(HEAD).unwrap().map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap())))
    }

    fn decode(&self, entry: &Entry) -> Result<(u64, Vec<u8>), DurableError> {
        Ok((entry.seq, entry.payload.clone()))
    }

    fn replay(&mut self, db: &sled::Db, seq: u64, commit: Vec<u8>) -> Result<(), DurableError> {
        write(db, seq, &commit);
        Ok(())
    }
}

fn write(db: &sled::Db, seq: u64, payload: &[u8]) {
    db.insert(format!("r/{seq:08}"), payload).unwrap();
    db.insert(HEAD, &seq.to_be_bytes()).unwrap();
}

/// A value of commit `seq`: its seq repeated, of a length that varies, so
/// a torn or mixed value shows.
fn value(seq: u64) -> Vec<u8> {
    let words = 1 + (seq * 7919) % 300;
    (0..words).flat_map(|_| seq.to_le_bytes()).collect()
}

/// A few dozen commits per lap, so the children go around it many times.
fn options(dir: &Path) -> Options {
    Options {
        sled_dir: dir.join("sled"),
        wal_path: dir.join("wal"),
        wal: WalOptions { bytes: wal::MIN_BYTES + 16384, fill: Fill::Reserve },
        cache_bytes: 1 << 20,
        mode: sled::Mode::HighThroughput,
        lock_wait: Duration::from_secs(2),
    }
}

#[test]
#[ignore = "the child process of acknowledged_commits_survive_kill_9"]
fn crash_child() {
    let dir = std::env::var(DIR_ENV)
        .unwrap_or_else(|_| panic!("{DIR_ENV} is not set: this test is the child process of another, not run alone"));
    let (mut store, _, mut head) = Durable::open(&options(Path::new(&dir)), |_| Ok(Toy)).unwrap();
    // Bounded in case the parent died without killing us.
    let stop = Instant::now() + Duration::from_secs(60);
    while Instant::now() < stop {
        let seq = head + 1;
        let payload = value(seq);
        let logged = store
            .commit(seq, &payload, |db| {
                write(db, seq, &payload);
                Ok::<_, DurableError>(())
            })
            .unwrap();
        if logged == Logged::Ahead {
            write(store.db(), seq, &payload);
        }
        head = seq;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {seq}").unwrap();
        out.flush().unwrap();
    }
}

fn random_below(n: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    1 + (nanos ^ (nanos >> 17)) % n
}

#[test]
fn acknowledged_commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0u64;
    for _ in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted = random_below(150);
        let mut seen = 0;
        while seen < wanted {
            let line = lines.next().expect("the child stopped before it was killed").unwrap();
            if let Some(seq) = line.strip_prefix("ack ") {
                acknowledged = acknowledged.max(seq.parse().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Reading on after the kill: acknowledgements printed before it.
        for line in lines {
            if let Some(seq) = line.unwrap().strip_prefix("ack ") {
                acknowledged = acknowledged.max(seq.parse().unwrap());
            }
        }
        let (store, _, head) = Durable::open(&options(dir.path()), |_| Ok(Toy)).unwrap();
        assert!(head >= acknowledged, "commit {acknowledged} was acknowledged but the store ends at {head}");
        let held: Vec<(u64, Vec<u8>)> = store
            .db()
            .scan_prefix("r/")
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (std::str::from_utf8(&k[2..]).unwrap().parse().unwrap(), v.to_vec()))
            .collect();
        assert_eq!(held.len() as u64, head, "commits 1..={head} form a prefix");
        for (i, (seq, v)) in held.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(*v, value(*seq), "commit {seq} is whole");
        }
        acknowledged = head;
    }
    assert!(acknowledged > KILLS as u64);
}
