//! The body of an open `GET /sse` stream: drains the connection's outbox into
//! `text/event-stream` chunks, up to [`BATCH`] events per chunk, as the WebSocket writer batches
//! frames per flush. One event per chunk (axum's `Sse`) cost the server one poll, one outbox
//! update and one HTTP chunk per message, and delivered 0.64–0.88× the WebSocket rate in the
//! same run (benches/RESULTS.md); the encoding is the format's four line kinds, written here.
//!
//! It owns the stream's place in the hub ([`End`]): dropping the body (the stream's end, the
//! peer gone) leaves the hub, stops the catch-up and frees the connection's slot.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::fanout::outbox::Receiver;
use crate::fanout::{Hub, Outbox, Outgoing};
use crate::protocol::server::ServerFrame;
use crate::protocol::{close, ErrorCode};
use crate::state::Slot;
use crate::storage::Position;

/// Most queued frames written into one chunk.
const BATCH: usize = 256;
/// A comment line after this long without an event keeps proxies from timing the stream out,
/// and finds dead peers.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The stream's state between chunks.
pub(super) struct Feed {
    pub(super) rx: Receiver,
    pub(super) epoch: String,
    /// Where delivery started: the id of `welcome`.
    pub(super) after: u64,
    pub(super) shutdown: CancellationToken,
    pub(super) expires: Option<Instant>,
    /// The last event was sent: the stream ends at the next poll.
    pub(super) ended: bool,
    pub(super) end: End,
}

type Chunk = Result<Bytes, Infallible>;

impl Feed {
    /// The next chunk: every frame queued now (up to [`BATCH`]), a keepalive comment after
    /// [`KEEPALIVE`] without any, or the `error` event of a stream the server ends.
    pub(super) async fn next(mut self) -> Option<(Chunk, Feed)> {
        if self.ended {
            return None;
        }
        let never = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let expiry = self.expires.unwrap_or(never);
        let first = tokio::select! {
            biased;
            _ = self.end.outbox.aborted() => {
                let code = self.end.outbox.abort_code().unwrap_or(close::NORMAL);
                return self.finish(BytesMut::new(), code);
            }
            _ = self.shutdown.cancelled() => return self.finish(BytesMut::new(), close::GOING_AWAY),
            _ = tokio::time::sleep_until(expiry), if self.expires.is_some() => {
                metrics::counter!("mqws_auth_expired_total").increment(1);
                return self.finish(BytesMut::new(), close::TOKEN_EXPIRED);
            }
            _ = tokio::time::sleep(KEEPALIVE) => {
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), self));
            }
            item = self.rx.recv() => item?,
        };
        let mut buf = BytesMut::new();
        let (mut bytes, mut last, mut n) = (0, 0, 0);
        let mut item = first;
        let closing = loop {
            match item {
                Outgoing::Close(code, _) => break Some(code),
                Outgoing::Frame(text, seq) => {
                    bytes += text.len();
                    last = last.max(seq);
                    self.encode(&mut buf, text.as_str(), seq);
                }
                // Only an outbox of records (an MQTT subscriber's) queues these.
                Outgoing::Record(_) | Outgoing::Lost(..) => {}
            }
            n += 1;
            if n == BATCH {
                break None;
            }
            match self.rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break None,
            }
        };
        if bytes > 0 {
            self.end.outbox.sent(bytes, last);
            metrics::counter!("mqws_bytes_out_total").increment(bytes as u64);
        }
        match closing {
            Some(code) => self.finish(buf, code),
            None => Some((Ok(buf.freeze()), self)),
        }
    }

    /// One queued frame as an event: a `message` carries its position as the id; `welcome`
    /// and `caught_up` carry the position delivery has covered, so a reconnect continues from
    /// there even before the first message.
    fn encode(&self, buf: &mut BytesMut, text: &str, seq: u64) {
        if seq > 0 {
            return event(buf, Some((&self.epoch, seq)), "message", text);
        }
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow, rename = "type")]
            kind: &'a str,
            position: Option<Position>,
        }
        let Ok(head) = serde_json::from_str::<Head<'_>>(text) else {
            return event(buf, None, "error", text);
        };
        match (head.kind, &head.position) {
            ("welcome", _) => event(buf, Some((&self.epoch, self.after)), head.kind, text),
            ("caught_up", Some(p)) => event(buf, Some((&p.epoch, p.seq)), head.kind, text),
            _ => event(buf, None, head.kind, text),
        }
    }

    /// Ends the stream after `buf`: nothing more for a normal end, else an `error` event
    /// saying why (the client reconnects and continues from its last id).
    fn finish(mut self, mut buf: BytesMut, code: u16) -> Option<(Chunk, Feed)> {
        self.ended = true;
        let reason = match code {
            close::NORMAL => None,
            close::GOING_AWAY => Some((ErrorCode::Unavailable, "server shutting down; reconnect")),
            close::SLOW_CONSUMER => Some((
                ErrorCode::Unavailable,
                "slow consumer: reconnect to catch up from your last event id",
            )),
            close::TOKEN_EXPIRED => Some((ErrorCode::Unauthorized, "token expired")),
            _ => Some((ErrorCode::Internal, "internal error")),
        };
        if let Some((error, message)) = reason {
            info!(code, "ending sse stream");
            error_event(&mut buf, error, message);
        }
        if buf.is_empty() {
            return None;
        }
        Some((Ok(buf.freeze()), self))
    }
}

