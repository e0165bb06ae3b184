//! The durable store of a layer, on real files: what survives a reopen and
//! a kill -9 of the writer, retries answered from their record, expiry
//! carried across a restart, owner-only files.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pod_kv::store::now::{boot_id, now};
use pod_kv::store::{Job, KvStore, RequestId};
use pod_kv::{Caller, Expect, Incarnation, KvError, Now, Op, Outcome, PodRef};

const DIR_ENV: &str = "POD_KV_CRASH_DIR";
/// Set (to anything) for the writer whose every fourth value is large, so
/// that the write-ahead file's lap fills between kills.
const LARGE_ENV: &str = "POD_KV_CRASH_LARGE";
/// Repeats of a large value's unit: about 100 KiB.
const LARGE_REPEAT: usize = 10_000;
const WORKERS: u64 = 4;
const KILLS: usize = 8;

fn member(name: &str) -> Caller {
    Caller::Member(PodRef { name: name.parse().unwrap(), incarnation: Incarnation { pid: 7, start_time: 9 } })
}

fn clock() -> Now {
    now(boot_id().unwrap())
}

fn set(key: &str, value: &[u8]) -> Op {
    Op::Set { key: key.into(), value: value.to_vec(), expect: Expect::Any, overriding: false }
}

fn one(store: &mut KvStore, caller: &Caller, op: Op, id: Option<RequestId>) -> Result<Outcome, KvError> {
    let mut answered = store.commit(&[Job::Request { caller: caller.clone(), op, id }], &clock()).unwrap();
    answered.answers.pop().unwrap().map(|o| o.unwrap())
}

fn version_of(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Written { version, .. } | Outcome::Found(pod_kv::Found { version, .. }) => version,
        other => panic!("not a write or a read: {other:?}"),
    }
}

#[test]
fn values_and_versions_survive_a_reopen_and_the_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let w1 = member("w1");
    {
        let mut store = KvStore::open(&kv, &clock()).unwrap();
        assert_eq!(version_of(one(&mut store, &w1, set("/peer/self/result", b"\x00\xffbytes"), None).unwrap()), 1);
        assert_eq!(version_of(one(&mut store, &w1, set("/shared/progress", b"1"), None).unwrap()), 1);
        assert_eq!(version_of(one(&mut store, &w1, set("/shared/progress", b"2"), None).unwrap()), 2);
    }
    let mut store = KvStore::open(&kv, &clock()).unwrap();
    let found = one(&mut store, &w1, Op::Get { key: "/peer/w1/result".into() }, None).unwrap();
    let Outcome::Found(found) = found else { panic!("{found:?}") };
    assert_eq!((found.value.as_slice(), found.version), (&b"\x00\xffbytes"[..], 1));
    // Versions go on from the counters, across the reopen.
    assert_eq!(version_of(one(&mut store, &w1, set("/shared/progress", b"3"), None).unwrap()), 3);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&kv), 0o700);
    assert_eq!(mode(&kv.join("sled")), 0o700);
    assert_eq!(mode(&kv.join("wal")), 0o600);
    for entry in std::fs::read_dir(kv.join("sled")).unwrap() {
        let entry = entry.unwrap();
        let want = if entry.file_type().unwrap().is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&entry.path()), want, "{}", entry.path().display());
    }
}

/// Commits go to the write-ahead file only; sled gets a lap's groups when
/// the lap fills and at a clean close. Here laps fill several times, and
/// the write-ahead file is removed after the close: what the reopen finds
/// is then only what sled was given.
#[test]
fn full_laps_and_a_clean_close_leave_every_value_in_sled() {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let w1 = member("w1");
    let big = |i: usize, round: u8| vec![round.wrapping_add(i as u8); 200 << 10];
    const KEYS: usize = 40;
    // The version of each key's last set (versions count per namespace).
    let mut versions = vec![0; KEYS];
    {
        let mut store = KvStore::open(&kv, &clock()).unwrap();
        for round in 0..2u8 {
            for (i, version) in versions.iter_mut().enumerate() {
                let key = format!("/shared/k{i}");
                *version = version_of(one(&mut store, &w1, set(&key, &big(i, round)), None).unwrap());
            }
        }
        one(&mut store, &w1, Op::Delete { key: "/shared/k0".into(), overriding: false }, None).unwrap();
    }
    const { assert!(KEYS as u64 * 2 * (200 << 10) > 3 * pod_kv::store::WAL_BYTES, "the laps fill at least three times") };
    std::fs::remove_file(kv.join("wal")).unwrap();
    let mut store = KvStore::open(&kv, &clock()).unwrap();
    let gone = one(&mut store, &w1, Op::Get { key: "/shared/k0".into() }, None);
    assert!(matches!(gone, Err(KvError::NotFound { .. })), "{gone:?}");
    for (i, &version) in versions.iter().enumerate().skip(1) {
        let found = one(&mut store, &w1, Op::Get { key: format!("/shared/k{i}") }, None).unwrap();
        let Outcome::Found(found) = found else { panic!("{found:?}") };
        assert_eq!((found.value, found.version), (big(i, 1), version), "key {i}");
    }
}

