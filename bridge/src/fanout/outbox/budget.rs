//! The bound on bytes queued in every outbox together (`ws.max_total_pending_bytes`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The bound on bytes queued for all connections together (`ws.max_total_pending_bytes`).
#[derive(Debug)]
pub(crate) struct Budget {
    pub(super) used: AtomicUsize,
    max: usize,
    pub(super) queues: AtomicUsize,
    /// Running average of the frames that did not fit live or were caught up, in bytes: what
    /// a catch-up reserves at least before it reads a step.
    frame_estimate: AtomicUsize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            max,
            queues: AtomicUsize::new(0),
            frame_estimate: AtomicUsize::new(0),
        }
    }

    /// Bytes queued now, all connections together.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes for a queue that holds `own`: granted while the total stays within the
    /// bound, and beyond it only to queues below their fair share, so the largest queues yield
    /// first. The total therefore stays below twice the bound.
    pub(super) fn try_take(&self, own: usize, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if self.grants(before, own, n) {
            return true;
        }
        self.used.fetch_sub(n, Ordering::Relaxed);
        false
    }

    /// The rule: within the bound, or beyond it for a queue below its fair share.
    fn grants(&self, used: usize, own: usize, n: usize) -> bool {
        used + n <= self.max || own + n <= self.max / self.queues.load(Ordering::Relaxed).max(1)
    }

    /// Takes `n` bytes for an empty queue: granted, whatever `n`, while the total before it is
    /// within twice the bound, so empty queues together cannot take more than that plus one
    /// frame each of the racers at the edge.
    pub(super) fn take_for_empty(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before <= self.max.saturating_mul(2) {
            return true;
        }
        self.used.fetch_sub(n, Ordering::Relaxed);
        false
    }

    /// The recent size of frames that went to catch-ups (see [`Budget::note_frame`]).
    pub(super) fn frame_estimate(&self) -> usize {
        self.frame_estimate.load(Ordering::Relaxed)
    }

    /// Folds a frame's size into the estimate (an average over about the last 8; racing
    /// updates may lose one, which an estimate can afford).
    pub(super) fn note_frame(&self, n: usize) {
        let e = self.frame_estimate.load(Ordering::Relaxed);
        self.frame_estimate
            .store(e - e / 8 + n / 8, Ordering::Relaxed);
    }

    pub(super) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}
