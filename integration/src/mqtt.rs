//! MQTT client helpers (rumqttc 0.25): a client with TCP_NODELAY whose event loop runs in a
//! task and forwards incoming packets, with bounded waits for ConnAck, SubAck, PubAck and
//! publishes.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Server, TIMEOUT};

/// An MQTT 3.1.1 client connected to the server's embedded broker.
pub struct Mqtt {
    /// The rumqttc handle (publish, subscribe, …).
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Packet, String>>,
    stash: VecDeque<Packet>,
    task: JoinHandle<()>,
}

/// Connects a clean-session client with id `id` to the server's MQTT listener and waits for
/// its ConnAck.
pub async fn mqtt_client(server: &Server, id: &str) -> Mqtt {
    Mqtt::connect(server.mqtt_addr, id).await
}

impl Mqtt {
    /// Connects to `addr` and waits (bounded) for a successful ConnAck.
    pub async fn connect(addr: std::net::SocketAddr, id: &str) -> Mqtt {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
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
        let mut m = Mqtt {
            client,
            rx,
            stash: VecDeque::new(),
            task,
        };
        match m
            .wait_for(TIMEOUT, |p| matches!(p, Packet::ConnAck(_)))
            .await
        {
            Packet::ConnAck(ack) => assert_eq!(
                ack.code,
                rumqttc::ConnectReturnCode::Success,
                "MQTT connect of {id} refused"
            ),
            _ => unreachable!(),
        }
        m
    }

    async fn recv(&mut self, deadline: tokio::time::Instant) -> Option<Packet> {
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Err(_) => None,
            Ok(None) => panic!("MQTT event loop stopped"),
            Ok(Some(Err(e))) => panic!("MQTT connection error: {e}"),
            Ok(Some(Ok(p))) => Some(p),
        }
    }

    /// Waits for the first packet matching `pred`; other packets are kept for later reads.
    /// Panics after `timeout`.
    pub async fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Packet) -> bool) -> Packet {
        match self.try_wait_for(timeout, pred).await {
            Some(p) => p,
            None => panic!("expected MQTT packet did not arrive within {timeout:?}"),
        }
    }

    /// Like [`Mqtt::wait_for`] but returns `None` after `timeout`.
    pub async fn try_wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Packet) -> bool,
    ) -> Option<Packet> {
        if let Some(i) = self.stash.iter().position(&pred) {
            return self.stash.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.recv(deadline).await {
                None => return None,
                Some(p) if pred(&p) => return Some(p),
                Some(p) => self.stash.push_back(p),
            }
        }
    }

    /// Subscribes to `filter` at `qos` and waits for a successful SubAck.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue subscribe");
        match self
            .wait_for(TIMEOUT, |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(ack) => assert!(
                ack.return_codes
                    .iter()
                    .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                "SubAck for {filter} refused: {ack:?}"
            ),
            _ => unreachable!(),
        }
    }

    /// Queues a publish.
    pub async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("queue publish");
    }

    /// Waits until `n` PubAcks have arrived (one per QoS 1 publish sent).
    pub async fn wait_pubacks(&mut self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for i in 0..n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self
                .try_wait_for(left, |p| matches!(p, Packet::PubAck(_)))
                .await
                .is_none()
            {
                panic!("only {i} of {n} PubAcks within {timeout:?}");
            }
        }
    }

    /// Returns the next incoming PUBLISH, panicking after `timeout`.
    pub async fn next_publish(&mut self, timeout: Duration) -> Publish {
        match self
            .wait_for(timeout, |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    /// Returns the next incoming PUBLISH if one arrives within `timeout`.
    pub async fn try_next_publish(&mut self, timeout: Duration) -> Option<Publish> {
        match self
            .try_wait_for(timeout, |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Some(Packet::Publish(p)) => Some(p),
            _ => None,
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}
