//! Unit tests of the redb engine through the storage interfaces, on temp dirs.

use std::time::Duration;

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable};

use super::chunk::MAX_BYTES;
use super::handle::{Handle, FORMAT};
use crate::storage::tests::{fill, open, open_with};
use crate::storage::{Entry, Lost, LostReason, Record, RetainedValue, Retention, StorageError};

fn msg(topic: &str, payload: Bytes) -> Entry {
    Entry::Message {
        topic: topic.to_owned(),
        payload,
        retain: false,
        mqtt: None,
    }
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn read_all(s: &crate::storage::Storage, filters: &[&str], after: u64, limit: usize) -> Vec<u64> {
    let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
    let mut c = s.log.cursor(&filters, after, s.log.head());
    let mut out = Vec::new();
    while !c.done() {
        out.extend(seqs(&c.next_batch(limit).expect("batch")));
    }
    out
}

#[test]
fn append_assigns_seqs_and_reopen_keeps_epoch_and_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let epoch;
    {
        let s = open(dir.path());
        epoch = s.log.epoch().to_owned();
        assert_eq!((s.log.head(), s.log.first()), (0, None));
        let mut batch = vec![
            msg("a", Bytes::from_static(b"1")),
            Entry::Lost(2),
            msg("b", Bytes::new()),
        ];
        let got = s.log.append(&mut batch).expect("append");
        assert!(batch.is_empty(), "a successful append drains the batch");
        assert_eq!(seqs(&got.records), vec![1, 4]);
        assert_eq!(got.lost, vec![(2, 3)]);
        assert_eq!(s.log.head(), 4);
        assert_eq!(read_all(&s, &["#"], 0, 10), vec![1, 4]);
    }
    let s = open(dir.path());
    assert_eq!(s.log.epoch(), epoch);
    assert_eq!((s.log.head(), s.log.first()), (4, Some(1)));
    fill(&s, 1, |_| "c".to_owned());
    assert_eq!(s.log.head(), 5, "seqs continue after a reopen");
    let other = tempfile::tempdir().expect("tempdir");
    assert_ne!(
        open(other.path()).log.epoch(),
        epoch,
        "a new dir is a new epoch"
    );
}

/// What an MQTT subscriber needs of a message (its QoS, publisher and MQTT 5 properties)
/// survives the log and a reopen, beside a message logged without it.
#[test]
fn mqtt_details_are_kept_through_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let details = crate::storage::MqttMeta {
        qos: 2,
        origin: Some(std::sync::Arc::from("reader-7")),
        properties: Bytes::from_static(&[0x02, 0, 0, 0, 60, 0x26, 0, 1, b'k', 0, 1, b'v']),
    };
    let written = {
        let s = open(dir.path());
        let mut batch = vec![
            Entry::Message {
                topic: "cmd/r7".to_owned(),
                payload: Bytes::from_static(b"go"),
                retain: true,
                mqtt: Some(details.clone()),
            },
            msg("old/style", Bytes::from_static(b"x")),
        ];
        s.log.append(&mut batch).expect("append").records
    };
    assert_eq!(written[0].mqtt, Some(details));
    let s = open(dir.path());
    let mut c = s.log.cursor(&["#".to_owned()], 0, s.log.head());
    assert_eq!(c.next_batch(10).expect("batch"), written);
}

#[test]
fn seqs_survive_an_emptied_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        fill(&s, 3, |k| format!("t/{k}"));
        let all = Retention {
            max_messages: 0,
            max_bytes: u64::MAX,
            max_age: Duration::from_secs(3600),
            batch: 2,
        };
        assert_eq!(s.log.enforce(&all).expect("retention"), 3);
        assert_eq!((s.log.first(), s.log.head()), (None, 3));
    }
    let s = open(dir.path());
    assert_eq!(s.log.head(), 3, "seqs are never reused");
    let (lost, more) = s.log.lost(0, 3, 10).expect("lost");
    assert_eq!(
        lost,
        vec![Lost {
            reason: LostReason::Evicted,
            from: 1,
            to: 3
        }]
    );
    assert!(!more);
}

#[test]
fn seqs_continue_after_a_trailing_lost_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        fill(&s, 2, |_| "a".to_owned());
        s.log.append(&mut vec![Entry::Lost(3)]).expect("lost 3-5");
        assert_eq!(s.log.head(), 5);
    }
    let s = open(dir.path());
    assert_eq!(
        s.log.head(),
        5,
        "the lost range's seqs are not handed out again"
    );
    fill(&s, 1, |_| "a".to_owned());
    assert_eq!(read_all(&s, &["a"], 0, 10), vec![1, 2, 6]);
}

