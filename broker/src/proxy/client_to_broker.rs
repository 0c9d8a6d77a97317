//! One proxied connection's client→broker path: reading the client ([`read`]), the chunks
//! read and held until what they complete is durable ([`hold`]), their release to rumqttd in
//! order ([`release`]) and the acknowledgements owed at shutdown ([`Acks`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::connection::DRAIN_GRACE;
use super::deliver::Command;
use super::downstream::Control;
use super::observe::{Observer, Seen};
use super::owed::{ClientAck, Owed};
use super::{refused, Sinks, READ_BUF};
use crate::link::queue_retained;

/// How long rumqttd may hear nothing from a connection the proxy serves before the proxy pings
/// it (well inside the 65,535 s keep alive the handshake gives rumqttd).
const BROKER_PING: Duration = Duration::from_secs(3600);

/// How a client ended its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Goodbye {
    /// Without DISCONNECT (closed, broken, silent, taken over): its will goes.
    Vanished = 0,
    /// With DISCONNECT: no will.
    Disconnect = 1,
    /// With DISCONNECT asking for the will (MQTT 5 reason 0x04).
    WithWill = 2,
}

impl Goodbye {
    /// The goodbye stored as `n`.
    pub(super) fn of(n: u8) -> Goodbye {
        match n {
            1 => Goodbye::Disconnect,
            2 => Goodbye::WithWill,
            _ => Goodbye::Vanished,
        }
    }
}

/// Bytes read from a client, waiting for what they complete to be durable.
pub(super) struct Held {
    pub(super) data: Vec<u8>,
    pub(super) durable: Vec<oneshot::Receiver<()>>,
    /// PUBACKs the proxy owes for PUBLISHes kept from rumqttd, each after the acks rumqttd
    /// owes for the PUBLISHes passed to it before (see [`Seen::Bypassed`]).
    pub(super) acks: Vec<(u64, Vec<u8>)>,
    /// Where in `data` the client's acknowledgements of rumqttd's PUBLISHes start (see
    /// [`Seen::BrokerAck`]).
    pub(super) marks: Vec<(usize, ClientAck)>,
    /// `data` ends at a packet boundary.
    pub(super) boundary: bool,
}

/// One connection's client→broker side while it runs.
pub(super) struct Upstream<'a> {
    pub(super) observer: Observer,
    pub(super) seen: Vec<Seen>,
    pub(super) sinks: &'a Sinks,
    pub(super) client_id: &'a str,
    /// The client id as each logged message's origin carries it (shared, not copied).
    pub(super) origin: std::sync::Arc<str>,
    /// How the client said goodbye ([`Goodbye`] as a number).
    pub(super) goodbye: &'a std::sync::atomic::AtomicU8,
    /// Requests to the broker→client side (packets the proxy answers itself).
    pub(super) to_client: mpsc::Sender<Control>,
    /// Requests to the subscriptions the proxy serves, on a connection it serves them on.
    pub(super) served: Option<mpsc::Sender<super::deliver::Request>>,
    /// Chunks read and not yet written to the broker.
    pub(super) unforwarded: &'a std::sync::atomic::AtomicUsize,
    /// The connection's PUBLISH and acknowledgement counts, updated after each read.
    pub(super) acks: &'a Acks,
    /// When bytes were last passed on to rumqttd (see [`Observer::ping_due`]).
    pub(super) last_forward: tokio::time::Instant,
    pub(super) v5: bool,
}

/// Reads the client until it closes, its keep alive expires or `stop_reading` is cancelled,
/// holding each read ([`hold`]) and queueing it for [`release`]: first `head` (the CONNECT and
/// whatever followed it), then the stream. Ends quietly when the release side is gone.
pub(super) async fn read<R>(
    mut client_rx: R,
    mut up: Upstream<'_>,
    head: &[u8],
    held_tx: mpsc::Sender<Held>,
    idle_limit: Option<Duration>,
    stop_reading: &CancellationToken,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
{
    let unforwarded = up.unforwarded;
    let send = |h: Held| {
        unforwarded.fetch_add(1, Ordering::Release);
        held_tx.send(h)
    };
    let first = hold(&mut up, head).await?;
    if send(first).await.is_err() || up.goodbye.load(Ordering::Relaxed) != 0 {
        return Ok(());
    }
    let mut buf = vec![0u8; READ_BUF];
    loop {
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
            return Ok(());
        }
        let h = hold(&mut up, &buf[..n]).await?;
        if send(h).await.is_err() || up.goodbye.load(Ordering::Relaxed) != 0 {
            return Ok(());
        }
    }
}

