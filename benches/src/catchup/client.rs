//! A WebSocket client that follows one catch-up: `hello` → `welcome` → replayed `message`
//! frames → `caught_up`, timing each step and checking the replay is complete: every expected
//! benchmark message exactly once (by its payload's publisher and counter), `seq` strictly
//! increasing, `"replay":true` on every frame before `caught_up`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fastscan;
use crate::payload::{Found, Frame};
use crate::ws_sub::SUBPROTOCOL;

/// An open WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `ws://HTTP/ws` with the contract's subprotocol (TCP_NODELAY on).
pub async fn connect(http: SocketAddr) -> anyhow::Result<Ws> {
    let mut req = format!("ws://{http}/ws").into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(16 << 20))
        .max_write_buffer_size(16 << 20);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// Sends `hello` and waits for `welcome` (anything else first is an error).
pub async fn hello(ws: &mut Ws, hello: &Value) -> anyhow::Result<Value> {
    ws.send(Message::text(hello.to_string())).await?;
    loop {
        match ws.next().await.context("closed before welcome")?? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).context("welcome is not JSON")?;
                match v.get("type").and_then(Value::as_str) {
                    Some("welcome") => return Ok(v),
                    _ => bail!("expected welcome, got {}", t.as_str()),
                }
            }
            Message::Close(c) => bail!("closed before welcome: {c:?}"),
            _ => {}
        }
    }
}

/// Closes normally and waits (bounded, 2 s) for the server's close.
pub async fn close(mut ws: Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bench done".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        ws.send(Message::Close(Some(frame))).await?;
        while ws.next().await.is_some() {}
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    })
    .await;
}

/// Which benchmark messages a client should receive: for each payload publisher id `p`, the
/// counters `0..counts[p]` for which `want(p, n)` holds; each at most once.
pub struct Expect {
    counts: Vec<u64>,
    want: Box<dyn Fn(u32, u64) -> bool + Send>,
    seen: Vec<Vec<u64>>,
}

impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expect")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

/// How a received stamp relates to the expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Expected and new.
    New,
    /// Expected, already received.
    Duplicate,
    /// Not expected (another publisher, counter out of range, or filtered out).
    Unexpected,
}

impl Expect {
    /// Expects `(p, n)` for `n < counts[p]` when `want(p, n)`.
    pub fn new(counts: Vec<u64>, want: impl Fn(u32, u64) -> bool + Send + 'static) -> Self {
        let seen = counts
            .iter()
            .map(|&c| vec![0u64; usize::try_from(c.div_ceil(64)).unwrap_or(0)])
            .collect();
        Self {
            counts,
            want: Box::new(want),
            seen,
        }
    }

    /// Records one received stamp.
    pub fn mark(&mut self, p: u32, n: u64) -> Mark {
        let pi = p as usize;
        if pi >= self.counts.len() || n >= self.counts[pi] || !(self.want)(p, n) {
            return Mark::Unexpected;
        }
        let (w, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        let word = &mut self.seen[pi][w];
        if *word & bit != 0 {
            Mark::Duplicate
        } else {
            *word |= bit;
            Mark::New
        }
    }

    /// Expected messages in total.
    pub fn expected(&self) -> u64 {
        let mut total = 0;
        for (p, &c) in self.counts.iter().enumerate() {
            total += (0..c).filter(|&n| (self.want)(p as u32, n)).count() as u64;
        }
        total
    }

    /// Expected messages not received.
    pub fn missing(&self) -> u64 {
        let mut total = 0;
        for (p, &c) in self.counts.iter().enumerate() {
            for n in 0..c {
                if (self.want)(p as u32, n)
                    && self.seen[p][(n / 64) as usize] & (1u64 << (n % 64)) == 0
                {
                    total += 1;
                }
            }
        }
        total
    }
}

/// What one catch-up looked like. Times are milliseconds since the caller's `t0`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// WebSocket handshake done.
    pub connected_ms: Option<f64>,
    /// `hello` about to be sent.
    pub hello_ms: Option<f64>,
    /// `welcome` received.
    pub welcome_ms: Option<f64>,
    /// First replayed message received.
    pub first_message_ms: Option<f64>,
    /// `caught_up` received.
    pub caught_up_ms: Option<f64>,
    /// `welcome.resumed`.
    pub resumed: Option<bool>,
    /// `welcome.recovered`.
    pub recovered: Option<bool>,
    /// `welcome.gap` (JSON text) when not null.
    pub gap: Option<String>,
    /// `welcome.position.seq`.
    pub welcome_seq: Option<u64>,
    /// `caught_up.position.seq`.
    pub caught_up_seq: Option<u64>,
    /// `message` frames before `caught_up`.
    pub replayed: u64,
    /// Of those, frames without `"replay":true`.
    pub replay_flag_missing: u64,
    /// `message` frames after `caught_up` (none expected: nothing is published meanwhile).
    pub after_caught_up: u64,
    /// Bytes of `message` frames received.
    pub bytes: u64,
    /// First and last `seq` received.
    pub first_seq: Option<u64>,
    /// Last `seq` received.
    pub last_seq: Option<u64>,
    /// Frames whose `seq` was not strictly larger than the previous one.
    pub seq_violations: u64,
    /// Expected messages received twice or more.
    pub duplicates: u64,
    /// Messages that were not expected (wrong topic or unknown payload).
    pub unexpected: u64,
    /// Expected messages never received.
    pub missing: u64,
    /// Expected messages in total.
    pub expected: u64,
    /// `error` frames by code, and other unexpected frame types.
    pub other_frames: BTreeMap<String, u64>,
    /// Why it ended before `caught_up`, if it did.
    pub failed: Option<String>,
}