#[test]
fn selective_and_scan_cursors_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    fill(&s, 500, |k| format!("t/{}", k % 100));
    let want: Vec<u64> = (51..=500)
        .filter(|k| k % 100 == 7 || k % 100 == 8)
        .collect();
    let f = vec!["t/7".to_owned(), "t/8".to_owned()];
    assert!(super::cursor::RedbCursor::new(inner(&s), &f, 50, 500).selective());
    assert_eq!(read_all(&s, &["t/7", "t/8"], 50, 3), want);
    assert!(!super::cursor::RedbCursor::new(inner(&s), &["t/+".to_owned()], 50, 500).selective());
    assert_eq!(
        read_all(&s, &["t/+"], 50, 64),
        (51..=500).collect::<Vec<_>>()
    );
    let last = s.log.last_per_topic("t/+", 3).expect("last");
    assert_eq!(seqs(&last), vec![498, 499, 500]);
}

/// The redb log behind a `Storage` (tests only reach it through a fresh open of the same dir
/// in normal code; here the cursor's mode is inspected directly).
fn inner(s: &crate::storage::Storage) -> std::sync::Arc<super::log::Inner> {
    s.log
        .as_any()
        .downcast_ref::<super::log::RedbLog>()
        .expect("redb log")
        .inner()
}

#[test]
fn time_lookup_and_retention_by_count_bytes_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    fill(&s, 10, |_| "old".to_owned());
    std::thread::sleep(Duration::from_millis(20));
    let cut_ts = super::now_ms();
    fill(&s, 90, |k| format!("t/{}", k % 3));
    assert_eq!(s.log.first_at_or_after(0).expect("t"), Some(1));
    assert_eq!(s.log.first_at_or_after(cut_ts).expect("t"), Some(11));
    assert_eq!(s.log.first_at_or_after(u64::MAX).expect("t"), None);
    let limits = Retention {
        max_messages: 1000,
        max_bytes: u64::MAX,
        max_age: Duration::from_millis(10),
        batch: 3,
    };
    std::thread::sleep(Duration::from_millis(15));
    // Everything is older than 10 ms by now; keep the newest 90 by count instead.
    let by_count = Retention {
        max_messages: 90,
        max_age: Duration::from_secs(3600),
        ..limits
    };
    assert_eq!(s.log.enforce(&by_count).expect("count"), 10);
    assert_eq!(s.log.first(), Some(11));
    assert!(s.log.evicted_since(0).expect("evicted"));
    let per = 4; // "t/k" + one byte
    let by_bytes = Retention {
        max_bytes: per * 20,
        ..by_count
    };
    assert_eq!(s.log.enforce(&by_bytes).expect("bytes"), 70);
    assert_eq!((s.log.first(), s.log.stats().bytes), (Some(81), per * 20));
    assert_eq!(s.log.enforce(&limits).expect("age"), 20);
    assert_eq!(s.log.stats().messages, 0);
}

#[test]
fn lost_lists_every_range_clipped_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    fill(&s, 5, |_| "a".to_owned());
    s.log.append(&mut vec![Entry::Lost(3)]).expect("lost 6-8");
    fill(&s, 2, |_| "a".to_owned());
    s.log.append(&mut vec![Entry::Lost(2)]).expect("lost 11-12");
    fill(&s, 3, |_| "a".to_owned());
    let retention = Retention {
        max_messages: 8,
        max_bytes: u64::MAX,
        max_age: Duration::from_secs(3600),
        batch: 100,
    };
    assert_eq!(s.log.enforce(&retention).expect("retention"), 2);
    let l = |reason, from, to| Lost { reason, from, to };
    let (all, more) = s.log.lost(0, 15, 10).expect("lost");
    assert_eq!(
        all,
        vec![
            l(LostReason::Evicted, 1, 2),
            l(LostReason::Dropped, 6, 8),
            l(LostReason::Dropped, 11, 12)
        ]
    );
    assert!(!more);
    let (clipped, _) = s.log.lost(7, 11, 10).expect("lost");
    assert_eq!(
        clipped,
        vec![l(LostReason::Dropped, 8, 8), l(LostReason::Dropped, 11, 11)]
    );
    let (first, more) = s.log.lost(0, 15, 2).expect("lost");
    assert_eq!((first.len(), more), (2, true));
    assert_eq!(s.log.lost(12, 15, 10).expect("lost").0, vec![]);
}

