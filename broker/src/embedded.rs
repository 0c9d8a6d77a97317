//! The embedded rumqttd broker and the bridge's in-process links to it.
//!
//! Threads: rumqttd's router thread, one thread per internal listener (v4, v5, each with its own
//! runtime, started by `Broker::start`), `mqws-link-rx` draining the bridge's link (which
//! subscribes to nothing: messages are logged in the proxy), and one `mqws-link-tx` thread for
//! browser publishes. The link calls block (flume
//! channels, bounded at 1000 in rumqttd), so none of them runs on a tokio worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqws_config::{BridgeConfig, BrokerConfig};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::link::persist_retained;
use crate::link::PublishJob;
use crate::ports::free_loopback_port;
use crate::proxy::{self, Gate, Limits, Proxy, Sinks, Targets};
use crate::users::Users;
use crate::{BrokerError, BrokerLink, IngressSender, Publisher, RetainedUpdate, RetainedWrite};

/// How long start-up waits for rumqttd's internal listeners.
const LISTENER_WAIT: Duration = Duration::from_secs(10);

/// Notifications rumqttd reads per batch for one link before it must be woken again.
const LINK_BATCH: u64 = 1024;

/// Retained updates queued towards the durable retained store.
const RETAINED_QUEUE: usize = 1024;

/// Starts rumqttd, restores the `retained` values mqws kept (rumqttd forgets them on restart),
/// links the bridge to it with one link per bridge filter, and serves MQTT clients on
/// `listener` until `shutdown` is cancelled.
///
/// rumqttd itself cannot be stopped; its threads end with the process.
pub async fn start(
    broker_cfg: &BrokerConfig,
    bridge_cfg: &BridgeConfig,
    listener: TcpListener,
    retained: Vec<RetainedUpdate>,
    ingress: IngressSender,
    shutdown: CancellationToken,
) -> Result<BrokerLink, BrokerError> {
    let mqtt_addr = listener
        .local_addr()
        .map_err(BrokerError::io("reading the MQTT listener address"))?;
    let v4 = free_loopback_port()?;
    let v5 = free_loopback_port()?;
    let users = Users::new(
        broker_cfg
            .users
            .iter()
            .map(|u| (u.username.clone(), u.password_hash.expose().to_owned())),
    );
    let probe = Probe::new(broker_cfg, &users);
    let tls = bind_tls(broker_cfg).await?;
    let (link_tx, rx) = start_rumqttd(broker_cfg, (v4, v5), &users, &probe, retained).await?;
    let link = spawn_link_threads(rx, link_tx, bridge_cfg.outbound_queue)?;
    let publisher = Publisher {
        tx: link.jobs,
        ingress: ingress.clone(),
    };
    let connections = tokio_util::task::TaskTracker::new();
    let served = crate::served::ServedSlot::default();
    let sinks = sinks(
        broker_cfg,
        link.retained_tx,
        ingress,
        v5,
        probe.login,
        served.clone(),
    );
    let proxy = proxy(
        broker_cfg,
        Targets { v4, v5 },
        users,
        sinks,
        connections.clone(),
        shutdown,
    );
    serve(listener, tls, &proxy);
    info!(%mqtt_addr, internal_v4 = %v4, internal_v5 = %v5, "embedded broker up");
    Ok(BrokerLink {
        retained: link.retained_rx,
        publisher,
        mqtt_addr,
        front: crate::MqttFront(proxy),
        served,
        up: link.up,
        connections,
    })
}

/// Binds the MQTT-over-TLS listener (`broker.tls`), when there is one, with its acceptor. It
/// runs before rumqttd starts: a bad certificate or a taken port fails start-up before any
/// broker thread exists.
async fn bind_tls(
    broker_cfg: &BrokerConfig,
) -> Result<Option<(TcpListener, tokio_rustls::TlsAcceptor)>, BrokerError> {
    let Some(t) = &broker_cfg.tls else {
        return Ok(None);
    };
    let config = crate::tls::server_config(&t.cert, &t.key, &[])
        .map_err(|e| BrokerError::Tls(e.to_string()))?;
    let listener = TcpListener::bind(t.listen)
        .await
        .map_err(BrokerError::io("binding broker.tls.listen"))?;
    Ok(Some((listener, tokio_rustls::TlsAcceptor::from(config))))
}

