//! The state the HTTP handlers and the connection tasks share, split by who needs what:
//!
//! - [`CoreCtx`]: the stream core's context, what every driver (`ws`, `http/sse`, and the MQTT
//!   subscribers of `served`) needs to join the hub, queue, catch up and read the log;
//! - [`Edge`]: the HTTP edge's, who may connect and from where, the connection count,
//!   shutdown, readiness, the metrics renderer and browser publishes;
//! - [`Shared`]: both, the router's state, for the handlers and connections that need both.
//!
//! A function takes the narrowest of them that holds what it touches.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use mqws_broker::{LinkHealth, Publisher};
use mqws_config::WsConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::fanout::{Budget, Hub, Tail};
use crate::protocol::payload::Encodings;
use crate::session::Sessions;
use crate::storage::Storage;
use crate::subscription;

/// The stream core's context: what a driver needs to open a client's subscription, bound its
/// outbox, run its catch-up and answer its queries. The MQTT subscribers the proxy serves hold
/// only this; the HTTP edge holds it beside [`Edge`].
#[derive(Debug)]
pub(crate) struct CoreCtx {
    /// WebSocket limits and timings: the outboxes' bounds and the slow-consumer timeout here,
    /// and the handshake, publish and connection limits the edge reads.
    pub(crate) ws: Arc<WsConfig>,
    /// Filter index and dispatch.
    pub(crate) hub: Arc<Hub>,
    /// The most recent logged messages, for catch-up without the log.
    pub(crate) tail: Arc<Tail>,
    /// The bound on all outbound queues together.
    pub(crate) budget: Arc<Budget>,
    /// How payloads are carried in `message` frames (`bridge.encodings`).
    pub(crate) encodings: Arc<Encodings>,
    /// The log's epoch.
    pub(crate) epoch: String,
    /// The log (replays, queries), and the MQTT session store of the served subscribers.
    pub(crate) storage: Storage,
    /// Server-held WebSocket sessions.
    pub(crate) sessions: Arc<Sessions>,
    /// Largest `history` page (and `last` answer).
    pub(crate) max_history: usize,
    /// Numbers the connections that take a place in the hub.
    pub(crate) ids: ConnectionIds,
}

impl CoreCtx {
    /// The part the subscription module borrows, for opening a subscription or making a
    /// catch-up.
    pub(crate) fn view(&self) -> subscription::Core<'_> {
        subscription::Core {
            hub: &self.hub,
            tail: &self.tail,
            log: &self.storage.log,
            epoch: &self.epoch,
            encodings: &self.encodings,
            slow_consumer_timeout: self.ws.slow_consumer_timeout,
        }
    }
}

/// One sequence of connection ids for WebSockets, SSE streams and served MQTT subscribers,
/// since each of them is a place in the one hub.
#[derive(Debug, Default)]
pub(crate) struct ConnectionIds(AtomicU64);

impl ConnectionIds {
    /// A fresh connection id (unique in this process).
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// The HTTP edge's context: what the handlers check before a connection reaches the stream
/// core (Origin, token, the connection limit, shutdown, readiness), what the probes report,
/// and where browser publishes go.
#[derive(Debug)]
pub(crate) struct Edge {
    /// Turns a token (`hello.token`, a bearer header) into what the client may do.
    pub(crate) auth: Authenticator,
    /// `http.allowed_origins`.
    pub(crate) allowed_origins: Vec<String>,
    /// `http.static_dir`, served under `/app/`.
    pub(crate) static_dir: Option<PathBuf>,
    /// WebSocket connections and SSE streams, counted against `ws.max_connections`.
    pub(crate) slots: Arc<Slots>,
    /// Cancelled when shutdown starts.
    pub(crate) shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// False while the log cannot be written.
    pub(crate) log_healthy: Arc<AtomicBool>,
    /// Whether the broker link runs, and the MQTT connection count.
    pub(crate) link: LinkHealth,
    /// Renders `/metrics`.
    pub(crate) prometheus: PrometheusHandle,
    /// Browser publishes (WebSocket `publish`, `POST /publish`) towards the broker.
    pub(crate) publisher: Publisher,
    /// Largest payload a browser may publish (the broker's own limit).
    pub(crate) max_publish_bytes: usize,
}

impl Edge {
    /// True when `/readyz` should say 200.
    pub(crate) fn ready(&self) -> bool {
        !self.shutdown.is_cancelled()
            && self.link.is_up()
            && self.log_healthy.load(Ordering::Relaxed)
    }
}

/// Both contexts: the router's state, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// The stream core's context.
    pub(crate) core: Arc<CoreCtx>,
    /// The HTTP edge's context.
    pub(crate) edge: Arc<Edge>,
}

impl Shared {
    /// Takes a connection slot, or `None` at `ws.max_connections`.
    pub(crate) fn try_connect(&self) -> Option<Slot> {
        let slots = &self.edge.slots;
        slots.take(self.core.ws.max_connections).then(|| Slot {
            slots: slots.clone(),
            id: self.core.ids.next(),
        })
    }
}

/// Counts WebSocket connections and SSE streams against `ws.max_connections`.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    open: AtomicUsize,
    sse: AtomicUsize,
}

impl Slots {
    /// Open WebSocket connections (SSE streams not included).
    pub(crate) fn websockets(&self) -> usize {
        self.open
            .load(Ordering::Relaxed)
            .saturating_sub(self.sse.load(Ordering::Relaxed))
    }

    /// Open SSE streams.
    pub(crate) fn sse(&self) -> usize {
        self.sse.load(Ordering::Relaxed)
    }

    /// A slot became an SSE stream.
    pub(crate) fn sse_opened(&self) {
        self.sse.fetch_add(1, Ordering::Relaxed);
    }

    /// An SSE stream ended (before its slot is dropped).
    pub(crate) fn sse_closed(&self) {
        self.sse.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes a place unless `max` are taken; false at the limit.
    fn take(&self, max: usize) -> bool {
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return false;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => n = actual,
            }
        }
        metrics::gauge!("mqws_ws_connections").increment(1.0);
        true
    }
}

/// One connection's place in the count; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    /// Connection id (unique in this process).
    pub(crate) id: u64,
}

impl Slot {
    /// The count this slot is part of.
    pub(crate) fn slots(&self) -> &Slots {
        &self.slots
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("mqws_ws_connections").decrement(1.0);
    }
}