#[test]
fn large_payloads_do_not_make_values_over_the_byte_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let mib = Bytes::from(vec![0xa5u8; 1 << 20]);
    let mut batch: Vec<Entry> = (0..256).map(|_| msg("big", mib.clone())).collect();
    s.log.append(&mut batch).expect("append 256 MiB");
    let tx = inner(&s).handle_for_test().read().expect("read");
    let log = tx.open_table(super::tables::LOG).expect("log table");
    let mut values = 0;
    for item in log.iter().expect("iter") {
        let (_, v) = item.expect("read");
        let v = v.value();
        assert!(
            v.len() <= MAX_BYTES + (1 << 20),
            "a value of {} bytes",
            v.len()
        );
        assert_eq!(super::chunk::decode(v).expect("chunk").len(), 1);
        values += 1;
    }
    assert_eq!(values, 256, "one chunk per 1 MiB record");
    assert_eq!(read_all(&s, &["big"], 200, 8).len(), 56);
}

#[test]
fn sessions_store_orders_by_idleness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let kv = &s.sessions;
    assert!(kv.put("a", b"1", 10, None).expect("put"));
    assert!(kv.put("b", b"2", 20, None).expect("put"));
    assert!(!kv.put("a", b"3", 30, Some(10)).expect("update"));
    assert_eq!(kv.count(), 2);
    assert_eq!(kv.get("a").expect("get"), Some(b"3".to_vec()));
    assert_eq!(kv.idle_before(u64::MAX, 10).expect("idle"), vec!["b", "a"]);
    assert_eq!(kv.idle_before(25, 10).expect("idle"), vec!["b"]);
    assert!(kv.delete("b", 20).expect("delete"));
    assert_eq!((kv.count(), kv.get("b").expect("get")), (1, None));
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        (s.sessions.count(), s.sessions.get("a").expect("get")),
        (1, Some(b"3".to_vec()))
    );
}

#[test]
fn retained_keeps_latest_clears_and_bounds_topics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = |t: &str, p: &'static [u8]| RetainedValue {
        topic: t.to_owned(),
        payload: Bytes::from_static(p),
        qos: Some(1),
        properties: Bytes::from_static(&[0x01, 1]),
    };
    {
        let s = open_with(dir.path(), 2);
        let refused = s
            .retained
            .apply(&[v("a", b"1"), v("a", b"2"), v("b", b"x"), v("c", b"over")])
            .expect("apply");
        assert_eq!(refused, 1);
        assert_eq!(
            s.retained
                .apply(&[v("a", b""), v("c", b"fits")])
                .expect("apply"),
            0
        );
    }
    let s = open_with(dir.path(), 2);
    let mut got = s.retained.load().expect("load");
    got.sort_by(|x, y| x.topic.cmp(&y.topic));
    assert_eq!(got, vec![v("b", b"x"), v("c", b"fits")]);
}

/// Opens storage in `dir` expecting a refusal.
fn open_err(dir: &std::path::Path) -> StorageError {
    let opts = crate::storage::Options {
        dir,
        cache_bytes: 1 << 20,
        sync: true,
        max_retained: 1,
        min_free_bytes: 0,
        journal_bytes: 1 << 20,
    };
    loop {
        match crate::storage::Storage::open(&opts).map(|_| ()) {
            // The storage above may be held by its flusher thread a moment after it is dropped.
            Err(StorageError::Locked { .. }) => std::thread::sleep(Duration::from_millis(20)),
            other => break other.expect_err("refused"),
        }
    }
}

#[test]
fn format_is_stamped_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    {
        let db = loop {
            match redb::Database::create(dir.path().join(super::FILE)) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("open: {e}"),
            }
        };
        let tx = db.begin_write().expect("write");
        {
            let mut meta = tx.open_table(super::tables::META).expect("meta");
            let stamped = meta.get("format").expect("get").map(|v| v.value().to_vec());
            assert_eq!(stamped, Some(FORMAT.to_be_bytes().to_vec()));
            meta.insert("format", 99u32.to_be_bytes().as_slice())
                .expect("stamp");
        }
        tx.commit().expect("commit");
    }
    let err = open_err(dir.path());
    assert!(
        matches!(
            err,
            StorageError::Format {
                found: 99,
                supported: FORMAT,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("format 99") && err.to_string().contains("format 3"),
        "{err}"
    );
}

#[test]
fn a_second_open_of_a_dir_in_use_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = open(dir.path());
    let err = Handle::open(dir.path(), 1 << 20, 0, 1 << 20)
        .map(|_| ())
        .expect_err("locked");
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
}

#[test]
fn reopen_in_place_keeps_every_store_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    fill(&s, 3, |_| "a".to_owned());
    s.sessions.put("x", b"1", 1, None).expect("put");
    inner(&s)
        .handle_for_test()
        .reopen_for_test()
        .expect("reopen");
    fill(&s, 2, |_| "a".to_owned());
    assert_eq!(read_all(&s, &["a"], 0, 10), vec![1, 2, 3, 4, 5]);
    assert_eq!(s.sessions.get("x").expect("get"), Some(b"1".to_vec()));
    s.recover().expect("recover on a healthy engine reopens it");
    assert_eq!(read_all(&s, &["a"], 0, 10).len(), 5);
}

