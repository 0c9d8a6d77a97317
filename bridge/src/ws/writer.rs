//! The writer half of a connection: drains the outbox into the socket in batches, sends
//! WebSocket pings and drops a peer whose pong is late, and sends the close frame.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::fanout::outbox::Receiver;
use crate::fanout::{Outbox, Outgoing};
use crate::protocol::{close, Frame};

/// Frames written per flush at most.
const BATCH: usize = 256;

/// What the reader tells the writer about the peer's liveness.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// Pongs received so far.
    pub(crate) pongs: AtomicU64,
    /// Set once `hello` is answered: keepalive pings start then (before, `ws.hello_timeout`
    /// bounds the connection, and the reader may be busy answering `hello`).
    pub(crate) open: AtomicBool,
    /// Frames read from the client (for the connection's last log line).
    pub(crate) frames_in: AtomicU64,
    /// Frames written to the client.
    pub(crate) frames_out: AtomicU64,
    /// The close code the server sent, 0 when none.
    pub(crate) close_code: std::sync::atomic::AtomicU16,
}

/// Ping timing of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    /// Ping every this long.
    pub(crate) interval: Duration,
    /// Drop the peer when the pong is this late.
    pub(crate) timeout: Duration,
    /// How long the close frame may wait behind unsent data.
    pub(crate) close_timeout: Duration,
    /// A write the peer does not take within this long closes the connection with 4001
    /// (`ws.slow_consumer_timeout`).
    pub(crate) stall_timeout: Duration,
}

/// Runs until the outbox ends, the connection is aborted, the server shuts down, the peer
/// stops answering pings, or a write fails. Always aborts the outbox on exit so the reader ends.
pub(crate) async fn run(
    sink: SplitSink<WebSocket, Message>,
    rx: Receiver,
    outbox: Arc<Outbox>,
    live: Arc<Liveness>,
    keepalive: Keepalive,
    shutdown: CancellationToken,
) {
    let mut ping =
        tokio::time::interval_at(Instant::now() + keepalive.interval, keepalive.interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut w = Writer {
        sink,
        rx,
        outbox,
        live,
        keepalive,
        shutdown,
        pong_due: None,
        // Grows on first use: an idle connection should not hold room for a whole batch.
        batch: Vec::new(),
    };
    let close: Close = loop {
        let step = tokio::select! {
            biased;
            _ = w.outbox.aborted() => ControlFlow::Break(aborted(&w.outbox)),
            _ = w.shutdown.cancelled() => ControlFlow::Break(going_away()),
            _ = sleep_until(w.pong_due.map_or_else(Instant::now, |(at, _)| at)), if w.pong_due.is_some() => {
                w.pong_deadline()
            }
            _ = ping.tick() => w.ping().await,
            item = w.rx.recv() => {
                let Some(item) = item else { break None };
                match w.gather(item) {
                    ControlFlow::Continue(gathered) => w.write_out(gathered).await,
                    ControlFlow::Break(close) => ControlFlow::Break(close),
                }
            }
        };
        if let ControlFlow::Break(close) = step {
            break close;
        }
    };
    w.finish(close).await;
}

/// A close frame's code and reason.
type Closing = (u16, &'static str);

/// Why the writer stops: the close frame to send, or none.
type Close = Option<Closing>;

/// A batch ready to write: the highest sequence number in it, and the close queued behind it.
type Gathered = (u64, Option<Closing>);

/// The close for an aborted outbox: its abort code, if it has one.
fn aborted(outbox: &Outbox) -> Close {
    outbox.abort_code().map(|c| (c, reason(c)))
}

/// The close for a server that shuts down.
fn going_away() -> Close {
    Some((close::GOING_AWAY, reason(close::GOING_AWAY)))
}

/// The writer's state between events of its loop in [`run`], so each event is handled by a
/// method of its own.
struct Writer {
    sink: SplitSink<WebSocket, Message>,
    rx: Receiver,
    outbox: Arc<Outbox>,
    live: Arc<Liveness>,
    keepalive: Keepalive,
    shutdown: CancellationToken,
    /// When the pong to the last ping is due, and the pongs seen when it was sent.
    pong_due: Option<(Instant, u64)>,
    /// The frames of the batch being written.
    batch: Vec<Frame>,
}

impl Writer {
    /// The pong deadline passed: the connection goes on if a pong came since the ping, else
    /// the peer is dropped.
    fn pong_deadline(&mut self) -> ControlFlow<Close> {
        let seen = self.pong_due.map_or(0, |(_, seen)| seen);
        if self.live.pongs.load(Ordering::Relaxed) > seen {
            self.pong_due = None;
            return ControlFlow::Continue(());
        }
        warn!(
            "no pong within {:?}; dropping the connection",
            self.keepalive.timeout
        );
        metrics::counter!("mqws_ws_pong_timeouts_total").increment(1);
        ControlFlow::Break(None)
    }

    /// A ping tick: once `hello` is answered, sends a ping and starts the pong deadline when
    /// none runs. A ping the peer does not take in time ends the connection.
    async fn ping(&mut self) -> ControlFlow<Close> {
        if !self.live.open.load(Ordering::Relaxed) {
            return ControlFlow::Continue(());
        }
        if self.pong_due.is_none() {
            self.pong_due = Some((
                Instant::now() + self.keepalive.timeout,
                self.live.pongs.load(Ordering::Relaxed),
            ));
        }
        // Boxed, as the batch write: what only a send needs is allocated while it runs
        // instead of sitting in every idle connection's task (~0.8 KiB).
        let sent = Box::pin(tokio::time::timeout(
            self.keepalive.timeout,
            self.sink.send(Message::Ping(bytes::Bytes::new())),
        ))
        .await;
        if matches!(sent, Ok(Ok(()))) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(None)
        }
    }

    /// Writes the batch [`Writer::gather`] filled with one flush, and tells the outbox what
    /// left (`last_seq` the highest sequence number in it). A close met while gathering
    /// (`closing`) is sent after the frames before it; an abort or shutdown while the write
    /// waits ends the connection at once.
    async fn write_out(&mut self, (last_seq, closing): Gathered) -> ControlFlow<Close> {
        let bytes: usize = self.batch.iter().map(Frame::len).sum();
        self.live
            .frames_out
            .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
        let write = Box::pin(write_batch(
            &mut self.sink,
            &mut self.batch,
            self.keepalive.stall_timeout,
        ));
        let written = tokio::select! {
            r = write => match r {
                Ok(r) => r,
                Err(Stalled) => {
                    self.outbox.slow_consumer("the socket took nothing");
                    return ControlFlow::Break(Some((close::SLOW_CONSUMER, reason(close::SLOW_CONSUMER))));
                }
            },
            _ = self.outbox.aborted() => return ControlFlow::Break(aborted(&self.outbox)),
            _ = self.shutdown.cancelled() => return ControlFlow::Break(going_away()),
        };
        if let Err(e) = written {
            debug!(error = %e, "write failed");
            return ControlFlow::Break(None);
        }
        self.outbox.sent(bytes, last_seq);
        metrics::counter!("mqws_bytes_out_total").increment(bytes as u64);
        match closing {
            Some(close) => ControlFlow::Break(abort_or(&self.outbox, close)),
            None => ControlFlow::Continue(()),
        }
    }

    /// Fills the batch with `first` and what else is queued, without waiting: up to [`BATCH`]
    /// frames, stopping at a close. Returns the highest sequence number in the batch and the
    /// close met, if any; a close that comes first ends the connection without a write.
    fn gather(&mut self, first: Outgoing) -> ControlFlow<Close, Gathered> {
        let mut closing = None;
        self.batch.clear();
        let mut last_seq = 0;
        match first {
            Outgoing::Close(c, r) => return ControlFlow::Break(abort_or(&self.outbox, (c, r))),
            Outgoing::Frame(t, seq) => {
                last_seq = last_seq.max(seq);
                self.batch.push(t);
            }
            // Only an outbox of records (an MQTT subscriber's) queues these.
            Outgoing::Record(_) | Outgoing::Lost(..) => {}
        }
        while self.batch.len() < BATCH {
            match self.rx.try_recv() {
                Ok(Outgoing::Frame(t, seq)) => {
                    last_seq = last_seq.max(seq);
                    self.batch.push(t);
                }
                Ok(Outgoing::Close(c, r)) => {
                    closing = Some((c, r));
                    break;
                }
                Ok(Outgoing::Record(_) | Outgoing::Lost(..)) => {}
                Err(_) => break,
            }
        }
        ControlFlow::Continue((last_seq, closing))
    }

    /// Sends the close frame `close` names, if any (waiting at most the close timeout behind
    /// unsent data), and aborts the outbox so the reader ends.
    async fn finish(&mut self, close: Close) {
        if let Some((code, why)) = close {
            self.live.close_code.store(code, Ordering::Relaxed);
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(why),
            }));
            let _ = Box::pin(tokio::time::timeout(
                self.keepalive.close_timeout,
                self.sink.send(frame),
            ))
            .await;
        }
        self.outbox.abort(close::NORMAL);
    }
}

