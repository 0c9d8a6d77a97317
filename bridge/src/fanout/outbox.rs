//! A connection's outbound queue, bounded by frames and bytes, per connection and in total.
//!
//! The fan-out thread never waits on it. When a live message does not fit (the connection's
//! own bound, or the global [`Budget`] while this queue holds more than its fair share), the
//! queue falls *behind*: live messages are no longer queued for it, and its catch-up task
//! (`catchup::follow`) continues from the tail or the log after the last seq it queued, then
//! rejoins live. Nothing is dropped; a slow client costs reads, not memory.
//!
//! Rejoining is exact: under the hub's write lock the queue starts *holding* live messages
//! (bounded like the queue; overflowing it falls behind again) while the catch-up sends up to
//! the dispatch cut; [`Outbox::release`] then queues the held ones above it. The seq check in
//! [`Outbox::push_message`] keeps overlapping filters and the handover free of duplicates.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Live;
use crate::protocol::{close, Frame};
pub(crate) use budget::Budget;
pub(crate) use items::{record_len, Caught, Form, Message};
pub(crate) use queue::Receiver;
use queue::{PushError, Queue};

mod budget;
mod items;
mod queue;
mod reserve;

use reserve::Empty;

/// How often a catch-up waiting on the global budget looks again: first after this, then
/// twice as long each time up to [`BUDGET_POLL_MAX`], so thousands of stalled connections cost
/// little CPU.
const BUDGET_POLL: Duration = Duration::from_millis(20);
const BUDGET_POLL_MAX: Duration = Duration::from_millis(500);

/// What the connection's writer sends, in order.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// An encoded frame; `seq` is the message's seq for `message` frames, else 0.
    Frame(Frame, u64),
    /// A logged message as a record, for a driver that encodes it itself (an outbox of
    /// [`Form::Records`]: MQTT subscribers the proxy serves).
    Record(Arc<Live>),
    /// Seqs `from..=to` that retention removed before the catch-up read them ([`Form::Records`];
    /// a frame outbox gets a `gap` frame instead).
    Lost(u64, u64),
    /// Close the connection with this code and reason after the frames before it.
    Close(u16, &'static str),
}

#[derive(Debug)]
enum Mode {
    /// The fan-out queues live messages directly.
    Live,
    /// Rejoining: live messages wait here until the catch-up reached the cut.
    Holding {
        queue: VecDeque<(u64, Message)>,
        bytes: usize,
    },
    /// The catch-up task delivers from the tail or the log; live messages are skipped.
    Behind,
}

#[derive(Debug)]
struct Flow {
    mode: Mode,
    /// Highest message seq queued.
    last_seq: u64,
    /// When the queue last fell behind the live stream (none while live, and during the
    /// replay a hello asked for until it first reached the live edge).
    behind_since: Option<Instant>,
    /// A catch-up started on demand runs ([`Outbox::claim_catch_up`]).
    catching_up: bool,
}

/// The producer side of a connection's queue, shared with the hub.
#[derive(Debug)]
pub(crate) struct Outbox {
    form: Form,
    queue: Arc<Queue>,
    pending_bytes: AtomicUsize,
    /// Budget bytes the catch-up took before reading its step and no frame used yet
    /// ([`Outbox::reserve`]).
    reserved: AtomicUsize,
    max_bytes: usize,
    max_frames: usize,
    budget: Arc<Budget>,
    flow: Mutex<Flow>,
    /// Mirrors `flow.mode == Behind`, so the fan-out skips a lagging queue without locking.
    behind: AtomicBool,
    /// Wakes the catch-up task when the queue falls behind.
    fell_behind: Notify,
    abort: CancellationToken,
    abort_code: AtomicU16,
    /// Highest message seq the writer has flushed to the socket.
    delivered: AtomicU64,
    /// Signalled when the writer frees room.
    room: Notify,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes, counted against `budget`;
    /// returns the consumer end.
    pub(crate) fn new(
        max_frames: usize,
        max_bytes: usize,
        budget: Arc<Budget>,
    ) -> (Outbox, Receiver) {
        Outbox::with_form(Form::Frames, max_frames, max_bytes, budget)
    }

