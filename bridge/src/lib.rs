//! mqws: an MQTT ⇄ WebSocket bridge with a durable, resumable log.
//!
//! [`run`] wires the parts: the embedded broker (`mqws-broker`), storage (`storage`, the
//! bottom layer), ingest (`ingest`: broker → log → tail), fan-out (`fanout`), catch-up
//! (`catchup`), and the HTTP/WebSocket server (`http`, `ws`). Only [`run`] and its
//! arguments, [`BridgeError`], the operator tools behind `mqws sub`/`pub`/`inspect`
//! ([`tools`]), the decoders the fuzz targets exercise ([`fuzzing`]) and the storage timings
//! of `benches/` ([`benching`]) are public.
//! `ARCHITECTURE.md` at the repository root is the map.

mod admit;
mod auth;
pub mod benching;
mod catchup;
mod error;
mod fanout;
mod follower;
pub mod fuzzing;
mod http;
mod ingest;
pub mod logging;
mod metrics;
mod protocol;
mod queries;
mod retained_store;
mod retention;
mod served;
mod session;
mod state;
mod storage;
mod subscription;
pub mod testkit;
pub mod tools;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mqws_config::Config;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use auth::{AuthSetupError, GrantError};
pub use error::BridgeError;
pub use storage::StorageError;

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
    metrics::configured(&config);
    let authenticator = auth::Authenticator::from_config(&config.auth)?;
    let http_addr = listeners
        .http
        .local_addr()
        .map_err(|source| BridgeError::Io {
            context: "reading the HTTP listener address",
            source,
        })?;
    let opened = open_storage(&config).await?;
    warn_open_origins(&config.http.allowed_origins);
    let head = opened.storage.log.head();
    let epoch = opened.storage.log.epoch().to_owned();
    let stop = CancellationToken::new();
    let (link, inbound) = start_broker(&config, listeners.mqtt, &opened.restore, &stop).await?;
    let mqtt_addr = link.mqtt_addr;
    let mqtt_front = link.front.clone();
    let served_slot = link.served.clone();
    let link_health = link.health();
    let mqtt_closed = link.connections_closed();
    tokio::spawn(retained_store::run(
        opened.storage.clone(),
        link.retained,
        stop.clone(),
    ));
    let broker = (&link.publisher, &mqtt_front);
    let (pipeline, ingest_done) = start_pipeline(&config, opened, head, inbound, broker, &stop)?;
    let meter = http::status::Meter::new(pipeline.head);
    let shared = shared_state(
        &config,
        pipeline,
        (link.publisher, link_health),
        epoch.clone(),
        authenticator,
        prometheus,
        &stop,
    );
    served_slot.install(Arc::new(served::Served::new(
        shared.core.clone(),
        config.bridge.filters.clone(),
    )));
    let handlers = (mqtt_front, meter);
    let server = serve_http(&config, listeners.http, shared.clone(), handlers, &stop)?;

    on_ready(&Ready {
        http: http_addr,
        mqtt: mqtt_addr,
        epoch,
    });
    info!(http = %http_addr, mqtt = %mqtt_addr, "mqws ready");

    shutdown.await;
    info!("shutting down");
    stop.cancel();
    let (deadline, tracker) = (config.http.shutdown_timeout, &shared.edge.tracker);
    shut_down(deadline, tracker, ingest_done, mqtt_closed, server).await;
    info!("shutdown complete");
    Ok(())
}

/// Warns about the `http.allowed_origins` entries that let more pages in than an operator may
/// expect (`*` and `null`): they are allowed, but should be a choice.
fn warn_open_origins(origins: &[String]) {
    for o in origins {
        match o.as_str() {
            "*" => warn!("http.allowed_origins has \"*\": pages on any site may open /ws with their visitors' browsers"),
            "null" => warn!("http.allowed_origins has \"null\": file:// pages (and sandboxed frames) may open /ws"),
            _ => {}
        }
    }
}

/// What MQTT clients published, handed from the broker to ingest, which logs it.
type Inbound = mpsc::Receiver<mqws_broker::Ingress>;

