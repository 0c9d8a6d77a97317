//! mqws: an MQTT ⇄ WebSocket bridge with a durable, resumable log.
//!
//! [`run`] wires the parts: the embedded broker (`mqws-broker`), the durable log and its
//! group-commit writer ([`log`]), the fan-out ([`fanout`]) and the HTTP/WebSocket server
//! ([`http`], [`ws`]). `ARCHITECTURE.md` at the repository root is the map.

pub mod auth;
pub mod error;
pub mod fanout;
pub mod http;
pub mod log;
pub mod metrics;
pub mod protocol;
pub mod replay;
pub mod retained;
pub mod retention;
pub mod server;
pub mod session;
pub mod state;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mqws_config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::BridgeError;

/// The two listeners, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// HTTP and WebSocket.
    pub http: TcpListener,
    /// MQTT 3.1.1 and 5.0.
    pub mqtt: TcpListener,
}

/// What a started server reports once it serves.
#[derive(Debug, Clone)]
pub struct Ready {
    /// HTTP address.
    pub http: SocketAddr,
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// The log's epoch.
    pub epoch: String,
}

/// Runs mqws until `shutdown` resolves, then shuts down gracefully: stop accepting, close every
/// WebSocket with 1001, log what the broker already handed over, flush, return.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), BridgeError> {
    let prometheus = metrics::handle();
    let authenticator = auth::Authenticator::from_config(&config.auth)?;
    let http_addr = listeners
        .http
        .local_addr()
        .map_err(|source| BridgeError::Io {
            context: "reading the HTTP listener address",
            source,
        })?;
    let dir = config.log.dir.clone();
    let (cache, sync) = (config.log.cache_capacity.as_u64(), config.log.sync);
    let (store, index) = tokio::task::spawn_blocking(move || -> Result<_, log::LogError> {
        let store = log::LogStore::open(&dir, cache, sync)?;
        let mut index = log::index::Index::default();
        store.for_each(|r| index.add(&r.topic, r.seq, r.size()))?;
        Ok((store, index))
    })
    .await
    .map_err(|e| BridgeError::Io {
        context: "opening the log",
        source: std::io::Error::other(e),
    })??;
    let head = store.next_seq()? - 1;
    let epoch = store.epoch().to_owned();
    info!(
        dir = %config.log.dir.display(), %epoch, head,
        messages = index.count(), topics = index.topic_count(), "log open"
    );
    let index = Arc::new(parking_lot::RwLock::new(index));
    let sessions = Arc::new(session::Sessions::open(
        &store,
        config.session.ttl,
        config.session.max,
    )?);

    let stop = CancellationToken::new();
    let retained = retained::RetainedStore::open(&store, config.broker.max_retained)?;
    let restore = {
        let r = retained.clone();
        tokio::task::spawn_blocking(move || r.load())
            .await
            .map_err(|e| BridgeError::Io {
                context: "loading retained values",
                source: std::io::Error::other(e),
            })??
    };
    let link = mqws_broker::embedded::start(
        &config.broker,
        &config.bridge,
        listeners.mqtt,
        restore,
        stop.clone(),
    )
    .await?;
    let mqtt_addr = link.mqtt_addr;
    let link_health = link.health();
    tokio::spawn(retained::run(retained, link.retained, stop.clone()));
    let hub = Arc::new(fanout::Hub::new(head));
    let log_healthy = Arc::new(AtomicBool::new(true));
    let writer_done = log::writer::spawn(
        log::writer::WriterParts {
            store: store.clone(),
            inbound: link.inbound,
            hub: hub.clone(),
            index: index.clone(),
            max_batch: config.log.max_batch_messages,
            stop: stop.clone(),
            healthy: log_healthy.clone(),
        },
        tokio::runtime::Handle::current(),
    )?;

    tokio::spawn(retention::run(
        store.clone(),
        index.clone(),
        sessions.clone(),
        retention::Limits::from_config(&config.log),
        config.log.retention_interval,
        stop.clone(),
    ));
    let shared = Arc::new(state::Shared {
        ws: config.ws.clone(),
        max_publish_bytes: usize::try_from(config.broker.max_payload_size.as_u64())
            .unwrap_or(usize::MAX),
        hub,
        publisher: link.publisher,
        epoch: store.epoch().to_owned(),
        store,
        index,
        sessions,
        max_history: config.session.max_history,
        allowed_origins: config.http.allowed_origins.clone(),
        auth: authenticator,
        shutdown: stop.clone(),
        log_healthy,
        link: link_health,
        prometheus,
        tracker: tokio_util::task::TaskTracker::new(),
        slots: state::Slots::default(),
    });
    let tls = match &config.http.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            mqws_broker::tls::server_config(&t.cert, &t.key, &[b"http/1.1"])
                .map_err(|e| BridgeError::Tls(e.to_string()))?,
        )),
        None => None,
    };
    let limits = server::Limits {
        max_connections: config.http.max_connections,
        handshake_timeout: config.http.handshake_timeout,
        shutdown_timeout: config.http.shutdown_timeout,
    };
    let server = tokio::spawn(server::serve(
        listeners.http,
        http::router(shared.clone()),
        tls,
        limits,
        stop.clone(),
    ));

    on_ready(&Ready {
        http: http_addr,
        mqtt: mqtt_addr,
        epoch,
    });
    info!(http = %http_addr, mqtt = %mqtt_addr, "mqws ready");

    shutdown.await;
    info!("shutting down");
    stop.cancel();
    let deadline = config.http.shutdown_timeout;
    shared.tracker.close();
    if tokio::time::timeout(deadline, shared.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            left = shared.tracker.len(),
            "connections still open at the shutdown deadline"
        );
    }
    if tokio::time::timeout(deadline, writer_done).await.is_err() {
        warn!("the log writer did not finish in time");
    }
    match tokio::time::timeout(deadline, server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "http server task failed"),
        Err(_) => warn!("http server did not stop in time"),
    }
    info!("shutdown complete");
    Ok(())
}
