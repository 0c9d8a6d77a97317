//! HTTP routes: `/ws` (upgrade), `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::{info, Instrument};

use crate::protocol::SUBPROTOCOL;
use crate::state::Shared;
use crate::ws::connection;

/// Write buffer tungstenite fills before writing to the socket.
const WRITE_BUFFER: usize = 128 * 1024;

/// The application's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        metrics::counter!("mqws_ws_refused_total", "reason" => "subprotocol").increment(1);
        return (
            StatusCode::BAD_REQUEST,
            format!("unsupported subprotocol; this server speaks {SUBPROTOCOL}\n"),
        )
            .into_response();
    }
    if shared.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let Some(slot) = shared.try_connect() else {
        metrics::counter!("mqws_ws_refused_total", "reason" => "max_connections").increment(1);
        info!(
            limit = shared.ws.max_connections,
            "websocket refused: connection limit"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let max_message = usize::try_from(shared.ws.max_message_size.as_u64()).unwrap_or(usize::MAX);
    let max_frame = usize::try_from(shared.ws.max_frame_size.as_u64()).unwrap_or(usize::MAX);
    let max_pending = usize::try_from(shared.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX);
    let tracker = shared.tracker.clone();
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max_message)
        .max_frame_size(max_frame)
        .write_buffer_size(WRITE_BUFFER)
        // Room for the batch being written plus a close frame; the outbox bounds the rest.
        .max_write_buffer_size(
            max_pending
                .saturating_add(WRITE_BUFFER)
                .saturating_add(1024),
        )
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("ws", conn = slot.id);
            tracker.track_future(connection::serve(socket, slot).instrument(span))
        })
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.prometheus.render(),
    )
        .into_response()
}
