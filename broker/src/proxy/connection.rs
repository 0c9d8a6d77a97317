//! One proxied MQTT connection from CONNECT to close: the handshake, then the two directions
//! side by side, the will of a client that went away, and the connection's last log line.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client_to_broker::{self, release, Acks, Goodbye, Held, Upstream};
use super::deliver::{self, Persist, Request};
use super::downstream::{Control, Downstream, Keep};
use super::observe::Observer;
use super::outflow::{ClientLimits, Counts, Outflow};
use super::pending::PendingGuard;
use super::session::{self, Session};
use super::subscribe::{Owner, Subscriptions};
use super::window::Window;
use super::{broker_to_client, connect, handshake, Proxy, Sinks};

/// Chunks a connection may have waiting for durability (each at most [`super::READ_BUF`]
/// bytes), so a publisher can have many PUBLISHes in flight while its memory stays bounded.
const PIPELINE: usize = 64;
/// How long the broker→client side may finish after the other ended (acknowledgements still
/// reach a client that stopped sending).
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long what a client sent may wait for the log after the client is gone, and still be
/// passed to rumqttd (for its MQTT subscribers) once durable.
const STRAND_GRACE: Duration = Duration::from_secs(60);
/// Packets the client→broker side may queue for the other side (PINGRESPs, SUBACKs).
const CONTROL_QUEUE: usize = 16;

/// Runs one connection over `client` until both directions have ended.
pub(super) async fn run<S>(
    client: S,
    proxy: &Proxy,
    waiting: PendingGuard,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let Entered {
        started,
        connect,
        head,
        presence,
        session,
        present,
        broker: (broker_rx, mut broker_tx),
    } = enter(&mut client_rx, &mut client_tx, proxy, waiting, &shutdown).await?;
    // Packets the proxy sends the client itself go through the broker→client side, which puts
    // them between rumqttd's packets.
    let (control_tx, control_rx) = mpsc::channel::<Control>(CONTROL_QUEUE);
    let origin: std::sync::Arc<str> = std::sync::Arc::from(connect.client_id.as_str());
    let restored = restored_filters(session.as_ref());
    let window = client_window(proxy, &connect);
    let (served_tx, serving) = served(
        proxy,
        &connect,
        &origin,
        &control_tx,
        (session, window.clone()),
    );
    let acks_tx = control_tx.clone();
    let tally = Tally::new();
    // Reading stops at shutdown and at a takeover too: what was read is still logged, passed
    // on and answered.
    let stop_reading = presence.taken.child_token();
    let owed = owed(served_tx.is_some(), window.as_ref());
    let machine = downstream(proxy, &connect, present, (owed.clone(), window), &restored);
    let down = broker_to_client::run(
        broker_rx,
        &mut client_tx,
        control_rx,
        machine,
        &tally.acks,
        (&shutdown, &presence.taken),
    );
    let (held_tx, held_rx) = mpsc::channel(PIPELINE);
    let observer = observer(proxy, &connect, peer, served_tx.is_some(), &restored);
    let up = upstream(
        observer,
        &proxy.sinks,
        &connect,
        origin,
        (control_tx, served_tx),
        &tally,
    );
    let idle_limit = idle_limit(connect.keep_alive);
    let read = client_to_broker::read(client_rx, up, &head, held_tx, idle_limit, &stop_reading);
    let up_and_forward = read_and_forward(
        read,
        held_rx,
        &mut broker_tx,
        acks_tx,
        owed.as_deref(),
        &tally,
        &shutdown,
    );
    let joined = tokio::join!(side_by_side(down, up_and_forward, &stop_reading), serving);
    finish(connect, &proxy.sinks, &tally, joined, started, &shutdown)
}

/// A client the proxy let in, up to its connection to rumqttd.
struct Entered {
    /// When the CONNECT was accepted (for the connection's last log line).
    started: tokio::time::Instant,
    connect: connect::Connect,
    /// What goes to rumqttd first: the CONNECT as the proxy adjusted it, and what followed it.
    head: Vec<u8>,
    /// The connection's place as its client id's live connection.
    presence: super::takeover::Presence,
    /// The proxy's session of the client, and the session present bit its CONNACK carries.
    session: Option<Session>,
    present: Option<bool>,
    /// The connection to rumqttd's internal listener.
    broker: (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    ),
}