/// Follows one catch-up: connects, sends `hello`, reads until `caught_up` (then closes), or
/// until `deadline`. `welcome` is kept in the outcome.
pub async fn catch_up(
    http: SocketAddr,
    hello_frame: &Value,
    mut expect: Expect,
    t0: Instant,
    deadline: Instant,
) -> Outcome {
    let ms = |t0: Instant| t0.elapsed().as_secs_f64() * 1000.0;
    let mut out = Outcome {
        expected: expect.expected(),
        ..Outcome::default()
    };
    let opened = tokio::time::timeout_at(deadline, async {
        let mut ws = connect(http).await?;
        out.connected_ms = Some(ms(t0));
        out.hello_ms = Some(ms(t0));
        let w = hello(&mut ws, hello_frame).await?;
        Ok::<_, anyhow::Error>((ws, w))
    })
    .await;
    let (mut ws, welcome) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            out.failed = Some(format!("open: {e:#}"));
            out.missing = expect.missing();
            return out;
        }
        Err(_) => {
            out.failed = Some("open: deadline".into());
            out.missing = expect.missing();
            return out;
        }
    };
    out.welcome_ms = Some(ms(t0));
    out.resumed = welcome.get("resumed").and_then(Value::as_bool);
    out.recovered = welcome.get("recovered").and_then(Value::as_bool);
    out.gap = welcome
        .get("gap")
        .filter(|g| !g.is_null())
        .map(Value::to_string);
    out.welcome_seq = welcome.pointer("/position/seq").and_then(Value::as_u64);
    if out.recovered.is_none() {
        // No replay was planned (e.g. a `from` the server ignored): nothing will follow.
        out.failed = Some(format!("welcome without `recovered`: {welcome}"));
        out.missing = expect.missing();
        close(ws).await;
        return out;
    }
    let mut caught_up = false;
    let mut last_seq = 0u64;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    while !caught_up {
        let msg = tokio::select! {
            biased;
            _ = &mut sleep => {
                out.failed = Some("deadline before caught_up".into());
                break;
            }
            m = ws.next() => m,
        };
        let text = match msg {
            None => {
                out.failed = Some("stream ended before caught_up".into());
                break;
            }
            Some(Err(e)) => {
                out.failed = Some(format!("error before caught_up: {e}"));
                break;
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                out.failed = Some(match c {
                    Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                    None => "closed by server without code".into(),
                });
                break;
            }
            Some(Ok(_)) => continue,
        };
        let text = text.as_str();
        let (seq, found) = match fastscan::scan_message(text) {
            Some(m) => (Some(m.seq), Some(m.found)),
            None => match serde_json::from_str::<Frame<'_>>(text) {
                Ok(f) if f.ty == "message" => (f.seq, Some(f.stamp())),
                Ok(f) if f.ty == "caught_up" => {
                    caught_up = true;
                    out.caught_up_ms = Some(ms(t0));
                    out.caught_up_seq = serde_json::from_str::<Value>(text)
                        .ok()
                        .and_then(|v| v.pointer("/position/seq").and_then(Value::as_u64));
                    continue;
                }
                Ok(f) => {
                    let key = match f.code {
                        Some(c) => format!("{}:{c}", f.ty),
                        None => f.ty.into_owned(),
                    };
                    *out.other_frames.entry(key).or_default() += 1;
                    continue;
                }
                Err(_) => {
                    *out.other_frames.entry("<invalid json>".into()).or_default() += 1;
                    continue;
                }
            },
        };
        // A message frame.
        out.replayed += 1;
        out.bytes += text.len() as u64;
        if out.first_message_ms.is_none() {
            out.first_message_ms = Some(ms(t0));
        }
        if !text.contains("\"replay\":true") {
            out.replay_flag_missing += 1;
        }
        match seq {
            Some(s) => {
                if out.first_seq.is_none() {
                    out.first_seq = Some(s);
                } else if s <= last_seq {
                    out.seq_violations += 1;
                }
                last_seq = last_seq.max(s);
                out.last_seq = Some(last_seq);
            }
            None => out.seq_violations += 1,
        }
        match found {
            Some(Found::Json(s)) | Some(Found::Text(s)) => match expect.mark(s.p, s.n) {
                Mark::New => {}
                Mark::Duplicate => out.duplicates += 1,
                Mark::Unexpected => out.unexpected += 1,
            },
            _ => out.unexpected += 1,
        }
    }
    if caught_up {
        // Anything already queued behind caught_up (nothing is published meanwhile, so
        // normally nothing): read for a short moment.
        let quiet = Instant::now() + Duration::from_millis(50);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(quiet, ws.next()).await {
            if let Message::Text(t) = m {
                if t.as_str().contains("\"type\":\"message\"") {
                    out.after_caught_up += 1;
                }
            }
        }
        close(ws).await;
    }
    out.missing = expect.missing();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectation_marks_and_counts() {
        let mut e = Expect::new(vec![200, 3], |_, n| n % 100 == 7);
        assert_eq!(e.expected(), 2);
        assert_eq!(e.mark(0, 7), Mark::New);
        assert_eq!(e.mark(0, 7), Mark::Duplicate);
        assert_eq!(e.mark(0, 8), Mark::Unexpected);
        assert_eq!(e.mark(1, 7), Mark::Unexpected);
        assert_eq!(e.mark(2, 0), Mark::Unexpected);
        assert_eq!(e.missing(), 1);
        assert_eq!(e.mark(0, 107), Mark::New);
        assert_eq!(e.missing(), 0);
    }
}
