//! The tail: the most recently logged messages, in memory and bounded in bytes.
//!
//! Ingest pushes every committed batch here and never waits: when the tail is full the oldest
//! messages leave it (they are in the log). The fan-out thread follows the tail to dispatch
//! live messages, and connections that fell a little behind catch up from it instead of each
//! reading the log; one that fell further behind than the tail reaches reads the log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::hub::Live;

/// What a read of the tail found.
#[derive(Debug)]
pub(crate) enum Read {
    /// Messages in `(after, upto]`, ascending; everything logged up to `upto` is covered.
    Items {
        /// The messages (fewer than asked when `upto` was reached).
        items: Vec<Arc<Live>>,
        /// The last seq this read covers.
        upto: u64,
    },
    /// `after` is older than the tail: messages from `after + 1` to `floor` are only in the log.
    Behind {
        /// Every message above this seq is in the tail.
        floor: u64,
    },
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<Arc<Live>>,
    bytes: usize,
    /// Every message logged above this seq is in `items`.
    floor: u64,
    /// The last seq pushed.
    head: u64,
    closed: bool,
}

/// The in-memory tail of the log.
#[derive(Debug)]
pub(crate) struct Tail {
    inner: Mutex<Inner>,
    grown: Condvar,
    max_bytes: usize,
}

/// Bytes a message holds in the tail: its record (with its MQTT details) and its two frames (live, and replay once a
/// catch-up asked for it).
fn size_of(live: &Live) -> usize {
    // Record fields and the Arcs, roughly; what matters is that payloads are counted.
    const OVERHEAD: usize = 128;
    let mqtt = live.record.mqtt.as_ref().map_or(0, |m| {
        m.properties.len() + m.origin.as_ref().map_or(0, |o| o.len())
    });
    live.record.topic.len()
        + live.record.payload.len()
        + mqtt
        + 2 * live.frame().map_or(0, |f| f.len())
        + OVERHEAD
}

impl Tail {
    /// An empty tail after a log whose last seq is `head`.
    pub(crate) fn new(head: u64, max_bytes: usize) -> Tail {
        Tail {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
                floor: head,
                head,
                closed: false,
            }),
            grown: Condvar::new(),
            max_bytes,
        }
    }

    /// Appends a committed batch (ascending seqs above the head) and drops the oldest messages
    /// beyond the byte bound. Never waits for readers.
    pub(crate) fn push(&self, batch: Vec<Arc<Live>>) {
        let Some(last) = batch.last().map(|l| l.record.seq) else {
            return;
        };
        let mut inner = self.inner.lock();
        for live in batch {
            inner.bytes += size_of(&live);
            inner.items.push_back(live);
        }
        inner.head = last;
        while inner.bytes > self.max_bytes && inner.items.len() > 1 {
            if let Some(old) = inner.items.pop_front() {
                inner.bytes -= size_of(&old);
                inner.floor = old.record.seq;
            }
        }
        drop(inner);
        self.grown.notify_all();
    }

    /// Notes that the log lost everything up to `to` before it could be pushed (a shared log's
    /// retention overtook this node): the tail forgets what it holds and starts after `to`, so
    /// every reader behind it continues from the log, which reports the removed range.
    pub(crate) fn lose_through(&self, to: u64) {
        let mut inner = self.inner.lock();
        if to <= inner.head {
            return;
        }
        inner.items.clear();
        inner.bytes = 0;
        inner.floor = to;
        inner.head = to;
        drop(inner);
        self.grown.notify_all();
    }

    /// Ends [`Tail::wait_read`] once everything pushed was read.
    pub(crate) fn close(&self) {
        self.inner.lock().closed = true;
        self.grown.notify_all();
    }

    /// Average bytes of the messages held (as the tail counts them, frames included), 0 when
    /// empty: what a catch-up expects its first log read to return per record.
    pub(crate) fn average_size(&self) -> usize {
        let inner = self.inner.lock();
        inner.bytes.checked_div(inner.items.len()).unwrap_or(0)
    }

    /// Up to `max` messages in `(after, upto]`, and no more than about `max_bytes` of them
    /// (always at least one): a reader that then waits holds little the tail has dropped.
    pub(crate) fn read(&self, after: u64, upto: u64, max: usize, max_bytes: usize) -> Read {
        let inner = self.inner.lock();
        read(&inner, after, upto, max, max_bytes)
    }

    /// Blocks until something above `after` was pushed, then reads up to `max` of it. `None`
    /// once the tail is closed and `after` is its head. Wakes at least every `tick` so a
    /// caller can check its own state.
    pub(crate) fn wait_read(&self, after: u64, max: usize, tick: Duration) -> Option<Read> {
        let mut inner = self.inner.lock();
        while inner.head <= after {
            if inner.closed {
                return None;
            }
            self.grown.wait_for(&mut inner, tick);
        }
        let head = inner.head;
        Some(read(&inner, after, head, max, usize::MAX))
    }
}