/// Takes a client in: its CONNECT (the handshake gives up `waiting` once it came), its place
/// as its client id's live connection, its session, and a connection to rumqttd for it.
async fn enter<R, W>(
    client_rx: &mut R,
    client_tx: &mut W,
    proxy: &Proxy,
    waiting: PendingGuard,
    shutdown: &CancellationToken,
) -> Result<Entered, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let accepted =
        handshake::run(client_rx, client_tx, &proxy.limits, &proxy.gate, waiting).await?;
    let started = tokio::time::Instant::now();
    let connect = accepted.connect;
    let mut head = accepted.head;
    let sinks = &proxy.sinks;
    let v5 = connect.level == 5;
    // Before the session and rumqttd: an older connection of this client id ends first.
    let presence = sinks.live.enter(&connect.client_id, shutdown).await;
    let (session, present) = session_of(proxy, &connect, &mut head, client_tx).await?;
    session_starts(sinks, &connect);
    let broker = open_broker(proxy, v5).await?;
    Ok(Entered {
        started,
        connect,
        head,
        presence,
        session,
        present,
        broker,
    })
}

/// On a served connection, what the proxy keeps of rumqttd's from the client, and the
/// acknowledgements it owes rumqttd for that.
fn owed(serves: bool, window: Option<&Arc<Window>>) -> Option<Arc<super::owed::Owed>> {
    serves.then(|| Arc::new(super::owed::Owed::new(window.cloned())))
}

/// After both directions ended (`joined`: how, and what the served subscriptions sent):
/// counts those PUBLISHes, starts the will's wait when the client went away without
/// DISCONNECT, and writes the connection's last log line. Passes how it ended on.
fn finish(
    connect: connect::Connect,
    sinks: &Sinks,
    tally: &Tally,
    (ended, counts): (std::io::Result<()>, Counts),
    started: tokio::time::Instant,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    tally
        .acks
        .publishes_out
        .fetch_add(counts.sent, Ordering::Relaxed);
    let goodbye = Goodbye::of(tally.goodbye.load(Ordering::Relaxed));
    let clean = goodbye == Goodbye::Disconnect;
    // A connection mqws closes to stop is not the client going away: no will then.
    if let (Some(will), false) = (connect.will, clean || shutdown.is_cancelled()) {
        will_after_delay(sinks.clone(), connect.client_id.clone(), will);
    }
    closed(
        ended.map_err(|e| e.to_string()),
        started,
        &tally.acks,
        clean,
    )
}

/// What both directions of a connection update as it runs: its PUBLISH and acknowledgement
/// counts, how the client said goodbye, and the chunks read and not yet passed to rumqttd.
struct Tally {
    acks: Acks,
    goodbye: AtomicU8,
    unforwarded: AtomicUsize,
}

impl Tally {
    /// Nothing counted yet, and no goodbye: a client that goes now has vanished.
    fn new() -> Tally {
        Tally {
            acks: Acks::default(),
            goodbye: AtomicU8::new(Goodbye::Vanished as u8),
            unforwarded: AtomicUsize::new(0),
        }
    }
}

/// The filters of a resumed `session`, which the connection's subscriptions start with.
fn restored_filters(session: Option<&Session>) -> Vec<String> {
    session
        .map(|s| s.stored.subs.iter().map(|sub| sub.filter.clone()).collect())
        .unwrap_or_default()
}

/// The client's Receive Maximum, counted over the proxy's PUBLISHes and rumqttd's together
/// (MQTT 5, on a connection the proxy serves; see the window).
fn client_window(proxy: &Proxy, connect: &connect::Connect) -> Option<Arc<Window>> {
    (connect.level == 5 && proxy.sinks.served.get().is_some())
        .then(|| Arc::new(Window::new(connect.receive_max)))
}

/// How long the client may stay silent: rumqttd's keep alive is taken over (see the
/// handshake), 1.5 times the client's own; none when the client asked for none.
fn idle_limit(keep_alive: u16) -> Option<Duration> {
    (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500))
}

/// The client→broker side's state: its packet watcher (`observer`), where what it sees goes
/// (the broker→client side and, on a served connection, the served subscriptions), and the
/// connection's `tally`.
fn upstream<'a>(
    observer: Observer,
    sinks: &'a Sinks,
    connect: &'a connect::Connect,
    origin: std::sync::Arc<str>,
    (to_client, served): (mpsc::Sender<Control>, Option<mpsc::Sender<Request>>),
    tally: &'a Tally,
) -> Upstream<'a> {
    Upstream {
        observer,
        seen: Vec::new(),
        sinks,
        client_id: &connect.client_id,
        origin,
        goodbye: &tally.goodbye,
        to_client,
        served,
        unforwarded: &tally.unforwarded,
        acks: &tally.acks,
        last_forward: tokio::time::Instant::now(),
        v5: connect.level == 5,
    }
}

