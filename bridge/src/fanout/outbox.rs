//! A connection's outbound queue, bounded by frame count and by bytes.
//!
//! Producers (the fan-out thread, the connection's own reader) never wait on it: when either
//! bound would be exceeded the connection is closed as a slow consumer (4001) and told to resume,
//! so one slow client neither slows the others nor grows memory without bound. Replay is the
//! one producer that waits for room ([`Outbox::push_replay`]), so a long catch-up streams
//! instead of overflowing.
//!
//! While a replay runs, live messages are *held* (bounded by the same frame limit) and released
//! after it in seq order; the seq check in [`Outbox::push_message`] makes the handover free of
//! gaps and duplicates.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::protocol::close;

/// What the connection's writer sends, in order.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A JSON text frame; `seq` is the message's seq for `message` frames, else 0.
    Text(Utf8Bytes, u64),
    /// Close the connection with this code and reason after the frames before it.
    Close(u16, &'static str),
}

/// The producer side of a connection's queue, shared with the hub.
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    pending_bytes: AtomicUsize,
    max_bytes: usize,
    /// Highest seq queued, so overlapping filters and the live/replay handover never send one
    /// message twice and never go backwards.
    last_seq: AtomicU64,
    abort: CancellationToken,
    abort_code: AtomicU16,
    /// Highest message seq the writer has flushed to the socket.
    delivered: AtomicU64,
    /// Signalled when the writer frees room.
    room: Notify,
    holding: AtomicBool,
    held: Mutex<Option<VecDeque<(u64, Utf8Bytes)>>>,
    max_frames: usize,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes; returns the consumer end.
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> (Outbox, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(max_frames);
        let outbox = Outbox {
            tx,
            pending_bytes: AtomicUsize::new(0),
            max_bytes,
            last_seq: AtomicU64::new(0),
            abort: CancellationToken::new(),
            abort_code: AtomicU16::new(0),
            delivered: AtomicU64::new(0),
            room: Notify::new(),
            holding: AtomicBool::new(false),
            held: Mutex::new(None),
            max_frames,
        };
        (outbox, rx)
    }

    /// Queues a frame. Returns false when the connection is closing or was just closed as a
    /// slow consumer.
    pub(crate) fn push(&self, text: Utf8Bytes) -> bool {
        self.push_seq(text, 0)
    }

    fn push_seq(&self, text: Utf8Bytes, seq: u64) -> bool {
        if self.abort.is_cancelled() {
            return false;
        }
        let n = text.as_str().len();
        let before = self.pending_bytes.fetch_add(n, Ordering::Relaxed);
        if before + n > self.max_bytes {
            self.pending_bytes.fetch_sub(n, Ordering::Relaxed);
            self.slow_consumer("pending bytes");
            return false;
        }
        match self.tx.try_send(Outgoing::Text(text, seq)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.pending_bytes.fetch_sub(n, Ordering::Relaxed);
                self.slow_consumer("pending frames");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues the message frame for `seq` unless this connection already has `seq` or later.
    /// Only the fan-out thread calls this, so the check-then-store cannot race.
    pub(crate) fn push_message(&self, seq: u64, text: &Utf8Bytes) -> bool {
        if self.holding.load(Ordering::Acquire) {
            let mut held = self.held.lock();
            if let Some(queue) = held.as_mut() {
                if queue.len() >= self.max_frames {
                    drop(held);
                    self.slow_consumer("held live frames during replay");
                    return false;
                }
                queue.push_back((seq, text.clone()));
                return true;
            }
        }
        if seq <= self.last_seq.load(Ordering::Relaxed) {
            return false;
        }
        self.last_seq.store(seq, Ordering::Relaxed);
        self.push_seq(text.clone(), seq)
    }

    /// Starts holding live messages (call before the session's filters are registered).
    pub(crate) fn hold(&self) {
        *self.held.lock() = Some(VecDeque::new());
        self.holding.store(true, Ordering::Release);
    }

    /// Ends holding: everything up to `replayed` was sent by the replay; held live messages
    /// above it follow in order, and live delivery goes direct again.
    pub(crate) fn release(&self, replayed: u64) {
        let mut held = self.held.lock();
        self.start_after(replayed);
        if let Some(queue) = held.take() {
            for (seq, text) in queue {
                if seq > self.last_seq.load(Ordering::Relaxed) {
                    self.last_seq.store(seq, Ordering::Relaxed);
                    self.push_seq(text, seq);
                }
            }
        }
        self.holding.store(false, Ordering::Release);
    }

    /// Queues a replayed message, waiting for room instead of overflowing. Returns false when
    /// the connection ended. Cancel-safe: a frame is either queued or not.
    pub(crate) async fn push_replay(&self, seq: u64, text: Utf8Bytes) -> bool {
        let n = text.as_str().len();
        loop {
            if self.abort.is_cancelled() {
                return false;
            }
            let room = self.room.notified();
            let pending = self.pending_bytes.load(Ordering::Relaxed);
            if pending == 0 || pending + n <= self.max_bytes {
                break;
            }
            tokio::select! {
                _ = room => {}
                _ = self.abort.cancelled() => return false,
            }
        }
        let permit = tokio::select! {
            p = self.tx.reserve() => p,
            _ = self.abort.cancelled() => return false,
        };
        let Ok(permit) = permit else { return false };
        self.pending_bytes.fetch_add(n, Ordering::Relaxed);
        permit.send(Outgoing::Text(text, seq));
        true
    }

    /// Sets the seq before which nothing is delivered live (the session's start position).
    pub(crate) fn start_after(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// The writer reports `n` bytes written, the last message seq among them (0 if none).
    pub(crate) fn sent(&self, n: usize, seq: u64) {
        self.pending_bytes.fetch_sub(n, Ordering::Relaxed);
        if seq > 0 {
            self.delivered.fetch_max(seq, Ordering::Relaxed);
        }
        self.room.notify_waiters();
    }

    /// The highest message seq written to the socket.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Closes after the frames already queued (for protocol closes like 1008).
    pub(crate) fn close_after_pending(&self, code: u16, reason: &'static str) {
        if self.tx.try_send(Outgoing::Close(code, reason)).is_err() {
            self.abort(code);
        }
    }

    /// Closes at once, ahead of anything queued.
    pub(crate) fn abort(&self, code: u16) {
        let _ = self
            .abort_code
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
        self.abort.cancel();
    }

    /// The code of an [`Outbox::abort`], once it happened.
    pub(crate) fn abort_code(&self) -> Option<u16> {
        match self.abort_code.load(Ordering::Relaxed) {
            0 => None,
            c => Some(c),
        }
    }

    /// Resolves when the connection is aborted. Cancel-safe.
    pub(crate) fn aborted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.abort.cancelled()
    }

    fn slow_consumer(&self, which: &'static str) {
        if !self.abort.is_cancelled() {
            tracing::warn!(limit = which, "closing slow consumer (4001)");
            metrics::counter!("mqws_slow_consumer_closes_total").increment(1);
        }
        self.abort(close::SLOW_CONSUMER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_bound_closes_with_4001() {
        let (o, mut rx) = Outbox::new(100, 10);
        assert!(o.push(Utf8Bytes::from_static("12345")));
        assert!(o.push(Utf8Bytes::from_static("67890")));
        assert!(!o.push(Utf8Bytes::from_static("x")));
        assert_eq!(o.abort_code(), Some(close::SLOW_CONSUMER));
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Text(_, 0))));
    }

    #[test]
    fn frame_bound_closes_with_4001() {
        let (o, _rx) = Outbox::new(2, 1 << 20);
        assert!(o.push(Utf8Bytes::from_static("a")));
        assert!(o.push(Utf8Bytes::from_static("b")));
        assert!(!o.push(Utf8Bytes::from_static("c")));
        assert_eq!(o.abort_code(), Some(close::SLOW_CONSUMER));
    }

    #[test]
    fn sent_bytes_free_room() {
        let (o, _rx) = Outbox::new(100, 10);
        assert!(o.push(Utf8Bytes::from_static("1234567890")));
        o.sent(10, 0);
        assert!(o.push(Utf8Bytes::from_static("1234567890")));
        assert_eq!(o.abort_code(), None);
    }

    #[test]
    fn messages_are_never_repeated_or_reordered() {
        let (o, mut rx) = Outbox::new(100, 1 << 20);
        let t = Utf8Bytes::from_static("m");
        o.start_after(5);
        assert!(!o.push_message(5, &t));
        assert!(o.push_message(6, &t));
        assert!(!o.push_message(6, &t));
        assert!(!o.push_message(4, &t));
        assert!(o.push_message(9, &t));
        assert_eq!(rx.len(), 2);
        let _ = rx.try_recv();
    }

    #[tokio::test]
    async fn holding_then_release_has_no_gap_or_duplicate() {
        let (o, mut rx) = Outbox::new(100, 1 << 20);
        let t = |s: u64| Utf8Bytes::from(format!("m{s}"));
        o.hold();
        // Live messages arrive during the replay: 11 and 12 overlap what the replay sends.
        assert!(o.push_message(11, &t(11)));
        assert!(o.push_message(12, &t(12)));
        assert!(o.push_message(13, &t(13)));
        assert!(o.push_replay(10, t(10)).await);
        assert!(o.push_replay(11, t(11)).await);
        assert!(o.push_replay(12, t(12)).await);
        o.release(12);
        assert!(o.push_message(14, &t(14)));
        let mut got = Vec::new();
        while let Ok(Outgoing::Text(text, seq)) = rx.try_recv() {
            got.push((seq, text.to_string()));
        }
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![10, 11, 12, 13, 14]);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_waits_for_room_instead_of_overflowing() {
        let (o, mut rx) = Outbox::new(100, 10);
        let o = std::sync::Arc::new(o);
        assert!(o.push_replay(1, Utf8Bytes::from_static("12345678")).await);
        let o2 = o.clone();
        let waiting =
            tokio::spawn(
                async move { o2.push_replay(2, Utf8Bytes::from_static("12345678")).await },
            );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "no room yet");
        let _ = rx.recv().await;
        o.sent(8, 1);
        assert!(waiting.await.expect("join"));
        assert_eq!(o.abort_code(), None);
        assert_eq!(o.delivered(), 1);
    }

    #[test]
    fn first_abort_code_wins() {
        let (o, _rx) = Outbox::new(1, 10);
        o.abort(close::GOING_AWAY);
        o.abort(close::SLOW_CONSUMER);
        assert_eq!(o.abort_code(), Some(close::GOING_AWAY));
        assert!(!o.push(Utf8Bytes::from_static("x")));
    }
}
