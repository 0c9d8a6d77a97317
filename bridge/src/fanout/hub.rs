//! The hub: connections register filters; the fan-out thread dispatches what it reads from the
//! tail to every matching connection's outbox.
//!
//! Consistency: dispatch holds the read lock for a whole batch and then records the batch's
//! last seq as `dispatched`; subscribing takes the write lock and reads `dispatched`. So the
//! value returned by [`Hub::subscribe`] is an exact cut: every message at or below it was
//! dispatched before the filters existed, every later one will be dispatched to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::live::Live;
use super::outbox::{Form, Outbox};
use super::retained::Retained;
use mqws_topic::Trie;

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
    /// The retained value of each logged topic as of the cut.
    retained: Retained,
    /// Connections that take frames (WebSocket, SSE): while there is one, the tail has
    /// frames encoded where messages enter it, off the fan-out thread.
    frame_readers: Arc<AtomicUsize>,
}

impl Hub {
    /// An empty hub whose log already holds messages up to `head`.
    #[cfg(test)]
    pub(crate) fn new(head: u64) -> Hub {
        Hub::with_retained(head, Retained::new(Vec::new(), usize::MAX))
    }

    /// An empty hub whose log already holds messages up to `head`, with the retained values
    /// kept so far.
    pub(crate) fn with_retained(head: u64, retained: Retained) -> Hub {
        Hub {
            index: RwLock::new(Index::default()),
            dispatched: AtomicU64::new(head),
            delivered: AtomicU64::new(0),
            retained,
            frame_readers: Arc::default(),
        }
    }

    /// How many connections that take frames are in the hub (shared with the tail).
    pub(crate) fn frame_readers(&self) -> Arc<AtomicUsize> {
        self.frame_readers.clone()
    }

    /// The retained values as of the cut: read them in [`Hub::subscribe`]'s `at_cut`.
    pub(crate) fn retained(&self) -> &Retained {
        &self.retained
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
        if index.members.insert(id, outbox.clone()).is_none() && outbox.form() == Form::Frames {
            self.frame_readers.fetch_add(1, Ordering::Relaxed);
        }
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
        if index
            .members
            .remove(&id)
            .is_some_and(|o| o.form() == Form::Frames)
        {
            self.frame_readers.fetch_sub(1, Ordering::Relaxed);
        }
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
            if live.record.retain {
                self.retained.apply(live);
            }
            index
                .trie
                .for_each_match_in(&live.record.topic, &mut levels, |_, outbox| {
                    if outbox.push_live(live) {
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
    use crate::protocol::{Frame, MessageFrames};
    use crate::storage::Record;
    use bytes::Bytes;

    fn live(seq: u64, topic: &str) -> Arc<Live> {
        Arc::new(Live::with_frames(
            Record {
                seq,
                ts_ms: 0,
                topic: topic.to_owned(),
                payload: Bytes::new(),
                retain: false,
                mqtt: None,
            },
            MessageFrames::from_live(Frame::from(format!("m{seq}"))),
            Arc::default(),
        ))
    }

    fn drain(rx: &mut crate::fanout::outbox::Receiver) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Frame(t, _)) = rx.try_recv() {
            out.push(t.as_str().to_owned());
        }
        out
    }

    #[test]
    fn connections_that_take_frames_are_counted() {
        let hub = Hub::new(0);
        let budget = Arc::new(crate::fanout::Budget::new(1 << 20));
        let (frames, _rx) = Outbox::new(10, 1 << 20, budget.clone());
        let frames = Arc::new(frames);
        let (records, _rx2) =
            Outbox::with_form(crate::fanout::outbox::Form::Records, 10, 1 << 20, budget);
        let records = Arc::new(records);
        let f = ["a".to_owned()];
        hub.subscribe(1, &f, &frames, |_| {});
        hub.subscribe(1, &f, &frames, |_| {});
        hub.subscribe(2, &f, &records, |_| {});
        assert_eq!(hub.frame_readers().load(Ordering::Relaxed), 1);
        hub.leave(2, &f);
        hub.leave(1, &f);
        assert_eq!(hub.frame_readers().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn retained_values_are_read_at_the_cut_where_live_begins() {
        let hub = Hub::new(10);
        let budget = Arc::new(crate::fanout::Budget::new(1 << 30));
        let retained = |seq: u64| {
            let mut l = live(seq, "r/t");
            let record = &mut Arc::get_mut(&mut l).expect("unshared").record;
            record.retain = true;
            record.payload = Bytes::from_static(b"on");
            l
        };
        hub.dispatch(&[retained(11)], 11);
        let (o, mut rx) =
            Outbox::with_form(crate::fanout::outbox::Form::Records, 100, 1 << 20, budget);
        let o = Arc::new(o);
        let mut at_cut = Vec::new();
        let cut = hub.subscribe(1, &["r/#".to_owned()], &o, |c| {
            o.start_after(c);
            at_cut = hub.retained().matching(&["r/#".to_owned()]);
        });
        assert_eq!(cut, 11);
        let seqs: Vec<u64> = at_cut.iter().map(|l| l.record.seq).collect();
        assert_eq!(
            seqs,
            vec![11],
            "the value logged before the cut, as retained"
        );
        hub.dispatch(&[retained(12)], 12);
        let Ok(Outgoing::Record(l)) = rx.try_recv() else {
            panic!("the value logged after the cut arrives live");
        };
        assert_eq!(l.record.seq, 12);
        assert!(rx.try_recv().is_err(), "and only once");
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
