//! `GET /healthz`, `GET /readyz` and `GET /metrics`: what orchestrators and Prometheus poll.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::{Edge, Shared};

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 while the broker link runs, the log is writable and shutdown has not begun.
pub(crate) async fn readyz(State(edge): State<Arc<Edge>>) -> Response {
    if edge.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(Shared { core, edge }): State<Shared>) -> Response {
    crate::metrics::scrape(
        core.budget.used(),
        edge.ready(),
        edge.log_healthy.load(Ordering::Relaxed),
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        edge.prometheus.render(),
    )
        .into_response()
}