/// Appends one event in the `text/event-stream` format, with the id `<epoch>:<seq>` when given
/// (written in place: no allocation per message), each line of `data` its own `data:` line
/// (though the frames are single-line JSON).
pub(super) fn event(buf: &mut BytesMut, id: Option<(&str, u64)>, kind: &str, data: &str) {
    if let Some((epoch, seq)) = id {
        // Writing into a BytesMut cannot fail.
        let _ = writeln!(buf, "id: {epoch}:{seq}");
    }
    buf.put_slice(b"event: ");
    buf.put_slice(kind.as_bytes());
    buf.put_u8(b'\n');
    for line in data.split('\n') {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
}

/// Appends an `error` event with the contract's `error` frame.
pub(super) fn error_event(buf: &mut BytesMut, code: ErrorCode, message: &str) {
    let frame = ServerFrame::Error {
        id: None,
        code,
        message,
    };
    event(buf, None, "error", &frame.to_text());
}

/// Leaves the hub and frees everything when the stream is dropped (its end, the peer gone, or
/// the handler cancelled while it opened the stream).
pub(super) struct End {
    /// The hub the stream leaves.
    pub(super) hub: Arc<Hub>,
    pub(super) filters: Vec<String>,
    pub(super) follow: Option<tokio::task::JoinHandle<()>>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) done: CancellationToken,
    pub(super) started: Instant,
    /// The stream was opened and counted in `/api/status` and the gauge.
    pub(super) counted: bool,
    pub(super) slot: Slot,
}

impl Drop for End {
    fn drop(&mut self) {
        if let Some(f) = self.follow.take() {
            f.abort();
        }
        self.hub.leave(self.slot.id, &self.filters);
        self.outbox.abort(close::NORMAL);
        self.done.cancel();
        if !self.counted {
            return;
        }
        self.slot.slots().sse_closed();
        metrics::gauge!("mqws_sse_connections").decrement(1.0);
        info!(
            duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            delivered = self.outbox.delivered(),
            "sse stream closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{event, BytesMut};

    #[test]
    fn events_in_the_event_stream_format() {
        let mut buf = BytesMut::new();
        event(&mut buf, Some(("e", 4)), "message", r#"{"seq":4}"#);
        event(&mut buf, None, "gap", "a\nb");
        assert_eq!(
            &buf[..],
            b"id: e:4\nevent: message\ndata: {\"seq\":4}\n\nevent: gap\ndata: a\ndata: b\n\n"
        );
    }
}
