//! A connection's catch-up task: whenever its outbox is behind the live stream (a replay asked
//! for at `hello`, or live messages it had no room for), send what it misses from the tail or
//! the log, then rejoin live.
//!
//! ```text
//!  behind ──▶ send (pos, dispatched] ──▶ hub.rejoin: hold live, cut ──▶ send (pos, cut]
//!    ▲          from the tail, else the log                               │
//!    │          (evicted ranges ⇒ `gap` frame)                            ▼
//!    └───── held queue overflowed ◀── release(cut) ◀── `caught_up` at cut
//!                                          │ ok
//!                                          ▼
//!                                        live
//! ```
//!
//! Frames are `message` with `replay: true`, then `caught_up`. The task waits for room in the
//! outbox before it reads each step (about 64 KiB), so a connection that does not read holds
//! no messages while it waits and costs no memory beyond its queue; a connection that stays
//! behind longer than `ws.slow_consumer_timeout` is closed with 4001.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::fanout::outbox::{Caught, Form, Message};
use crate::fanout::{Hub, Live, Outbox, Read, Tail};
use crate::protocol::frame::replay_frame;
use crate::protocol::payload::Encodings;
use crate::protocol::server::ServerFrame;
use crate::protocol::{close, Gap};
use crate::storage::{Log, LogCursor, Position, Record, StorageError};
use mqws_topic::matches;

/// Most messages read per step from the tail.
const TAIL_BATCH: usize = 64;
/// Most records read per step from the log; fewer when records are large (see
/// [`Follow::log_batch`]).
const LOG_BATCH: usize = 256;
/// Room a catch-up waits for before it reads a step, and about how many bytes one step reads:
/// a connection that does not read holds no messages while it waits.
const STEP_BYTES: usize = 64 * 1024;
/// A catch-up further behind than this many seqs reads the log (whose index finds a selective
/// filter's messages without a scan) until it is this close; the tail, a scan, serves the rest.
const TAIL_SCAN: u64 = 8192;

/// What a connection's catch-up needs. Cloned for each catch-up a driver starts on demand.
#[derive(Clone)]
pub(crate) struct Follow {
    /// The durable log, for what the tail no longer holds.
    pub(crate) log: Arc<dyn Log>,
    /// The recent messages in memory.
    pub(crate) tail: Arc<Tail>,
    /// For the rejoin cut.
    pub(crate) hub: Arc<Hub>,
    /// The connection's queue.
    pub(crate) outbox: Arc<Outbox>,
    /// The connection's filters, as its reader changes them.
    pub(crate) filters: watch::Receiver<Arc<Vec<String>>>,
    /// The log's epoch, for `caught_up`.
    pub(crate) epoch: String,
    /// `ws.slow_consumer_timeout`.
    pub(crate) timeout: Duration,
    /// Average size of the records read from the log so far (sizes the next read).
    pub(crate) avg_record: usize,
    /// `mqws_replay_messages_total`, looked up once rather than per message.
    pub(crate) replayed: metrics::Counter,
    /// How payloads are carried (`bridge.encodings`).
    pub(crate) encodings: Arc<Encodings>,
}

/// The connection ended (or was closed here): the catch-up stops.
struct Ended;

/// Runs for the connection's lifetime: catches up each time the outbox falls behind (the SSE
/// driver, which has no task of its own to start catch-ups from).
pub(crate) async fn run(mut f: Follow) {
    loop {
        if !f.outbox.is_behind() {
            tokio::select! {
                _ = f.outbox.wait_behind() => {}
                _ = f.outbox.aborted() => return,
            }
            continue;
        }
        // Boxed: the catch-up's state (reads, frames) is allocated only while it runs, so an
        // idle connection's task stays small.
        if let Err(Ended) = Box::pin(f.catch_up()).await {
            return;
        }
    }
}

/// Catches up until the outbox is live, then ends: started by a driver that claimed the
/// catch-up ([`Outbox::claim_catch_up`]) when the outbox fell behind, so an idle connection
/// has no catch-up task at all (the WebSocket reader).
pub(crate) async fn until_live(mut f: Follow) {
    loop {
        if Box::pin(f.catch_up()).await.is_err() {
            return;
        }
        if !f.outbox.continue_catch_up() {
            return;
        }
    }
}

impl Follow {
    /// One catch-up: from the last seq queued to the live stream. The room its last step
    /// reserved and did not use goes back to the budget.
    async fn catch_up(&mut self) -> Result<(), Ended> {
        // The first log read expects records of the size flowing now (the tail's average,
        // which counts frames too, so the read comes out smaller than a step, not larger): a
        // connection that fell behind during a burst of large messages then reads a few of
        // them, not 256. Later reads follow the sizes they got.
        self.avg_record = self.tail.average_size().max(256);
        let done = self.steps().await;
        self.outbox.unreserve();
        done
    }

    /// [`Follow::catch_up`]'s steps.
    async fn steps(&mut self) -> Result<(), Ended> {
        let mut pos = self.outbox.last_seq();
        let started = pos;
        loop {
            let target = self.hub.dispatched();
            self.send_range(&mut pos, target).await?;
            let cut = self.hub.rejoin(&self.outbox);
            self.send_range(&mut pos, cut).await?;
            let position = Position {
                epoch: self.epoch.clone(),
                seq: cut,
            };
            if self.outbox.form() == Form::Frames {
                let frame = ServerFrame::CaughtUp {
                    position: &position,
                }
                .to_frame();
                self.push(0, Caught::Message(Message::Frame(frame))).await?;
            }
            if self.outbox.release(cut) {
                debug!(from = started, to = cut, "caught up; live again");
                return Ok(());
            }
        }
    }