/// Opens the redb file of `dir` directly, waiting while a dropped storage still holds it.
fn raw_db(dir: &std::path::Path) -> redb::Database {
    loop {
        match redb::Database::create(dir.join(super::FILE)) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

#[test]
fn a_dir_of_format_2_is_marked_3_and_keeps_its_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        fill(&s, 3, |_| "a".to_owned());
        s.flush().expect("flush");
    }
    {
        let db = raw_db(dir.path());
        let tx = db.begin_write().expect("write");
        {
            let mut meta = tx.open_table(super::tables::META).expect("meta");
            meta.insert("format", 2u32.to_be_bytes().as_slice())
                .expect("stamp");
            meta.remove("journal_gen").expect("remove");
        }
        tx.commit().expect("commit");
    }
    std::fs::remove_file(dir.path().join(super::journal::FILE)).expect("no journal in format 2");
    let s = open(dir.path());
    assert_eq!(read_all(&s, &["a"], 0, 10), vec![1, 2, 3]);
    fill(&s, 1, |_| "a".to_owned());
    assert_eq!(s.log.head(), 4);
    drop(s);
    let db = raw_db(dir.path());
    let tx = db.begin_read().expect("read");
    let meta = tx.open_table(super::tables::META).expect("meta");
    let stamped = meta.get("format").expect("get").map(|v| v.value().to_vec());
    assert_eq!(stamped, Some(FORMAT.to_be_bytes().to_vec()));
}

/// Copies the files of a data dir in use: what a kill -9 leaves on disk.
fn crash_image(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in [super::FILE, super::journal::FILE] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy");
    }
}

/// How many log records the redb file of `dir` holds by itself (no journal applied).
fn records_in_file(dir: &std::path::Path) -> usize {
    let db = raw_db(dir);
    let tx = db.begin_read().expect("read");
    let log = tx.open_table(super::tables::LOG).expect("log");
    log.iter()
        .expect("iter")
        .map(|i| {
            super::chunk::metas(i.expect("row").1.value())
                .expect("chunk")
                .len()
        })
        .sum()
}

#[test]
fn appends_synced_only_to_the_journal_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    fill(&s, 5, |_| "a".to_owned());
    s.flush().expect("checkpoint");
    // The flusher checkpoints once a second: try until the image is taken between two.
    for attempt in 0..20 {
        let first = s.log.head() + 1;
        for round in 0..4 {
            fill(&s, 10, |i| format!("t/{}", round * 10 + i));
        }
        let image = dir.path().join(format!("image-{attempt}"));
        crash_image(dir.path(), &image);
        let in_file = records_in_file(&image);
        if in_file == usize::try_from(s.log.head()).expect("head") {
            continue;
        }
        let back = open(&image);
        assert_eq!(
            back.log.head(),
            s.log.head(),
            "every acknowledged append is back"
        );
        let got = read_all(&back, &["#"], 0, 1000);
        assert_eq!(got, (1..=s.log.head()).collect::<Vec<_>>());
        assert_eq!(
            read_all(&back, &["t/40"], first - 1, 10),
            vec![s.log.head()],
            "the last append, read by topic"
        );
        fill(&back, 1, |_| "a".to_owned());
        assert_eq!(
            back.log.head(),
            s.log.head() + 1,
            "seqs continue after the replay"
        );
        drop(back);
        let again = open(&image);
        assert_eq!(
            again.log.head(),
            s.log.head() + 1,
            "a second start replays nothing twice"
        );
        return;
    }
    panic!("every crash image was taken right after a checkpoint");
}

#[test]
fn reads_see_every_append_while_checkpoints_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..300 {
                fill(&s, 3, |_| "a".to_owned());
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                s.flush().expect("checkpoint");
            }
        });
        let mut reads = 0;
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            let head = s.log.head();
            let got = read_all(&s, &["a"], 0, 10_000);
            assert!(
                got.len() as u64 >= head && got.iter().copied().eq(1..=got.len() as u64),
                "a read after head {head} saw {} records",
                got.len()
            );
            reads += 1;
        }
        assert!(reads > 0);
    });
    assert_eq!(s.log.head(), 900);
    let image = dir.path().join("image");
    crash_image(dir.path(), &image);
    let back = open(&image);
    assert_eq!(
        read_all(&back, &["a"], 0, 10_000),
        (1..=900).collect::<Vec<_>>()
    );
}
