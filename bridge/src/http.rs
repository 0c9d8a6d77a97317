//! HTTP routes: `/ws` (upgrade), `/mqtt` (MQTT over WebSocket), `/sse`, `/healthz`, `/readyz`, `/metrics`, `/api/status`,
//! `POST /publish`, the embedded pages (`/`, `/mqws.js`) and `http.static_dir` under `/app/`.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::{info, warn, Instrument};

use crate::protocol::{ErrorCode, SUBPROTOCOL};

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

/// The state of the handlers that keep their own, beside [`Shared`].
#[derive(Debug)]
pub(crate) struct Handlers {
    /// What `/mqtt` needs.
    pub(crate) mqtt: Arc<crate::mqtt_ws::MqttWs>,
    /// Message rates for `/api/status`.
    pub(crate) meter: crate::status::Meter,
    /// `POST /publish` rate per client address.
    pub(crate) sources: crate::http_publish::Sources,
}

/// The application's routes.
pub(crate) fn router(shared: Arc<Shared>, own: Handlers) -> Router {
    let router = Router::new()
        .route("/ws", get(upgrade))
        .route("/sse", get(crate::sse::sse))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared.clone())
        .merge(crate::status::routes(shared.clone(), own.meter))
        .merge(crate::http_publish::routes(shared.clone(), own.sources))
        .merge(crate::mqtt_ws::routes(own.mqtt));
    let router = match &shared.static_dir {
        Some(dir) => router.nest_service("/app", tower_http::services::ServeDir::new(dir)),
        None => router,
    };
    crate::pages::routes(router)
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    axum::Extension(crate::server::Peer(peer)): axum::Extension<crate::server::Peer>,
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
    if !origin_allowed(&headers, &shared.allowed_origins) {
        metrics::counter!("mqws_ws_refused_total", "reason" => "origin").increment(1);
        warn!(%peer, origin = ?headers.get(header::ORIGIN), "websocket refused: origin not allowed; add it to http.allowed_origins to allow it");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if shared.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let Some(slot) = shared.try_connect() else {
        metrics::counter!("mqws_ws_refused_total", "reason" => "max_connections").increment(1);
        info!(
            %peer,
            limit = shared.ws.max_connections,
            "websocket refused: connection limit (ws.max_connections)"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let max_message = usize::try_from(shared.ws.max_message_size.as_u64()).unwrap_or(usize::MAX);
    let max_frame = usize::try_from(shared.ws.max_frame_size.as_u64()).unwrap_or(usize::MAX);
    let max_pending = usize::try_from(shared.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX);
    let tracker = shared.tracker.clone();
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
            tracker.track_future(connection::serve(socket, slot).instrument(span))
        })
}

/// Whether a WebSocket handshake may speak `protocol`: it offers it, or offers no subprotocol
/// at all (a client that offers only others is refused).
pub(crate) fn offers(headers: &HeaderMap, protocol: &str) -> bool {
    let mut offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    offered.peek().is_none() || offered.any(|p| p == protocol)
}

/// The Origin policy against cross-site WebSocket hijacking: no `Origin` (not a browser) is
/// allowed, and so is the same host and port as the `Host` header (mqws's own pages); any
/// other origin must be listed in `http.allowed_origins` (`"*"`: any, `"null"`: file:// pages).
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin_listed(origin, allowed) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let norm = |a: &str| {
        a.strip_suffix(default_port)
            .unwrap_or(a)
            .to_ascii_lowercase()
    };
    norm(authority) == norm(host)
}

/// Whether `origin` is in `http.allowed_origins` (`"*"` lists every origin).
pub(crate) fn origin_listed(origin: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// The token of an `Authorization: Bearer …` header, for the HTTP endpoints that need one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    crate::metrics::scrape(&shared);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.prometheus.render(),
    )
        .into_response()
}

/// An error answer of the HTTP endpoints: the contract's `error` JSON with its HTTP status.
pub(crate) fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "code": code.as_str(), "message": message});
    (status, axum::Json(body)).into_response()
}

/// The HTTP status for a contract error code.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// CORS headers for a listed cross-origin caller; none for same-origin or non-browser callers.
pub(crate) fn cors(headers: &HeaderMap, allowed: &[String], response: &mut Response) {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let listed = origin.to_str().is_ok_and(|o| origin_listed(o, allowed));
        if listed {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(header::VARY, axum::http::HeaderValue::from_static("Origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn same_origin_by_default() {
        assert!(origin_allowed(&headers(None, "example.com"), &[]));
        assert!(origin_allowed(
            &headers(Some("http://example.com"), "example.com"),
            &[]
        ));
        assert!(origin_allowed(
            &headers(Some("https://example.com:443"), "example.com"),
            &[]
        ));
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(Some("http://evil.com"), "example.com"),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(Some("http://example.com:81"), "example.com"),
            &[]
        ));
        assert!(!origin_allowed(&headers(Some("null"), "example.com"), &[]));
    }

    #[test]
    fn listed_origins_beside_same_origin() {
        let allowed = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(
            &headers(Some("https://app.example.com"), "api.example.com"),
            &allowed
        ));
        // mqws's own pages stay allowed when a list is configured.
        assert!(origin_allowed(
            &headers(Some("https://api.example.com"), "api.example.com"),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(Some("https://evil.example.com"), "api.example.com"),
            &allowed
        ));
        assert!(origin_allowed(&headers(None, "api.example.com"), &allowed));
    }

    #[test]
    fn star_allows_any_and_null_allows_file_pages() {
        let star = vec!["*".to_owned()];
        assert!(origin_allowed(
            &headers(Some("https://evil.com"), "a.com"),
            &star
        ));
        let null = vec!["null".to_owned()];
        assert!(origin_allowed(&headers(Some("null"), "a.com"), &null));
        assert!(!origin_allowed(
            &headers(Some("https://evil.com"), "a.com"),
            &null
        ));
    }
}
