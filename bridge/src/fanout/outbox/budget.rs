//! The bound on bytes queued in every outbox together (`ws.max_total_pending_bytes`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The bound on bytes queued for all connections together (`ws.max_total_pending_bytes`).
#[derive(Debug)]
pub(crate) struct Budget {
    pub(super) used: AtomicUsize,
    max: usize,
    pub(super) queues: AtomicUsize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            max,
            queues: AtomicUsize::new(0),
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

    /// Whether [`Budget::try_take`] would grant `n` now.
    pub(super) fn fits(&self, own: usize, n: usize) -> bool {
        self.grants(self.used.load(Ordering::Relaxed), own, n)
    }

    /// The rule: within the bound, or beyond it for a queue below its fair share.
    fn grants(&self, used: usize, own: usize, n: usize) -> bool {
        used + n <= self.max || own + n <= self.max / self.queues.load(Ordering::Relaxed).max(1)
    }

    pub(super) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}
