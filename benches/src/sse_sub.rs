//! SSE subscribers: `GET /sse?filter=F` with hyper's HTTP/1 client, the body split into events
//! by eventsource-stream (the way a browser's `EventSource` does), wait for the `welcome` event,
//! then count and time every `message` event. An event's data is the same JSON as the
//! WebSocket `message` frame, so it goes through the WebSocket subscribers' reader
//! ([`crate::ws_sub`]): the same latency, `seq`, order and missing-message accounting.

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use eventsource_stream::{Event, EventStream, EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyDataStream, BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::Connection;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::SubStats;
use crate::ws_sub::{on_text, open_reported, server_of, SubConfig, Until};

type Conn = Pin<Box<Connection<TokioIo<TcpStream>, Empty<Bytes>>>>;

/// The most bytes handed to the event parser at once.
const PIECE: usize = 2048;

/// The body in pieces of at most [`PIECE`] bytes (zero-copy). eventsource-stream copies the
/// rest of its buffer for every line it takes (`String::split_off`), so a body chunk holding
/// many events (a server that writes a batch of events at once) would cost time quadratic in
/// its size; bounded pieces keep that copy short whatever the server's chunking.
struct Pieces<S> {
    body: S,
    rest: Bytes,
}

impl<S, E> Stream for Pieces<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.rest.is_empty() {
            match std::task::ready!(self.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => self.rest = chunk,
                other => return Poll::Ready(other),
            }
        }
        let n = self.rest.len().min(PIECE);
        Poll::Ready(Some(Ok(self.rest.split_to(n))))
    }
}

/// An open `GET /sse` stream: its events, and the HTTP/1 connection, which is driven by
/// whoever polls the events (no task of its own, so a chunk read does not wake another task,
/// possibly on the other core, as a spawned connection would). Dropping it closes the
/// connection.
struct Sse {
    events: EventStream<Pieces<BodyDataStream<Incoming>>>,
    conn: Option<Conn>,
}

impl Stream for Sse {
    type Item = Result<Event, EventStreamError<hyper::Error>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Once the connection is done, the body reports its end or error.
        if let Some(conn) = self.conn.as_mut() {
            if conn.as_mut().poll(cx).is_ready() {
                self.conn = None;
            }
        }
        self.events.poll_next_unpin(cx)
    }
}

/// The request target for `filter`: `/sse?filter=<filter, percent-encoded>`.
fn path(filter: &str) -> String {
    let mut p = String::from("/sse?filter=");
    for b in filter.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            p.push(char::from(b));
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p
}

/// Opens the stream and reads up to its `welcome` event; returns the stream and the `server`
/// field of `welcome`.
async fn open(http: SocketAddr, filter: &str) -> anyhow::Result<(Sse, String)> {
    let tcp = TcpStream::connect(http).await.context("connecting")?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP/1 handshake")?;
    let mut conn: Conn = Box::pin(conn);
    let req = hyper::Request::get(path(filter))
        .header("host", http.to_string())
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::select! {
        r = sender.send_request(req) => r.context("GET /sse")?,
        r = &mut conn => bail!("the connection ended before the response: {r:?}"),
    };
    let status = resp.status();
    if status != hyper::StatusCode::OK {
        let body = tokio::select! {
            b = resp.into_body().collect() => b?.to_bytes(),
            r = &mut conn => bail!("GET /sse answered {status}; the connection ended: {r:?}"),
        };
        bail!(
            "GET /sse answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let kind = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut sse = Sse {
        events: Pieces {
            body: resp.into_body().into_data_stream(),
            rest: Bytes::new(),
        }
        .eventsource(),
        conn: Some(conn),
    };
    if !kind.starts_with("text/event-stream") {
        bail!("GET /sse answered Content-Type {kind:?}, expected text/event-stream");
    }
    let e = match sse.next().await {
        Some(Ok(e)) => e,
        Some(Err(e)) => bail!("stream failed before welcome: {e}"),
        None => bail!("stream ended before welcome"),
    };
    if e.event != "welcome" {
        bail!("expected the welcome event, got {:?}: {}", e.event, e.data);
    }
    let v: serde_json::Value = serde_json::from_str(&e.data).context("welcome is not JSON")?;
    Ok((sse, server_of(&v)))
}

/// Runs one SSE subscriber for a phase.
pub async fn run(cfg: SubConfig, live: Arc<AtomicU64>, peak: Arc<AtomicU64>) -> SubStats {
    let mut stats = SubStats::new(live, peak);
    let opened = open(cfg.http, &cfg.filter);
    let Some(mut sse) = open_reported(&cfg.connect_gate, cfg.ready, &mut stats, opened).await
    else {
        return stats;
    };
    let mut until = Until::new(cfg.stop, cfg.deadline);
    let ended = "stream ended by the server";
    while let Some(e) = until.next(&mut sse, &mut stats, ended).await {
        // `error` events carry the WebSocket `error` frame: counted by code.
        if e.event == "message" || e.event == "error" {
            on_text(&mut stats, &e.data, &cfg.window);
        } else {
            *stats.other_frames.entry(e.event).or_default() += 1;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events split across arbitrary chunk boundaries (one large chunk holding many events,
    /// a multi-byte character cut in two) come out whole and in order.
    #[tokio::test]
    async fn pieces_keep_events_whole() {
        let mut text = String::from("retry: 1000\n\n: keepalive\n\n");
        for seq in 1..=300 {
            text.push_str(&format!(
                "id: e:{seq}\nevent: message\ndata: {{\"seq\":{seq},\"s\":\"é{}\"}}\n\n",
                "x".repeat(seq % 50)
            ));
        }
        let bytes = Bytes::from(text);
        let cut = bytes.len() - 40;
        let cut = (cut..bytes.len())
            .find(|&i| bytes[i] == 0xC3)
            .expect("an é near the end")
            + 1;
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
            vec![Ok(bytes.slice(..cut)), Ok(bytes.slice(cut..))];
        let pieces = Pieces {
            body: futures_util::stream::iter(chunks),
            rest: Bytes::new(),
        };
        let events: Vec<Event> = pieces
            .eventsource()
            .map(|e| e.expect("parses"))
            .collect()
            .await;
        assert_eq!(events.len(), 300);
        for (e, seq) in events.iter().zip(1..) {
            assert_eq!(e.event, "message");
            assert_eq!(e.id, format!("e:{seq}"));
            let v: serde_json::Value = serde_json::from_str(&e.data).expect("JSON");
            assert_eq!(v["seq"], seq);
        }
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(path("#"), "/sse?filter=%23");
        assert_eq!(path("bench/+/x y"), "/sse?filter=bench/%2B/x%20y");
        assert_eq!(path("é"), "/sse?filter=%C3%A9");
    }
}