/// Starts the embedded broker on `listener` with the retained values the log kept
/// (`restore`), and the bounded queue through which it hands the bridge what MQTT clients
/// publish (returned beside the broker's link).
async fn start_broker(
    config: &Config,
    listener: TcpListener,
    restore: &[storage::RetainedValue],
    stop: &CancellationToken,
) -> Result<(mqws_broker::BrokerLink, Inbound), BridgeError> {
    let (ingress, inbound) = mqws_broker::ingress(
        config.bridge.inbound_queue,
        config.bridge.inbound_bytes.as_u64(),
        config.bridge.filters.clone(),
    );
    let link = mqws_broker::embedded::start(
        &config.broker,
        &config.bridge,
        listener,
        retained_store::restore(restore),
        ingress,
        stop.clone(),
    )
    .await?;
    Ok((link, inbound))
}

/// The parts start-up builds around the log that the drivers and the HTTP edge share
/// ([`state::CoreCtx`], [`state::Edge`]).
struct Pipeline {
    storage: storage::Storage,
    sessions: Arc<session::Sessions>,
    hub: Arc<fanout::Hub>,
    tail: Arc<fanout::Tail>,
    budget: Arc<fanout::Budget>,
    encodings: Arc<protocol::payload::Encodings>,
    /// False while the log cannot be written.
    log_healthy: Arc<AtomicBool>,
    /// The log's head when start-up opened it.
    head: u64,
}

/// Starts what carries messages from the broker to the clients: the fan-out (its hub holding
/// the restored retained values), the log follower when the log is shared, the fan-out
/// thread, ingest (from `inbound`) and retention. Returns the parts the HTTP side shares and
/// what resolves once ingest is done.
fn start_pipeline(
    config: &Config,
    opened: Opened,
    head: u64,
    inbound: Inbound,
    broker: (&mqws_broker::Publisher, &mqws_broker::MqttFront),
    stop: &CancellationToken,
) -> Result<(Pipeline, oneshot::Receiver<()>), BridgeError> {
    let Opened {
        storage,
        restore,
        sessions,
    } = opened;
    let retained_index = fanout::retained::Retained::new(
        retained_store::records(restore, storage::now_ms()),
        config.broker.max_retained,
    );
    let hub = Arc::new(fanout::Hub::with_retained(head, retained_index));
    let tail = Arc::new(
        fanout::Tail::new(
            head,
            usize::try_from(config.ws.tail_bytes.as_u64()).unwrap_or(usize::MAX),
        )
        .encoding_for(hub.frame_readers()),
    );
    let budget = Arc::new(fanout::Budget::new(
        usize::try_from(config.ws.max_total_pending_bytes.as_u64()).unwrap_or(usize::MAX),
    ));
    let log_healthy = Arc::new(AtomicBool::new(true));
    let encodings = Arc::new(protocol::payload::Encodings::new(&config.bridge.encodings));
    let followed = spawn_follower(&storage, &hub, &tail, &encodings, broker, stop)?;
    fanout::dispatch::spawn(hub.clone(), tail.clone()).map_err(|source| BridgeError::Spawn {
        what: "the fan-out thread",
        source,
    })?;
    let ingest_done = ingest::spawn(
        ingest::Parts {
            storage: storage.clone(),
            inbound,
            tail: tail.clone(),
            max_batch: config.log.max_batch_messages,
            stop: stop.clone(),
            healthy: log_healthy.clone(),
            encodings: encodings.clone(),
            followed,
        },
        tokio::runtime::Handle::current(),
    )?;

    tokio::spawn(retention::run(
        storage.clone(),
        sessions.clone(),
        retention::limits(&config.log),
        config.log.retention_interval,
        stop.clone(),
    ));
    let pipeline = Pipeline {
        storage,
        sessions,
        hub,
        tail,
        budget,
        encodings,
        log_healthy,
        head,
    };
    Ok((pipeline, ingest_done))
}

