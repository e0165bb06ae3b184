use super::*;

const SMALL: WalOptions = WalOptions { bytes: MIN_BYTES + 4096, fill: Fill::Zeros };

fn open(dir: &Path, options: WalOptions) -> (Wal, Recovered) {
    Wal::open(&dir.join("wal"), options).expect("open")
}

fn seqs(r: &Recovered) -> Vec<u64> {
    r.entries.iter().map(|e| e.seq).collect()
}

#[test]
fn entries_come_back_in_order_after_reopen() {
    for fill in [Fill::Zeros, Fill::Reserve] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, r) = open(dir.path(), WalOptions { fill, ..SMALL });
        assert_eq!(r, Recovered { stored_through: 0, entries: Vec::new(), damage: None });
        for seq in [1, 2, 5] {
            assert_eq!(wal.append(seq, format!("commit {seq}").as_bytes()).expect("append"), Appended::Durable);
        }
        drop(wal);
        let (wal, r) = open(dir.path(), SMALL);
        assert_eq!(seqs(&r), [1, 2, 5]);
        assert_eq!(r.entries[1].payload, b"commit 2");
        assert_eq!(wal.last_seq(), 5);
    }
}

#[test]
fn a_new_log_is_what_reading_it_back_finds() {
    for fill in [Fill::Zeros, Fill::Reserve] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = WalOptions { fill, ..SMALL };
        let (new, created) = open(dir.path(), options);
        let (read, found) = open(dir.path(), options);
        assert_eq!(created, found);
        let state = |w: &Wal| (w.bytes, w.generation, w.stored_through, w.end, w.last_seq);
        assert_eq!(state(&new), state(&read));
        assert_eq!((new.was_created(), read.was_created()), (true, false));
    }
}

#[test]
fn a_new_lap_hides_the_leftovers_of_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path(), SMALL);
    for seq in 1..=5 {
        wal.append(seq, &[seq as u8; 100]).expect("append");
    }
    wal.stored_through(5).expect("stored");
    // Shorter than the old first entry: the old bytes right after it are a
    // torn leftover, the old entries after that have lower numbers.
    wal.append(6, &[6; 10]).expect("append");
    wal.append(7, &[7; 10]).expect("append");
    drop(wal);
    let (_, r) = open(dir.path(), SMALL);
    assert_eq!(r.stored_through, 5);
    assert_eq!(seqs(&r), [6, 7]);
}

#[test]
fn an_empty_new_lap_returns_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path(), SMALL);
    wal.append(1, b"one").expect("append");
    wal.stored_through(1).expect("stored");
    drop(wal);
    let (wal, r) = open(dir.path(), SMALL);
    assert_eq!(r, Recovered { stored_through: 1, entries: Vec::new(), damage: None });
    assert_eq!(wal.last_seq(), 1);
}

#[test]
fn a_damaged_entry_ends_the_log_and_what_follows_it_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path(), SMALL);
    for seq in 1..=3 {
        wal.append(seq, &[0xAB; 64]).expect("append");
    }
    drop(wal);
    let second = ENTRIES_START + ENTRY_OVERHEAD + 64;
    // One byte inside the second entry's payload, then in its length: the
    // third entry is found either way.
    for at in [second + ENTRY_OVERHEAD + 10, second + 1] {
        let file = OpenOptions::new().read(true).write(true).open(dir.path().join("wal")).expect("open");
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).expect("read");
        file.write_all_at(&[byte[0] ^ 0x01], at).expect("flip");
        drop(file);
        let (_, r) = open(dir.path(), SMALL);
        assert_eq!(seqs(&r), [1]);
        let damage = r.damage.expect("damage reported");
        assert_eq!(damage.offset, second);
        assert_eq!(damage.later.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        // Put it back for the next case.
        let file = OpenOptions::new().write(true).open(dir.path().join("wal")).expect("open");
        file.write_all_at(&byte, at).expect("restore");
    }
}

