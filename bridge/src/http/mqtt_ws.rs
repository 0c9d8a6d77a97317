//! `GET /mqtt`: MQTT over WebSocket (subprotocol `mqtt`, as MQTT.js, Paho JS and browser MQTT
//! dashboards speak it), on the HTTP listener and so on wss when `http.tls` is set.
//!
//! The connection goes through the very same proxy as the MQTT port
//! ([`mqws_broker::MqttFront`]): the same `broker.users` logins, `broker.max_connections`,
//! CONNECT deadline, durable ingress, SUBSCRIBE bounds and wills. This module only turns
//! binary WebSocket messages into the proxy's byte stream and back (MQTT packets may be split
//! across messages or share one), and holds the handshake to the Origin policy of `/ws`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use mqws_broker::{MqttAdmission, MqttFront};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::accept::Peer;
use super::guard::{offers, origin_allowed};
use crate::protocol::close;

/// The subprotocol of MQTT over WebSocket (MQTT 3.1.1 section 6, MQTT 5 section 6).
const SUBPROTOCOL: &str = "mqtt";
/// Bytes buffered each way between the WebSocket and the proxy, and read at a time.
const PIPE: usize = 16 * 1024;
/// Read buffer of the WebSocket (as `/ws`: small, since it stays resident while idle).
const READ_BUFFER: usize = 4 * 1024;
/// Write buffer of the WebSocket.
const WRITE_BUFFER: usize = 16 * 1024;
/// How long the proxy may finish (acknowledgements, a DISCONNECT) after the client's side
/// ended, and how long a close frame may take.
const GRACE: Duration = Duration::from_secs(5);

/// What `/mqtt` needs, and nothing else.
#[derive(Debug)]
pub(crate) struct MqttWs {
    /// The broker's proxy.
    pub(crate) front: MqttFront,
    /// `http.allowed_origins`, as for `/ws`.
    pub(crate) allowed_origins: Vec<String>,
    /// Largest WebSocket message and frame: one MQTT packet of the broker's largest payload.
    pub(crate) max_message: usize,
    /// Cancelled at shutdown.
    pub(crate) shutdown: CancellationToken,
    /// The HTTP side's connection tasks.
    pub(crate) tracker: TaskTracker,
}

/// The `/mqtt` route with its own state.
pub(crate) fn routes<S>(state: Arc<MqttWs>) -> Router<S> {
    Router::new().route("/mqtt", get(upgrade)).with_state(state)
}

async fn upgrade(
    State(state): State<Arc<MqttWs>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !offers(&headers, SUBPROTOCOL) {
        metrics::counter!("mqws_mqtt_ws_refused_total", "reason" => "subprotocol").increment(1);
        return (
            StatusCode::BAD_REQUEST,
            "unsupported subprotocol; /mqtt speaks mqtt\n",
        )
            .into_response();
    }
    if !origin_allowed(&headers, &state.allowed_origins) {
        metrics::counter!("mqws_mqtt_ws_refused_total", "reason" => "origin").increment(1);
        warn!(%peer, origin = ?headers.get(header::ORIGIN), "MQTT over WebSocket refused: origin not allowed; add it to http.allowed_origins to allow it");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let admission = match state.front.admit(peer) {
        Ok(a) => a,
        Err(e) => {
            info!(%peer, reason = e.reason, "MQTT over WebSocket refused");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many MQTT connections\n",
            )
                .into_response();
        }
    };
    let tracker = state.tracker.clone();
    ws.protocols([SUBPROTOCOL])
        .max_message_size(state.max_message)
        .max_frame_size(state.max_message)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(PIPE + WRITE_BUFFER + 1024)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("mqtt_ws", %peer);
            tracker.track_future(bridge(socket, admission).instrument(span))
        })
}

/// Carries bytes between `socket` and a connection of the proxy until either side ends.
async fn bridge(socket: WebSocket, admission: MqttAdmission) {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    admission.serve(theirs, "websocket");
    let (mut from_proxy, to_proxy) = tokio::io::split(ours);
    let (mut sink, mut stream) = socket.split();
    let code = {
        let mut inbound = std::pin::pin!(inbound(&mut stream, to_proxy));
        let mut outbound = std::pin::pin!(outbound(&mut from_proxy, &mut sink));
        tokio::select! {
            r = &mut inbound => match r {
                // The client is done: let the proxy finish what it owes it.
                Ok(()) => {
                    let _ = tokio::time::timeout(GRACE, &mut outbound).await;
                    close::NORMAL
                }
                Err(code) => code,
            },
            _ = &mut outbound => close::NORMAL,
        }
    };
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: match code {
            close::NORMAL => "",
            _ => "MQTT over WebSocket takes binary messages only",
        }
        .into(),
    }));
    let _ = tokio::time::timeout(GRACE, sink.send(frame)).await;
}

/// Client → proxy: every binary message's bytes, in order. Ends (and tells the proxy the
/// client's side is closed) on a close frame, an error, or a text message, which MQTT over
/// WebSocket does not allow (its close code then).
async fn inbound<R, W>(stream: &mut R, mut to_proxy: W) -> Result<(), u16>
where
    R: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
    W: AsyncWrite + Unpin,
{
    let result = loop {
        let Some(message) = stream.next().await else {
            break Ok(());
        };
        match message {
            Ok(Message::Binary(bytes)) => {
                if to_proxy.write_all(&bytes).await.is_err() {
                    break Ok(());
                }
            }
            Ok(Message::Text(_)) => {
                debug!("text message on /mqtt; closing");
                break Err(close::UNSUPPORTED_DATA);
            }
            Ok(Message::Close(_)) => break Ok(()),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Err(e) => {
                debug!(error = %e, "MQTT over WebSocket read failed");
                break Ok(());
            }
        }
    };
    let _ = to_proxy.shutdown().await;
    result
}

/// Proxy → client: what the proxy writes, as binary messages, until it closes.
async fn outbound<R, S>(from_proxy: &mut R, sink: &mut S)
where
    R: AsyncRead + Unpin,
    S: futures_util::Sink<Message> + Unpin,
{
    let mut buf = vec![0u8; PIPE];
    loop {
        match from_proxy.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
                if sink.send(Message::Binary(bytes)).await.is_err() {
                    return;
                }
            }
        }
    }
}