/// Watches `data` and holds it until every message it completes is durable: a PUBLISH
/// matching the bridge filters goes to the log, a retained value to its store (both queued
/// here, awaited by the forwarder, so reading goes on meanwhile). The broker
/// cannot act on a PUBLISH (acknowledge or route it) before its last byte, so nothing
/// downstream sees a message before it is durable. A packet that breaks the protocol drops the
/// client before it reaches the broker (bytes of a packet split across reads may already have
/// gone, and the broker drops the rest).
pub(super) async fn hold(up: &mut Upstream<'_>, data: &[u8]) -> std::io::Result<Held> {
    let busy = up.unforwarded.load(Ordering::Acquire) > 0;
    if up.last_forward.elapsed() > BROKER_PING {
        up.observer.ping_due();
    }
    let mut forward = Vec::with_capacity(data.len());
    up.observer.feed(data, busy, &mut up.seen, &mut forward);
    if !forward.is_empty() {
        up.last_forward = tokio::time::Instant::now();
    }
    if let Some(Seen::Violation(why)) = up.seen.iter().find(|s| matches!(s, Seen::Violation(_))) {
        refused("protocol");
        info!(why, "disconnecting an MQTT client that broke the protocol");
        if up.v5 {
            let bye = vec![0xe0, 2, disconnect_reason(why), 0];
            let _ = up.to_client.try_send(Control::Goodbye(bye));
        }
        return Err(std::io::Error::other(*why));
    }
    let mut held = Held {
        data: forward,
        durable: Vec::new(),
        acks: Vec::new(),
        marks: Vec::new(),
        boundary: up.observer.at_boundary(),
    };
    // Taken out and put back, so its buffer is reused from read to read.
    let mut seen = std::mem::take(&mut up.seen);
    for s in seen.drain(..) {
        take(up, s, &mut held).await?;
    }
    up.seen = seen;
    // Counted once the read is accepted: what it owes is passed on.
    up.acks
        .owed
        .store(up.observer.acks_owed(), Ordering::Release);
    up.acks
        .publishes_in
        .store(up.observer.publishes(), Ordering::Relaxed);
    Ok(held)
}

/// Acts on one thing the watcher saw in a read; what the read must wait for goes to `held`.
async fn take(up: &mut Upstream<'_>, s: Seen, held: &mut Held) -> std::io::Result<()> {
    let (sinks, client_id) = (up.sinks, up.client_id);
    match s {
        Seen::Publish(_, Some(id)) if !sinks.qos2.first(client_id, id) => {
            debug!(id, "QoS 2 retransmission already logged");
        }
        Seen::Publish(mut message, _) => {
            message.origin = Some(up.origin.clone());
            match sinks.ingress.log(message).await {
                Some(rx) => held.durable.push(rx),
                None => return Err(std::io::Error::other("the log is gone")),
            }
        }
        Seen::Bypassed { id, after } => {
            let [a, b] = id.to_be_bytes();
            held.acks.push((after, vec![0x40, 2, a, b]));
        }
        Seen::Released(id) => sinks.qos2.release(client_id, id),
        Seen::BrokerAck(ack, at) => held.marks.push((at, ack)),
        Seen::Disconnect { with_will } => {
            let how = if with_will {
                Goodbye::WithWill
            } else {
                Goodbye::Disconnect
            };
            up.goodbye.store(how as u8, Ordering::Relaxed);
        }
        Seen::Retained(update) => match queue_retained(&sinks.retained, update).await {
            Some(rx) => held.durable.push(rx),
            None => return Err(std::io::Error::other("retained store unavailable")),
        },
        Seen::Control(c) => {
            if up.to_client.send(c).await.is_err() {
                return Err(std::io::Error::other("the client's side ended"));
            }
        }
        Seen::Serve(c) => {
            // Gone only when the connection ends, when nothing is owed to it any more.
            if let Some(served) = &up.served {
                // The rest of a SUBSCRIBE goes to rumqttd (in this read) once the served
                // filters are in the hub and saved, so rumqttd's SUBACK comes after.
                let done = matches!(c, Command::Subscribe(_, None)).then(|| {
                    let (tx, rx) = oneshot::channel();
                    held.durable.push(rx);
                    tx
                });
                let _ = served.send((c, done)).await;
            }
        }
        Seen::Violation(_) => {}
    }
    Ok(())
}

