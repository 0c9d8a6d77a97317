//! An MQTT 5 test client (rumqttc) whose event loop runs in a task: packets are read in order,
//! those a test does not wait for kept for later, and a dropped connection fails the test.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::TIMEOUT;

/// An MQTT 5 client (rumqttc, TCP_NODELAY) whose event loop runs in a task and forwards
/// incoming packets; a connection error fails the test at the next read.
pub struct V5 {
    /// The client, to publish and subscribe with.
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Packet, String>>,
    stash: Vec<Packet>,
    task: JoinHandle<()>,
}

impl V5 {
    /// Connects with a clean start (no session expiry: the proxy serves it) and the options
    /// `tune` sets; waits for a successful CONNACK.
    pub async fn connect(addr: SocketAddr, id: &str, tune: impl FnOnce(&mut MqttOptions)) -> V5 {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let mut net = opts.network_options();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        tune(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 2048);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        // No reconnect: a dropped connection must fail the test.
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut c = V5 {
            client,
            rx,
            stash: Vec::new(),
            task,
        };
        match c
            .wait_for(TIMEOUT, |p| matches!(p, Packet::ConnAck(_)))
            .await
        {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnectReturnCode::Success, "CONNACK of {id}")
            }
            _ => panic!("no CONNACK for {id} within {TIMEOUT:?}"),
        }
        c
    }

    /// The first packet matching `pred` within `timeout` (others are kept for later reads).
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Packet) -> bool,
    ) -> Option<Packet> {
        if let Some(i) = self.stash.iter().position(&pred) {
            return Some(self.stash.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(None) => panic!("MQTT 5 event loop stopped"),
                Ok(Some(Err(e))) => panic!("MQTT 5 connection error: {e}"),
                Ok(Some(Ok(p))) if pred(&p) => return Some(p),
                Ok(Some(Ok(p))) => self.stash.push(p),
            }
        }
    }

    /// Subscribes to `filters` in one SUBSCRIBE; returns the SUBACK's reason codes.
    pub async fn subscribe(&mut self, filters: Vec<Filter>) -> Vec<SubscribeReasonCode> {
        self.client.subscribe_many(filters).await.unwrap();
        match self
            .wait_for(TIMEOUT, |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Some(Packet::SubAck(ack)) => ack.return_codes,
            _ => panic!("no SUBACK within {TIMEOUT:?}"),
        }
    }

    /// Subscribes to `filter` at `qos` and asserts it is granted at `qos`.
    pub async fn subscribe_one(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe(vec![Filter::new(filter, qos)]).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)], "{filter}");
    }

    /// Publishes and waits until the server acknowledged it (PUBACK, or PUBCOMP for QoS 2).
    pub async fn publish_acked(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        let acked = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => {
                self.wait_for(TIMEOUT, |p| matches!(p, Packet::PubAck(_)))
                    .await
            }
            QoS::ExactlyOnce => {
                self.wait_for(TIMEOUT, |p| matches!(p, Packet::PubComp(_)))
                    .await
            }
        };
        assert!(acked.is_some(), "{topic} {qos:?} not acknowledged");
    }

    /// The next PUBLISH within `timeout`, if any.
    pub async fn try_next_publish(&mut self, timeout: Duration) -> Option<Publish> {
        match self
            .wait_for(timeout, |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Some(Packet::Publish(p)) => Some(p),
            _ => None,
        }
    }

    /// The next PUBLISH; panics after [`TIMEOUT`].
    pub async fn next_publish(&mut self) -> Publish {
        match self.try_next_publish(TIMEOUT).await {
            Some(p) => p,
            None => panic!("no PUBLISH within {TIMEOUT:?}"),
        }
    }
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// QoS as a number.
pub fn level(q: QoS) -> u8 {
    q as u8
}

/// The QoS and payload of the next `n` PUBLISHes of an MQTT 5 client.
pub async fn received(c: &mut V5, n: usize) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let p = c.next_publish().await;
        out.push((
            level(p.qos),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    out
}
