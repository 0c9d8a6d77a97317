//! `POST /publish` (contract section 4): the WebSocket `publish` frame without `type` and `id`,
//! for scripts and pages that hold no WebSocket. Same grants, topic rules, size limit and
//! durability as the WebSocket publish (200 only once the message is durable when it matches
//! `bridge.filters`, and handed to the broker). It is not a cross-site hole: it needs
//! `Content-Type: application/json` (so a plain HTML form cannot send it) and the same `Origin`
//! rule as `/ws`; CORS headers go only to allowed origins. Each client address is held to the
//! WebSocket publish rate ([`Sources`], in the route's own state); above it the answer is 429
//! with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use mqws_broker::PublishRequest;
use mqws_config::WsConfig;
use serde::Deserialize;
use tracing::warn;

use super::accept::Peer;
use super::guard::{bearer, cors, origin_allowed, refuse, status_of};
use crate::admit::{Admission, Publish};
use crate::protocol::ErrorCode;
use crate::session::bucket::Bucket;
use crate::state::{Edge, Shared};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    topic: String,
    payload: serde_json::Value,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    enc: Option<String>,
}

/// The publish rate of each client address (`ws.publish_rate`, `ws.publish_burst`), for at
/// most `http.publish_sources` addresses at once. Keyed by the TCP peer: behind a reverse proxy
/// every client shares the proxy's address (mqws does not trust forwarding headers).
#[derive(Debug)]
pub(crate) struct Sources {
    buckets: parking_lot::Mutex<HashMap<IpAddr, Bucket>>,
    rate: u32,
    burst: u32,
    max: usize,
}

/// Why a publish may not go now.
#[derive(Debug, PartialEq)]
enum Throttled {
    /// This address is over its rate; a token comes after this many seconds.
    Rate(u64),
    /// `http.publish_sources` addresses are publishing; none is idle enough to forget.
    Sources,
}

impl Sources {
    /// Addresses held to `rate`/s with bursts of `burst`, at most `max` of them.
    pub(crate) fn new(rate: u32, burst: u32, max: usize) -> Sources {
        Sources {
            buckets: parking_lot::Mutex::new(HashMap::new()),
            rate,
            burst,
            max,
        }
    }

    /// Takes one publish for `ip` at `now`.
    fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Throttled> {
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&ip) && buckets.len() >= self.max {
            // Forget addresses idle long enough to have refilled: they lose nothing.
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= self.max {
                return Err(Throttled::Sources);
            }
        }
        let bucket = buckets
            .entry(ip)
            .or_insert_with(|| Bucket::new(self.rate, self.burst));
        if bucket.take(now) {
            Ok(())
        } else {
            Err(Throttled::Rate(bucket.retry_after().as_secs().max(1)))
        }
    }
}

/// What `/publish` needs: the HTTP edge (Origin, token, the publisher and its payload limit),
/// the WebSocket limits a publish is admitted by, and the rate of each client address.
#[derive(Debug)]
struct Publishing {
    edge: Arc<Edge>,
    ws: Arc<WsConfig>,
    sources: Sources,
}

/// The `/publish` route (`POST`, and `OPTIONS` for CORS) with its own state.
pub(crate) fn routes<S>(shared: &Shared, sources: Sources) -> Router<S> {
    // A 1 MiB payload as base64 inside JSON, with room for the rest of the body.
    let limit = axum::extract::DefaultBodyLimit::max(body_limit(&shared.edge));
    let state = Publishing {
        edge: shared.edge.clone(),
        ws: shared.core.ws.clone(),
        sources,
    };
    Router::new()
        .route(
            "/publish",
            axum::routing::post(publish).options(preflight).layer(limit),
        )
        .with_state(Arc::new(state))
}

/// Largest `POST /publish` body: the payload limit as base64 (4/3) plus 64 KiB for the rest.
fn body_limit(edge: &Edge) -> usize {
    edge.max_publish_bytes.saturating_mul(4) / 3 + 64 * 1024
}