/// The MQTT 5 DISCONNECT reason code for a refused PUBLISH.
fn disconnect_reason(why: &str) -> u8 {
    match why {
        // Topic Alias invalid.
        "unknown topic alias" | "topic alias 0" => 0x94,
        // Packet too large.
        super::observe::TOO_LARGE => 0x95,
        // Topic Name invalid.
        _ => 0x90,
    }
}

/// Writes held chunks to the broker in order, each once what it completes is durable; the
/// PUBACKs the proxy owes for PUBLISHes it kept from rumqttd go to the broker→client side
/// then. On a connection the proxy serves, the acknowledgements it owes rumqttd (`owed`) go
/// between the client's, at packet boundaries, in rumqttd's order.
pub(super) async fn release(
    mut held: mpsc::Receiver<Held>,
    broker_tx: &mut tokio::net::tcp::OwnedWriteHalf,
    to_client: mpsc::Sender<Control>,
    unforwarded: &std::sync::atomic::AtomicUsize,
    owed: Option<&Owed>,
) -> std::io::Result<()> {
    let mut boundary = true;
    let mut due = Vec::new();
    loop {
        let wake = async {
            match owed {
                Some(o) => o.wake.notified().await,
                None => std::future::pending().await,
            }
        };
        // Both cancel safe: a message stays in the channel, a notification's permit is kept.
        let h = tokio::select! {
            h = held.recv() => match h {
                Some(h) => Some(h),
                None => return Ok(()),
            },
            () = wake => None,
        };
        if let Some(h) = h {
            for d in h.durable {
                if d.await.is_err() {
                    return Err(std::io::Error::other(
                        "a message was not logged, or a subscription not served",
                    ));
                }
            }
            for (after, ack) in h.acks {
                if to_client.send(Control::AckAfter(after, ack)).await.is_err() {
                    return Err(std::io::Error::other("the client's side ended"));
                }
            }
            write_between(broker_tx, &h.data, &h.marks, boundary, owed).await?;
            boundary = h.boundary;
            unforwarded.fetch_sub(1, Ordering::Release);
        }
        if let (true, Some(o)) = (boundary, owed) {
            o.due(&mut due);
            if !due.is_empty() {
                broker_tx.write_all(&due).await?;
                due.clear();
            }
        }
    }
}

/// Writes `data` to rumqttd with the proxy's due acknowledgements before each of the
/// client's (at `marks`), and before all of it when the stream is at a packet boundary.
async fn write_between(
    broker_tx: &mut tokio::net::tcp::OwnedWriteHalf,
    data: &[u8],
    marks: &[(usize, ClientAck)],
    boundary: bool,
    owed: Option<&Owed>,
) -> std::io::Result<()> {
    let Some(owed) = owed else {
        return broker_tx.write_all(data).await;
    };
    let mut out = Vec::new();
    if boundary {
        owed.due(&mut out);
    }
    let mut at = 0;
    for &(mark, ack) in marks {
        // Offsets grow and lie inside `data` (the observer took them from it); clamped all
        // the same, so a wrong one cannot panic.
        let mark = mark.clamp(at, data.len());
        out.extend_from_slice(&data[at..mark]);
        owed.due(&mut out);
        // Its bytes are next: nothing of the proxy's goes before them now.
        owed.client(ack);
        at = mark;
    }
    if out.is_empty() {
        return broker_tx.write_all(&data[at..]).await;
    }
    out.extend_from_slice(&data[at..]);
    broker_tx.write_all(&out).await
}

/// QoS 1 and 2 PUBLISHes a client sent, and rumqttd's PUBACKs and PUBRECs for them: at
/// shutdown a connection closes once they match (or after [`DRAIN_GRACE`]), so what was
/// logged is also acknowledged and the client need not send it again.
#[derive(Debug, Default)]
pub(super) struct Acks {
    pub(super) owed: std::sync::atomic::AtomicU64,
    pub(super) sent: std::sync::atomic::AtomicU64,
    /// PUBLISHes from the client and to it (for the connection's last log line).
    pub(super) publishes_in: std::sync::atomic::AtomicU64,
    pub(super) publishes_out: std::sync::atomic::AtomicU64,
}

impl Acks {
    pub(super) async fn settled(&self) {
        let start = tokio::time::Instant::now();
        while self.sent.load(Ordering::Acquire) < self.owed.load(Ordering::Acquire)
            && start.elapsed() < DRAIN_GRACE
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