/// The close to send for a close queued behind frames: an abort that came meanwhile wins (the
/// reader aborts with 1002 on broken framing, then queues a normal close as it ends, and the
/// writer may take that close in the same batch as the frames before it).
fn abort_or(outbox: &Outbox, queued: Closing) -> Close {
    Some(outbox.abort_code().map_or(queued, |c| (c, reason(c))))
}

/// A write made no progress for the stall timeout.
struct Stalled;

/// Writes `batch` and flushes it. Each step (a frame handed to the socket's buffer, the final
/// flush) must finish within `stall`: a slow reader that keeps taking data is never cut off
/// for the size of a batch, one that takes nothing is.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Frame>,
    stall: Duration,
) -> Result<Result<(), axum::Error>, Stalled> {
    for t in batch.drain(..) {
        match tokio::time::timeout(stall, sink.feed(Message::Text(t.into_ws()))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Ok(Err(e)),
            Err(_) => return Err(Stalled),
        }
    }
    tokio::time::timeout(stall, sink.flush())
        .await
        .map_err(|_| Stalled)
}

/// Close reasons sent with each code.
fn reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server shutting down",
        close::POLICY => "policy violation",
        close::PROTOCOL => "protocol error",
        close::INVALID_DATA => "invalid UTF-8",
        close::TOO_LARGE => "message too large",
        close::INTERNAL => "internal error",
        close::SLOW_CONSUMER => "slow consumer: resume to catch up",
        close::TAKEN_OVER => "session taken over",
        close::TOKEN_EXPIRED => "token expired",
        close::HELLO_TIMEOUT => "hello timeout",
        _ => "",
    }
}
