//! State shared by the HTTP handlers and every connection task.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use mqws_broker::{LinkHealth, Publisher};
use mqws_config::WsConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fanout::{Budget, Hub, Tail};
use crate::session::Sessions;
use crate::storage::Storage;

/// Everything a connection needs, shared behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Shared {
    /// WebSocket limits and timings.
    pub(crate) ws: Arc<WsConfig>,
    /// Largest payload a browser may publish (the broker's own limit).
    pub(crate) max_publish_bytes: usize,
    /// Filter index and dispatch.
    pub(crate) hub: Arc<Hub>,
    /// The most recent logged messages, for catch-up without the log.
    pub(crate) tail: Arc<Tail>,
    /// The bound on all outbound queues together.
    pub(crate) budget: Arc<Budget>,
    /// How payloads are carried in `message` frames (`bridge.encodings`).
    pub(crate) encodings: Arc<crate::protocol::payload::Encodings>,
    /// Browser publishes towards the broker.
    pub(crate) publisher: Publisher,
    /// The log's epoch.
    pub(crate) epoch: String,
    /// The log, for replays and queries.
    pub(crate) storage: Storage,
    /// Server-held sessions.
    pub(crate) sessions: Arc<Sessions>,
    /// Largest `history` page (and `last` answer).
    pub(crate) max_history: usize,
    /// `http.allowed_origins`.
    pub(crate) allowed_origins: Vec<String>,
    /// `http.static_dir`, served under `/app/`.
    pub(crate) static_dir: Option<std::path::PathBuf>,
    /// Turns `hello.token` into what the client may do.
    pub(crate) auth: crate::auth::Authenticator,
    /// Cancelled when shutdown starts.
    pub(crate) shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// False while the log cannot be written.
    pub(crate) log_healthy: Arc<AtomicBool>,
    /// Whether the broker link runs.
    pub(crate) link: LinkHealth,
    /// Renders `/metrics`.
    pub(crate) prometheus: PrometheusHandle,
    /// WebSocket connection count and ids.
    pub(crate) slots: Slots,
}

/// Counts WebSocket connections and SSE streams against `ws.max_connections` and numbers them.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    open: AtomicUsize,
    sse: AtomicUsize,
    next_id: AtomicU64,
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

    /// A fresh connection id for a connection that holds no slot (MQTT subscribers the proxy
    /// serves, counted against `broker.max_connections` instead).
    pub(crate) fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// An SSE stream ended (before its slot is dropped).
    pub(crate) fn sse_closed(&self) {
        self.sse.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// What the stream core needs, for opening a stream or making a catch-up.
    pub(crate) fn stream(&self) -> crate::subscription::Core<'_> {
        crate::subscription::Core {
            hub: &self.hub,
            tail: &self.tail,
            log: &self.storage.log,
            epoch: &self.epoch,
            encodings: &self.encodings,
            slow_consumer_timeout: self.ws.slow_consumer_timeout,
        }
    }

    /// True when `/readyz` should say 200.
    pub(crate) fn ready(&self) -> bool {
        !self.shutdown.is_cancelled()
            && self.link.is_up()
            && self.log_healthy.load(Ordering::Relaxed)
    }

    /// Takes a connection slot, or `None` at `ws.max_connections`.
    pub(crate) fn try_connect(self: &Arc<Self>) -> Option<Slot> {
        let mut n = self.slots.open.load(Ordering::Relaxed);
        loop {
            if n >= self.ws.max_connections {
                return None;
            }
            match self.slots.open.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => n = actual,
            }
        }
        metrics::gauge!("mqws_ws_connections").increment(1.0);
        Some(Slot {
            shared: self.clone(),
            id: self.slots.next_id.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// One connection's place in the count; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
    /// Connection id (unique in this process).
    pub(crate) id: u64,
}

impl Slot {
    /// The shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.slots.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("mqws_ws_connections").decrement(1.0);
    }
}
