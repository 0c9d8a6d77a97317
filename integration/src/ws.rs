//! WebSocket client helpers (tokio-tungstenite 0.29): connecting with the `mqws.v1.json`
//! subprotocol, the `hello` → `welcome` opening, reading JSON frames and close codes with
//! bounded waits.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::{Server, TIMEOUT};

/// The subprotocol of the wire contract.
pub const SUBPROTOCOL: &str = "mqws.v1.json";

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Connects to `ws://ADDR/ws` offering `protocols` (the raw `Sec-WebSocket-Protocol` value;
/// `None` offers none). `recv_buffer` shrinks the socket's receive buffer (a slow reader).
/// TCP_NODELAY is set. The handshake result is returned as is.
pub async fn ws_connect_with(
    addr: std::net::SocketAddr,
    protocols: Option<&str>,
    recv_buffer: Option<u32>,
) -> Result<(Ws, Response), WsError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| WsError::Io(std::io::ErrorKind::TimedOut.into()))??;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    if let Some(p) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(p).expect("header value"),
        );
    }
    tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, stream, None),
    )
    .await
    .map_err(|_| WsError::Io(std::io::ErrorKind::TimedOut.into()))?
}

/// Connects to the server's `/ws` offering `mqws.v1.json` and checks that the server
/// selected it. Panics on failure.
pub async fn ws_connect(server: &Server) -> Ws {
    let (ws, resp) = ws_connect_with(server.http_addr, Some(SUBPROTOCOL), None)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake with {} failed: {e}", server.ws_url()));
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    assert_eq!(chosen.as_deref(), Some(SUBPROTOCOL), "selected subprotocol");
    ws
}

/// Sends one JSON value as a text frame.
pub async fn send_json(ws: &mut Ws, v: &Value) {
    send_text(ws, &v.to_string()).await;
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: &str) {
    tokio::time::timeout(TIMEOUT, ws.send(Message::text(text)))
        .await
        .expect("send timed out")
        .expect("send failed");
}

/// Sends `hello` with the given initial filters and returns the `welcome` frame, checking
/// its type and that it echoes the filters.
pub async fn hello(ws: &mut Ws, filters: &[&str]) -> Value {
    send_json(ws, &json!({"type": "hello", "filters": filters})).await;
    let welcome = next_json(ws, TIMEOUT).await;
    assert_eq!(welcome["type"], "welcome", "reply to hello: {welcome}");
    let mut got: Vec<String> = welcome["filters"]
        .as_array()
        .unwrap_or_else(|| panic!("welcome.filters is not an array: {welcome}"))
        .iter()
        .map(|f| f.as_str().expect("filter string").to_owned())
        .collect();
    let mut want: Vec<String> = filters.iter().map(|s| (*s).to_owned()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "welcome.filters: {welcome}");
    welcome
}

/// Sends `hello` with any `fields` (an object: `session`, `resume_token`, `from`, `token`,
/// `filters`, …) and returns the reply, checking it is a `welcome`.
pub async fn hello_with(ws: &mut Ws, fields: Value) -> Value {
    let mut h = json!({"type": "hello"});
    if let Some(map) = fields.as_object() {
        for (k, v) in map {
            h[k] = v.clone();
        }
    }
    send_json(ws, &h).await;
    let w = next_json(ws, TIMEOUT).await;
    assert_eq!(w["type"], "welcome", "reply to hello: {w}");
    w
}

/// One thing read from the server, pings and pongs skipped.
#[derive(Debug)]
pub enum Frame {
    /// A text frame holding JSON.
    Json(Value),
    /// A text frame that is not JSON.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame: code (`None` when the frame had no payload) and reason.
    Close(Option<u16>, String),
    /// The stream ended or failed without a close frame.
    Ended(String),
}

/// Reads the next frame, skipping WebSocket pings/pongs; `None` when nothing arrived in time.
pub async fn next_frame(ws: &mut Ws, timeout: Duration) -> Option<Frame> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let item = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(item) => item,
        };
        return Some(match item {
            None => Frame::Ended("stream ended".to_owned()),
            Some(Err(e)) => Frame::Ended(e.to_string()),
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) => Frame::Json(v),
                Err(_) => Frame::Text(t.as_str().to_owned()),
            },
            Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
            Some(Ok(Message::Close(c))) => match c {
                Some(c) => Frame::Close(Some(u16::from(c.code)), c.reason.as_str().to_owned()),
                None => Frame::Close(None, String::new()),
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
        });
    }
}

/// Reads the next JSON frame; panics on a timeout, a close, or a non-JSON frame.
pub async fn next_json(ws: &mut Ws, timeout: Duration) -> Value {
    match next_frame(ws, timeout).await {
        Some(Frame::Json(v)) => v,
        None => panic!("no frame within {timeout:?}"),
        Some(other) => panic!("expected a JSON frame, got {other:?}"),
    }
}

