//! Waiting for room in a queue and the global budget, and the room a catch-up takes before it
//! reads a step, so what it reads is counted from the start.
//!
//! Waiting for room without taking it let a thousand stalled connections each see room at the
//! same moment, read a step from the log, encode it and then wait with the frame in hand,
//! outside every count. A reservation takes about a step's bytes (at least the recent frame
//! size, [`Budget::frame_estimate`](super::Budget)) from the budget first; the step's frames
//! then use it, and a frame larger than what is left takes the difference. Reservations of
//! empty queues are granted only while all queues together hold at most twice the budget, so
//! what steps read beyond it is bounded by the budget, not by the number of connections.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{Outbox, BUDGET_POLL, BUDGET_POLL_MAX};

/// When an empty queue gets room whatever the size asked for (so a frame larger than the bounds
/// still goes out).
#[derive(Debug, Clone, Copy)]
pub(super) enum Empty {
    /// Always: the frame is in hand already.
    Always,
    /// While all queues together hold at most twice the budget: room taken before a read.
    WithinTwice,
}

impl Outbox {
    /// Waits until about `n` bytes (at least the recent frame size) fit in this queue and the
    /// global budget, and takes them for the next step of a catch-up; what an earlier step left
    /// is given back first. False when the connection ended or `deadline` passed first.
    /// Cancel-safe: nothing is taken unless it returns true.
    pub(crate) async fn reserve(&self, n: usize, deadline: Option<Instant>) -> bool {
        self.unreserve();
        let n = n.max(self.budget.frame_estimate());
        if self.take_room(n, deadline, Empty::WithinTwice).await {
            self.reserved.store(n, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Gives back what the last reservation did not use.
    pub(crate) fn unreserve(&self) {
        let left = self.reserved.swap(0, Ordering::Relaxed);
        if left > 0 {
            self.budget.give(left);
        }
    }

    /// Counts a frame of `n` bytes against the reservation, if one is left: all of it, taking
    /// from the budget what the reservation lacks. False when nothing is reserved. Only the
    /// connection's catch-up task reserves and uses reservations.
    pub(super) fn use_reserved(&self, n: usize) -> bool {
        let left = self.reserved.load(Ordering::Relaxed);
        if left == 0 {
            return false;
        }
        if left >= n {
            self.reserved.store(left - n, Ordering::Relaxed);
        } else {
            self.budget.used.fetch_add(n - left, Ordering::Relaxed);
            self.reserved.store(0, Ordering::Relaxed);
        }
        true
    }

    /// Waits until `n` more bytes fit in this queue and the global budget, and takes them from
    /// the budget; an empty queue gets them as `empty` says. False when the connection ended or
    /// `deadline` passed first. Cancel-safe: nothing is taken unless it returns true.
    pub(super) async fn take_room(
        &self,
        n: usize,
        deadline: Option<Instant>,
        empty: Empty,
    ) -> bool {
        let mut poll = BUDGET_POLL;
        loop {
            if self.abort.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let room = self.room.notified();
            let own = self.pending_bytes.load(Ordering::Relaxed);
            // (taken, whether what is missing is global room rather than this queue's)
            let (taken, global) = match (own, empty) {
                (0, Empty::Always) => {
                    self.budget.used.fetch_add(n, Ordering::Relaxed);
                    (true, true)
                }
                (0, Empty::WithinTwice) => (self.budget.take_for_empty(n), true),
                _ => {
                    let fits_here = own + n <= self.max_bytes;
                    (fits_here && self.budget.try_take(own, n), fits_here)
                }
            };
            if taken {
                return true;
            }
            // Own room is signalled by this queue's writer; global room is polled.
            let wait = if global {
                poll = (poll * 2).min(BUDGET_POLL_MAX);
                poll
            } else {
                Duration::from_secs(3600)
            };
            let until = deadline.map_or(Instant::now() + wait, |d| d.min(Instant::now() + wait));
            tokio::select! {
                _ = room => {}
                _ = tokio::time::sleep_until(until) => {}
                _ = self.abort.cancelled() => return false,
            }
        }
    }
}