fn read(inner: &Inner, after: u64, upto: u64, max: usize, max_bytes: usize) -> Read {
    if after < inner.floor {
        return Read::Behind { floor: inner.floor };
    }
    let start = inner.items.partition_point(|l| l.record.seq <= after);
    let mut items: Vec<Arc<Live>> = Vec::new();
    let mut bytes = 0;
    let mut full = false;
    for live in inner.items.range(start..) {
        if live.record.seq > upto {
            break;
        }
        if items.len() == max || (!items.is_empty() && bytes + size_of(live) > max_bytes) {
            full = true;
            break;
        }
        bytes += size_of(live);
        items.push(live.clone());
    }
    let covered = if full {
        items.last().map_or(after, |l| l.record.seq)
    } else {
        upto.min(inner.head).max(after)
    };
    Read::Items {
        items,
        upto: covered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Frame, MessageFrames};
    use crate::storage::Record;
    use bytes::Bytes;

    fn live(seq: u64, payload: usize) -> Arc<Live> {
        Arc::new(Live::new(
            Record {
                seq,
                ts_ms: 0,
                topic: "t".to_owned(),
                payload: Bytes::from(vec![b'x'; payload]),
                retain: false,
                mqtt: None,
            },
            MessageFrames::from_live(Frame::from_static("m")),
        ))
    }

    fn seqs(r: &Read) -> (Vec<u64>, u64) {
        match r {
            Read::Items { items, upto } => (items.iter().map(|l| l.record.seq).collect(), *upto),
            Read::Behind { floor } => panic!("behind {floor}"),
        }
    }

    #[test]
    fn reads_ranges_and_reports_what_it_covered() {
        let tail = Tail::new(10, 1 << 20);
        tail.push(vec![live(11, 1), live(12, 1), live(14, 1)]);
        assert_eq!(
            seqs(&tail.read(10, 14, 100, usize::MAX)),
            (vec![11, 12, 14], 14)
        );
        assert_eq!(seqs(&tail.read(10, 14, 2, usize::MAX)), (vec![11, 12], 12));
        assert_eq!(
            seqs(&tail.read(10, 14, 100, 1)),
            (vec![11], 11),
            "byte bound: one at least"
        );
        assert_eq!(seqs(&tail.read(12, 13, 100, usize::MAX)), (vec![], 13));
        assert_eq!(
            seqs(&tail.read(14, 20, 100, usize::MAX)),
            (vec![], 14),
            "never past the head"
        );
    }

    #[test]
    fn oldest_leave_at_the_byte_bound_and_readers_are_told() {
        let tail = Tail::new(0, 1000);
        tail.push((1..=5).map(|s| live(s, 300)).collect());
        let Read::Behind { floor } = tail.read(0, 5, 100, usize::MAX) else {
            panic!("expected behind");
        };
        assert!(floor >= 2, "{floor}");
        let (got, upto) = seqs(&tail.read(floor, 5, 100, usize::MAX));
        assert_eq!(upto, 5);
        assert_eq!(got, ((floor + 1)..=5).collect::<Vec<_>>());
    }

    #[test]
    fn wait_read_returns_none_once_closed_and_drained() {
        let tail = Tail::new(0, 1 << 20);
        tail.push(vec![live(1, 1)]);
        let r = tail
            .wait_read(0, 10, Duration::from_millis(1))
            .expect("some");
        assert_eq!(seqs(&r), (vec![1], 1));
        tail.close();
        assert!(tail.wait_read(1, 10, Duration::from_millis(1)).is_none());
    }

    #[test]
    fn a_range_the_log_lost_sends_every_reader_behind_it_to_the_log() {
        let tail = Tail::new(0, 1 << 20);
        tail.push((1..=3).map(|s| live(s, 1)).collect());
        tail.lose_through(10);
        for after in [0, 3] {
            let Read::Behind { floor } = tail.read(after, 20, 100, usize::MAX) else {
                panic!("expected behind from {after}");
            };
            assert_eq!(floor, 10);
        }
        tail.push(vec![live(11, 1)]);
        assert_eq!(seqs(&tail.read(10, 11, 100, usize::MAX)), (vec![11], 11));
        tail.lose_through(5);
        assert_eq!(
            seqs(&tail.read(10, 11, 100, usize::MAX)),
            (vec![11], 11),
            "a range below the head changes nothing"
        );
    }
}
