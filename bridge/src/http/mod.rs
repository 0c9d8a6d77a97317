//! The HTTP edge. This module is the router alone: `/ws` (upgrade), `/mqtt` (MQTT over
//! WebSocket), `/sse`, `/healthz`, `/readyz`, `/metrics`, `/api/status`, `POST /publish`, the
//! embedded pages (`/`, `/mqws.js`) and `http.static_dir` under `/app/`. Each endpoint is a
//! module of its own; the guards they share (Origin, CORS, bearer token, refusals) are in
//! [`guard`], which imports none of them, and no handler imports the router. The accept loop
//! that serves the router (TLS, deadlines, the connection cap, each connection's [`accept::Peer`]
//! and [`accept::Control`]) is [`accept`].

pub(crate) mod accept;
pub(crate) mod guard;
pub(crate) mod mqtt_ws;
mod pages;
mod probes;
pub(crate) mod publish;
mod sse;
pub(crate) mod status;
mod upgrade;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;

use crate::state::{Edge, Shared};

/// The state of the handlers that keep their own, beside [`Shared`].
#[derive(Debug)]
pub(crate) struct Handlers {
    /// What `/mqtt` needs.
    pub(crate) mqtt: Arc<mqtt_ws::MqttWs>,
    /// Message rates for `/api/status`.
    pub(crate) meter: status::Meter,
    /// `POST /publish` rate per client address.
    pub(crate) sources: publish::Sources,
}

/// Lets a handler that touches only the HTTP edge take `State<Arc<Edge>>` from the router's
/// [`Shared`].
impl FromRef<Shared> for Arc<Edge> {
    fn from_ref(shared: &Shared) -> Arc<Edge> {
        shared.edge.clone()
    }
}

/// The application's routes.
pub(crate) fn router(shared: Shared, own: Handlers) -> Router {
    let router = Router::new()
        .route("/ws", get(upgrade::upgrade))
        .route("/sse", get(sse::sse))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .with_state(shared.clone())
        .merge(status::routes(shared.clone(), own.meter))
        .merge(publish::routes(&shared, own.sources))
        .merge(mqtt_ws::routes(own.mqtt));
    let router = match &shared.edge.static_dir {
        Some(dir) => router.nest_service("/app", tower_http::services::ServeDir::new(dir)),
        None => router,
    };
    pages::routes(router)
}
