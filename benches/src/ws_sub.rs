//! WebSocket subscribers: `hello` with the filter, wait for `welcome`, then count and time every
//! `message` frame and check that `seq` strictly increases on the connection.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
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

/// How long the handshake plus `hello` → `welcome` may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a subscriber reports once it is subscribed (or failed to be).
#[derive(Debug)]
pub struct Ready {
    /// Ok with the `server` field of `welcome`, or the error that stopped it.
    pub result: anyhow::Result<String>,
}

/// Everything a WebSocket subscriber needs.
#[derive(Debug, Clone)]
pub struct WsSubConfig {
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
                    Some("welcome") => {
                        let server = v
                            .get("server")
                            .and_then(|s| s.as_str())
                            .unwrap_or("")
                            .to_string();
                        return Ok((ws, server));
                    }
                    _ => bail!("expected welcome, got {}", t.as_str()),
                }
            }
            Message::Close(c) => bail!("closed before welcome: {c:?}"),
            _ => {}
        }
    }
}

/// Runs one WebSocket subscriber for a phase.
pub async fn run(cfg: WsSubConfig, live: Arc<AtomicU64>, peak: Arc<AtomicU64>) -> SubStats {
    let mut stats = SubStats::new(live, peak);
    let opened = {
        let _permit = cfg.connect_gate.acquire().await;
        tokio::time::timeout(OPEN_TIMEOUT, open(cfg.http, &cfg.filter)).await
    };
    let mut ws = match opened {
        Ok(Ok((ws, server))) => {
            let _ = cfg.ready.send(Ready { result: Ok(server) }).await;
            ws
        }
        Ok(Err(e)) => {
            stats.ended_early = Some(format!("open failed: {e:#}"));
            let _ = cfg.ready.send(Ready { result: Err(e) }).await;
            return stats;
        }
        Err(_) => {
            stats.ended_early = Some("open timed out".into());
            let _ = cfg
                .ready
                .send(Ready {
                    result: Err(anyhow::anyhow!("open timed out after {OPEN_TIMEOUT:?}")),
                })
                .await;
            return stats;
        }
    };
    drop(cfg.ready);
    let mut stop = cfg.stop;
    let deadline = tokio::time::sleep_until(cfg.deadline);
    tokio::pin!(deadline);
    loop {
        // Stop and deadline first, so a flood of frames cannot starve them.
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = &mut deadline => break,
            m = ws.next() => m,
        };
        match msg {
            None => {
                stats.ended_early = Some("stream ended without close frame".into());
                return stats;
            }
            Some(Err(e)) => {
                stats.ended_early = Some(format!("error: {e}"));
                return stats;
            }
            Some(Ok(Message::Text(t))) => on_text(&mut stats, t.as_str(), &cfg.window),
            Some(Ok(Message::Binary(_))) => {
                *stats.other_frames.entry("<binary>".into()).or_default() += 1;
            }
            Some(Ok(Message::Close(c))) => {
                stats.ended_early = Some(match c {
                    Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                    None => "closed by server without code".into(),
                });
                return stats;
            }
            Some(Ok(_)) => {}
        }
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

fn on_text(stats: &mut SubStats, text: &str, window: &Window) {
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