/// Builds rumqttd with its two internal listeners (`v4`, `v5`), links the bridge to it,
/// restores the `retained` values, starts its thread and waits until both listeners answer.
/// Returns the bridge's link.
async fn start_rumqttd(
    broker_cfg: &BrokerConfig,
    (v4, v5): (SocketAddr, SocketAddr),
    users: &Users,
    probe: &Probe,
    retained: Vec<RetainedUpdate>,
) -> Result<(LinkTx, LinkRx), BrokerError> {
    let config = rumqttd_config(broker_cfg, 1, v4, v5, users, probe);

    let broker = Broker::new(config);
    let id = format!(
        "{}-{:016x}",
        broker_cfg.client_id_prefix,
        rand::random::<u64>()
    );
    let (tx, rx) = broker
        .link(&id)
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    // The link subscribes to nothing: messages enter the log in the proxy, before rumqttd sees
    // them. It only injects browser publishes and the restored retained values.
    let link_tx = if retained.is_empty() {
        tx
    } else {
        restore(tx, retained).await?
    };

    let mut broker = broker;
    std::thread::Builder::new()
        .name("mqws-rumqttd".to_owned())
        .spawn(move || {
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::io("spawning the broker thread"))?;
    wait_listening("MQTT 3.1.1", v4, 4, probe).await?;
    wait_listening("MQTT 5", v5, 5, probe).await?;
    Ok((link_tx, rx))
}

/// The threads that drive the bridge's link (its calls block, so no tokio worker makes them)
/// and what the rest of the bridge keeps of them.
struct LinkThreads {
    /// False once either thread found the link broken.
    up: Arc<AtomicBool>,
    /// Retained updates towards the durable store, and where the bridge takes them.
    retained_tx: mpsc::Sender<RetainedWrite>,
    retained_rx: mpsc::Receiver<RetainedWrite>,
    /// Browser publishes for `mqws-link-tx`.
    jobs: mpsc::Sender<PublishJob>,
}

/// Starts `mqws-link-rx` (draining `rx`) and `mqws-link-tx` (publishing through `link_tx`
/// what arrives on a queue of `outbound_queue` jobs).
fn spawn_link_threads(
    rx: LinkRx,
    link_tx: LinkTx,
    outbound_queue: usize,
) -> Result<LinkThreads, BrokerError> {
    let up = Arc::new(AtomicBool::new(true));
    let (retained_tx, retained_rx) = mpsc::channel(RETAINED_QUEUE);
    {
        let up = up.clone();
        std::thread::Builder::new()
            .name("mqws-link-rx".to_owned())
            .spawn(move || drain(rx, up))
            .map_err(BrokerError::io("spawning the link thread"))?;
    }
    let (jobs_tx, jobs) = mpsc::channel(outbound_queue);
    let tx_up = up.clone();
    let tx_retained = retained_tx.clone();
    std::thread::Builder::new()
        .name("mqws-link-tx".to_owned())
        .spawn(move || publish_loop(link_tx, jobs, tx_retained, tx_up))
        .map_err(BrokerError::io("spawning the publish thread"))?;
    Ok(LinkThreads {
        up,
        retained_tx,
        retained_rx,
        jobs: jobs_tx,
    })
}

/// Where what the proxied connections see goes, and the state they share, sized from
/// `broker.*`: retained updates, the log's ingress, QoS 2 ids, filter limits, wills (published
/// through rumqttd's `v5` listener with the probe's `login`) and persistent sessions.
fn sinks(
    broker_cfg: &BrokerConfig,
    retained: mpsc::Sender<RetainedWrite>,
    ingress: IngressSender,
    v5: SocketAddr,
    login: Option<(String, String)>,
    served: crate::served::ServedSlot,
) -> Sinks {
    // One pending-QoS-2 entry per client id, up to twice the connection limit.
    let qos2 = Arc::new(crate::proxy::qos2::Qos2Ids::new(
        broker_cfg.max_connections.saturating_mul(2),
    ));
    let filters = crate::proxy::subscribe::FilterLimits {
        registry: crate::proxy::subscribe::FilterRegistry::new(
            broker_cfg.max_filters,
            broker_cfg.max_new_filters_per_login,
            broker_cfg.max_new_filters_per_source,
        ),
        per_client: broker_cfg.max_filters_per_client,
        max_length: broker_cfg.max_filter_length,
    };
    // One waiting will per client id, up to twice the connection limit.
    let wills = Arc::new(crate::proxy::wills::Wills::new(
        broker_cfg.max_connections.saturating_mul(2),
    ));
    Sinks {
        retained,
        ingress,
        qos2,
        filters,
        wills,
        live: Arc::default(),
        will_broker: Arc::new(crate::proxy::will_publish::WillBroker::new(
            v5,
            format!("{}-", broker_cfg.client_id_prefix),
            login,
        )),
        served,
        sessions: Arc::new(crate::proxy::session::Sessions::new(
            crate::proxy::session::SessionLimits {
                max: broker_cfg.max_sessions,
                max_per_login: broker_cfg.max_sessions_per_login,
                max_expiry_s: u32::try_from(broker_cfg.max_session_expiry.as_secs())
                    .unwrap_or(u32::MAX),
                queue_qos0: broker_cfg.queue_qos0_messages,
            },
        )),
    }
}

/// The proxy every way in shares: the limits and logins of `broker.*`, towards rumqttd's
/// internal listeners (`targets`).
fn proxy(
    broker_cfg: &BrokerConfig,
    targets: Targets,
    users: Users,
    sinks: Sinks,
    connections: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> Proxy {
    let limits = Limits {
        max_connections: broker_cfg.max_connections,
        connect_timeout: broker_cfg.connect_timeout,
        max_packet: usize::try_from(broker_cfg.max_payload_size.as_u64()).unwrap_or(usize::MAX),
    };
    let gate = Gate {
        users,
        reserved_prefix: format!("{}-", broker_cfg.client_id_prefix),
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(broker_cfg.max_connections));
    let pending = crate::proxy::pending::Pending::new(
        broker_cfg.max_pending_connects,
        broker_cfg.max_pending_per_source,
    );
    Proxy {
        targets,
        limits,
        gate,
        sinks,
        permits,
        pending,
        connections,
        shutdown,
    }
}

/// Starts accepting MQTT clients: on the TLS listener first, when there is one, then on
/// `listener`.
fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    proxy: &Proxy,
) {
    if let Some((tls_listener, acceptor)) = tls {
        let addr = tls_listener.local_addr().ok();
        tokio::spawn(proxy::serve(tls_listener, Some(acceptor), proxy.clone()));
        info!(tls_addr = ?addr, "MQTT over TLS listening");
    }
    tokio::spawn(proxy::serve(listener, None, proxy.clone()));
}

/// Publishes the kept retained values through the link. `LinkTx::send` blocks on a bounded
/// channel, so it runs on the blocking pool with a tiny runtime of its own.
async fn restore(tx: LinkTx, values: Vec<RetainedUpdate>) -> Result<LinkTx, BrokerError> {
    let count = values.len();
    let restored = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(BrokerError::io("building the restore runtime"))?;
        let mut tx = tx;
        for v in values {
            let publish = Publish::new(Bytes::from(v.topic), v.payload, true);
            rt.block_on(tx.send(Packet::Publish(publish, None)))
                .map_err(|e| BrokerError::Link(e.to_string()))?;
        }
        Ok::<_, BrokerError>(tx)
    })
    .await
    .map_err(|e| BrokerError::Link(e.to_string()))??;
    info!(count, "restored retained messages into the embedded broker");
    Ok(restored)
}

