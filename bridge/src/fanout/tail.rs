//! The tail: the most recently logged messages, in memory and bounded in bytes.
//!
//! Ingest pushes every committed batch here and never waits: when the tail is full the oldest
//! messages leave it (they are in the log). The fan-out thread follows the tail to dispatch
//! live messages, and connections that fell a little behind catch up from it instead of each
//! reading the log; one that fell further behind than the tail reaches reads the log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::live::{FrameBytes, Live};
use crate::protocol::payload::Encodings;
use crate::storage::Record;

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
    /// What the records hold ([`Live::record_size`]); their frames are in `Tail::frames`.
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
    /// What the frames encoded for messages in `items` hold.
    frames: Arc<FrameBytes>,
    /// Connections that take frames ([`super::Hub::frame_readers`]): while there is one,
    /// [`Tail::push_records`] encodes each message's frame, so the fan-out thread does not.
    frame_readers: Arc<AtomicUsize>,
}

/// Bytes a message holds in the tail as a reader counts it: its record (with its MQTT
/// details) and its two frames (live, and replay once a catch-up asked for it) if encoded.
fn size_of(live: &Live) -> usize {
    live.record_size() + live.frames_size()
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
            frames: Arc::default(),
            frame_readers: Arc::default(),
        }
    }

    /// Encodes frames where messages enter while `readers` (the hub's count of connections
    /// that take frames) is above zero.
    pub(crate) fn encoding_for(mut self, readers: Arc<AtomicUsize>) -> Tail {
        self.frame_readers = readers;
        self
    }

    /// Appends committed records whose frames are encoded on first use with `encodings`; see
    /// [`Tail::push`].
    pub(crate) fn push_records(&self, records: Vec<Record>, encodings: &Arc<Encodings>) {
        let now = Instant::now();
        // Encoded here (the ingest or follower thread) when someone takes frames, as fan-out
        // is one thread for every connection; when none does, a frame is made on first use.
        let encode = self.frame_readers.load(Ordering::Relaxed) > 0;
        self.push(
            records
                .into_iter()
                .map(|r| {
                    let live = Live::framed(r, now, encodings.clone(), self.frames.clone());
                    if encode {
                        live.frame();
                    }
                    Arc::new(live)
                })
                .collect(),
        );
    }

    /// Appends a committed batch (ascending seqs above the head) and drops the oldest messages
    /// beyond the byte bound. Never waits for readers.
    pub(crate) fn push(&self, batch: Vec<Arc<Live>>) {
        let Some(last) = batch.last().map(|l| l.record.seq) else {
            return;
        };
        let mut inner = self.inner.lock();
        for live in batch {
            inner.bytes += live.record_size();
            inner.items.push_back(live);
        }
        inner.head = last;
        while inner.bytes + self.frames.get() > self.max_bytes && inner.items.len() > 1 {
            if let Some(old) = inner.items.pop_front() {
                inner.bytes -= old.record_size();
                old.left_tail();
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
        for old in inner.items.drain(..) {
            old.left_tail();
        }
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
        (inner.bytes + self.frames.get())
            .checked_div(inner.items.len())
            .unwrap_or(0)
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
        Arc::new(Live::with_frames(
            Record {
                seq,
                ts_ms: 0,
                topic: "t".to_owned(),
                payload: Bytes::from(vec![b'x'; payload]),
                retain: false,
                mqtt: None,
            },
            MessageFrames::from_live(Frame::from_static("m")),
            Arc::default(),
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
    fn frames_encoded_after_the_push_count_against_the_bound() {
        let tail = Tail::new(0, 2_000);
        let encodings = Arc::new(Encodings::default());
        let record = |seq| Record {
            seq,
            ts_ms: 0,
            topic: "t".to_owned(),
            payload: Bytes::from(vec![b'x'; 100]),
            retain: false,
            mqtt: None,
        };
        tail.push_records((1..=4).map(record).collect(), &encodings);
        let Read::Items { items, .. } = tail.read(0, 4, 100, usize::MAX) else {
            panic!("all four fit before their frames exist");
        };
        assert_eq!(items.len(), 4);
        assert_eq!(tail.frames.get(), 0);
        for live in &items {
            live.frame().expect("framed");
        }
        let framed: usize = items.iter().map(|l| l.frames_size()).sum();
        assert!(framed > 0);
        assert_eq!(tail.frames.get(), framed);
        tail.push_records(vec![record(5)], &encodings);
        let Read::Behind { floor } = tail.read(0, 5, 100, usize::MAX) else {
            panic!("the frames pushed the oldest out");
        };
        let Read::Items { items: kept, .. } = tail.read(floor, 5, 100, usize::MAX) else {
            panic!("items above the floor");
        };
        let held: usize = kept.iter().map(|l| l.record_size() + l.frames_size()).sum();
        assert!(held <= 2_000, "{held}");
        assert_eq!(
            tail.frames.get(),
            kept.iter().map(|l| l.frames_size()).sum::<usize>(),
            "the frames of messages that left are no longer counted"
        );
        tail.lose_through(10);
        assert_eq!(tail.frames.get(), 0);
    }

    #[test]
    fn frames_are_encoded_at_push_while_someone_takes_frames() {
        let readers = Arc::new(AtomicUsize::new(0));
        let tail = Tail::new(0, 1 << 20).encoding_for(readers.clone());
        let encodings = Arc::new(Encodings::default());
        let record = |seq| Record {
            seq,
            ts_ms: 0,
            topic: "t".to_owned(),
            payload: Bytes::from_static(b"x"),
            retain: false,
            mqtt: None,
        };
        tail.push_records(vec![record(1)], &encodings);
        assert_eq!(tail.frames.get(), 0, "nobody takes frames: none made");
        readers.store(1, Ordering::Relaxed);
        tail.push_records(vec![record(2)], &encodings);
        assert!(tail.frames.get() > 0, "made where the message entered");
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