/// Starts the log follower when the log is shared (other nodes append to it too): it feeds
/// the tail and the broker what this node did not log itself. Returns whether it runs.
fn spawn_follower(
    storage: &storage::Storage,
    hub: &fanout::Hub,
    tail: &Arc<fanout::Tail>,
    encodings: &Arc<protocol::payload::Encodings>,
    (publisher, front): (&mqws_broker::Publisher, &mqws_broker::MqttFront),
    stop: &CancellationToken,
) -> Result<bool, BridgeError> {
    let Some(feed) = storage.log.feed(hub.dispatched()) else {
        return Ok(false);
    };
    let (tail, encodings) = (tail.clone(), encodings.clone());
    let front = front.clone();
    follower::spawn(feed, tail, encodings, publisher, front, stop.clone()).map_err(|source| {
        BridgeError::Spawn {
            what: "the log follower thread",
            source,
        }
    })?;
    Ok(true)
}

/// The state every HTTP handler and connection shares: the stream core's context (the
/// `pipeline` start-up built, the log's `epoch`, the limits of `config`) and the HTTP edge's
/// (the broker's publisher and health, `link`; who may connect, `auth`; the metrics renderer).
fn shared_state(
    config: &Config,
    pipeline: Pipeline,
    (publisher, link): (mqws_broker::Publisher, mqws_broker::LinkHealth),
    epoch: String,
    auth: auth::Authenticator,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    stop: &CancellationToken,
) -> state::Shared {
    let core = state::CoreCtx {
        ws: Arc::new(config.ws.clone()),
        hub: pipeline.hub,
        tail: pipeline.tail,
        budget: pipeline.budget,
        encodings: pipeline.encodings,
        epoch,
        storage: pipeline.storage,
        sessions: pipeline.sessions,
        max_history: config.session.max_history,
        ids: state::ConnectionIds::default(),
    };
    let edge = state::Edge {
        auth,
        allowed_origins: config.http.allowed_origins.clone(),
        static_dir: config.http.static_dir.clone(),
        slots: Arc::new(state::Slots::default()),
        shutdown: stop.clone(),
        tracker: tokio_util::task::TaskTracker::new(),
        log_healthy: pipeline.log_healthy,
        link,
        prometheus,
        publisher,
        max_publish_bytes: usize::try_from(config.broker.max_payload_size.as_u64())
            .unwrap_or(usize::MAX),
    };
    state::Shared {
        core: Arc::new(core),
        edge: Arc::new(edge),
    }
}

/// Starts serving HTTP (and WebSocket, SSE, `/mqtt`) on `listener`, over TLS when configured;
/// `/mqtt` reaches the broker through `mqtt_front`, and `/api/status` owns `meter`.
fn serve_http(
    config: &Config,
    listener: tokio::net::TcpListener,
    shared: state::Shared,
    (mqtt_front, meter): (mqws_broker::MqttFront, http::status::Meter),
    stop: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BridgeError> {
    let tls = match &config.http.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            mqws_broker::tls::server_config(&t.cert, &t.key, &[b"http/1.1"])
                .map_err(|e| BridgeError::Tls(e.to_string()))?,
        )),
        None => None,
    };
    let limits = http::accept::Limits {
        max_connections: config.http.max_connections,
        handshake_timeout: config.http.handshake_timeout,
        shutdown_timeout: config.http.shutdown_timeout,
    };
    let mqtt_ws = Arc::new(http::mqtt_ws::MqttWs {
        front: mqtt_front,
        allowed_origins: config.http.allowed_origins.clone(),
        // One MQTT packet with the largest payload, its topic and properties.
        max_message: usize::try_from(config.broker.max_payload_size.as_u64())
            .unwrap_or(usize::MAX)
            .saturating_add(128 * 1024),
        shutdown: stop.clone(),
        tracker: shared.edge.tracker.clone(),
    });
    let handlers = http::Handlers {
        mqtt: mqtt_ws,
        meter,
        sources: http::publish::Sources::new(
            config.ws.publish_rate,
            config.ws.publish_burst,
            config.http.publish_sources,
        ),
    };
    Ok(tokio::spawn(http::accept::serve(
        listener,
        http::router(shared, handlers),
        tls,
        limits,
        stop.clone(),
    )))
}

