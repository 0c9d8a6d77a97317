//! The interface between the bridge and any MQTT broker: inbound events and a publisher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::BrokerError;

/// A message an MQTT client or a browser published, as it enters the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Topic name (valid UTF-8; checked for wildcards and NUL).
    pub topic: String,
    /// Payload bytes, as published.
    pub payload: Bytes,
    /// The MQTT retain flag the publisher set.
    pub retain: bool,
    /// The QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// The client id of the MQTT client that published it (or whose will it is); none for a
    /// browser publish.
    pub origin: Option<Arc<str>>,
    /// Its MQTT 5 PUBLISH properties as on the wire, without their length and without the
    /// ones that belong to one connection (topic alias, subscription identifier): message
    /// expiry, payload format, content type, response topic, correlation data, user
    /// properties. Empty for MQTT 3.1.1, browser publishes and wills.
    pub properties: Bytes,
}

/// A message on its way into the log. `done` is answered once it is durable; the message is
/// not passed on (to the broker, so not acknowledged) before that. Dropping `done` unanswered
/// means "not logged". Holds its share of the ingress byte budget until it is dropped.
#[derive(Debug)]
pub struct Ingress {
    /// The message.
    pub message: InboundMessage,
    done: oneshot::Sender<()>,
    budget: OwnedSemaphorePermit,
    queued: Instant,
}

/// The answer an [`Ingress`] message waits for. It keeps the message's share of the byte
/// budget until it is confirmed or dropped, so messages being appended count too.
#[derive(Debug)]
pub struct Durable {
    done: oneshot::Sender<()>,
    _budget: OwnedSemaphorePermit,
}

impl Ingress {
    /// When the message was queued (for the ingress wait the log reports).
    pub fn queued_at(&self) -> Instant {
        self.queued
    }

    /// The message, and the answer to give once it is durable.
    pub fn into_parts(self) -> (InboundMessage, Durable) {
        let durable = Durable {
            done: self.done,
            _budget: self.budget,
        };
        (self.message, durable)
    }
}

impl Durable {
    /// The message is durable: its sender may go on.
    pub fn confirm(self) {
        let _ = self.done.send(());
    }
}

/// Hands messages to the log: bounded in count (the queue) and in bytes (a budget that each
/// message holds until the log has taken it), so a flooding publisher waits instead of growing
/// memory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngressSender {
    tx: mpsc::Sender<Ingress>,
    budget: Arc<Semaphore>,
    max_permits: u32,
    filters: Arc<[String]>,
}

/// The ingress queue of at most `queue` messages and `bytes` bytes (topic + payload) for
/// messages matching `filters`.
pub fn ingress(
    queue: usize,
    bytes: u64,
    filters: Vec<String>,
) -> (IngressSender, mpsc::Receiver<Ingress>) {
    let max_permits = u32::try_from(bytes.clamp(1, u64::from(u32::MAX >> 3))).unwrap_or(1);
    let (tx, rx) = mpsc::channel(queue.max(1));
    let sender = IngressSender {
        tx,
        budget: Arc::new(Semaphore::new(max_permits as usize)),
        max_permits,
        filters: filters.into(),
    };
    (sender, rx)
}

impl IngressSender {
    /// The filters whose messages are logged.
    pub(crate) fn filters(&self) -> Arc<[String]> {
        self.filters.clone()
    }

    /// True when a message on `topic` is logged.
    pub fn wants(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| mqws_topic::matches(f, topic))
    }

    /// Queues `message` for the log, waiting for room in the queue and the byte budget. The
    /// receiver resolves once it is durable and fails when it was not logged (shutdown); `None`
    /// when the log is gone.
    pub async fn log(&self, message: InboundMessage) -> Option<oneshot::Receiver<()>> {
        let size = message.topic.len() + message.payload.len();
        let permits = u32::try_from(size)
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_permits);
        let budget = self.budget.clone().acquire_many_owned(permits).await.ok()?;
        let (done, durable) = oneshot::channel();
        self.tx
            .send(Ingress {
                message,
                done,
                budget,
                queued: Instant::now(),
            })
            .await
            .ok()?;
        Some(durable)
    }
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
    match queue_retained(tx, update).await {
        Some(stored) => stored.await.is_ok(),
        None => false,
    }
}

