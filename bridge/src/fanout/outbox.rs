//! A connection's outbound queue, bounded by frame count and by bytes.
//!
//! Producers (the fan-out thread, the connection's own reader) never wait on it: when either
//! bound would be exceeded the connection is closed as a slow consumer (4001) and told to resume,
//! so one slow client neither slows the others nor grows memory without bound.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::close;

/// What the connection's writer sends, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(Utf8Bytes),
    /// Close the connection with this code and reason after the frames before it.
    Close(u16, &'static str),
}

/// The producer side of a connection's queue, shared with the hub.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    pending_bytes: AtomicUsize,
    max_bytes: usize,
    /// Highest seq queued, so overlapping filters and the live/replay handover never send one
    /// message twice and never go backwards.
    last_seq: AtomicU64,
    abort: CancellationToken,
    abort_code: AtomicU16,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes; returns the consumer end.
    pub fn new(max_frames: usize, max_bytes: usize) -> (Outbox, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(max_frames);
        let outbox = Outbox {
            tx,
            pending_bytes: AtomicUsize::new(0),
            max_bytes,
            last_seq: AtomicU64::new(0),
            abort: CancellationToken::new(),
            abort_code: AtomicU16::new(0),
        };
        (outbox, rx)
    }

    /// Queues a frame. Returns false when the connection is closing or was just closed as a
    /// slow consumer.
    pub fn push(&self, text: Utf8Bytes) -> bool {
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
        match self.tx.try_send(Outgoing::Text(text)) {
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
    pub fn push_message(&self, seq: u64, text: &Utf8Bytes) -> bool {
        if seq <= self.last_seq.load(Ordering::Relaxed) {
            return false;
        }
        self.last_seq.store(seq, Ordering::Relaxed);
        self.push(text.clone())
    }

    /// Sets the seq before which nothing is delivered live (the session's start position).
    pub fn start_after(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// The writer reports `n` bytes written.
    pub fn sent(&self, n: usize) {
        self.pending_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    /// Closes after the frames already queued (for protocol closes like 1008).
    pub fn close_after_pending(&self, code: u16, reason: &'static str) {
        if self.tx.try_send(Outgoing::Close(code, reason)).is_err() {
            self.abort(code);
        }
    }

    /// Closes at once, ahead of anything queued.
    pub fn abort(&self, code: u16) {
        let _ = self
            .abort_code
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
        self.abort.cancel();
    }

    /// The code of an [`Outbox::abort`], once it happened.
    pub fn abort_code(&self) -> Option<u16> {
        match self.abort_code.load(Ordering::Relaxed) {
            0 => None,
            c => Some(c),
        }
    }

    /// Resolves when the connection is aborted. Cancel-safe.
    pub fn aborted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
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
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Text(_))));
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
        o.sent(10);
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

    #[test]
    fn first_abort_code_wins() {
        let (o, _rx) = Outbox::new(1, 10);
        o.abort(close::GOING_AWAY);
        o.abort(close::SLOW_CONSUMER);
        assert_eq!(o.abort_code(), Some(close::GOING_AWAY));
        assert!(!o.push(Utf8Bytes::from_static("x")));
    }
}
