//! Opening a store whose last open was killed, and a store open twice: what
//! a kill -9 of a process inside sled's open leaves on disk (an unfinished
//! snapshot, which sled 0.34 alone refuses as corruption for good) must not
//! keep the store shut, and a second opener must be refused while the first
//! holds the store.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use durable::{Durable, DurableError, Entry, Fill, Logged, Options, Records, WalOptions};

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

fn options(dir: &Path, lock_wait: Duration) -> Options {
    Options {
        sled_dir: dir.join("sled"),
        wal_path: dir.join("wal"),
        wal: WalOptions { bytes: wal::MIN_BYTES + 16384, fill: Fill::Reserve },
        cache_bytes: 1 << 20,
        mode: sled::Mode::HighThroughput,
        lock_wait,
    }
}

fn commit_some(store: &mut Durable, from: u64, count: u64) -> u64 {
    let mut head = from;
    for _ in 0..count {
        let seq = head + 1;
        let payload = seq.to_le_bytes().repeat(8);
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
    }
    head
}

/// sled's own open of `dir`, waiting out the lock its background threads
/// keep a moment after the store was dropped.
fn sled_alone(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// An open killed while sled wrote its snapshot leaves `snap.<lsn>.generating`
/// with part of it (sled creates the file, writes, syncs, renames; the kill
/// came between the create and the rename). That state is made here exactly,
/// with the highest name sled could give, so sled's listing takes it for the
/// newest snapshot. sled alone refuses the store from then on; ours opens it
/// with every commit there, and again after that.
#[test]
fn a_store_whose_open_was_killed_in_sleds_snapshot_opens_with_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), Duration::from_secs(5));
    let (mut store, _, head) = Durable::open(&options, |_| Ok(Toy)).unwrap();
    let head = commit_some(&mut store, head, 40);
    store.close(head).unwrap();
    drop(store);

    let unfinished = options.sled_dir.join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"part").unwrap();
    match sled_alone(&options.sled_dir) {
        Err(sled::Error::Corruption { at: None, .. }) => {}
        other => panic!("sled alone was expected to refuse the unfinished snapshot as corrupt, got {other:?}"),
    }
    assert!(unfinished.exists(), "sled removed the unfinished snapshot itself");

    for _ in 0..2 {
        let (mut store, toy, reopened) = Durable::open(&options, |_| Ok(Toy)).unwrap();
        assert_eq!(reopened, head, "the head after the killed open");
        assert!(!unfinished.exists(), "the unfinished snapshot is still there");
        for seq in 1..=head {
            let got = store.db().get(format!("r/{seq:08}")).unwrap();
            assert_eq!(got.as_deref(), Some(&seq.to_le_bytes().repeat(8)[..]), "commit {seq}");
        }
        assert_eq!(toy.head(store.db()).unwrap(), head);
        store.close(head).unwrap();
    }
}

/// While one open holds the store, a second (in another thread, as it would
/// be in another process: the lock is an flock) waits its stated time and is
/// refused by name; once the first is dropped, the second gets in.
#[test]
fn a_second_open_is_refused_while_the_first_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _, _) = Durable::open(&options(dir.path(), Duration::from_secs(5)), |_| Ok(Toy)).unwrap();
    let started = Instant::now();
    let refused = match Durable::open(&options(dir.path(), Duration::from_millis(100)), |_| Ok(Toy)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a second open got in while the first held the store"),
    };
    assert!(started.elapsed() >= Duration::from_millis(100), "the second open did not wait its time");
    let shown = refused.replace(&dir.path().display().to_string(), "$DIR");
    assert_eq!(shown, "cannot lock $DIR/sled: the store is open in another process");
    drop(first);
    let (second, _, _) = Durable::open(&options(dir.path(), Duration::from_secs(5)), |_| Ok(Toy)).unwrap();
    drop(second);
}