/// The client→broker side: `read` (the client) beside the release of what it read to rumqttd
/// (`broker_tx`) once durable. At shutdown it lets the acknowledgements rumqttd owes reach the
/// client before it closes the connection to rumqttd.
async fn read_and_forward(
    read: impl Future<Output = std::io::Result<()>>,
    held_rx: mpsc::Receiver<Held>,
    broker_tx: &mut tokio::net::tcp::OwnedWriteHalf,
    acks_tx: mpsc::Sender<Control>,
    owed: Option<&super::owed::Owed>,
    tally: &Tally,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let forward = release(held_rx, broker_tx, acks_tx, &tally.unforwarded, owed);
    let (read, written) = tokio::join!(read, forward);
    if shutdown.is_cancelled() {
        tally.acks.settled().await;
    }
    let closed = broker_tx.shutdown().await;
    read.and(written).and(closed)
}

/// The broker→client machine of a connection: the CONNACK's session present bit when the
/// proxy decides it, and on a served connection what it keeps from the client (`owed`) and
/// the client's Receive Maximum shared with the served subscriptions (`window`).
fn downstream(
    proxy: &Proxy,
    connect: &connect::Connect,
    present: Option<bool>,
    (owed, window): (Option<Arc<super::owed::Owed>>, Option<Arc<Window>>),
    restored: &[String],
) -> Downstream {
    let mut machine = Downstream::new(connect.level == 5);
    if let Some(present) = present {
        machine.session_present(present);
    }
    if let Some(owed) = owed {
        machine = machine.with_keep(Keep::new(
            proxy.sinks.ingress.filters(),
            restored.iter().cloned().collect(),
            connect.max_packet,
            owed,
        ));
    }
    if let Some(w) = window {
        machine = machine.with_window(w);
    }
    machine
}

/// The proxy's session of this connection, and what its CONNACK says of it (`None`: the
/// proxy serves nothing here, rumqttd's CONNACK passes unchanged). rumqttd, which holds only
/// the filters the proxy does not serve, keeps its own session of this client id exactly when
/// the proxy keeps one (the clean flag in `head`), from a clean start when the proxy's is new
/// ([`super::forget`]). A refusal's CONNACK is written here.
async fn session_of<W>(
    proxy: &Proxy,
    connect: &connect::Connect,
    head: &mut [u8],
    client_tx: &mut W,
) -> Result<(Option<Session>, Option<bool>), String>
where
    W: AsyncWrite + Unpin,
{
    let Some(topics) = proxy.sinks.served.get() else {
        return Ok((None, None));
    };
    let login = login(proxy, connect);
    let session = match session::open(topics, &proxy.sinks.sessions, connect, login).await {
        Ok(s) => s,
        Err(refused) => {
            let _ = client_tx.write_all(refused.connack(connect.level)).await;
            return Err(format!("session refused: {refused:?}"));
        }
    };
    let present = session.as_ref().is_some_and(|s| s.present);
    let mut keeps = session.is_some() && connect.persistent();
    if keeps && !present {
        let target = proxy.targets.of(connect.level == 5);
        if let Err(e) = super::forget::session(target, connect).await {
            // rumqttd may still hold an old session of the client id: start it clean rather
            // than resume something the client was told is gone.
            warn!(error = %e, "could not clear rumqttd's session of the client id; it gets a clean one");
            keeps = false;
        }
    }
    let at = connect.flags_at();
    head[at] = (head[at] & !0x02) | if keeps { 0 } else { 0x02 };
    Ok((session, Some(present)))
}

/// What a new connection of `connect`'s client id changes for its client id: a clean session
/// forgets its pending QoS 2 ids, and a will waiting out its delay is cancelled.
fn session_starts(sinks: &Sinks, connect: &connect::Connect) {
    if connect.clean {
        sinks.qos2.clear(&connect.client_id);
    }
    if !connect.client_id.is_empty() {
        sinks.wills.connected(&connect.client_id, connect.clean);
    }
}

/// Runs the broker→client side (`down`) and the client→broker side (`up`) together. When one
/// ends the other gets a grace period: messages the client sent still reach the broker once the
/// log has them (for up to `STRAND_GRACE`, so a publisher that vanished while the log was slow
/// still reaches MQTT subscribers), and acknowledgements still reach the client.
async fn side_by_side(
    down: impl Future<Output = std::io::Result<()>>,
    up: impl Future<Output = std::io::Result<()>>,
    stop_reading: &CancellationToken,
) -> std::io::Result<()> {
    let (mut down, mut up) = (std::pin::pin!(down), std::pin::pin!(up));
    tokio::select! {
        r = &mut down => {
            stop_reading.cancel();
            let _ = tokio::time::timeout(STRAND_GRACE, &mut up).await;
            r
        }
        r = &mut up => {
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut down).await;
            r
        }
    }
}