#[test]
fn a_retried_mutation_is_answered_from_its_record_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let w1 = member("w1");
    let id = |seq| Some(RequestId { client: 42, seq });
    {
        let mut store = KvStore::open(&kv, &clock()).unwrap();
        assert_eq!(version_of(one(&mut store, &w1, set("/shared/n", b"a"), id(1)).unwrap()), 1);
        assert_eq!(version_of(one(&mut store, &w1, set("/shared/n", b"b"), id(2)).unwrap()), 2);
    }
    // The answer to seq 2 was lost with the lead; the retry comes to the
    // reopened store.
    let mut store = KvStore::open(&kv, &clock()).unwrap();
    assert_eq!(version_of(one(&mut store, &w1, set("/shared/n", b"b"), id(2)).unwrap()), 2);
    let current = one(&mut store, &w1, Op::Get { key: "/shared/n".into() }, None).unwrap();
    assert_eq!(version_of(current), 2, "the retry wrote nothing");
    let stale = one(&mut store, &w1, set("/shared/n", b"a"), id(1)).unwrap_err();
    assert_eq!(
        format!("{} {stale}", stale.code()),
        "kv.request_stale request 1 of this client is older than its last one (2): a late duplicate, not retried"
    );
    // The same client id of another caller is another stream.
    assert_eq!(version_of(one(&mut store, &member("w2"), set("/shared/n", b"c"), id(1)).unwrap()), 3);
}

#[test]
fn a_lease_keeps_its_deadline_across_a_reopen_and_is_freed_once_it_passed() {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let w1 = member("w1");
    let acquire = |ttl_ms| Op::Acquire { name: "build".into(), ttl_ms, wait_ms: None };
    let start = clock();
    {
        let mut store = KvStore::open(&kv, &start).unwrap();
        let answered =
            store.commit(&[Job::Request { caller: w1.clone(), op: acquire(60_000), id: None }], &start).unwrap();
        assert!(matches!(answered.answers[0], Ok(Some(Outcome::Granted(_)))), "{:?}", answered.answers);
    }
    // Reopened 1 s later in the same boot: still held, with 59 s left.
    let later = Now { mono_ms: start.mono_ms + 1_000, wall_ms: start.wall_ms + 1_000, ..start };
    {
        let mut store = KvStore::open(&kv, &later).unwrap();
        let grant = store.core().layer().grants().next().cloned().expect("the grant survived");
        assert_eq!(grant.remaining_ms(&later), 59_000);
        let held =
            store.commit(&[Job::Request { caller: member("w2"), op: acquire(1_000), id: None }], &later).unwrap();
        assert_eq!(held.answers[0].as_ref().unwrap_err().code(), "kv.lease_held");
    }
    // Reopened after a reboot, 61 s of wall time later: the wall clock
    // decides, and the grant is over.
    let rebooted = Now { mono_ms: 5, wall_ms: start.wall_ms + 61_000, boot: pod_kv::BootId([0xee; 16]) };
    let store = KvStore::open(&kv, &rebooted).unwrap();
    assert_eq!(store.core().layer().grants().count(), 0);
}

/// A value of worker `t`'s `n`th set: its name repeated, of a length that
/// varies, so a torn or mixed value shows. With `large`, every fourth is
/// about 100 KiB (its unit starts with `L`, so a reader knows).
fn value(t: u64, n: u64, large: bool) -> Vec<u8> {
    if large && n % 4 == 0 {
        return format!("L{t}-{n};").repeat(LARGE_REPEAT).into_bytes();
    }
    let unit = format!("w{t}-{n};");
    unit.repeat(1 + ((n * 7919 + t) % 400) as usize).into_bytes()
}