/// How the readiness probe identifies itself to rumqttd.
struct Probe {
    client_id: String,
    /// A per-process login rumqttd's auth handler accepts, when logins are required.
    login: Option<(String, String)>,
}

impl Probe {
    /// The probe of this process: a client id under the bridge's prefix, and a random login
    /// when `users` requires one.
    fn new(broker_cfg: &BrokerConfig, users: &Users) -> Probe {
        Probe {
            client_id: format!("{}-probe", broker_cfg.client_id_prefix),
            login: users.enabled().then(|| {
                (
                    "mqws-probe".to_owned(),
                    format!("{:032x}", rand::random::<u128>()),
                )
            }),
        }
    }
}

fn rumqttd_config(
    cfg: &BrokerConfig,
    links: usize,
    v4: SocketAddr,
    v5: SocketAddr,
    users: &Users,
    probe: &Probe,
) -> Config {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: u16::try_from(cfg.connect_timeout.as_millis()).unwrap_or(u16::MAX),
        max_payload_size: usize::try_from(cfg.max_payload_size.as_u64()).unwrap_or(usize::MAX),
        max_inflight_count: cfg.max_inflight,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if users.enabled() {
        // Second layer behind the proxy, so the internal loopback listeners are not a way
        // around `broker.users`. Verified logins are cached, so argon2 runs once per login.
        let (users, probe_login) = (users.clone(), probe.login.clone());
        connections.set_auth_handler(move |_client_id: String, user: String, pass: String| {
            let (users, probe_login) = (users.clone(), probe_login.clone());
            async move {
                if probe_login.is_some_and(|(u, p)| u == user && p == pass) {
                    return true;
                }
                users.check(&user, pass.as_bytes()).await
            }
        });
    }
    let server = |name: &str, listen| ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    };
    Config {
        id: 0,
        router: RouterConfig {
            // The public listener enforces the client limit; links and probes need headroom.
            max_connections: cfg.max_connections + links + 16,
            max_outgoing_packet_count: LINK_BATCH,
            max_segment_size: usize::try_from(cfg.segment_size.as_u64()).unwrap_or(usize::MAX),
            max_segment_count: cfg.segment_count,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server("v4", v4))])),
        v5: Some(HashMap::from([("v5".to_owned(), server("v5", v5))])),
        ..Config::default()
    }
}