    /// [`Outbox::new`] for messages carried as `form`.
    pub(crate) fn with_form(
        form: Form,
        max_frames: usize,
        max_bytes: usize,
        budget: Arc<Budget>,
    ) -> (Outbox, Receiver) {
        let (queue, rx) = Queue::new(max_frames);
        budget.queues.fetch_add(1, Ordering::Relaxed);
        let outbox = Outbox {
            form,
            queue,
            pending_bytes: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            max_bytes,
            max_frames,
            budget,
            flow: Mutex::new(Flow {
                mode: Mode::Live,
                last_seq: 0,
                behind_since: None,
                catching_up: false,
            }),
            behind: AtomicBool::new(false),
            fell_behind: Notify::new(),
            abort: CancellationToken::new(),
            abort_code: AtomicU16::new(0),
            delivered: AtomicU64::new(0),
            room: Notify::new(),
        };
        (outbox, rx)
    }

    /// Queues a reply or notice. Replies are small and bounded by the client's own requests;
    /// they may use up to twice the connection's byte bound, and beyond that the client, which
    /// keeps asking without reading, is closed as a slow consumer (4001).
    pub(crate) fn push(&self, text: Frame) -> bool {
        if self.abort.is_cancelled() {
            return false;
        }
        let n = text.len();
        let before = self.pending_bytes.fetch_add(n, Ordering::Relaxed);
        if before + n > 2 * self.max_bytes {
            self.pending_bytes.fetch_sub(n, Ordering::Relaxed);
            self.slow_consumer("pending replies");
            return false;
        }
        self.budget.used.fetch_add(n, Ordering::Relaxed);
        match self.queue.push(Outgoing::Frame(text, 0)) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.untake(n);
                self.slow_consumer("pending frames");
                false
            }
            Err(PushError::Closed) => {
                self.untake(n);
                false
            }
        }
    }

    fn untake(&self, n: usize) {
        self.pending_bytes.fetch_sub(n, Ordering::Relaxed);
        self.budget.give(n);
    }

    /// Takes room for `n` more live bytes, in this queue and in the global budget.
    fn take_live(&self, held: usize, n: usize) -> bool {
        let own = self.pending_bytes.load(Ordering::Relaxed) + held;
        own + n <= self.max_bytes && self.budget.try_take(own, n)
    }

    /// How this outbox carries logged messages.
    pub(crate) fn form(&self) -> Form {
        self.form
    }

    /// Offers a live message in this outbox's form (fan-out thread only); see
    /// [`Outbox::push_message`].
    pub(crate) fn push_live(&self, live: &Arc<Live>) -> bool {
        match self.form {
            Form::Frames => live
                .frame()
                .is_some_and(|f| self.push_message(live.record.seq, f)),
            Form::Records => self.push_item(live.record.seq, Message::Record(live.clone())),
        }
    }

    /// Offers the live message `seq` (fan-out thread only). Queued unless this connection
    /// already has `seq` or later, is behind (its catch-up will deliver it) or has no room (it
    /// falls behind).
    pub(crate) fn push_message(&self, seq: u64, text: &Frame) -> bool {
        self.push_item(seq, Message::Frame(text.clone()))
    }

    fn push_item(&self, seq: u64, text: Message) -> bool {
        if self.behind.load(Ordering::Acquire) {
            return false;
        }
        let mut flow = self.flow.lock();
        let n = text.len();
        match &mut flow.mode {
            Mode::Behind => false,
            Mode::Holding { queue, bytes } => {
                if queue.len() >= self.max_frames || !self.take_live(*bytes, n) {
                    self.fall_behind(&mut flow);
                    return false;
                }
                *bytes += n;
                queue.push_back((seq, text));
                true
            }
            Mode::Live => {
                if seq <= flow.last_seq || self.abort.is_cancelled() {
                    return false;
                }
                if !self.take_live(0, n) {
                    // Its catch-up reserves at least this much per step.
                    self.budget.note_frame(n);
                    self.fall_behind(&mut flow);
                    return false;
                }
                self.pending_bytes.fetch_add(n, Ordering::Relaxed);
                match self.queue.push(text.outgoing(seq)) {
                    Ok(()) => {
                        flow.last_seq = seq;
                        true
                    }
                    Err(PushError::Full) => {
                        self.untake(n);
                        self.fall_behind(&mut flow);
                        false
                    }
                    Err(PushError::Closed) => {
                        self.untake(n);
                        false
                    }
                }
            }
        }
    }

    fn fall_behind(&self, flow: &mut Flow) {
        if let Mode::Holding { bytes, .. } = flow.mode {
            self.budget.give(bytes);
        }
        if !matches!(flow.mode, Mode::Behind) {
            metrics::counter!("mqws_ws_fell_behind_total").increment(1);
        }
        flow.mode = Mode::Behind;
        self.behind.store(true, Ordering::Release);
        flow.behind_since.get_or_insert_with(Instant::now);
        self.fell_behind.notify_one();
    }

    /// Makes the queue fall behind now (the fan-out itself fell behind the tail).
    pub(crate) fn lag(&self) {
        let mut flow = self.flow.lock();
        if !matches!(flow.mode, Mode::Behind) {
            self.fall_behind(&mut flow);
        }
    }

    /// Starts a connection behind, after `seq`: its replay runs before it joins live.
    pub(crate) fn start_behind(&self, seq: u64) {
        let mut flow = self.flow.lock();
        flow.mode = Mode::Behind;
        self.behind.store(true, Ordering::Release);
        flow.last_seq = flow.last_seq.max(seq);
        self.fell_behind.notify_one();
    }

    /// True while the catch-up has work: the queue is behind or holding.
    pub(crate) fn is_behind(&self) -> bool {
        !matches!(self.flow.lock().mode, Mode::Live)
    }

    /// When the queue fell behind the live stream, while it is behind.
    pub(crate) fn behind_since(&self) -> Option<Instant> {
        let flow = self.flow.lock();
        match flow.mode {
            Mode::Live => None,
            _ => flow.behind_since,
        }
    }

    /// Claims the catch-up for a driver that starts one only when needed: true when the queue
    /// has catch-up work and no claimed catch-up runs, and the caller must now run one.
    pub(crate) fn claim_catch_up(&self) -> bool {
        let mut flow = self.flow.lock();
        if flow.catching_up || matches!(flow.mode, Mode::Live) {
            return false;
        }
        flow.catching_up = true;
        true
    }

    /// Asked by a claimed catch-up that reached live: true when the queue fell behind again
    /// meanwhile (it goes on), otherwise the claim ends. Under the same lock as falling
    /// behind, so a fall is either seen here or wakes [`Outbox::wait_behind`] with the claim
    /// already given up: never lost.
    pub(crate) fn continue_catch_up(&self) -> bool {
        let mut flow = self.flow.lock();
        if matches!(flow.mode, Mode::Live) {
            flow.catching_up = false;
            return false;
        }
        true
    }

    /// Resolves after the queue fell behind (or at once if it did since the last call).
    /// Cancel-safe.
    pub(crate) async fn wait_behind(&self) {
        self.fell_behind.notified().await;
    }

    /// Highest message seq queued.
    pub(crate) fn last_seq(&self) -> u64 {
        self.flow.lock().last_seq
    }

    /// Starts holding live messages (the hub calls this under its write lock, with the cut).
    pub(crate) fn hold(&self) {
        let mut flow = self.flow.lock();
        if let Mode::Holding { bytes, .. } = flow.mode {
            self.budget.give(bytes);
        }
        flow.mode = Mode::Holding {
            queue: VecDeque::new(),
            bytes: 0,
        };
        self.behind.store(false, Ordering::Release);
    }

    /// Ends holding once everything up to `cut` is queued: the held messages above it follow
    /// and live delivery goes direct again. False when the queue fell behind meanwhile (the
    /// catch-up goes on).
    pub(crate) fn release(&self, cut: u64) -> bool {
        let mut flow = self.flow.lock();
        let Mode::Holding { queue, bytes } = std::mem::replace(&mut flow.mode, Mode::Behind) else {
            return false;
        };
        flow.last_seq = flow.last_seq.max(cut);
        // The held bytes were taken from the budget already; they move to the queue.
        let mut left = bytes;
        for (seq, text) in queue {
            let n = text.len();
            left -= n;
            if seq <= flow.last_seq {
                self.budget.give(n);
                continue;
            }
            self.pending_bytes.fetch_add(n, Ordering::Relaxed);
            if self.queue.push(text.outgoing(seq)).is_err() {
                self.untake(n);
                self.budget.give(left);
                self.behind.store(true, Ordering::Release);
                flow.behind_since.get_or_insert_with(Instant::now);
                self.fell_behind.notify_one();
                return false;
            }
            flow.last_seq = seq;
        }
        flow.mode = Mode::Live;
        self.behind.store(false, Ordering::Release);
        flow.behind_since = None;
        true
    }

    /// Queues a caught-up frame (a message when `seq` > 0), waiting for room in this queue and
    /// in the global budget instead of overflowing. False when the connection ended or
    /// `deadline` passed first. Cancel-safe: a frame is either queued or not.
    #[cfg(test)]
    pub(crate) async fn push_caught_up(
        &self,
        seq: u64,
        text: Frame,
        deadline: Option<Instant>,
    ) -> bool {
        self.push_caught_up_item(seq, Caught::Message(Message::Frame(text)), deadline)
            .await
    }

    /// [`Outbox::push_caught_up`] for anything a catch-up queues.
    pub(crate) async fn push_caught_up_item(
        &self,
        seq: u64,
        text: Caught,
        deadline: Option<Instant>,
    ) -> bool {
        let n = text.len();
        self.budget.note_frame(n);
        if !self.use_reserved(n) && !self.take_room(n, deadline, Empty::Always).await {
            return false;
        }
        // Counted before it is queued, so the writer never gives back bytes not yet taken.
        self.pending_bytes.fetch_add(n, Ordering::Relaxed);
        loop {
            let room = self.room.notified();
            if self.abort.is_cancelled() {
                self.untake(n);
                return false;
            }
            match self.queue.push(text.clone().outgoing(seq)) {
                Ok(()) => {
                    if seq > 0 {
                        let mut flow = self.flow.lock();
                        flow.last_seq = flow.last_seq.max(seq);
                    }
                    return true;
                }
                Err(PushError::Closed) => {
                    self.untake(n);
                    return false;
                }
                // The frame bound: the writer signals `room` as it sends.
                Err(PushError::Full) => {}
            }
            // A driver that takes nothing (an MQTT subscriber whose window stays shut) must
            // not hold the catch-up past its deadline.
            let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = room => {}
                _ = self.abort.cancelled() => {}
                _ = tokio::time::sleep_until(until) => {
                    if deadline.is_some() {
                        self.untake(n);
                        return false;
                    }
                }
            }
        }
    }

    /// Sets the seq before which nothing is delivered live (the session's start position).
    pub(crate) fn start_after(&self, seq: u64) {
        let mut flow = self.flow.lock();
        flow.last_seq = flow.last_seq.max(seq);
    }

    /// The writer reports `n` bytes written, the last message seq among them (0 if none).
    pub(crate) fn sent(&self, n: usize, seq: u64) {
        self.untake(n);
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
        if self.queue.push(Outgoing::Close(code, reason)).is_err() {
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

    /// Closes the connection with 4001.
    pub(crate) fn slow_consumer(&self, which: &'static str) {
        if !self.abort.is_cancelled() {
            tracing::warn!(limit = which, "closing slow consumer (4001)");
            metrics::counter!("mqws_slow_consumer_closes_total").increment(1);
        }
        self.abort(close::SLOW_CONSUMER);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut left = self.pending_bytes.load(Ordering::Relaxed) + *self.reserved.get_mut();
        if let Mode::Holding { bytes, .. } = self.flow.get_mut().mode {
            left += bytes;
        }
        self.budget.give(left);
        self.budget.queues.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
