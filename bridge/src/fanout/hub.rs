//! The hub: connections register filters; the fan-out thread dispatches each logged batch to
//! every matching connection's outbox.
//!
//! Consistency: dispatch holds the read lock for a whole batch and then records the batch's
//! last seq as `dispatched`; subscribing takes the write lock and reads `dispatched`. So the
//! value returned by [`Hub::subscribe`] is an exact cut: every message at or below it was
//! dispatched before the filters existed, every later one will be dispatched to them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;

use super::outbox::Outbox;
use crate::storage::Record;
use mqws_topic::Trie;

/// A logged message with its `message` frame, encoded once for every receiver.
#[derive(Debug)]
pub(crate) struct Live {
    /// The logged message.
    pub(crate) record: Record,
    /// Its live `message` frame.
    pub(crate) frame: Utf8Bytes,
}

/// Filter index plus the dispatch cut.
#[derive(Debug)]
pub(crate) struct Hub {
    trie: RwLock<Trie<Arc<Outbox>>>,
    dispatched: AtomicU64,
}

impl Hub {
    /// An empty hub whose log already holds messages up to `head`.
    pub(crate) fn new(head: u64) -> Hub {
        Hub {
            trie: RwLock::new(Trie::default()),
            dispatched: AtomicU64::new(head),
        }
    }

    /// Adds `filters` for connection `id` and returns the cut seq (see the module docs).
    /// `at_cut` runs before any dispatch can reach the new filters, so a frame it queues (the
    /// `welcome`) precedes every message the filters bring.
    pub(crate) fn subscribe(
        &self,
        id: u64,
        filters: &[String],
        outbox: &Arc<Outbox>,
        at_cut: impl FnOnce(u64),
    ) -> u64 {
        let mut trie = self.trie.write();
        for f in filters {
            trie.insert(f, id, outbox.clone());
        }
        let cut = self.dispatched.load(Ordering::Acquire);
        at_cut(cut);
        cut
    }

    /// Removes `filters` of connection `id`.
    pub(crate) fn unsubscribe(&self, id: u64, filters: &[String]) {
        let mut trie = self.trie.write();
        for f in filters {
            trie.remove(f, id);
        }
    }

    /// The last seq dispatched.
    #[cfg(test)]
    pub(crate) fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Acquire)
    }

    /// Queues every message of `batch` (ascending seqs) to every matching connection. Returns
    /// the number of deliveries queued.
    pub(crate) fn dispatch(&self, batch: &[Arc<Live>]) -> u64 {
        let Some(last) = batch.last() else {
            return 0;
        };
        let trie = self.trie.read();
        let mut delivered = 0;
        let mut levels = Vec::new();
        for live in batch {
            trie.for_each_match_in(&live.record.topic, &mut levels, |_, outbox| {
                if outbox.push_message(live.record.seq, &live.frame) {
                    delivered += 1;
                }
            });
        }
        self.dispatched.store(last.record.seq, Ordering::Release);
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Outgoing;
    use bytes::Bytes;

    fn live(seq: u64, topic: &str) -> Arc<Live> {
        Arc::new(Live {
            record: Record {
                seq,
                ts_ms: 0,
                topic: topic.to_owned(),
                payload: Bytes::new(),
                retain: false,
            },
            frame: Utf8Bytes::from(format!("m{seq}")),
        })
    }

    fn drain(rx: &mut tokio::sync::mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Text(t, _)) = rx.try_recv() {
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn overlapping_filters_deliver_once_and_cut_is_exact() {
        let hub = Hub::new(10);
        let (o, mut rx) = Outbox::new(100, 1 << 20);
        let o = Arc::new(o);
        let cut = hub.subscribe(1, &["a/#".to_owned(), "a/+".to_owned()], &o, |c| {
            o.start_after(c)
        });
        assert_eq!(cut, 10);
        let n = hub.dispatch(&[live(11, "a/b"), live(12, "x"), live(13, "a/c")]);
        assert_eq!(n, 2);
        assert_eq!(drain(&mut rx), vec!["m11", "m13"]);
        assert_eq!(hub.dispatched(), 13);
        hub.unsubscribe(1, &["a/#".to_owned()]);
        hub.dispatch(&[live(14, "a/b/c"), live(15, "a/d")]);
        assert_eq!(drain(&mut rx), vec!["m15"]);
    }
}
