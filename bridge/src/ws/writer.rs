//! The writer half of a connection: drains the outbox into the socket in batches, sends
//! WebSocket pings and drops a peer whose pong is late, and sends the close frame.

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
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: Receiver,
    outbox: Arc<Outbox>,
    live: Arc<Liveness>,
    keepalive: Keepalive,
    shutdown: CancellationToken,
) {
    let mut ping =
        tokio::time::interval_at(Instant::now() + keepalive.interval, keepalive.interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pong_due: Option<(Instant, u64)> = None;
    // Grows on first use: an idle connection should not hold room for a whole batch.
    let mut batch = Vec::new();
    let close: Option<(u16, &'static str)> = loop {
        tokio::select! {
            biased;
            _ = outbox.aborted() => break outbox.abort_code().map(|c| (c, reason(c))),
            _ = shutdown.cancelled() => break Some((close::GOING_AWAY, reason(close::GOING_AWAY))),
            _ = sleep_until(pong_due.map_or_else(Instant::now, |(at, _)| at)), if pong_due.is_some() => {
                let seen = pong_due.map_or(0, |(_, seen)| seen);
                if live.pongs.load(Ordering::Relaxed) > seen {
                    pong_due = None;
                } else {
                    warn!("no pong within {:?}; dropping the connection", keepalive.timeout);
                    metrics::counter!("mqws_ws_pong_timeouts_total").increment(1);
                    break None;
                }
            }
            _ = ping.tick() => {
                if !live.open.load(Ordering::Relaxed) {
                    continue;
                }
                if pong_due.is_none() {
                    pong_due = Some((Instant::now() + keepalive.timeout, live.pongs.load(Ordering::Relaxed)));
                }
                // Boxed, as the batch write below: what only a send needs is allocated while it
                // runs instead of sitting in every idle connection's task (~0.8 KiB).
                let sent = Box::pin(tokio::time::timeout(keepalive.timeout, sink.send(Message::Ping(bytes::Bytes::new())))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break None;
                }
            }
            item = rx.recv() => {
                let Some(item) = item else { break None };
                let mut closing = None;
                batch.clear();
                let mut last_seq = 0;
                match item {
                    Outgoing::Close(c, r) => break abort_or(&outbox, (c, r)),
                    Outgoing::Frame(t, seq) => {
                        last_seq = last_seq.max(seq);
                        batch.push(t);
                    }
                    // Only an outbox of records (an MQTT subscriber's) queues these.
                    Outgoing::Record(_) | Outgoing::Lost(..) => {}
                }
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(Outgoing::Frame(t, seq)) => {
                            last_seq = last_seq.max(seq);
                            batch.push(t);
                        }
                        Ok(Outgoing::Close(c, r)) => {
                            closing = Some((c, r));
                            break;
                        }
                        Ok(Outgoing::Record(_) | Outgoing::Lost(..)) => {}
                        Err(_) => break,
                    }
                }
                let bytes: usize = batch.iter().map(Frame::len).sum();
                live.frames_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let write = Box::pin(write_batch(&mut sink, &mut batch, keepalive.stall_timeout));
                let written = tokio::select! {
                    r = write => match r {
                        Ok(r) => r,
                        Err(Stalled) => {
                            outbox.slow_consumer("the socket took nothing");
                            break Some((close::SLOW_CONSUMER, reason(close::SLOW_CONSUMER)));
                        }
                    },
                    _ = outbox.aborted() => break outbox.abort_code().map(|c| (c, reason(c))),
                    _ = shutdown.cancelled() => break Some((close::GOING_AWAY, reason(close::GOING_AWAY))),
                };
                if let Err(e) = written {
                    debug!(error = %e, "write failed");
                    break None;
                }
                outbox.sent(bytes, last_seq);
                metrics::counter!("mqws_bytes_out_total").increment(bytes as u64);
                if let Some(close) = closing {
                    break abort_or(&outbox, close);
                }
            }
        }
    };
    if let Some((code, why)) = close {
        live.close_code.store(code, Ordering::Relaxed);
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(why),
        }));
        let _ = Box::pin(tokio::time::timeout(
            keepalive.close_timeout,
            sink.send(frame),
        ))
        .await;
    }
    outbox.abort(close::NORMAL);
}

/// The close to send for a close queued behind frames: an abort that came meanwhile wins (the
/// reader aborts with 1002 on broken framing, then queues a normal close as it ends, and the
/// writer may take that close in the same batch as the frames before it).
fn abort_or(outbox: &Outbox, queued: (u16, &'static str)) -> Option<(u16, &'static str)> {
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
