//! The client side of the WebSocket contract shared by `mqws sub` and `mqws pub`: connect
//! with the `mqws.v1.json` subprotocol (ws://, or wss:// with the system's root
//! certificates), `hello` → `welcome`, reading frames with their close codes, closing.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Connect, ToolError};
use crate::protocol::SUBPROTOCOL;

/// Bound on the TCP + TLS + WebSocket handshake and on each awaited reply.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a close waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// An open client WebSocket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next read brought.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A JSON frame (an object with `type`), parsed, with its text as sent.
    Frame(Value, String),
    /// A close frame.
    Closed {
        /// Close code (1005 when the frame had none).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The stream ended without a close frame.
    Ended(String),
}

/// Opens the WebSocket and completes `hello` → `welcome`. `hello` holds the fields besides
/// `type` and `token`. Returns the socket and the `welcome` frame.
pub(crate) async fn open(
    connect: &Connect,
    mut hello: Map<String, Value>,
) -> Result<(Socket, Value), ToolError> {
    let connect_error = |detail: String| ToolError::Connect {
        url: connect.url.clone(),
        detail,
    };
    if !(connect.url.starts_with("ws://") || connect.url.starts_with("wss://")) {
        return Err(ToolError::Usage(format!(
            "invalid --url {:?}: use ws://HOST:PORT/ws or wss://HOST:PORT/ws",
            connect.url
        )));
    }
    let mut request = connect
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ToolError::Usage(format!("invalid --url {:?}: {e}", connect.url)))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let handshake = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (mut socket, _response) = tokio::time::timeout(REPLY_TIMEOUT, handshake)
        .await
        .map_err(|_| connect_error("the handshake timed out".to_owned()))?
        .map_err(|e| connect_error(handshake_error(e)))?;

    hello.insert("type".to_owned(), Value::from("hello"));
    if let Some(token) = &connect.token {
        hello.insert("token".to_owned(), Value::from(token.as_str()));
    }
    send(&mut socket, &Value::Object(hello)).await?;
    let welcome = match reply(&mut socket, "welcome").await? {
        (v, _) if v["type"] == "welcome" => v,
        (v, text) if v["type"] == "error" => return Err(server_error(&v, &text)),
        (_, text) => return Err(ToolError::Protocol(text)),
    };
    Ok((socket, welcome))
}

/// Sends one JSON frame.
pub(crate) async fn send(socket: &mut Socket, frame: &Value) -> Result<(), ToolError> {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .map_err(|e| ToolError::Lost(e.to_string()))
}

/// The next JSON frame, bounded by [`REPLY_TIMEOUT`]; a close or the end of the stream is an
/// error. `what` names the awaited reply for the timeout message.
pub(crate) async fn reply(
    socket: &mut Socket,
    what: &'static str,
) -> Result<(Value, String), ToolError> {
    let next = tokio::time::timeout(REPLY_TIMEOUT, next(socket))
        .await
        .map_err(|_| ToolError::Timeout {
            what,
            secs: REPLY_TIMEOUT.as_secs(),
        })??;
    match next {
        Incoming::Frame(v, text) => Ok((v, text)),
        Incoming::Closed { code, reason } => Err(ToolError::Closed { code, reason }),
        Incoming::Ended(detail) => Err(ToolError::Lost(detail)),
    }
}

/// The next frame. WebSocket pings are answered by the library; binary frames (never sent by
/// the contract's server) are skipped. A text frame that is not a JSON object with a `type`
/// is a protocol error.
pub(crate) async fn next(socket: &mut Socket) -> Result<Incoming, ToolError> {
    loop {
        let msg = match socket.next().await {
            None => return Ok(Incoming::Ended("the stream ended".to_owned())),
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Ok(Incoming::Ended("the connection closed".to_owned()))
            }
            Some(Err(e)) => return Ok(Incoming::Ended(e.to_string())),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(text) => {
                let text = text.as_str().to_owned();
                let value: Value =
                    serde_json::from_str(&text).map_err(|_| ToolError::Protocol(text.clone()))?;
                if !value["type"].is_string() {
                    return Err(ToolError::Protocol(text));
                }
                return Ok(Incoming::Frame(value, text));
            }
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_owned())
                });
                return Ok(Incoming::Closed { code, reason });
            }
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// Closes with 1000 and waits (bounded) for the server's close frame. Failures are ignored:
/// the tool is done either way.
pub(crate) async fn close(socket: &mut Socket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if socket.close(Some(frame)).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
}

/// An `error` frame as a [`ToolError::Server`].
pub(crate) fn server_error(frame: &Value, text: &str) -> ToolError {
    match frame["code"].as_str() {
        Some(code) => ToolError::Server {
            code: code.to_owned(),
            message: frame["message"].as_str().unwrap_or("").to_owned(),
        },
        None => ToolError::Protocol(text.to_owned()),
    }
}

/// A failed handshake in one line: the HTTP status of a refused upgrade, or the cause.
fn handshake_error(e: WsError) -> String {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            let hint = match status.as_u16() {
                400 => " (wrong path or subprotocol?)",
                401 => " (a token is needed: --token or MQWS_TOKEN)",
                403 => " (Origin refused or not allowed)",
                503 => " (too many connections or not ready)",
                _ => "",
            };
            format!("the server refused the WebSocket upgrade: HTTP {status}{hint}")
        }
        WsError::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}
