#![allow(clippy::unwrap_used)]

use super::*;

/// A toy store: commit `seq` puts `r/<seq>` = payload and then `m/head`.
pub(crate) struct Toy;

const HEAD: &[u8] = b"m/head";

impl Records for Toy {
    type Commit = Vec<u8>;
    type Error = DurableError;

    fn head(&self, db: &sled::Db) -> Result<u64, DurableError> {
        let raw = db.get(HEAD).unwrap();
        Ok(raw.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap())))
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

fn options(dir: &Path, wal_bytes: u64) -> Options {
    Options {
        sled_dir: dir.join("sled"),
        wal_path: dir.join("wal"),
        wal: WalOptions { bytes: wal_bytes, fill: Fill::Reserve },
        cache_bytes: 1 << 20,
        mode: sled::Mode::HighThroughput,
        lock_wait: Duration::from_secs(2),
    }
}

fn commit(store: &mut Durable, seq: u64, payload: &[u8]) -> Logged {
    let logged = store
        .commit(seq, payload, |db| {
            write(db, seq, payload);
            Ok::<_, DurableError>(())
        })
        .unwrap();
    if logged == Logged::Ahead {
        write(store.db(), seq, payload);
    }
    logged
}

fn values(db: &sled::Db) -> Vec<(String, Vec<u8>)> {
    db.scan_prefix("r/")
        .map(|kv| kv.unwrap())
        .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.to_vec()))
        .collect()
}

#[test]
fn a_commit_that_never_reached_sled_is_put_back_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _, head) = Durable::open(&options(dir.path(), 1 << 16), |_| Ok(Toy)).unwrap();
        assert_eq!(head, 0);
        commit(&mut store, 1, b"one");
        // Durable in the write-ahead file only: sled never sees commit 2.
        assert_eq!(store.commit(2, b"two", |_| Ok::<_, DurableError>(())).unwrap(), Logged::Ahead);
        // Dropped without `close`, as a killed writer leaves it.
        drop(store);
    }
    let (store, _, head) = Durable::open(&options(dir.path(), 1 << 16), |_| Ok(Toy)).unwrap();
    assert_eq!(head, 2);
    assert!(store.lap_is_empty(), "open checkpoints what it put back");
    assert_eq!(
        values(store.db()),
        vec![("r/00000001".into(), b"one".to_vec()), ("r/00000002".into(), b"two".to_vec())]
    );
}

#[test]
fn a_commit_past_the_lap_goes_to_sled_at_once_and_starts_a_new_lap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = Durable::open(&options(dir.path(), wal::MIN_BYTES), |_| Ok(Toy)).unwrap();
    let big = vec![7u8; (store.max_entry() - 10) as usize];
    assert_eq!(commit(&mut store, 1, &big), Logged::Ahead);
    assert_eq!(commit(&mut store, 2, b"does not fit"), Logged::Stored);
    assert!(store.lap_is_empty());
    assert_eq!(commit(&mut store, 3, b"next lap"), Logged::Ahead);
    store.close(3).unwrap();
    assert!(store.lap_is_empty());
}

#[test]
fn a_sled_behind_the_write_ahead_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _, _) = Durable::open(&options(dir.path(), 1 << 16), |_| Ok(Toy)).unwrap();
        commit(&mut store, 1, b"one");
        store.close(1).unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    let refused = Durable::open(&options(dir.path(), 1 << 16), |_| Ok(Toy)).err().unwrap();
    assert_eq!(refused.to_string(), "sled holds commits up to 0 but the write-ahead file says it held up to 1");
    assert!(refused.is_damage());
}

#[test]
fn a_damaged_entry_followed_by_whole_ones_names_the_lost_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _, _) = Durable::open(&options(dir.path(), 1 << 16), |_| Ok(Toy)).unwrap();
        for seq in 1..=3 {
            assert_eq!(store.commit(seq, b"xyz", |_| Ok::<_, DurableError>(())).unwrap(), Logged::Ahead);
        }
        drop(store);
    }
    // Flip a payload byte of commit 2 (entries are 16 + 3 bytes each).
    let wal_path = dir.path().join("wal");
    let mut bytes = std::fs::read(&wal_path).unwrap();
    let at = (wal::ENTRIES_START + 19 + 16) as usize;
    bytes[at] ^= 0xff;
    std::fs::write(&wal_path, bytes).unwrap();
    let refused = Durable::open(&options(dir.path(), 1 << 16), |_| Ok(Toy)).err().unwrap();
    assert_eq!(
        refused.to_string(),
        "the write-ahead file is damaged at byte 8211: commit 2 is in neither the write-ahead file nor sled (sled holds commits up to 0; whole commits up to 3 follow the damage)"
    );
}
