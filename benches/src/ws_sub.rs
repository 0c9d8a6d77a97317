//! WebSocket subscribers: `hello` with the filter, wait for `welcome`, then count and time every
//! `message` frame and check that `seq` strictly increases on the connection.
//!
//! The SSE subscribers ([`crate::sse_sub`]) receive the same JSON as an event's data and share
//! this module's configuration, opening, stop handling and frame reader, so both kinds are
//! counted and timed by the same code.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fastscan;
use crate::payload::{self, Found, Frame};
use crate::stats::{SubStats, Window};

/// The subprotocol of the wire contract.
pub const SUBPROTOCOL: &str = "mqws.v1.json";

/// How long the handshake plus `hello` → `welcome` (or `GET /sse` → `welcome`) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a subscriber reports once it is subscribed (or failed to be).
#[derive(Debug)]
pub struct Ready {
    /// Ok with the `server` field of `welcome`, or the error that stopped it.
    pub result: anyhow::Result<String>,
}

/// Everything a WebSocket or SSE subscriber needs.
#[derive(Debug, Clone)]
pub struct SubConfig {
    /// HTTP address of mqws.
    pub http: SocketAddr,
    /// The subscription filter.
    pub filter: String,
    /// Limits concurrent connection attempts.
    pub connect_gate: Arc<Semaphore>,
    /// Receives `true` when the phase is over.
    pub stop: watch::Receiver<bool>,
    /// The phase's measure window.
    pub window: Arc<Window>,
    /// Reports readiness.
    pub ready: mpsc::Sender<Ready>,
    /// Hard deadline: the subscriber returns by then whatever happens.
    pub deadline: Instant,
}

/// Runs `open` (which answers the stream and the `server` field of `welcome`) through the
/// connect gate within [`OPEN_TIMEOUT`] and reports the outcome on `ready`. `None` when it
/// failed; `stats.ended_early` then says why.
pub(crate) async fn open_reported<T>(
    gate: &Semaphore,
    ready: mpsc::Sender<Ready>,
    stats: &mut SubStats,
    open: impl Future<Output = anyhow::Result<(T, String)>>,
) -> Option<T> {
    let opened = {
        let _permit = gate.acquire().await;
        tokio::time::timeout(OPEN_TIMEOUT, open).await
    };
    let result = match opened {
        Ok(Ok((stream, server))) => {
            let _ = ready.send(Ready { result: Ok(server) }).await;
            return Some(stream);
        }
        Ok(Err(e)) => {
            stats.ended_early = Some(format!("open failed: {e:#}"));
            Err(e)
        }
        Err(_) => {
            stats.ended_early = Some("open timed out".into());
            Err(anyhow::anyhow!("open timed out after {OPEN_TIMEOUT:?}"))
        }
    };
    let _ = ready.send(Ready { result }).await;
    None
}

/// The end of a subscriber's phase: the stop signal or its hard deadline.
pub(crate) struct Until {
    stop: watch::Receiver<bool>,
    deadline: Pin<Box<Sleep>>,
}