fn parse_value(raw: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(raw).unwrap();
    let unit = text.split(';').next().unwrap();
    let large = unit.starts_with('L');
    let (t, n) = unit.trim_start_matches(['w', 'L']).split_once('-').unwrap();
    let (t, n) = (t.parse().unwrap(), n.parse().unwrap());
    assert_eq!(raw, value(t, n, large).as_slice(), "the value is whole, as one set wrote it");
    (t, n)
}

#[test]
#[ignore = "the child process of acknowledged_writes_survive_kill_9_of_the_writer"]
fn crash_writer() {
    let dir = std::env::var(DIR_ENV)
        .unwrap_or_else(|_| panic!("{DIR_ENV} is not set: this test is the child process of another, not run alone"));
    let large = std::env::var_os(LARGE_ENV).is_some();
    let store = Arc::new(Mutex::new(KvStore::open(Path::new(&dir), &clock()).unwrap()));
    let threads: Vec<_> = (0..WORKERS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let caller = member(&format!("w{t}"));
                let key = format!("/shared/w{t}");
                let first = {
                    let mut s = store.lock().unwrap();
                    match one(&mut s, &caller, Op::Get { key: key.clone() }, None) {
                        Ok(Outcome::Found(found)) => parse_value(&found.value).1 + 1,
                        _ => 0,
                    }
                };
                // Bounded in case the parent died without killing us.
                let stop = Instant::now() + Duration::from_secs(60);
                let mut n = first;
                while Instant::now() < stop {
                    let version = {
                        let mut s = store.lock().unwrap();
                        version_of(one(&mut s, &caller, set(&key, &value(t, n, large)), None).unwrap())
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {t} {n} {version}").unwrap();
                    out.flush().unwrap();
                    n += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

fn random_below(n: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    1 + (nanos ^ (nanos >> 13)) % n
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_writer() {
    kill_9_rounds(false);
}

/// The same with values large enough that the lap fills (and sled gets
/// the lap's groups in one batch) several times between two kills.
#[test]
fn acknowledged_writes_survive_kill_9_across_full_laps() {
    kill_9_rounds(true);
}

fn kill_9_rounds(large: bool) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    // Per worker: the last acknowledged (n, version), and the version seen
    // at the last reopen.
    let mut acked: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total = 0;
    for _ in 0..KILLS {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "crash_writer", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, &kv)
            .env_remove(LARGE_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if large {
            command.env(LARGE_ENV, "1");
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The bytes of the acknowledged value, if the line is an ack.
        let record = |line: &str, acked: &mut BTreeMap<u64, (u64, u64)>| {
            let rest = line.strip_prefix("ack ")?;
            let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
            let slot = acked.entry(f[0]).or_insert((0, 0));
            *slot = (*slot).max((f[1], f[2]));
            Some(value(f[0], f[1], large).len() as u64)
        };
        let wanted = 125 + random_below(125);
        // Each open starts a new lap: past this many acknowledged bytes in
        // one run of the writer, its lap filled at least once.
        let lap_filled = if large { pod_kv::store::WAL_BYTES } else { 0 };
        let (mut got, mut bytes) = (0, 0);
        while got < wanted || bytes <= lap_filled {
            let line = lines.next().expect("the writer stopped before it was killed").unwrap();
            if let Some(n) = record(&line, &mut acked) {
                got += 1;
                bytes += n;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines {
            got += u64::from(record(&line.unwrap(), &mut acked).is_some());
        }
        total += got;
        let mut store = KvStore::open(&kv, &clock()).unwrap();
        for t in 0..WORKERS {
            let Some(&(n, version)) = acked.get(&t) else { continue };
            let found = one(&mut store, &member("w0"), Op::Get { key: format!("/shared/w{t}") }, None).unwrap();
            let Outcome::Found(found) = found else { panic!("{found:?}") };
            let (owner, stored_n) = parse_value(&found.value);
            assert_eq!(owner, t);
            assert!(stored_n >= n, "worker {t}'s set {n} was acknowledged but the store holds set {stored_n}");
            assert!(
                found.version >= version,
                "worker {t}'s version {version} was acknowledged, the store has {}",
                found.version
            );
            let before = seen.insert(t, found.version).unwrap_or(0);
            assert!(found.version >= before, "worker {t}'s version went back from {before} to {}", found.version);
        }
    }
    assert!(total >= 1_000, "only {total} acknowledged writes");
}