    /// When the connection must have caught up by, if it fell behind the live stream.
    fn deadline(&self) -> Option<Instant> {
        self.outbox.behind_since().map(|t| t + self.timeout)
    }

    /// Queues one frame, waiting for room until the deadline.
    async fn push(&self, seq: u64, text: Caught) -> Result<(), Ended> {
        let deadline = self.deadline();
        if self.outbox.push_caught_up_item(seq, text, deadline).await {
            if seq > 0 {
                self.replayed.increment(1);
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.outbox.slow_consumer("behind the live stream too long");
        }
        Err(Ended)
    }

    /// Waits for room for one step and takes it before reading the step, so what the step
    /// reads is counted from the start.
    async fn room(&self) -> Result<(), Ended> {
        let deadline = self.deadline();
        if self.outbox.reserve(STEP_BYTES, deadline).await {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.outbox.slow_consumer("behind the live stream too long");
        }
        Err(Ended)
    }

    /// Records to read from the log in one step: about [`STEP_BYTES`] of them.
    fn log_batch(&self) -> usize {
        (STEP_BYTES / self.avg_record.max(1)).clamp(1, LOG_BATCH)
    }

    /// Sends every matching message in `(pos, upto]` and moves `pos` to `upto`.
    async fn send_range(&mut self, pos: &mut u64, upto: u64) -> Result<(), Ended> {
        while *pos < upto {
            self.room().await?;
            let filters = self.filters.borrow_and_update().clone();
            if upto - *pos > TAIL_SCAN {
                self.send_from_log(pos, upto - TAIL_SCAN, filters).await?;
                continue;
            }
            match self.tail.read(*pos, upto, TAIL_BATCH, STEP_BYTES) {
                Read::Items {
                    items,
                    upto: covered,
                } => {
                    for live in items {
                        if filters.iter().any(|f| matches(f, &live.record.topic)) {
                            let frame = match self.outbox.form() {
                                Form::Frames => live.replay_frame(),
                                Form::Records => None,
                            };
                            let message = match frame {
                                Some(frame) => Message::Frame(frame),
                                None => Message::Record(live.clone()),
                            };
                            self.push(live.record.seq, Caught::Message(message)).await?;
                        }
                    }
                    *pos = covered;
                }
                Read::Behind { floor } => {
                    let end = floor.min(upto);
                    self.send_from_log(pos, end, filters).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends `(pos, end]` from the log, reporting what retention removed as `gap` frames.
    async fn send_from_log(
        &mut self,
        pos: &mut u64,
        end: u64,
        filters: Arc<Vec<String>>,
    ) -> Result<(), Ended> {
        let mut cursor: Option<Box<dyn LogCursor>> = None;
        while *pos < end {
            if self.filters.has_changed().unwrap_or(false) {
                // Read on with the new filters from here.
                return Ok(());
            }
            let evicted_to = self
                .log
                .first()
                .map_or(end, |f| f.saturating_sub(1))
                .min(end);
            if evicted_to > *pos {
                self.gap(*pos + 1, evicted_to).await?;
                *pos = evicted_to;
                cursor = None;
                continue;
            }
            let c = match cursor.take() {
                Some(c) => c,
                None => self.log.cursor(&filters, *pos, end),
            };
            self.room().await?;
            match read_batch(c, self.log_batch()).await {
                Ok((c, records)) => {
                    if !records.is_empty() {
                        let bytes: usize = records.iter().map(|r| r.size() as usize + 128).sum();
                        self.avg_record = (self.avg_record + bytes / records.len()) / 2;
                    }
                    for record in records {
                        let seq = record.seq;
                        let message = match self.outbox.form() {
                            Form::Frames => Message::Frame(replay_frame(&record, &self.encodings)),
                            Form::Records => Message::Record(Arc::new(Live::bare(record))),
                        };
                        self.push(seq, Caught::Message(message)).await?;
                    }
                    *pos = c.position();
                    cursor = Some(c);
                }
                // Retention removed what this read still needed: report it and go on.
                Err(StorageError::Overtaken) => cursor = None,
                Err(e) => {
                    warn!(error = %e, "catch-up read failed; closing 1011");
                    self.outbox.abort(close::INTERNAL);
                    return Err(Ended);
                }
            }
        }
        Ok(())
    }

    async fn gap(&self, from: u64, to: u64) -> Result<(), Ended> {
        metrics::counter!("mqws_gaps_sent_total").increment(1);
        let gap = Gap::Evicted { from, to };
        let item = match self.outbox.form() {
            Form::Frames => Caught::Message(Message::Frame(ServerFrame::Gap(&gap).to_frame())),
            Form::Records => Caught::Lost(from, to),
        };
        self.push(0, item).await
    }
}

/// One bounded batch of a log cursor, on the blocking pool.
async fn read_batch(
    mut cursor: Box<dyn LogCursor>,
    limit: usize,
) -> Result<(Box<dyn LogCursor>, Vec<Record>), StorageError> {
    tokio::task::spawn_blocking(move || {
        let batch = cursor.next_batch(limit)?;
        Ok((cursor, batch))
    })
    .await
    .map_err(|e| StorageError::Engine(format!("catch-up read task failed: {e}")))?
}

#[cfg(test)]
mod tests;