/// After `stop` was cancelled: waits, each for at most `deadline`, for the connections, ingest
/// (what was read is made durable), the MQTT connections (they pass it on and let the
/// acknowledgements out) and the HTTP server.
async fn shut_down(
    deadline: std::time::Duration,
    tracker: &tokio_util::task::TaskTracker,
    ingest_done: impl Future,
    mqtt_closed: impl Future<Output = ()>,
    server: tokio::task::JoinHandle<()>,
) {
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            left = tracker.len(),
            "connections still open at the shutdown deadline"
        );
    }
    if tokio::time::timeout(deadline, ingest_done).await.is_err() {
        warn!("ingest did not finish in time");
    }
    if tokio::time::timeout(deadline, mqtt_closed).await.is_err() {
        warn!("MQTT connections still open at the shutdown deadline");
    }
    match tokio::time::timeout(deadline, server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "http server task failed"),
        Err(_) => warn!("http server did not stop in time"),
    }
}

/// What start-up opens before anything serves: the storage, the retained values to restore,
/// the sessions.
struct Opened {
    storage: storage::Storage,
    restore: Vec<storage::RetainedValue>,
    sessions: Arc<session::Sessions>,
}

/// Opens the log (embedded, or the cluster's on NATS JetStream), reads the retained values and
/// opens the sessions, on blocking threads.
async fn open_storage(config: &Config) -> Result<Opened, BridgeError> {
    let dir = config.log.dir.clone();
    let (cache_bytes, sync) = (config.log.cache_capacity.as_u64(), config.log.sync);
    let max_retained = config.broker.max_retained;
    let min_free_bytes = config.log.min_free_disk.as_u64();
    let cluster = cluster_options(config);
    // In cluster mode the local database holds no log, so it needs no journal.
    let journal_bytes = match cluster {
        Some(_) => 0,
        None => config.log.journal_bytes.as_u64(),
    };
    let rt = tokio::runtime::Handle::current();
    let (storage, restore) = tokio::task::spawn_blocking(move || {
        let opts = storage::Options {
            dir: &dir,
            cache_bytes,
            sync,
            max_retained,
            min_free_bytes,
            journal_bytes,
        };
        let storage = match &cluster {
            Some(c) => storage::Storage::open_cluster(&opts, c, rt)?,
            None => storage::Storage::open(&opts)?,
        };
        let restore = retained_store::load(&storage)?;
        Ok::<_, storage::StorageError>((storage, restore))
    })
    .await
    .map_err(|e| BridgeError::Task {
        what: "opening the storage",
        detail: e.to_string(),
    })??;
    let stats = storage.log.stats();
    info!(
        dir = %config.log.dir.display(), epoch = %storage.log.epoch(), head = storage.log.head(),
        messages = stats.messages, topics = stats.topics, "log open"
    );
    let (store, ttl, max) = (
        storage.sessions.clone(),
        config.session.ttl,
        config.session.max,
    );
    let sessions = tokio::task::spawn_blocking(move || session::Sessions::open(store, ttl, max))
        .await
        .map_err(|e| BridgeError::Task {
            what: "opening the sessions",
            detail: e.to_string(),
        })??;
    Ok(Opened {
        storage,
        restore,
        sessions: Arc::new(sessions),
    })
}

/// The shared log's settings when `log.backend` is `jetstream`.
fn cluster_options(config: &Config) -> Option<storage::ClusterOptions> {
    (config.log.backend == mqws_config::LogBackend::Jetstream).then(|| storage::ClusterOptions {
        urls: config.cluster.nats.urls.clone(),
        stream: config.cluster.nats.stream.clone(),
        replicas: config.cluster.nats.replicas,
        connect_timeout: config.cluster.nats.connect_timeout,
        read_ahead: usize::try_from(config.cluster.nats.read_ahead.as_u64()).unwrap_or(usize::MAX),
        max_readers: config.cluster.nats.max_readers,
        max_age: config.log.max_age,
        max_bytes: config.log.max_bytes.as_u64(),
        max_messages: config.log.max_messages,
        max_payload: usize::try_from(config.broker.max_payload_size.as_u64()).unwrap_or(usize::MAX),
        session_ttl: config.session.ttl,
        session_max: config.session.max,
        mqtt_session_expiry: config.broker.max_session_expiry
            + std::time::Duration::from_secs(3600),
    })
}
