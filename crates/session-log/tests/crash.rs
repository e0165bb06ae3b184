//! kill -9 at random moments: this test binary runs itself again as a child
//! that appends batches from several threads and prints every acknowledged
//! batch; the parent kills it, reopens the log and checks that every
//! acknowledged batch is there, whole, and that no batch is there in part.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use session_log::{Event, LogOptions, SessionLog};

const DIR_ENV: &str = "SESSION_LOG_CRASH_DIR";
const KILLS: usize = 60;
const APPENDERS: u64 = 3;

/// A write-ahead file of a few dozen records, so that the children go
/// around it (flushing sled and starting a new lap) many times, and
/// some kills land in the middle of that.
fn log_options() -> LogOptions {
    LogOptions { checkpoint_every: 200, wal_bytes: wal::MIN_BYTES + 8192, ..LogOptions::default() }
}

/// Batch `id` of `n` events: child names `b{id}-{i}-{n}`, so the parent can
/// tell from the records alone which batch each event belongs to.
fn batch(id: u64, n: u64) -> Vec<Event> {
    (0..n).map(|i| spawned(&format!("b{id}-{i}-{n}"))).collect()
}

fn parse_name(name: &str) -> (u64, u64, u64) {
    let parts: Vec<u64> = name.trim_start_matches('b').split('-').map(|p| p.parse().unwrap()).collect();
    (parts[0], parts[1], parts[2])
}

/// xorshift64*: enough randomness for kill timing and batch sizes.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    (nanos ^ u64::from(std::process::id())) | 1
}

#[test]
#[ignore = "the child process of acknowledged_batches_survive_kill_9"]
fn crash_child() {
    let dir = std::env::var(DIR_ENV)
        .unwrap_or_else(|_| panic!("{DIR_ENV} is not set: this test is the child process of another, not run alone"));
    let log = Arc::new(SessionLog::open(&dir, log_options()).unwrap());
    let state = log.replay().unwrap();
    if state.last_seq == 0 {
        log.append(vec![created()]).unwrap();
    }
    let next_id = state.children.keys().map(|n| parse_name(n.as_str()).0 + 1).max().unwrap_or(0);
    let next_id = Arc::new(AtomicU64::new(next_id));
    let threads: Vec<_> = (0..APPENDERS)
        .map(|t| {
            let (log, next_id) = (Arc::clone(&log), Arc::clone(&next_id));
            std::thread::spawn(move || {
                let mut rng = seed() ^ (t << 32);
                // Bounded in case the parent died without killing us.
                let stop = Instant::now() + Duration::from_secs(60);
                while Instant::now() < stop {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    let n = 1 + next_random(&mut rng) % 5;
                    let r = log.append(batch(id, n)).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {id} {} {}", r.first_seq, r.last_seq).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    id: u64,
    first: u64,
    last: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut it = line.strip_prefix("ack ")?.split(' ').map(|p| p.parse::<u64>().ok());
    Some(Ack { id: it.next()??, first: it.next()??, last: it.next()?? })
}

/// Reopens the log and checks it against everything acknowledged so far.
fn check(dir: &Path, acked: &[Ack]) -> u64 {
    let log = SessionLog::open(dir, log_options()).unwrap();
    let report = log.verify().unwrap();
    let state = log.replay().unwrap();
    assert_eq!(state.last_seq, report.last_seq);
    let mut batches: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut open: Option<(u64, u64, u64, u64)> = None; // id, next index, size, first seq
    for record in log.read_from(2) {
        let record = record.unwrap();
        let Event::ChildSpawned { name, .. } = &record.event else { panic!("unexpected {:?}", record.event) };
        let (id, i, n) = parse_name(name.as_str());
        let (oid, oi, on, first) = open.take().unwrap_or((id, 0, n, record.seq));
        assert_eq!((id, i, n), (oid, oi, on), "record {} breaks batch {oid} ({oi}/{on} seen)", record.seq);
        if i + 1 == n {
            assert!(batches.insert(id, (first, record.seq)).is_none(), "batch {id} twice");
        } else {
            open = Some((id, i + 1, n, first));
        }
    }
    assert_eq!(open, None, "a batch is only partly in the log");
    assert_eq!(state.children.len() as u64, state.last_seq.saturating_sub(1));
    for a in acked {
        assert_eq!(batches.get(&a.id), Some(&(a.first, a.last)), "acknowledged batch {} lost or moved", a.id);
    }
    state.last_seq
}

#[test]
fn acknowledged_batches_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = seed();
    let mut acked = Vec::new();
    let started = Instant::now();
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--ignored", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = parse_ack(&line) {
                    let _ = tx.send(ack);
                }
            }
        });
        // Sometimes before the first ack (even before the log is open),
        // otherwise after a random number of them.
        let wait_for = next_random(&mut rng) % 30;
        for _ in 0..wait_for {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(ack) => acked.push(ack),
                Err(e) => panic!("kill {kill}: no ack from the child within 20 s ({e:?})"),
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Printed before the kill: acknowledged too.
        acked.extend(rx.try_iter());
        let last = check(dir.path(), &acked);
        assert!(acked.iter().all(|a| a.last <= last));
    }
    let elapsed = started.elapsed();
    eprintln!("{KILLS} kills, {} acknowledged batches, {elapsed:?}", acked.len());
    assert!(acked.len() > KILLS, "the children barely appended: {} acks", acked.len());
}
