//! Cluster mode's follower: the `mqws-follow` thread feeds this node's tail from the shared log
//! instead of from this node's appends, so messages that entered on any node reach this node's
//! clients in the log's order, and hands the messages other nodes appended to this node's
//! broker for its MQTT subscribers. On one node there is no feed and no follower.

use std::sync::Arc;
use std::time::Duration;

use mqws_broker::{PublishRequest, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::fanout::Tail;
use crate::protocol::payload::Encodings;
use crate::storage::{Fed, LogFeed};

/// Most messages taken from the feed per step.
const BATCH: usize = 4096;
/// Longest wait for the feed before the stop flag is looked at again.
const TICK: Duration = Duration::from_millis(500);
/// Pause after a failed read of the shared log.
const RETRY: Duration = Duration::from_millis(100);
/// Messages from other nodes queued for this node's broker at most.
const INJECT_QUEUE: usize = 1024;

/// Starts the follower thread on `feed`. `broker` receives what other nodes appended.
pub(crate) fn spawn(
    feed: Box<dyn LogFeed>,
    tail: Arc<Tail>,
    encodings: Arc<Encodings>,
    broker: &mqws_broker::Publisher,
    front: mqws_broker::MqttFront,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let follower = Follower {
        tail,
        stop,
        encodings,
        inject: injector(broker),
        front,
    };
    std::thread::Builder::new()
        .name("mqws-follow".to_owned())
        .spawn(move || follower.run(feed))
        .map(drop)
}

/// The task that hands this node's broker what other nodes logged, so its MQTT subscribers
/// receive every node's messages (at QoS 0: the broker forwards link publishes at QoS 0).
fn injector(publisher: &mqws_broker::Publisher) -> mpsc::Sender<PublishRequest> {
    let (tx, mut rx) = mpsc::channel(INJECT_QUEUE);
    let publisher = publisher.clone();
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            if let Err(e) = publisher.inject(request).await {
                warn!(error = %e, "could not hand another node's message to the broker");
            }
        }
    });
    tx
}

struct Follower {
    tail: Arc<Tail>,
    stop: CancellationToken,
    encodings: Arc<Encodings>,
    inject: mpsc::Sender<PublishRequest>,
    /// Whether this node's broker could route a topic to a subscriber: the MQTT subscribers the
    /// proxy serves get every node's messages (and retained values, from mqws's retained
    /// store) from the tail, so the broker needs only those its own filters route (`$share/…`
    /// groups and filters the proxy does not serve).
    front: mqws_broker::MqttFront,
}

impl Follower {
    fn run(self, mut feed: Box<dyn LogFeed>) {
        let mut failing = false;
        while !self.stop.is_cancelled() {
            match feed.next(BATCH, TICK) {
                Ok(fed) => {
                    if failing {
                        info!(position = feed.position(), "following the shared log again");
                        failing = false;
                    }
                    if let Some(to) = feed.missed() {
                        self.tail.lose_through(to);
                    }
                    self.take(fed);
                }
                Err(_) if self.stop.is_cancelled() => break,
                Err(e) => {
                    if !failing {
                        error!(error = %e, position = feed.position(), "cannot follow the shared log; retrying");
                        failing = true;
                    }
                    std::thread::sleep(RETRY);
                }
            }
        }
    }

    fn take(&self, fed: Vec<Fed>) {
        if fed.is_empty() {
            return;
        }
        if let Some(oldest) = fed.first() {
            // Wall clock against the time the shared log stored it (milliseconds; another
            // node's clock for its messages): how far behind the stream this node reads.
            let behind_ms = crate::storage::now_ms().saturating_sub(oldest.record.ts_ms);
            metrics::histogram!("mqws_follower_delay_seconds").record(behind_ms as f64 / 1000.0);
        }
        let mut records = Vec::with_capacity(fed.len());
        for Fed { record, local } in fed {
            if !local && self.front.broker_routes(&record.topic) {
                let request = PublishRequest {
                    topic: record.topic.clone(),
                    payload: record.payload.clone(),
                    qos: QoS::AtMostOnce,
                    retain: record.retain,
                };
                // Bounded: a broker that does not keep up slows the follower, never drops.
                if self.inject.blocking_send(request).is_err() {
                    debug!("the broker injector is gone");
                }
            }
            records.push(record);
        }
        self.tail.push_records(records, &self.encodings);
    }
}