impl Until {
    pub(crate) fn new(stop: watch::Receiver<bool>, deadline: Instant) -> Self {
        Self {
            stop,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// The next item of `stream`, or `None` once the phase is over or the stream ended (then
    /// `stats.ended_early` says `ended`) or failed. Stop and deadline are checked first, so a
    /// flood of items cannot starve them.
    pub(crate) async fn next<S, T, E>(
        &mut self,
        stream: &mut S,
        stats: &mut SubStats,
        ended: &str,
    ) -> Option<T>
    where
        S: Stream<Item = Result<T, E>> + Unpin,
        E: std::fmt::Display,
    {
        let item = tokio::select! {
            biased;
            _ = self.stop.changed() => return None,
            _ = &mut self.deadline => return None,
            m = stream.next() => m,
        };
        match item {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                stats.ended_early = Some(format!("error: {e}"));
                None
            }
            None => {
                stats.ended_early = Some(ended.to_owned());
                None
            }
        }
    }
}

/// Opens the connection and completes `hello` → `welcome`; returns the stream and the server's
/// `server` string.
async fn open(http: SocketAddr, filter: &str) -> anyhow::Result<(Ws, String)> {
    let mut req = format!("ws://{http}/ws").into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(16 << 20))
        .max_write_buffer_size(16 << 20);
    let (mut ws, resp) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .context("WebSocket handshake")?;
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if proto != SUBPROTOCOL {
        bail!("server answered subprotocol {proto:?}, expected {SUBPROTOCOL:?}");
    }
    let hello = serde_json::json!({"type": "hello", "filters": [filter]});
    ws.send(Message::text(hello.to_string())).await?;
    loop {
        let msg = ws
            .next()
            .await
            .context("connection closed before welcome")??;
        match msg {
            Message::Text(t) => {
                let v: serde_json::Value =
                    serde_json::from_str(t.as_str()).context("welcome is not JSON")?;
                match v.get("type").and_then(|t| t.as_str()) {
                    Some("welcome") => return Ok((ws, server_of(&v))),
                    _ => bail!("expected welcome, got {}", t.as_str()),
                }
            }
            Message::Close(c) => bail!("closed before welcome: {c:?}"),
            _ => {}
        }
    }
}

/// The `server` field of a `welcome` (empty when absent).
pub(crate) fn server_of(welcome: &serde_json::Value) -> String {
    let server = welcome.get("server").and_then(|s| s.as_str());
    server.unwrap_or("").to_owned()
}

/// Runs one WebSocket subscriber for a phase.
pub async fn run(cfg: SubConfig, live: Arc<AtomicU64>, peak: Arc<AtomicU64>) -> SubStats {
    let mut stats = SubStats::new(live, peak);
    let opened = open(cfg.http, &cfg.filter);
    let Some(mut ws) = open_reported(&cfg.connect_gate, cfg.ready, &mut stats, opened).await else {
        return stats;
    };
    let mut until = Until::new(cfg.stop, cfg.deadline);
    let ended = "stream ended without close frame";
    while let Some(msg) = until.next(&mut ws, &mut stats, ended).await {
        match msg {
            Message::Text(t) => on_text(&mut stats, t.as_str(), &cfg.window),
            Message::Binary(_) => {
                *stats.other_frames.entry("<binary>".into()).or_default() += 1;
            }
            Message::Close(c) => {
                stats.ended_early = Some(match c {
                    Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                    None => "closed by server without code".into(),
                });
                return stats;
            }
            _ => {}
        }
    }
    if stats.ended_early.is_some() {
        return stats;
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "bench done".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        ws.send(Message::Close(Some(close))).await?;
        while ws.next().await.is_some() {}
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    })
    .await;
    stats
}

/// Counts and times one server frame's JSON text: a WebSocket text frame, or an SSE event's
/// data (the same JSON).
pub(crate) fn on_text(stats: &mut SubStats, text: &str, window: &Window) {
    let now = payload::now_us();
    if let Some(m) = fastscan::scan_message(text) {
        stats.seq(m.seq);
        record(stats, m.found, now, window);
        return;
    }
    let frame: Frame<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(_) => {
            *stats
                .other_frames
                .entry("<invalid json>".into())
                .or_default() += 1;
            return;
        }
    };
    match frame.ty.as_ref() {
        "message" => {
            match frame.seq {
                Some(seq) => stats.seq(seq),
                None => {
                    *stats
                        .other_frames
                        .entry("<message without seq>".into())
                        .or_default() += 1
                }
            }
            record(stats, frame.stamp(), now, window);
        }
        "error" => {
            let code = frame.code.as_deref().unwrap_or("<none>").to_string();
            *stats.error_frames.entry(code).or_default() += 1;
        }
        other => *stats.other_frames.entry(other.to_string()).or_default() += 1,
    }
}

fn record(stats: &mut SubStats, found: Found, now: u64, window: &Window) {
    match found {
        Found::Json(s) => stats.record(s, now, window),
        Found::Text(s) => {
            stats.text_enc += 1;
            stats.record(s, now, window);
        }
        Found::Foreign => stats.foreign += 1,
    }
}
