//! `GET /ws`: the WebSocket handshake of the contract's protocol (subprotocol, Origin policy,
//! shutdown, `ws.max_connections`); the connection itself is `crate::ws`'s.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn, Instrument};

use super::accept::Peer;
use super::guard::{offers, origin_allowed};
use crate::protocol::SUBPROTOCOL;
use crate::state::Shared;
use crate::ws::connection;

/// Write buffer tungstenite fills before writing to the socket. Its capacity stays with the
/// connection after it is written out (at 128 KiB, 2,000 slow connections held about 140 MiB
/// that way), so it is kept small; writes of 16 KiB cost few syscalls.
const WRITE_BUFFER: usize = 16 * 1024;
/// Read buffer of each connection. tungstenite zero-fills its whole capacity on every read, so
/// each idle connection keeps it resident (its default, 128 KiB, cost about 150 KiB per
/// connection; 4 KiB, 3.5 KiB more than this; 1 KiB, 0.5 KiB more). Client frames are small
/// (`hello`, acks, subscriptions); a large one still arrives whole, in more reads.
const READ_BUFFER: usize = 512;

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(shared): State<Shared>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !offers(&headers, SUBPROTOCOL) {
        metrics::counter!("mqws_ws_refused_total", "reason" => "subprotocol").increment(1);
        return (
            StatusCode::BAD_REQUEST,
            format!("unsupported subprotocol; this server speaks {SUBPROTOCOL}\n"),
        )
            .into_response();
    }
    let Shared { core, edge } = &shared;
    if !origin_allowed(&headers, &edge.allowed_origins) {
        metrics::counter!("mqws_ws_refused_total", "reason" => "origin").increment(1);
        warn!(%peer, origin = ?headers.get(header::ORIGIN), "websocket refused: origin not allowed; add it to http.allowed_origins to allow it");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if edge.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let Some(slot) = shared.try_connect() else {
        metrics::counter!("mqws_ws_refused_total", "reason" => "max_connections").increment(1);
        info!(
            %peer,
            limit = core.ws.max_connections,
            "websocket refused: connection limit (ws.max_connections)"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let max_message = usize::try_from(core.ws.max_message_size.as_u64()).unwrap_or(usize::MAX);
    let max_frame = usize::try_from(core.ws.max_frame_size.as_u64()).unwrap_or(usize::MAX);
    let max_pending = usize::try_from(core.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX);
    let tracker = edge.tracker.clone();
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max_message)
        .max_frame_size(max_frame)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Room for the batch being written plus a close frame; the outbox bounds the rest.
        .max_write_buffer_size(
            max_pending
                .saturating_add(WRITE_BUFFER)
                .saturating_add(1024),
        )
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("ws", conn = slot.id, %peer, origin = origin.as_deref());
            tracker.track_future(connection::serve(socket, shared, slot).instrument(span))
        })
}