/// Hands `update` to the retained store; the receiver resolves once it is durable. `None` when
/// the store is gone.
pub(crate) async fn queue_retained(
    tx: &mpsc::Sender<RetainedWrite>,
    update: crate::RetainedUpdate,
) -> Option<oneshot::Receiver<()>> {
    let (done, stored) = oneshot::channel();
    tx.send(RetainedWrite { update, done }).await.ok()?;
    Some(stored)
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

/// Sends browser publishes to the log and the broker. Cheap to clone; bounded queues behind it.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub(crate) tx: mpsc::Sender<PublishJob>,
    pub(crate) ingress: IngressSender,
}

impl Publisher {
    /// Makes `req` durable in the log when its topic is logged, then queues it for the broker
    /// and waits until the broker has taken it. When a queue is full this waits for room;
    /// callers put a timeout around it.
    pub async fn publish(&self, req: PublishRequest) -> Result<(), BrokerError> {
        if self.ingress.wants(&req.topic) {
            let message = InboundMessage {
                topic: req.topic.clone(),
                payload: req.payload.clone(),
                retain: req.retain,
                qos: req.qos as u8,
                origin: None,
                properties: Bytes::new(),
            };
            let durable = self.ingress.log(message).await.ok_or(BrokerError::Closed)?;
            durable.await.map_err(|_| BrokerError::Closed)?;
        }
        self.inject(req).await
    }

    /// Hands the broker a message that is already in the log (one that entered on another
    /// node of a cluster) without logging it again, and waits until the broker has taken it,
    /// so the MQTT subscribers of this node receive it too.
    pub async fn inject(&self, req: PublishRequest) -> Result<(), BrokerError> {
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
    /// Browser publishes towards the log and the broker.
    pub publisher: Publisher,
    /// Retained values set or cleared by MQTT clients and browser publishes, for the durable
    /// retained store; each waits for its `done`. Bounded: a full queue slows the publishing
    /// client down.
    pub retained: mpsc::Receiver<RetainedWrite>,
    /// Where MQTT clients connect.
    pub mqtt_addr: std::net::SocketAddr,
    /// The same proxy for MQTT connections that arrive another way (MQTT over WebSocket).
    pub front: crate::MqttFront,
    /// Where the bridge installs its stream core, so the proxy serves subscriptions to logged
    /// topics from it.
    pub served: crate::served::ServedSlot,
    pub(crate) up: Arc<AtomicBool>,
    /// Every proxied MQTT connection's task.
    pub(crate) connections: tokio_util::task::TaskTracker,
}

impl BrokerLink {
    /// True while every part of the link is running (for `/readyz`).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Resolves once every MQTT connection has ended. After shutdown each one stops reading,
    /// passes what the log made durable to rumqttd and waits (briefly) for rumqttd's
    /// acknowledgements to reach its client before it closes.
    pub fn connections_closed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let tracker = self.connections.clone();
        async move {
            tracker.close();
            tracker.wait().await;
        }
    }

    /// A handle that reports [`BrokerLink::is_up`] after the link has been taken apart.
    pub fn health(&self) -> LinkHealth {
        LinkHealth(self.up.clone(), self.connections.clone())
    }
}

/// Reports whether the broker link is up, for readiness checks.
#[derive(Debug, Clone)]
pub struct LinkHealth(Arc<AtomicBool>, tokio_util::task::TaskTracker);

impl LinkHealth {
    /// True while the link runs.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Open MQTT client connections (each is one proxy task).
    pub fn connections(&self) -> usize {
        self.1.len()
    }
}
