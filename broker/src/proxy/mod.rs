//! One public MQTT port for both protocol versions, with logins and TLS.
//!
//! rumqttd serves MQTT 3.1.1 and 5.0 on separate listeners and binds them itself. mqws owns the
//! public listener(s) instead: it reads the whole CONNECT, refuses it with a proper CONNACK when
//! the client id is reserved for the bridge or the login is wrong (rumqttd would just drop the
//! connection), then splices the connection to rumqttd's internal v4 or v5 listener on
//! loopback. This also lets the public port be 0 in tests, terminates TLS (`broker.tls`), sets
//! TCP_NODELAY on the client's socket (rumqttd never does), and watches the client's bytes for
//! retained PUBLISHes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::connect::{self, Parsed};
use crate::downstream::{Control, Downstream};
use crate::link::{IngressSender, RetainedWrite};
use crate::observe::Observer;
use crate::pending::{Pending, PendingGuard};
use crate::qos2::Qos2Ids;
use crate::subscribe::{FilterLimits, Subscriptions};
use crate::users::Users;

mod held;

use crate::wills::Wills;
use held::{hold, log_will, release, Acks, Held, Upstream};

/// Where to splice each protocol version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    pub(crate) v4: SocketAddr,
    pub(crate) v5: SocketAddr,
}

/// Limits of the public listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) connect_timeout: Duration,
    /// Largest retained body the observer buffers (the broker's own packet limit).
    pub(crate) max_packet: usize,
}

/// Where the proxy sends what it sees: messages for the log, retained values for their store.
/// Both answer once durable, and the bytes behind them wait for that answer.
#[derive(Debug, Clone)]
pub(crate) struct Sinks {
    pub(crate) retained: mpsc::Sender<RetainedWrite>,
    pub(crate) ingress: IngressSender,
    /// QoS 2 PUBLISHes logged and not yet released, so retransmissions are logged once.
    pub(crate) qos2: Arc<Qos2Ids>,
    /// Bounds on SUBSCRIBE filters.
    pub(crate) filters: FilterLimits,
    /// Wills waiting out their delay.
    pub(crate) wills: Arc<Wills>,
}

/// Who may connect.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// Logins, when required.
    pub(crate) users: Users,
    /// Client ids starting with this belong to the bridge.
    pub(crate) reserved_prefix: String,
}

/// Accepts MQTT clients (over TLS when `tls` is set) until `shutdown` is cancelled, splicing
/// each to its rumqttd listener. `permits` is shared by the plain and TLS listeners.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    targets: Targets,
    limits: Limits,
    permits: Arc<Semaphore>,
    pending: Arc<Pending>,
    gate: Gate,
    connections: tokio_util::task::TaskTracker,
    sinks: Sinks,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                warn!(error = %e, "mqtt accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Before a connection slot is taken: half-open floods are cut at the source.
        let waiting = match pending.enter(peer.ip()) {
            Ok(w) => w,
            Err(limit) => {
                refused(limit);
                debug!(%peer, limit, "mqtt connection refused: too many without CONNECT");
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("mqws_mqtt_refused_total", "reason" => "max_connections")
                .increment(1);
            warn!(%peer, limit = limits.max_connections, "mqtt connection refused: limit reached");
            continue;
        };
        let span = tracing::info_span!(
            "mqtt",
            %peer,
            tls = tls.is_some(),
            client_id = tracing::field::Empty
        );
        let (sinks, gate, tls) = (sinks.clone(), gate.clone(), tls.clone());
        let stop = shutdown.child_token();
        connections.spawn(
            async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                let ended = match tls {
                    None => splice(stream, targets, limits, &gate, sinks, waiting, stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.connect_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => {
                                splice(s, targets, limits, &gate, sinks, waiting, stop).await
                            }
                            Ok(Err(e)) => Err(format!("tls handshake: {e}")),
                            Err(_) => Err("tls handshake timed out".to_owned()),
                        }
                    }
                };
                if let Err(why) = ended {
                    debug!(%why, "mqtt connection ended");
                }
            }
            .instrument(span),
        );
    }
    info!("mqtt listener stopped");
}

/// Chunks a connection may have waiting for durability (each at most [`READ_BUF`] bytes), so
/// a publisher can have many PUBLISHes in flight while its memory stays bounded.
const PIPELINE: usize = 64;
/// How long the broker→client side may finish after the other ended (acknowledgements still
/// reach a client that stopped sending).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long what a client sent may wait for the log after the client is gone, and still be
/// passed to rumqttd (for its MQTT subscribers) once durable.
const STRAND_GRACE: Duration = Duration::from_secs(60);
/// Bytes read from a socket at a time.
const READ_BUF: usize = 16 * 1024;
/// Packets the client→broker side may queue for the other side (PINGRESPs, SUBACKs).
const CONTROL_QUEUE: usize = 16;

