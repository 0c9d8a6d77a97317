//! The interface between the bridge and any MQTT broker: inbound events and a publisher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::BrokerError;

/// A message the broker routed to the bridge.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// Topic name (valid UTF-8: MQTT requires it and the broker checks it).
    pub topic: String,
    /// Payload bytes, as published.
    pub payload: Bytes,
    /// The MQTT retain flag as the broker forwarded it.
    pub retain: bool,
}

/// One event from the broker towards the log.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A routed message.
    Message(InboundMessage),
    /// The broker skipped `lost` messages for the bridge on `filter` (it fell too far behind).
    /// The log records this so clients can be told about the gap.
    Dropped {
        /// The bridge filter whose stream jumped.
        filter: String,
        /// How many messages the broker dropped.
        lost: u64,
    },
}

/// A retained value on its way to durable storage. The proxy (or the publish thread) waits for
/// `done` before the PUBLISH that set it goes on to the broker, so its PUBACK, and any
/// subscriber, follow durability. Dropping `done` unanswered means "not stored".
#[derive(Debug)]
pub struct RetainedWrite {
    /// The value.
    pub update: crate::RetainedUpdate,
    /// Answered once the value is durable.
    pub done: oneshot::Sender<()>,
}

/// Hands `update` to the retained store and waits until it is durable. False when the store is
/// gone (shutdown) and the value was not kept.
pub(crate) async fn persist_retained(
    tx: &mpsc::Sender<RetainedWrite>,
    update: crate::RetainedUpdate,
) -> bool {
    let (done, stored) = oneshot::channel();
    tx.send(RetainedWrite { update, done }).await.is_ok() && stored.await.is_ok()
}

/// MQTT quality of service of a browser publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    /// At most once.
    AtMostOnce,
    /// At least once.
    AtLeastOnce,
    /// Exactly once.
    ExactlyOnce,
}

/// A publish from a browser towards MQTT.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Topic name, already checked to hold no wildcard.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// Requested QoS. The embedded broker forwards link publishes at QoS 0.
    pub qos: QoS,
    /// Whether the broker should retain it.
    pub retain: bool,
}

pub(crate) type PublishJob = (PublishRequest, oneshot::Sender<Result<(), BrokerError>>);

/// Sends browser publishes to the broker. Cheap to clone; bounded queue behind it.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub(crate) tx: mpsc::Sender<PublishJob>,
}

impl Publisher {
    /// Queues `req` and waits until the broker has taken it. When the queue is full this waits
    /// for room; callers put a timeout around it.
    pub async fn publish(&self, req: PublishRequest) -> Result<(), BrokerError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((req, done))
            .await
            .map_err(|_| BrokerError::Closed)?;
        wait.await.map_err(|_| BrokerError::Closed)?
    }
}

/// The bridge's connection to a broker: what it receives and how it publishes.
#[derive(Debug)]
pub struct BrokerLink {
    /// Messages and gaps, in the order the broker delivered them. Bounded: when the bridge
    /// does not drain it, the broker keeps the backlog (and drops past its own limit, which
    /// arrives here as [`Inbound::Dropped`]).
    pub inbound: mpsc::Receiver<Inbound>,
    /// Browser publishes towards the broker.
    pub publisher: Publisher,
    /// Retained values set or cleared by MQTT clients and browser publishes, for the durable
    /// retained store; each waits for its `done`. Bounded: a full queue slows the publishing
    /// client down.
    pub retained: mpsc::Receiver<RetainedWrite>,
    /// Where MQTT clients connect.
    pub mqtt_addr: std::net::SocketAddr,
    pub(crate) up: Arc<AtomicBool>,
}

impl BrokerLink {
    /// True while every part of the link is running (for `/readyz`).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A handle that reports [`BrokerLink::is_up`] after `inbound` has been moved out.
    pub fn health(&self) -> LinkHealth {
        LinkHealth(self.up.clone())
    }
}

/// Reports whether the broker link is up, for readiness checks.
#[derive(Debug, Clone)]
pub struct LinkHealth(Arc<AtomicBool>);

impl LinkHealth {
    /// True while the link runs.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
