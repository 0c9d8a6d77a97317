//! The hub: connections register filters; the fan-out thread dispatches what it reads from the
//! tail to every matching connection's outbox.
//!
//! Consistency: dispatch holds the read lock for a whole batch and then records the batch's
//! last seq as `dispatched`; subscribing takes the write lock and reads `dispatched`. So the
//! value returned by [`Hub::subscribe`] is an exact cut: every message at or below it was
//! dispatched before the filters existed, every later one will be dispatched to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;

use super::outbox::Outbox;
use crate::storage::Record;
use mqws_topic::Trie;

/// A logged message with its `message` frame, encoded once for every receiver, and its
/// `replay: true` variant, made once for every connection that catches up from the tail.
#[derive(Debug)]
pub(crate) struct Live {
    /// The logged message.
    pub(crate) record: Record,
    /// Its live `message` frame.
    pub(crate) frame: Utf8Bytes,
    replay: OnceLock<Utf8Bytes>,
}

impl Live {
    /// The record with its live frame `frame`.
    pub(crate) fn new(record: Record, frame: Utf8Bytes) -> Live {
        Live {
            record,
            frame,
            replay: OnceLock::new(),
        }
    }

    /// The frame with `"replay":true`: the live frame with the field appended (it is the last
    /// field of a `message` frame and absent when false).
    pub(crate) fn replay_frame(&self) -> Utf8Bytes {
        self.replay
            .get_or_init(|| {
                let live = self.frame.as_str();
                let body = live.strip_suffix('}').unwrap_or(live);
                Utf8Bytes::from(format!("{body},\"replay\":true}}"))
            })
            .clone()
    }
}

#[derive(Debug, Default)]
struct Index {
    trie: Trie<Arc<Outbox>>,
    /// Every connection with filters, to make them all fall behind at once.
    members: HashMap<u64, Arc<Outbox>>,
}

/// Filter index plus the dispatch cut.
#[derive(Debug)]
pub(crate) struct Hub {
    index: RwLock<Index>,
    dispatched: AtomicU64,
    /// Live deliveries so far (for `/api/status` rates).
    delivered: AtomicU64,
}

impl Hub {
    /// An empty hub whose log already holds messages up to `head`.
    pub(crate) fn new(head: u64) -> Hub {
        Hub {
            index: RwLock::new(Index::default()),
            dispatched: AtomicU64::new(head),
            delivered: AtomicU64::new(0),
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
        let mut index = self.index.write();
        for f in filters {
            index.trie.insert(f, id, outbox.clone());
        }
        index.members.insert(id, outbox.clone());
        let cut = self.dispatched.load(Ordering::Acquire);
        at_cut(cut);
        cut
    }

    /// Removes `filters` of connection `id`.
    pub(crate) fn unsubscribe(&self, id: u64, filters: &[String]) {
        let mut index = self.index.write();
        for f in filters {
            index.trie.remove(f, id);
        }
    }

    /// Removes connection `id` and its `filters` for good.
    pub(crate) fn leave(&self, id: u64, filters: &[String]) {
        let mut index = self.index.write();
        for f in filters {
            index.trie.remove(f, id);
        }
        index.members.remove(&id);
    }

    /// The last seq dispatched.
    pub(crate) fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Acquire)
    }

    /// Makes `outbox` hold live messages from the cut on and returns the cut: every later
    /// message is held for it, every earlier one its catch-up must send.
    pub(crate) fn rejoin(&self, outbox: &Outbox) -> u64 {
        let _index = self.index.write();
        outbox.hold();
        self.dispatched.load(Ordering::Acquire)
    }

    /// Offers every message of `batch` (ascending seqs) to every matching connection, then
    /// moves the cut to `upto` (the last seq the batch covers). Returns the deliveries queued.
    pub(crate) fn dispatch(&self, batch: &[Arc<Live>], upto: u64) -> u64 {
        let index = self.index.read();
        let mut delivered = 0;
        let mut levels = Vec::new();
        for live in batch {
            index
                .trie
                .for_each_match_in(&live.record.topic, &mut levels, |_, outbox| {
                    if outbox.push_message(live.record.seq, &live.frame) {
                        delivered += 1;
                    }
                });
        }
        self.dispatched.store(upto, Ordering::Release);
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        delivered
    }

    /// Messages queued to connections live since start (catch-up reads not included).
    pub(crate) fn delivered_total(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The fan-out fell behind the tail: messages up to `floor` are only in the log now. Every
    /// connection falls behind (its catch-up reads them) and the cut moves to `floor`.
    pub(crate) fn lag_all(&self, floor: u64) {
        let index = self.index.write();
        for outbox in index.members.values() {
            outbox.lag();
        }
        self.dispatched.store(floor, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Outgoing;
    use bytes::Bytes;

    fn live(seq: u64, topic: &str) -> Arc<Live> {
        Arc::new(Live::new(
            Record {
                seq,
                ts_ms: 0,
                topic: topic.to_owned(),
                payload: Bytes::new(),
                retain: false,
            },
            Utf8Bytes::from(format!("m{seq}")),
        ))
    }

    fn drain(rx: &mut crate::fanout::outbox::Receiver) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Text(t, _)) = rx.try_recv() {
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn the_replay_frame_is_the_live_frame_with_replay_set() {
        let record = Record {
            seq: 7,
            ts_ms: 1,
            topic: "a".to_owned(),
            payload: Bytes::from_static(b"{\"x\":1}"),
            retain: false,
        };
        let frame = Utf8Bytes::from(crate::protocol::server::message_text(
            &record,
            false,
            &Default::default(),
        ));
        let live = Live::new(record.clone(), frame);
        assert_eq!(
            live.replay_frame().as_str(),
            crate::protocol::server::message_text(&record, true, &Default::default())
        );
    }

    #[test]
    fn overlapping_filters_deliver_once_and_cut_is_exact() {
        let hub = Hub::new(10);
        let budget = Arc::new(crate::fanout::Budget::new(1 << 30));
        let (o, mut rx) = Outbox::new(100, 1 << 20, budget);
        let o = Arc::new(o);
        let cut = hub.subscribe(1, &["a/#".to_owned(), "a/+".to_owned()], &o, |c| {
            o.start_after(c)
        });
        assert_eq!(cut, 10);
        let n = hub.dispatch(&[live(11, "a/b"), live(12, "x"), live(13, "a/c")], 13);
        assert_eq!(n, 2);
        assert_eq!(drain(&mut rx), vec!["m11", "m13"]);
        assert_eq!(hub.dispatched(), 13);
        hub.unsubscribe(1, &["a/#".to_owned()]);
        hub.dispatch(&[live(14, "a/b/c"), live(15, "a/d")], 15);
        assert_eq!(drain(&mut rx), vec!["m15"]);
    }
}