#[test]
fn a_torn_last_entry_is_not_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path(), SMALL);
    for seq in 1..=5 {
        wal.append(seq, &[seq as u8; 100]).expect("append");
    }
    wal.stored_through(5).expect("stored");
    wal.append(6, &[6; 40]).expect("append");
    wal.append(7, &[7; 40]).expect("append");
    drop(wal);
    // Entry 7 torn: half of it never reached the disk. The older lap's
    // entries after it have lower seqs: leftovers, not later entries.
    let file = OpenOptions::new().write(true).open(dir.path().join("wal")).expect("open");
    file.write_all_at(&[0; 20], ENTRIES_START + 2 * ENTRY_OVERHEAD + 40 + 30).expect("tear");
    drop(file);
    let (_, r) = open(dir.path(), SMALL);
    assert_eq!(seqs(&r), [6]);
    assert_eq!(r.damage, None);
}

#[test]
fn a_torn_header_falls_back_to_the_other_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path(), SMALL);
    wal.append(1, b"one").expect("append");
    wal.stored_through(1).expect("stored");
    wal.append(2, b"two").expect("append");
    drop(wal);
    // A crash while generation 3 was being written to slot 1 (generation 1
    // lives there, generation 2 in slot 0): slot 1 is torn.
    let file = OpenOptions::new().write(true).open(dir.path().join("wal")).expect("open");
    file.write_all_at(&[0xFF; 8], HEADER_SLOT + 8).expect("tear");
    drop(file);
    // Generation 2 still stands, and with it its lap.
    let (_, r) = open(dir.path(), SMALL);
    assert_eq!(r.stored_through, 1);
    assert_eq!(seqs(&r), [2]);
    // Both torn: nothing to trust.
    let file = OpenOptions::new().write(true).open(dir.path().join("wal")).expect("open");
    file.write_all_at(&[0xFF; 8], 8).expect("tear");
    drop(file);
    assert!(matches!(Wal::open(&dir.path().join("wal"), SMALL), Err(WalError::Corrupt { .. })));
}

#[test]
fn no_valid_header_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("wal"), vec![0u8; MIN_BYTES as usize]).expect("write");
    let err = Wal::open(&dir.path().join("wal"), SMALL).err().expect("refused");
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("neither header slot is valid"), "{err}");
}

#[test]
fn an_entry_that_does_not_fit_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path(), SMALL);
    let half = vec![1u8; (wal.max_payload() / 2) as usize];
    assert_eq!(wal.append(1, &half).expect("append"), Appended::Durable);
    assert_eq!(wal.append(2, &half).expect("append"), Appended::Full);
    wal.stored_through(1).expect("stored");
    assert_eq!(wal.append(2, &half).expect("append"), Appended::Durable);
    let whole = vec![1u8; wal.max_payload() as usize + 1];
    wal.stored_through(2).expect("stored");
    assert_eq!(wal.append(3, &whole).expect("append"), Appended::Full);
    let exact = vec![1u8; wal.max_payload() as usize];
    assert_eq!(wal.append(3, &exact).expect("append"), Appended::Durable);
    drop(wal);
    assert_eq!(seqs(&open(dir.path(), SMALL).1), [3]);
}

#[test]
fn sizes_out_of_bounds_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tiny = WalOptions { bytes: MIN_BYTES - 1, fill: Fill::Zeros };
    assert!(matches!(Wal::open(&dir.path().join("a"), tiny), Err(WalError::BadSize { .. })));
    std::fs::write(dir.path().join("b"), b"short").expect("write");
    assert!(matches!(Wal::open(&dir.path().join("b"), SMALL), Err(WalError::BadSize { .. })));
}

#[test]
#[should_panic(expected = "does not follow")]
fn a_seq_that_does_not_grow_is_a_bug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(dir.path(), SMALL);
    wal.append(2, b"two").expect("append");
    let _ = wal.append(2, b"again");
}