/// A connection to rumqttd's internal listener for the protocol version, with TCP_NODELAY.
async fn open_broker(
    proxy: &Proxy,
    v5: bool,
) -> Result<
    (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    ),
    String,
> {
    let target = proxy.targets.of(v5);
    let upstream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("internal listener {target}: {e}"))?;
    upstream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(upstream.into_split())
}

/// The subscriptions the proxy serves on this connection, when it serves any: the requests'
/// sender and the driver to run beside the two directions (it ends when the requests end or
/// the client side does), which continues `session` when there is one and shares the
/// client's Receive Maximum with rumqttd through `window`.
fn served<'a>(
    proxy: &Proxy,
    connect: &connect::Connect,
    origin: &std::sync::Arc<str>,
    control: &mpsc::Sender<Control>,
    (session, window): (Option<Session>, Option<std::sync::Arc<Window>>),
) -> (
    Option<mpsc::Sender<Request>>,
    impl Future<Output = Counts> + 'a,
) {
    let v5 = connect.level == 5;
    let topics = proxy.sinks.served.get().cloned();
    let session_limits = proxy.sinks.sessions.limits;
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let limits = ClientLimits {
        receive_max: connect.receive_max.max(1),
        max_packet: connect.max_packet,
    };
    let outflow = Outflow::new(v5, origin.clone(), limits);
    let control = control.clone();
    let tx = topics.is_some().then_some(tx);
    let run = async move {
        match topics {
            Some(topics) => {
                let persist = session.map(|s| Persist::new(s, session_limits));
                deliver::run(topics, outflow, rx, (control, window), v5, persist).await
            }
            None => Counts::default(),
        }
    };
    (tx, run)
}

/// The client→broker packet watcher of a connection that sent `connect` from `peer`, whose
/// resumed session serves `restored`.
fn observer(
    proxy: &Proxy,
    connect: &connect::Connect,
    peer: SocketAddr,
    serves: bool,
    restored: &[String],
) -> Observer {
    let v5 = connect.level == 5;
    let topics = if serves {
        proxy.sinks.served.get().cloned()
    } else {
        None
    };
    let mut subscriptions = Subscriptions::new(
        v5,
        proxy.sinks.filters.clone(),
        owner(proxy, connect, peer),
        topics,
    );
    subscriptions.restore(restored);
    // With the stream core running, the subscriptions that want a logged message are served
    // by the proxy unless rumqttd holds a filter for it.
    let observer = Observer::new(
        v5,
        proxy.limits.max_packet,
        proxy.sinks.ingress.filters(),
        subscriptions,
    );
    if proxy.sinks.served.get().is_some() {
        observer.with_bypass()
    } else {
        observer
    }
}

/// The connection's last log line; passes `ended` on.
fn closed(
    ended: Result<(), String>,
    started: tokio::time::Instant,
    acks: &Acks,
    clean: bool,
) -> Result<(), String> {
    info!(
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        publishes_in = acks.publishes_in.load(Ordering::Relaxed),
        publishes_out = acks.publishes_out.load(Ordering::Relaxed),
        clean,
        ended = ended.as_ref().err().map(String::as_str),
        "mqtt connection closed"
    );
    ended
}

/// The connection's checked login, when logins are on: a persistent session belongs to it.
fn login<'a>(proxy: &Proxy, connect: &'a connect::Connect) -> Option<&'a str> {
    connect
        .username
        .as_deref()
        .filter(|_| proxy.gate.users.enabled())
}

/// Whom the filters this connection adds to rumqttd are charged to: its login when logins are
/// on (every client then has a checked one), else its address (a username nobody checked
/// proves nothing).
fn owner(proxy: &Proxy, connect: &connect::Connect, peer: SocketAddr) -> Owner {
    match &connect.username {
        Some(user) if proxy.gate.users.enabled() => Owner::Login(user.clone()),
        _ => Owner::Source(peer.ip()),
    }
}

/// Publishes the will of a connection that ended without DISCONNECT (or asked for it) after
/// its delay, unless the session resumed meanwhile: to the log, then to rumqttd (which never
/// sees the will itself). The connection's slot is freed meanwhile: the wait is a task of its
/// own.
fn will_after_delay(sinks: Sinks, client_id: String, will: connect::Will) {
    let delay = Duration::from_secs(u64::from(will.delay));
    let waited = sinks.wills.wait(&client_id, delay);
    tokio::spawn(async move {
        if waited.await {
            super::will_publish::publish_will(&sinks, &client_id, will).await;
        } else {
            debug!(client_id, "will not published: the session resumed in time");
        }
    });
}