/// Reads the next JSON frame and checks it is a `message` with the documented fields
/// (`seq` number, `topic` string, `enc`, `retain` bool, `ts` number).
pub async fn next_message(ws: &mut Ws, timeout: Duration) -> Value {
    let v = next_json(ws, timeout).await;
    assert_eq!(v["type"], "message", "expected a message frame, got {v}");
    assert!(v["seq"].is_u64(), "message.seq: {v}");
    assert!(v["topic"].is_string(), "message.topic: {v}");
    assert!(v["retain"].is_boolean(), "message.retain: {v}");
    assert!(v["ts"].is_u64(), "message.ts: {v}");
    assert!(
        matches!(v["enc"].as_str(), Some("json" | "text" | "base64")),
        "message.enc: {v}"
    );
    v
}

/// Outcome of [`expect_close`].
#[derive(Debug)]
pub struct Closed {
    /// The close code received.
    pub code: u16,
    /// Data frames read before the close frame.
    pub frames_before: usize,
    /// Highest `message.seq` among them.
    pub max_seq: Option<u64>,
}

/// Reads until a close frame arrives (data frames before it are counted, not checked) and
/// returns its code. Panics when the stream ends without a close frame, a close frame has no
/// code, or nothing closes within `timeout`.
pub async fn expect_close(ws: &mut Ws, timeout: Duration) -> Closed {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut frames_before = 0;
    let mut max_seq = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left).await {
            None => panic!("no close frame within {timeout:?} ({frames_before} frames before)"),
            Some(Frame::Close(Some(code), _)) => {
                return Closed {
                    code,
                    frames_before,
                    max_seq,
                }
            }
            Some(Frame::Close(None, _)) => panic!("close frame without a code"),
            Some(Frame::Ended(why)) => {
                panic!("connection ended without a close frame after {frames_before} frames: {why}")
            }
            Some(Frame::Json(v)) => {
                frames_before += 1;
                if let Some(s) = v["seq"].as_u64() {
                    max_seq = Some(max_seq.map_or(s, |m: u64| m.max(s)));
                }
            }
            Some(_) => frames_before += 1,
        }
    }
}

/// Sends `{"type":"ping","id":ID}` and checks the next frame is the matching `pong`.
pub async fn ping_pong(ws: &mut Ws, id: u64) {
    send_json(ws, &json!({"type": "ping", "id": id})).await;
    let v = next_json(ws, TIMEOUT).await;
    assert_eq!(v["type"], "pong", "reply to ping: {v}");
    assert_eq!(v["id"], id, "pong id: {v}");
}

/// Sends a WebSocket close frame with `code` (best effort).
pub async fn close(ws: &mut Ws, code: u16) {
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    };
    let _ = tokio::time::timeout(TIMEOUT, ws.close(Some(frame))).await;
}

/// Reads `n` `message` frames (see [`next_message`]) within `timeout` overall and checks that
/// their `seq`s are strictly increasing. Panics when any other frame arrives first.
pub async fn collect_messages(ws: &mut Ws, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out: Vec<Value> = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = match next_frame(ws, left).await {
            Some(Frame::Json(v)) => v,
            None => panic!(
                "only {} of {n} messages within {timeout:?}; got {:?}",
                out.len(),
                summary(&out)
            ),
            Some(other) => panic!(
                "expected message {} of {n}, got {other:?}; before it {:?}",
                out.len() + 1,
                summary(&out)
            ),
        };
        assert_eq!(v["type"], "message", "expected a message frame, got {v}");
        if let Some(prev) = out.last() {
            assert!(
                v["seq"].as_u64() > prev["seq"].as_u64(),
                "seq not strictly increasing: {prev} then {v}"
            );
        }
        out.push(v);
    }
    out
}

/// `(topic, payload)` pairs of message frames, for readable assertion failures.
pub fn summary(msgs: &[Value]) -> Vec<(String, Value)> {
    msgs.iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap_or("?").to_owned(),
                m["payload"].clone(),
            )
        })
        .collect()
}

/// Every logged message matching `filter`, oldest first: a new session replays from
/// `earliest` until `caught_up` (bounded by `timeout` overall). Returns the message frames and
/// the `welcome`.
pub async fn replay_all(server: &Server, filter: &str, timeout: Duration) -> (Value, Vec<Value>) {
    let mut ws = ws_connect(server).await;
    let welcome = hello_with(
        &mut ws,
        serde_json::json!({"filters": [filter], "from": "earliest"}),
    )
    .await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(&mut ws, left).await {
            Some(Frame::Json(v)) if v["type"] == "message" => out.push(v),
            Some(Frame::Json(v)) if v["type"] == "caught_up" => return (welcome, out),
            Some(Frame::Json(_)) => {}
            other => panic!(
                "replay ended after {} messages within {timeout:?}: {other:?}",
                out.len()
            ),
        }
    }
}