fn refused(reason: &'static str) {
    metrics::counter!("mqws_mqtt_refused_total", "reason" => reason).increment(1);
}

async fn splice<S>(
    client: S,
    targets: Targets,
    limits: Limits,
    gate: &Gate,
    sinks: Sinks,
    waiting: PendingGuard,
    shutdown: CancellationToken,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let mut head = Vec::with_capacity(256);
    let connect = tokio::time::timeout(limits.connect_timeout, async {
        let mut chunk = [0u8; 1024];
        loop {
            match connect::parse(&head) {
                Parsed::Incomplete => {}
                Parsed::Connect(c, _) => return Ok(c),
                Parsed::Reject(why) => return Err(why.to_owned()),
            }
            let n = client_rx
                .read(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before CONNECT".to_owned());
            }
            head.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let connect = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => {
            refused("protocol");
            return Err(why);
        }
        Err(_) => {
            refused("connect_timeout");
            return Err("no CONNECT within the connect timeout".to_owned());
        }
    };
    drop(waiting);
    let started = tokio::time::Instant::now();
    tracing::Span::current().record("client_id", connect.client_id.as_str());
    if connect.client_id.starts_with(&gate.reserved_prefix) {
        refused("client_id");
        warn!(client_id = %connect.client_id, "refused a client id reserved for the bridge");
        let _ = client_tx
            .write_all(connect::refusal(connect.level, false))
            .await;
        return Err("reserved client id".to_owned());
    }
    if gate.users.enabled() {
        let ok = match (&connect.username, &connect.password) {
            (Some(u), Some(p)) => gate.users.check(u, p).await,
            _ => false,
        };
        if !ok {
            refused("auth");
            info!(username = ?connect.username, client_id = %connect.client_id, "mqtt login refused");
            let _ = client_tx
                .write_all(connect::refusal(connect.level, true))
                .await;
            return Err("login refused".to_owned());
        }
    }
    // rumqttd refuses keep alive 0 (MQTT allows it), and would drop a client whose bytes the
    // proxy holds while the log catches up: it is given the longest keep alive, and the proxy
    // enforces the client's own (1.5 times it without a packet, as MQTT says).
    let at = connect.keep_alive_at;
    head[at..at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
    // rumqttd publishes the will to MQTT subscribers (with its MQTT 5 properties and delay)
    // when the connection ends without DISCONNECT; the proxy logs it then, so it also reaches
    // the log and WebSocket clients, and keeps a retained will.
    let will = connect.will.clone();
    let disconnected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let idle_limit = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let v5 = connect.level == 5;
    if connect.clean {
        sinks.qos2.clear(&connect.client_id);
    }
    sinks.wills.connected(&connect.client_id, connect.clean);
    let client_id = connect.client_id.clone();
    let target = if v5 { targets.v5 } else { targets.v4 };
    let upstream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("internal listener {target}: {e}"))?;
    upstream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut broker_rx, mut broker_tx) = upstream.into_split();
    // Packets the proxy sends the client itself go through the broker→client side, which puts
    // them between rumqttd's packets.
    let (control_tx, mut control_rx) = mpsc::channel::<Control>(CONTROL_QUEUE);
    let acks = Acks::default();
    let down = async {
        let mut machine = Downstream::new(v5);
        let mut buf = vec![0u8; READ_BUF];
        let mut out = Vec::with_capacity(READ_BUF);
        loop {
            // Biased: a SUBACK rewrite is queued before its SUBSCRIBE reaches rumqttd, so it
            // is taken before rumqttd's answer can be read.
            tokio::select! {
                biased;
                Some(c) = control_rx.recv() => machine.control(c, &mut out),
                n = broker_rx.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        if v5 && shutdown.is_cancelled() {
                            // Server shutting down.
                            client_tx.write_all(&[0xe0, 2, 0x8B, 0]).await?;
                        }
                        client_tx.shutdown().await?;
                        return Ok::<(), std::io::Error>(());
                    }
                    // rumqttd never sets TCP_NODELAY, so its next write waits (Nagle) until
                    // we acknowledge this one; acknowledging at once keeps that wait at
                    // loopback round-trip time instead of the delayed-ACK timer.
                    let _ = socket2::SockRef::from(broker_rx.as_ref()).set_tcp_quickack(true);
                    machine.feed(&buf[..n], &mut out);
                    acks.sent.store(machine.acks(), std::sync::atomic::Ordering::Release);
                    acks.publishes_out.store(machine.publishes(), std::sync::atomic::Ordering::Relaxed);
                }
            }
            if !out.is_empty() {
                client_tx.write_all(&out).await?;
                out.clear();
            }
            if machine.done() {
                client_tx.shutdown().await?;
                return Ok(());
            }
        }
    };
    let unforwarded = std::sync::atomic::AtomicUsize::new(0);
    // Reading stops at shutdown too: what was read is still logged, passed on and answered.
    let stop_reading = shutdown.clone();
    let (held_tx, held_rx) = mpsc::channel(PIPELINE);
    let (up_sinks, up_client, gone) = (sinks.clone(), client_id.clone(), disconnected.clone());
    let filters = sinks.filters.clone();
    let up = async {
        // Dropped when reading ends, so the forwarder ends after what was held before it.
        let held_tx = held_tx;
        let (sinks, client_id) = (up_sinks, up_client);
        let mut up = Upstream {
            observer: Observer::new(
                v5,
                limits.max_packet,
                sinks.ingress.filters(),
                Subscriptions::new(v5, filters),
            ),
            seen: Vec::new(),
            sinks: &sinks,
            client_id: &client_id,
            disconnected: &gone,
            to_client: control_tx,
            unforwarded: &unforwarded,
            acks: &acks,
            v5,
        };
        let send = |h: Held| {
            unforwarded.fetch_add(1, std::sync::atomic::Ordering::Release);
            held_tx.send(h)
        };
        // The CONNECT (and whatever followed it in the same reads) first, then the stream.
        let first = hold(&mut up, &head).await?;
        if send(first).await.is_err() {
            return Ok(());
        }
        let mut buf = vec![0u8; READ_BUF];
        loop {
            // Reading stops when the broker→client side ended (the client is gone); what was
            // read still goes to the broker.
            let read = async {
                tokio::select! {
                    n = client_rx.read(&mut buf) => n,
                    _ = stop_reading.cancelled() => Ok(0),
                }
            };
            let n = match idle_limit {
                None => read.await?,
                Some(limit) => match tokio::time::timeout(limit, read).await {
                    Ok(n) => n?,
                    Err(_) => {
                        info!("closing an MQTT client silent past its keep alive");
                        return Err(std::io::Error::other("keep alive expired"));
                    }
                },
            };
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let h = hold(&mut up, &buf[..n]).await?;
            if send(h).await.is_err() {
                return Ok(());
            }
        }
    };
    let up_and_forward = async {
        let forward = release(held_rx, &mut broker_tx, &unforwarded);
        let (read, written) = tokio::join!(up, forward);
        if shutdown.is_cancelled() {
            acks.settled().await;
        }
        let closed = broker_tx.shutdown().await;
        read.and(written).and(closed)
    };
    // When one direction ends the other gets a grace period: messages the client sent still
    // reach the broker once the log has them (for up to `STRAND_GRACE`, so a publisher that
    // vanished while the log was slow still reaches MQTT subscribers), and acknowledgements
    // still reach the client.
    let (mut down, mut up_and_forward) = (std::pin::pin!(down), std::pin::pin!(up_and_forward));
    let ended = tokio::select! {
        r = &mut down => {
            stop_reading.cancel();
            let _ = tokio::time::timeout(STRAND_GRACE, &mut up_and_forward).await;
            r
        }
        r = &mut up_and_forward => {
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut down).await;
            r
        }
    };
    if let Some(will) = will {
        // A connection mqws closes to stop is not the client going away: no will then.
        if !disconnected.load(std::sync::atomic::Ordering::Relaxed) && !shutdown.is_cancelled() {
            // The connection's slot is freed meanwhile: the wait is a task of its own.
            tokio::spawn(async move {
                let delay = Duration::from_secs(u64::from(will.delay));
                if sinks.wills.wait(&client_id, delay).await {
                    log_will(&sinks, &client_id, will).await;
                } else {
                    debug!(client_id, "will not published: the session resumed in time");
                }
            });
        }
    }
    let ended = ended.map_err(|e| e.to_string());
    info!(
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        publishes_in = acks.publishes_in.load(std::sync::atomic::Ordering::Relaxed),
        publishes_out = acks
            .publishes_out
            .load(std::sync::atomic::Ordering::Relaxed),
        clean = disconnected.load(std::sync::atomic::Ordering::Relaxed),
        ended = ended.as_ref().err().map(String::as_str),
        "mqtt connection closed"
    );
    ended
}
