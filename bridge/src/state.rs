//! State shared by the HTTP handlers and every connection task.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use mqws_broker::{LinkHealth, Publisher};
use mqws_config::WsConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fanout::Hub;
use crate::log::index::Index;
use crate::log::LogStore;
use crate::session::Sessions;

/// Everything a connection needs, shared behind an `Arc`.
#[derive(Debug)]
pub struct Shared {
    /// WebSocket limits and timings.
    pub ws: WsConfig,
    /// Largest payload a browser may publish (the broker's own limit).
    pub max_publish_bytes: usize,
    /// Filter index and dispatch.
    pub hub: Arc<Hub>,
    /// Browser publishes towards the broker.
    pub publisher: Publisher,
    /// The log's epoch.
    pub epoch: String,
    /// The log, for replays and queries.
    pub store: LogStore,
    /// The log's in-memory index.
    pub index: Arc<parking_lot::RwLock<Index>>,
    /// Server-held sessions.
    pub sessions: Arc<Sessions>,
    /// Largest `history` page (and `last` answer).
    pub max_history: usize,
    /// `http.allowed_origins`.
    pub allowed_origins: Vec<String>,
    /// Turns `hello.token` into what the client may do.
    pub auth: crate::auth::Authenticator,
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// False while the log cannot be written.
    pub log_healthy: Arc<AtomicBool>,
    /// Whether the broker link runs.
    pub link: LinkHealth,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// WebSocket connection count and ids.
    pub slots: Slots,
}

/// Counts WebSocket connections against `ws.max_connections` and numbers them.
#[derive(Debug, Default)]
pub struct Slots {
    open: AtomicUsize,
    next_id: AtomicU64,
}

impl Shared {
    /// True when `/readyz` should say 200.
    pub fn ready(&self) -> bool {
        !self.shutdown.is_cancelled()
            && self.link.is_up()
            && self.log_healthy.load(Ordering::Relaxed)
    }

    /// Takes a connection slot, or `None` at `ws.max_connections`.
    pub fn try_connect(self: &Arc<Self>) -> Option<Slot> {
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
pub struct Slot {
    shared: Arc<Shared>,
    /// Connection id (unique in this process).
    pub id: u64,
}

impl Slot {
    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.slots.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("mqws_ws_connections").decrement(1.0);
    }
}
