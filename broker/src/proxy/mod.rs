//! The MQTT proxy in front of rumqttd: one public port for both protocol versions, with logins,
//! TLS and durable ingress, and the same path for MQTT over WebSocket.
//!
//! rumqttd serves MQTT 3.1.1 and 5.0 on separate listeners and binds them itself. mqws owns the
//! public listener(s) instead ([`accept`]): each connection ([`connection`]) reads the whole
//! CONNECT and refuses it with a proper CONNACK when the client id is reserved for the bridge
//! or the login is wrong ([`handshake`]; rumqttd would just drop the connection), then splices
//! the connection to rumqttd's internal v4 or v5 listener on loopback. The client→broker side
//! ([`client_to_broker`]) parses every packet ([`observe`], a state machine without I/O) and
//! holds each chunk until what it completes is durable; the broker→client side
//! ([`broker_to_client`], driving [`downstream`]) puts the proxy's own packets between
//! rumqttd's. This also lets the public port be 0 in tests, terminates TLS (`broker.tls`),
//! sets TCP_NODELAY on the client's socket (rumqttd never does), and bounds SUBSCRIBE filters
//! ([`subscribe`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use crate::link::{IngressSender, RetainedWrite};
use crate::users::Users;
use pending::{Pending, PendingGuard};
use qos2::Qos2Ids;
use subscribe::FilterLimits;
use wills::Wills;

mod accept;
mod broker_to_client;
mod client_to_broker;
pub(crate) mod connect;
mod connection;
pub(crate) mod deliver;
pub(crate) mod downstream;
mod forget;
pub(crate) mod front;
mod handshake;
pub(crate) mod observe;
pub(crate) mod outflow;
pub(crate) mod owed;
pub(crate) mod pending;
pub(crate) mod qos2;
pub(crate) mod session;
pub(crate) mod subscribe;
pub(crate) mod takeover;
#[cfg(test)]
pub(crate) mod test_topics;
pub(crate) mod will_publish;
pub(crate) mod wills;
pub(crate) mod window;
pub(crate) mod wire;

pub(crate) use accept::serve;

/// Bytes read from a socket at a time.
const READ_BUF: usize = 16 * 1024;

/// Where to splice each protocol version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    pub(crate) v4: SocketAddr,
    pub(crate) v5: SocketAddr,
}

impl Targets {
    /// rumqttd's listener for a client of MQTT 5 (`v5`) or 3.1.1.
    pub(crate) fn of(&self, v5: bool) -> SocketAddr {
        if v5 {
            self.v5
        } else {
            self.v4
        }
    }
}

/// Limits of the public listeners.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) connect_timeout: Duration,
    /// Largest PUBLISH accepted (`broker.max_payload_size`, counted as rumqttd counts it: the
    /// packet after its fixed header); also the largest body the observer buffers.
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
    /// Each client id's live connection.
    pub(crate) live: Arc<takeover::Live>,
    /// How a will reaches rumqttd's MQTT subscribers.
    pub(crate) will_broker: Arc<will_publish::WillBroker>,
    /// The bridge's stream core, for the subscriptions the proxy serves itself.
    pub(crate) served: crate::served::ServedSlot,
    /// Persistent MQTT sessions: which connection holds each, and their limits.
    pub(crate) sessions: Arc<session::Sessions>,
}

/// Who may connect.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// Logins, when required.
    pub(crate) users: Users,
    /// Client ids starting with this belong to the bridge.
    pub(crate) reserved_prefix: String,
}

/// Everything a proxied connection needs, shared by every way in (the MQTT port, its TLS
/// port, MQTT over WebSocket), so each is held to the same limits and rules.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub(crate) targets: Targets,
    pub(crate) limits: Limits,
    pub(crate) gate: Gate,
    pub(crate) sinks: Sinks,
    /// `broker.max_connections`, for every way in together.
    pub(crate) permits: Arc<Semaphore>,
    /// Connections that have not sent CONNECT yet, in total and per source address.
    pub(crate) pending: Arc<Pending>,
    /// Every proxied connection's task.
    pub(crate) connections: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// A connection the proxy took before reading a byte: it holds a connection slot and a place
/// among those still to send CONNECT.
#[derive(Debug)]
pub(crate) struct Admitted {
    permit: OwnedSemaphorePermit,
    waiting: PendingGuard,
    peer: SocketAddr,
}

/// Why a connection was not taken (the `reason` label of `mqws_mqtt_refused_total`).
pub(crate) type Refusal = &'static str;

impl Proxy {
    /// Takes a connection from `peer`, or says why not: too many without CONNECT (in total or
    /// from this address) or `broker.max_connections` reached. Counted in
    /// `mqws_mqtt_refused_total`.
    pub(crate) fn admit(&self, peer: SocketAddr) -> Result<Admitted, Refusal> {
        // Before a connection slot is taken: half-open floods are cut at the source.
        let waiting = self.pending.enter(peer.ip()).inspect_err(|limit| {
            refused(limit);
        })?;
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            refused("max_connections");
            return Err("max_connections");
        };
        Ok(Admitted {
            permit,
            waiting,
            peer,
        })
    }

    /// Runs an admitted connection over `stream` as a tracked task until it ends.
    /// `transport` names the way in, for its log lines.
    pub(crate) fn spawn<S>(&self, admitted: Admitted, stream: S, transport: &'static str)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let span = tracing::info_span!(
            "mqtt",
            peer = %admitted.peer,
            transport,
            client_id = tracing::field::Empty
        );
        let proxy = self.clone();
        let stop = self.shutdown.child_token();
        self.connections.spawn(
            async move {
                let _permit = admitted.permit;
                if let Err(why) =
                    connection::run(stream, &proxy, admitted.waiting, admitted.peer, stop).await
                {
                    debug!(%why, "mqtt connection ended");
                }
            }
            .instrument(span),
        );
    }
}

fn refused(reason: &'static str) {
    metrics::counter!("mqws_mqtt_refused_total", "reason" => reason).increment(1);
}
