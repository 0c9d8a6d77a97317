//! `GET /api/status`: the server's state as JSON for the dashboard and scripts (contract
//! section 1): version, log epoch, first and head seq, log bytes on disk, connections by kind
//! and message rates. It owns the rate meter, in its own router state ([`routes`]); everything
//! else it reads from [`Shared`]: the log and the hub of the stream core, the token check, the
//! connection counts and readiness of the HTTP edge.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::Serialize;

use super::guard::bearer;
use crate::state::Shared;

/// Rates are computed over at least this long, so frequent pollers see steady figures.
const MIN_WINDOW_S: f64 = 1.0;

/// Turns the log head and the hub's delivery count into per-second rates between polls.
#[derive(Debug)]
pub(crate) struct Meter {
    started: Instant,
    last: Mutex<Sample>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    head: u64,
    delivered: u64,
    logged_per_s: f64,
    delivered_per_s: f64,
}

impl Meter {
    /// A meter starting now at log head `head`.
    pub(crate) fn new(head: u64) -> Meter {
        let now = Instant::now();
        Meter {
            started: now,
            last: Mutex::new(Sample {
                at: now,
                head,
                delivered: 0,
                logged_per_s: 0.0,
                delivered_per_s: 0.0,
            }),
        }
    }

    /// The rates over the time since the previous sample (at least [`MIN_WINDOW_S`] old).
    fn rates(&self, head: u64, delivered: u64) -> (f64, f64) {
        let mut last = self.last.lock();
        let now = Instant::now();
        let dt = now.duration_since(last.at).as_secs_f64();
        if dt >= MIN_WINDOW_S {
            *last = Sample {
                at: now,
                head,
                delivered,
                logged_per_s: head.saturating_sub(last.head) as f64 / dt,
                delivered_per_s: delivered.saturating_sub(last.delivered) as f64 / dt,
            };
        }
        (last.logged_per_s, last.delivered_per_s)
    }
}

/// What `/api/status` needs: both contexts and its own rate meter.
#[derive(Debug)]
struct StatusState {
    shared: Shared,
    meter: Meter,
}

/// The `/api/status` route with its own state.
pub(crate) fn routes<S>(shared: Shared, meter: Meter) -> Router<S> {
    Router::new()
        .route("/api/status", get(status))
        .with_state(Arc::new(StatusState { shared, meter }))
}

#[derive(Serialize)]
struct Status {
    server: String,
    version: &'static str,
    epoch: String,
    first_seq: Option<u64>,
    head_seq: u64,
    log_messages: u64,
    log_bytes: Option<u64>,
    connections: Connections,
    rates: Rates,
    uptime_s: u64,
    ready: bool,
}

#[derive(Serialize)]
struct Connections {
    websocket: usize,
    sse: usize,
    mqtt: usize,
}

#[derive(Serialize)]
struct Rates {
    logged_per_s: f64,
    delivered_per_s: f64,
}

/// The handler. Same authentication as `/ws`: with auth on, a valid `Authorization: Bearer`
/// token (any grant) is required.
async fn status(State(state): State<Arc<StatusState>>, headers: HeaderMap) -> Response {
    let Shared { core, edge } = &state.shared;
    if let Err(e) = edge.auth.authenticate(bearer(&headers)) {
        let body = serde_json::json!({
            "type": "error",
            "code": "unauthorized",
            "message": format!("a valid token is required ({})", e.reason()),
        });
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let storage = core.storage.clone();
    // Measuring the data dir walks it: off the async workers.
    let log_bytes = tokio::task::spawn_blocking(move || storage.disk_bytes().ok())
        .await
        .ok()
        .flatten();
    let log = &core.storage.log;
    let head = log.head();
    let (logged_per_s, delivered_per_s) = state.meter.rates(head, core.hub.delivered_total());
    let body = Status {
        server: format!("mqws/{}", env!("CARGO_PKG_VERSION")),
        version: env!("CARGO_PKG_VERSION"),
        epoch: log.epoch().to_owned(),
        first_seq: log.first(),
        head_seq: head,
        log_messages: log.stats().messages,
        log_bytes,
        connections: Connections {
            websocket: edge.slots.websockets(),
            sse: edge.slots.sse(),
            mqtt: edge.link.connections(),
        },
        rates: Rates {
            logged_per_s: (logged_per_s * 10.0).round() / 10.0,
            delivered_per_s: (delivered_per_s * 10.0).round() / 10.0,
        },
        uptime_s: state.meter.started.elapsed().as_secs(),
        ready: edge.ready(),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}
