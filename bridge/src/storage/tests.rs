//! Helpers for the storage unit tests and for tests of the layers above.

use std::path::Path;

use bytes::Bytes;

use super::{Entry, Options, Storage};

/// Opens storage in `dir` with small limits, syncing every append.
pub(crate) fn open(dir: &Path) -> Storage {
    open_with(dir, 100)
}

/// [`open`] keeping at most `max_retained` retained topics.
/// A dir closed a moment ago may still be held by the engine's flusher thread for a moment: retried.
pub(crate) fn open_with(dir: &Path, max_retained: usize) -> Storage {
    let started = std::time::Instant::now();
    loop {
        let opened = Storage::open(&Options {
            dir,
            cache_bytes: 1 << 20,
            sync: true,
            max_retained,
            min_free_bytes: 0,
            journal_bytes: 1 << 20,
        });
        match opened {
            Err(super::StorageError::Locked { .. })
                if started.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.expect("open storage"),
        }
    }
}

/// Appends `n` one-byte messages, the topic of the k-th (1-based) given by `topic_of(k)`.
pub(crate) fn fill(storage: &Storage, n: u64, topic_of: impl Fn(u64) -> String) {
    let mut batch: Vec<Entry> = (1..=n)
        .map(|k| Entry::Message {
            topic: topic_of(k),
            payload: Bytes::from_static(b"x"),
            retain: false,
            mqtt: None,
        })
        .collect();
    storage.log.append(&mut batch).expect("append");
}

/// The ts of the record at `seq`.
pub(crate) fn ts_of(storage: &Storage, seq: u64) -> u64 {
    let mut c = storage.log.cursor(&["#".to_owned()], seq - 1, seq);
    c.next_batch(1).expect("read")[0].ts_ms
}
