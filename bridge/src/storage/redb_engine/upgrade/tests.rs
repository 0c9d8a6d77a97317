//! The upgrade of a format 1 data dir, written here with sled in the layout the sled releases
//! wrote (the end-to-end check on a dir written by that release is `integration/tests/upgrade.rs`).

use bytes::Bytes;

use super::super::chunk;
use super::BACKUP;
use crate::storage::tests::open;
use crate::storage::{Record, StorageError};

fn record(seq: u64, topic: &str) -> Record {
    Record {
        seq,
        ts_ms: 1_000 + seq,
        topic: topic.to_owned(),
        payload: Bytes::from(format!("p{seq}")),
        retain: false,
        mqtt: None,
    }
}

/// A sled database as the sled releases left it: seqs 1..=3 and 6 logged, 4..=5 lost, one
/// session, one retained value.
fn write_format1(dir: &std::path::Path) {
    let db = sled::open(dir).expect("sled");
    let log = db.open_tree("log").expect("log");
    let first = [record(1, "a"), record(2, "b"), record(3, "a")];
    log.insert(1u64.to_be_bytes(), chunk::encode(&first))
        .expect("chunk");
    log.insert(6u64.to_be_bytes(), chunk::encode(&[record(6, "b")]))
        .expect("chunk");
    let gaps = db.open_tree("gaps").expect("gaps");
    gaps.insert(4u64.to_be_bytes(), &5u64.to_be_bytes())
        .expect("gap");
    let meta = db.open_tree("meta").expect("meta");
    meta.insert("format", &1u32.to_be_bytes()).expect("format");
    meta.insert("epoch", "old-epoch").expect("epoch");
    meta.insert("next_seq", &7u64.to_be_bytes()).expect("next");
    meta.insert("session_key", &[7u8; 32]).expect("key");
    let sessions = db.open_tree("sessions").expect("sessions");
    sessions
        .insert("s1", b"{\"json\":1}".as_slice())
        .expect("s");
    let idle = db.open_tree("sessions_idle").expect("idle");
    let mut key = 5_000u64.to_be_bytes().to_vec();
    key.extend_from_slice(b"s1");
    idle.insert(key, b"".as_slice()).expect("idle");
    let retained = db.open_tree("retained").expect("retained");
    retained.insert("r/t", b"value".as_slice()).expect("r");
    db.flush().expect("flush");
}

#[test]
fn a_format1_dir_is_upgraded_with_epoch_seqs_gaps_sessions_key_and_retained() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_format1(dir.path());
    for round in 0..2 {
        let s = open(dir.path());
        assert_eq!(s.log.epoch(), "old-epoch", "round {round}");
        assert_eq!((s.log.first(), s.log.head()), (Some(1), 6 + round));
        let mut c = s.log.cursor(&["#".to_owned()], 0, 6);
        let got: Vec<(u64, String)> = c
            .next_batch(10)
            .expect("read")
            .into_iter()
            .map(|r| (r.seq, String::from_utf8_lossy(&r.payload).into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "p1".to_owned()),
                (2, "p2".to_owned()),
                (3, "p3".to_owned()),
                (6, "p6".to_owned())
            ]
        );
        let (lost, _) = s.log.lost(0, 6, 10).expect("lost");
        assert_eq!(
            lost.iter().map(|l| (l.from, l.to)).collect::<Vec<_>>(),
            vec![(4, 5)]
        );
        assert_eq!(
            s.sessions.get("s1").expect("get"),
            Some(b"{\"json\":1}".to_vec())
        );
        assert_eq!(s.sessions.idle_before(6_000, 10).expect("idle"), ["s1"]);
        assert_eq!(s.sessions.secret().expect("key"), [7u8; 32]);
        let retained = s.retained.load().expect("retained");
        assert_eq!(retained.len(), 1);
        assert_eq!(
            (&retained[0].topic[..], &retained[0].payload[..]),
            ("r/t", &b"value"[..])
        );
        // Seqs go on after the old head.
        crate::storage::tests::fill(&s, 1, |_| "c".to_owned());
        assert_eq!(s.log.head(), 7 + round);
    }
    assert!(dir.path().join(BACKUP).join("db").is_file(), "the backup");
    assert!(dir.path().join(BACKUP).join("conf").is_file());
    assert!(
        !dir.path().join("db").exists(),
        "the old files left the data dir"
    );
    assert!(!dir.path().join("conf").exists());
}

#[test]
fn a_dir_that_is_not_a_sled_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("conf"), "segment_size: 524288\n").expect("conf");
    std::fs::write(dir.path().join("db"), [0xffu8; 64]).expect("db");
    let opened = crate::storage::Storage::open(&crate::storage::Options {
        dir: dir.path(),
        cache_bytes: 1 << 20,
        sync: true,
        max_retained: 10,
        min_free_bytes: 0,
        journal_bytes: 1 << 20,
    });
    let Err(err) = opened else {
        panic!("a broken sled dir opened");
    };
    assert!(matches!(err, StorageError::Upgrade { .. }), "{err}");
    assert!(err.to_string().contains("storage format 1"), "{err}");
    assert!(!dir.path().join(super::super::FILE).exists());
    assert_eq!(
        std::fs::read(dir.path().join("db")).expect("db"),
        [0xffu8; 64],
        "the old files are unchanged"
    );
}

#[test]
fn without_room_for_the_backup_and_the_new_database_the_upgrade_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_format1(dir.path());
    let opened = crate::storage::Storage::open(&crate::storage::Options {
        dir: dir.path(),
        cache_bytes: 1 << 20,
        sync: true,
        max_retained: 10,
        // More than any disk here has free.
        min_free_bytes: 1 << 60,
        journal_bytes: 1 << 20,
    });
    let Err(err) = opened else {
        panic!("upgraded without the room");
    };
    assert!(matches!(err, StorageError::UpgradeSpace { .. }), "{err}");
    assert!(err.to_string().contains("bytes free"), "{err}");
    assert!(!dir.path().join(BACKUP).exists());
    assert!(!dir.path().join(super::super::FILE).exists());
    assert!(dir.path().join("db").is_file());
    // With room, it goes ahead.
    let s = open(dir.path());
    assert_eq!(s.log.epoch(), "old-epoch");
}

#[test]
fn an_upgrade_cut_short_is_carried_out_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_format1(dir.path());
    // Left by a run killed while it copied the backup and wrote the new database.
    std::fs::create_dir(dir.path().join("format1-backup.partial")).expect("partial");
    std::fs::write(dir.path().join("format1-backup.partial/db"), b"half").expect("half");
    std::fs::write(dir.path().join("mqws.redb.upgrading"), b"half").expect("half");
    let s = open(dir.path());
    assert_eq!((s.log.epoch(), s.log.head()), ("old-epoch", 6));
    assert!(!dir.path().join("format1-backup.partial").exists());
    assert!(!dir.path().join("mqws.redb.upgrading").exists());
    // The backup is a whole copy, not the half one.
    assert!(
        dir.path()
            .join(BACKUP)
            .join("db")
            .metadata()
            .expect("db")
            .len()
            > 4
    );
}
