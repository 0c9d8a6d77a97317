//! The journal's frames on a real file and a real redb database in a temp dir.

use redb::{Database, ReadableDatabase, ReadableTable};

use super::{replay, Frame, Journal, FILE};
use crate::storage::redb_engine::tables::{GAPS, LOG};

/// A frame with one chunk whose value is `value`, keyed `key`, and a lost range `key+100..`.
fn frame(key: u64, value: &[u8]) -> Frame {
    let mut f = Frame::new(64);
    f.gap(key + 100, key + 101);
    f.chunk(key, |v| v.extend_from_slice(value));
    f
}

/// Applies the frames of `gen` to a fresh database; returns how many and the log's keys.
fn replayed(dir: &std::path::Path, gen: u64) -> (usize, Vec<u64>, Vec<(u64, u64)>) {
    let db_path = dir.join(format!("replay-{}.redb", rand::random::<u64>()));
    let db = Database::create(&db_path).expect("db");
    let tx = db.begin_write().expect("tx");
    let file = Journal::existing(dir).expect("open").expect("journal file");
    let n = replay(&file, gen, &tx).expect("replay");
    tx.commit().expect("commit");
    let read = db.begin_read().expect("read");
    let keys = match read.open_table(LOG) {
        Ok(t) => t
            .iter()
            .expect("iter")
            .map(|i| i.expect("row").0.value())
            .collect(),
        Err(_) => Vec::new(),
    };
    let gaps = match read.open_table(GAPS) {
        Ok(t) => t
            .iter()
            .expect("iter")
            .map(|i| {
                let (k, v) = i.expect("row");
                (k.value(), v.value())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    (n, keys, gaps)
}

#[test]
fn frames_written_are_replayed_in_order_with_their_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::ready(dir.path(), 1 << 20, 7).expect("journal");
    assert_eq!(
        std::fs::metadata(dir.path().join(FILE))
            .expect("file")
            .len(),
        1 << 20,
        "the journal is written full size when created"
    );
    for key in [1, 5, 9] {
        j.write(&mut frame(key, b"chunk")).expect("write");
    }
    let (n, keys, gaps) = replayed(dir.path(), 7);
    assert_eq!((n, keys), (3, vec![1, 5, 9]));
    assert_eq!(gaps, vec![(101, 102), (105, 106), (109, 110)]);
    assert_eq!(
        replayed(dir.path(), 8).0,
        0,
        "the other half holds nothing of 8"
    );
}

#[test]
fn a_torn_frame_ends_the_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An even generation: its half starts at the file's start.
    let mut j = Journal::ready(dir.path(), 1 << 20, 2).expect("journal");
    let mut first = frame(1, b"first");
    j.write(&mut first).expect("write");
    j.write(&mut frame(2, b"second")).expect("write");
    j.write(&mut frame(3, b"third")).expect("write");
    // Flip one byte of the second frame's value, as a write cut short would leave it.
    let path = dir.path().join(FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let at = usize::try_from(first.len()).expect("len") + 40;
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).expect("write back");
    let (n, keys, _) = replayed(dir.path(), 2);
    assert_eq!(
        (n, keys),
        (1, vec![1]),
        "nothing after a torn frame is applied"
    );
}

#[test]
fn each_generation_has_its_half_and_older_frames_are_never_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::ready(dir.path(), 1 << 20, 4).expect("journal");
    for key in [1, 2, 3] {
        j.write(&mut frame(key, b"old")).expect("write");
    }
    // A checkpoint moves on to 5, in the other half; 4's frames stay where they were.
    j.restart(5);
    assert!(j.is_empty());
    j.write(&mut frame(10, b"new")).expect("write");
    assert_eq!(replayed(dir.path(), 4).1, vec![1, 2, 3]);
    assert_eq!(replayed(dir.path(), 5).1, vec![10]);
    // The next one, 6, writes over 4's half: only its own frame there is replayed.
    j.restart(6);
    j.write(&mut frame(20, b"newer")).expect("write");
    let (n, keys, _) = replayed(dir.path(), 6);
    assert_eq!((n, keys), (1, vec![20]));
    assert_eq!(
        replayed(dir.path(), 4).0,
        0,
        "4's first frame is overwritten"
    );
}

#[test]
fn an_undone_frame_is_not_replayed_and_the_next_takes_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::ready(dir.path(), 1 << 20, 2).expect("journal");
    let mut kept = frame(1, b"kept");
    j.write(&mut kept).expect("write");
    j.write(&mut frame(2, b"failed")).expect("write");
    // As a failed write of the second frame leaves it.
    j.undo(kept.len());
    j.end = kept.len();
    assert!(!j.is_broken());
    assert_eq!(replayed(dir.path(), 2).1, vec![1]);
    j.write(&mut frame(3, b"next")).expect("write");
    assert_eq!(replayed(dir.path(), 2).1, vec![1, 3]);
}

#[test]
fn a_full_half_says_so_and_a_frame_larger_than_a_half_is_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::ready(dir.path(), 1 << 20, 1).expect("journal");
    let big = vec![7u8; 300 << 10];
    let mut f = frame(1, &big);
    assert!(j.fits(&f) && !j.too_large(&f));
    j.write(&mut f).expect("write");
    let second = frame(2, &big);
    assert!(!j.fits(&second) && !j.too_large(&second));
    assert!(j.too_large(&frame(3, &vec![0u8; 600 << 10])));
    j.restart(2);
    assert!(j.fits(&second), "the other half is empty");
}

#[test]
fn a_journal_of_another_size_is_made_anew_at_the_size_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Journal::ready(dir.path(), 1 << 20, 1).expect("journal"));
    drop(Journal::ready(dir.path(), 2 << 20, 1).expect("journal"));
    let len = std::fs::metadata(dir.path().join(FILE))
        .expect("file")
        .len();
    assert_eq!(len, 2 << 20);
}