/// Waits until rumqttd answers a real MQTT CONNECT on `addr` (a bare TCP probe would make it
/// log an error for every probe).
async fn wait_listening(
    what: &'static str,
    addr: SocketAddr,
    level: u8,
    probe: &Probe,
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + LISTENER_WAIT;
    loop {
        if probe_once(addr, level, probe).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BrokerError::ListenerTimeout {
                what,
                addr,
                secs: LISTENER_WAIT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CONNECT, expect a successful CONNACK, DISCONNECT, and let the broker close first.
async fn probe_once(addr: SocketAddr, level: u8, probe: &Probe) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let login = probe.login.as_ref();
    // A fresh client id per attempt: after a failed attempt rumqttd 0.20 can keep a stale
    // entry for the id, and reusing it makes its v5 listener panic on every later connection.
    let client_id = format!("{}-{:08x}", probe.client_id, rand::random::<u32>());
    let packet = crate::proxy::connect::build(
        level,
        &client_id,
        login.map(|(u, _)| u.as_str()),
        login.map(|(_, p)| p.as_bytes()),
        false,
    );
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(&packet).await?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut ack))
        .await
        .map_err(std::io::Error::other)??;
    // CONNACK, with reason/return code 0 (byte 3 in both 3.1.1 and 5).
    if ack[0] != 0x20 || ack[3] != 0 {
        return Err(std::io::Error::other("CONNACK refused or missing"));
    }
    s.write_all(&[0xe0, 0x00]).await?;
    // Dropping the socket now would reset it, which rumqttd logs as an error.
    let mut rest = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

/// Drains the bridge's link (it subscribes to nothing, so this is rumqttd's bookkeeping),
/// waking it when rumqttd pauses it; reports the link down when it fails.
fn drain(mut rx: LinkRx, up: Arc<AtomicBool>) {
    loop {
        match rx.recv() {
            Ok(Some(Notification::Unschedule)) => {
                if let Err(e) = rx.ready() {
                    error!(error = %e, "could not wake the bridge link");
                    break;
                }
            }
            Ok(Some(Notification::Disconnect(..))) => {
                error!("the embedded broker disconnected the bridge link");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                error!(error = %e, "bridge link to the embedded broker failed");
                break;
            }
        }
    }
    up.store(false, Ordering::Relaxed);
}

fn publish_loop(
    mut tx: LinkTx,
    mut jobs: mpsc::Receiver<PublishJob>,
    retained: mpsc::Sender<RetainedWrite>,
    up: Arc<AtomicBool>,
) {
    // `LinkTx::send` is async in name only (it does a blocking channel send); a tiny runtime on
    // this dedicated thread drives it without touching the server's workers.
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "could not build the publish runtime");
            up.store(false, Ordering::Relaxed);
            return;
        }
    };
    while let Some((req, done)) = jobs.blocking_recv() {
        // A retained value is durable before the broker (and so any subscriber) sees it.
        if req.retain {
            let update = RetainedUpdate {
                topic: req.topic.clone(),
                payload: req.payload.clone(),
                qos: req.qos as u8,
                properties: bytes::Bytes::new(),
            };
            if !rt.block_on(persist_retained(&retained, update)) {
                let _ = done.send(Err(BrokerError::Link(
                    "the retained store is unavailable".to_owned(),
                )));
                continue;
            }
        }
        let publish = Publish::new(Bytes::from(req.topic), req.payload, req.retain);
        let result = rt
            .block_on(tx.send(Packet::Publish(publish, None)))
            .map(|_| ())
            .map_err(|e| BrokerError::Link(e.to_string()));
        if result.is_err() {
            up.store(false, Ordering::Relaxed);
        }
        // The requester may have timed out and gone; nothing to do then.
        let _ = done.send(result);
    }
}