/// `OPTIONS /publish`: the CORS preflight a cross-origin page sends before its JSON POST.
async fn preflight(State(state): State<Arc<Publishing>>, headers: HeaderMap) -> Response {
    let edge = &state.edge;
    if !origin_allowed(&headers, &edge.allowed_origins) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    cors(&headers, &edge.allowed_origins, &mut r);
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// `POST /publish`.
async fn publish(
    State(state): State<Arc<Publishing>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut r = match state.sources.take(peer.ip(), Instant::now()) {
        Ok(()) => answer(&state.edge, &state.ws, &headers, &body).await,
        Err(t) => throttled(peer.ip(), &t),
    };
    cors(&headers, &state.edge.allowed_origins, &mut r);
    r
}

/// The 429 answer, with `Retry-After` when the address's own rate is the reason.
fn throttled(ip: IpAddr, t: &Throttled) -> Response {
    metrics::counter!("mqws_errors_total", "code" => ErrorCode::RateLimited.as_str()).increment(1);
    let (message, retry) = match t {
        Throttled::Rate(s) => (
            "publish rate exceeded (ws.publish_rate per client address)",
            *s,
        ),
        Throttled::Sources => {
            warn!(%ip, "POST /publish refused: http.publish_sources addresses are publishing");
            ("too many clients are publishing; retry later", 1)
        }
    };
    let mut r = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        message,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    r
}

async fn answer(edge: &Edge, ws: &WsConfig, headers: &HeaderMap, body: &[u8]) -> Response {
    if !origin_allowed(headers, &edge.allowed_origins) {
        metrics::counter!("mqws_ws_refused_total", "reason" => "origin").increment(1);
        warn!(origin = ?headers.get(header::ORIGIN), "POST /publish refused: origin not allowed; add it to http.allowed_origins to allow it");
        return refuse(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "origin not allowed",
        );
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "the body must be JSON with Content-Type: application/json",
        );
    }
    let identity = match edge.auth.authenticate(bearer(headers)) {
        Ok(i) => i,
        Err(e) => {
            let message = format!("a valid token is required ({})", e.reason());
            return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, &message);
        }
    };
    let request = match parse(ws, edge.max_publish_bytes, &identity.grant, body) {
        Ok(r) => r,
        Err((code, message)) => return refuse(status_of(code), code, &message),
    };
    match tokio::time::timeout(ws.publish_timeout, edge.publisher.publish(request)).await {
        Ok(Ok(())) => {
            metrics::counter!("mqws_http_publishes_total").increment(1);
            Json(serde_json::json!({"type": "puback"})).into_response()
        }
        Ok(Err(e)) => {
            warn!(error = %e, "POST /publish failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the broker is not available",
            )
        }
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the broker did not take the publish in time",
        ),
    }
}

/// The body as a publish request, admitted as a WebSocket `publish` frame is (by the limits of
/// `ws`, with payloads up to `max_publish_bytes`).
fn parse(
    ws: &WsConfig,
    max_publish_bytes: usize,
    grant: &crate::auth::Grant,
    body: &[u8],
) -> Result<PublishRequest, (ErrorCode, String)> {
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        (
            ErrorCode::BadRequest,
            format!("the body is not a publish request: {e}"),
        )
    })?;
    let admission = Admission { grant, ws };
    let asked = Publish {
        topic: &body.topic,
        payload: &body.payload,
        enc: body.enc.as_deref(),
        qos: body.qos,
        retain: body.retain,
    };
    admission
        .publish(asked, max_publish_bytes)
        .map_err(|r| (r.code, r.message))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Sources, Throttled};

    #[test]
    fn each_address_has_its_own_rate_and_idle_ones_make_room() {
        let t0 = Instant::now();
        let s = Sources::new(1, 2, 2);
        let (a, b, c) = (
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            [10, 0, 0, 3].into(),
        );
        assert_eq!((s.take(a, t0), s.take(a, t0)), (Ok(()), Ok(())));
        assert_eq!(s.take(a, t0), Err(Throttled::Rate(1)), "burst spent");
        assert_eq!(s.take(b, t0), Ok(()), "another address is not held back");
        assert_eq!(
            s.take(c, t0),
            Err(Throttled::Sources),
            "two addresses tracked at most"
        );
        // After 2 s both buckets are full again: forgetting them loses nothing.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(s.take(c, later), Ok(()));
        assert_eq!(s.take(a, later), Ok(()));
    }
}
