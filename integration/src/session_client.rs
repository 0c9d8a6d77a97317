//! An MQTT subscriber of either version (rumqttc) for the persistent-session tests: its event
//! loop runs in a task and hands packets over a channel, so a test can wait for the next
//! CONNACK, SUBACK or PUBLISH with a timeout, and see a connection end.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{mqtt_client, Server, TIMEOUT};

/// What a subscriber's event loop saw.
#[derive(Debug)]
pub enum Got {
    /// The CONNACK: session present, and the return / reason code as a number.
    ConnAck(bool, u8),
    /// A SUBACK.
    SubAck,
    /// A PUBLISH.
    Publish(Msg),
    /// The connection ended (why).
    Closed(String),
}

/// A received PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload (UTF-8 lossy).
    pub payload: String,
    /// QoS.
    pub qos: u8,
    /// DUP flag.
    pub dup: bool,
    /// MQTT 5 Message Expiry Interval.
    pub expiry: Option<u32>,
    /// MQTT 5 user property `mqws-gap`.
    pub gap: Option<String>,
}

/// The rumqttc client of either version.
pub enum Client {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

/// One MQTT connection (either version) whose packets arrive on a channel.
pub struct Sub {
    /// The client.
    pub client: Client,
    rx: mpsc::UnboundedReceiver<Got>,
    task: JoinHandle<()>,
    /// The CONNACK's session present.
    pub present: bool,
    /// The CONNACK's return / reason code (0xfe: a refusal rumqttc did not name).
    pub code: u8,
    /// PUBLISHes that came while waiting for something else.
    pub stash: std::collections::VecDeque<Msg>,
}

/// How a subscriber connects.
#[derive(Clone, Copy)]
pub struct Opts<'a> {
    /// MQTT 5 (else 3.1.1).
    pub v5: bool,
    /// 3.1.1 clean session / 5 clean start.
    pub clean: bool,
    /// MQTT 5 Session Expiry Interval.
    pub expiry: Option<u32>,
    /// MQTT 5 Receive Maximum.
    pub receive_max: Option<u16>,
    /// Username and password.
    pub login: Option<(&'a str, &'a str)>,
}

/// A persistent session of MQTT 3.1.1 (clean session 0) or 5 (session expiry 1 h).
pub fn persistent(v5: bool) -> Opts<'static> {
    Opts {
        v5,
        clean: false,
        expiry: v5.then_some(3600),
        receive_max: None,
        login: None,
    }
}

fn v4_task(mut el: rumqttc::EventLoop, tx: mpsc::UnboundedSender<Got>) -> JoinHandle<()> {
    use rumqttc::{Event, Packet};
    tokio::spawn(async move {
        loop {
            let got = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    Got::ConnAck(c.session_present, c.code as u8)
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => Got::SubAck,
                Ok(Event::Incoming(Packet::Publish(p))) => Got::Publish(Msg {
                    topic: p.topic.clone(),
                    payload: String::from_utf8_lossy(&p.payload).into_owned(),
                    qos: p.qos as u8,
                    dup: p.dup,
                    expiry: None,
                    gap: None,
                }),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Got::Closed(e.to_string()));
                    return;
                }
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    })
}

fn v5_task(mut el: rumqttc::v5::EventLoop, tx: mpsc::UnboundedSender<Got>) -> JoinHandle<()> {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
    use rumqttc::v5::Event;
    tokio::spawn(async move {
        loop {
            let got = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    let code = match c.code {
                        ConnectReturnCode::Success => 0,
                        ConnectReturnCode::NotAuthorized => 0x87,
                        ConnectReturnCode::QuotaExceeded => 0x97,
                        ConnectReturnCode::ServerUnavailable => 0x88,
                        _ => 0xff,
                    };
                    Got::ConnAck(c.session_present, code)
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => Got::SubAck,
                Ok(Event::Incoming(Packet::Publish(p))) => Got::Publish(Msg {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: String::from_utf8_lossy(&p.payload).into_owned(),
                    qos: p.qos as u8,
                    dup: p.dup,
                    expiry: p
                        .properties
                        .as_ref()
                        .and_then(|pp| pp.message_expiry_interval),
                    gap: p.properties.and_then(|pp| {
                        pp.user_properties
                            .into_iter()
                            .find(|(k, _)| k == "mqws-gap")
                            .map(|(_, v)| v)
                    }),
                }),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Got::Closed(e.to_string()));
                    return;
                }
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    })
}

impl Sub {
    /// Connects and waits for the CONNACK (successful or not).
    pub async fn connect(addr: SocketAddr, id: &str, o: Opts<'_>) -> Sub {
        let (tx, rx) = mpsc::unbounded_channel();
        let (host, port) = (addr.ip().to_string(), addr.port());
        let (client, task) = if o.v5 {
            let mut opts = rumqttc::v5::MqttOptions::new(id, host, port);
            opts.set_keep_alive(Duration::from_secs(30));
            opts.set_clean_start(o.clean);
            opts.set_session_expiry_interval(o.expiry);
            opts.set_receive_maximum(o.receive_max);
            if let Some((u, p)) = o.login {
                opts.set_credentials(u, p);
            }
            let (client, el) = rumqttc::v5::AsyncClient::new(opts, 1024);
            (Client::V5(client), v5_task(el, tx))
        } else {
            let mut opts = rumqttc::MqttOptions::new(id, host, port);
            opts.set_keep_alive(Duration::from_secs(30));
            opts.set_clean_session(o.clean);
            if let Some((u, p)) = o.login {
                opts.set_credentials(u, p);
            }
            let (client, el) = rumqttc::AsyncClient::new(opts, 1024);
            (Client::V4(client), v4_task(el, tx))
        };
        let mut s = Sub {
            client,
            rx,
            task,
            present: false,
            code: 0xff,
            stash: std::collections::VecDeque::new(),
        };
        match s.next(TIMEOUT).await {
            Some(Got::ConnAck(present, code)) => {
                s.present = present;
                s.code = code;
            }
            // rumqttc reports a refusing CONNACK as an error naming its code.
            Some(Got::Closed(e)) if e.contains("return code") => {
                s.code = [
                    ("QuotaExceeded", 0x97),
                    ("NotAuthorized", 0x87),
                    ("ServiceUnavailable", 3),
                    ("ServerUnavailable", 0x88),
                ]
                .iter()
                .find(|(name, _)| e.contains(name))
                .map_or(0xfe, |(_, c)| *c);
            }
            other => panic!("no CONNACK for {id}: {other:?}"),
        }
        s
    }

    /// What the event loop saw next, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Got> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Subscribes to `filter` at `qos` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.subscribe_all(&[filter], qos).await;
    }

    /// Subscribes to `filters` at `qos` in one SUBSCRIBE and waits for the SUBACK.
    pub async fn subscribe_all(&mut self, filters: &[&str], qos: QoS) {
        match &self.client {
            Client::V4(c) => {
                let all = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new((*f).to_owned(), qos));
                c.subscribe_many(all).await.unwrap()
            }
            Client::V5(c) => {
                let q = match qos {
                    QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                };
                let all = filters
                    .iter()
                    .map(|f| rumqttc::v5::mqttbytes::v5::Filter::new(*f, q));
                c.subscribe_many(all).await.unwrap()
            }
        }
        loop {
            match self.next(TIMEOUT).await {
                Some(Got::SubAck) => return,
                Some(Got::Publish(m)) => self.stash.push_back(m),
                other => panic!("no SUBACK for {filters:?}: {other:?}"),
            }
        }
    }

    /// The next `n` PUBLISHes; panics when one does not come within `TIMEOUT`.
    pub async fn publishes(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if let Some(m) = self.stash.pop_front() {
                out.push(m);
                continue;
            }
            match self.next(TIMEOUT).await {
                Some(Got::Publish(m)) => out.push(m),
                other => panic!("{} of {n} PUBLISHes, then {other:?}", out.len()),
            }
        }
        out
    }

    /// Asserts nothing more arrives within `wait`.
    pub async fn nothing_more(&mut self, wait: Duration) {
        assert!(
            self.stash.is_empty(),
            "unexpected PUBLISHes {:?}",
            self.stash
        );
        if let Some(Got::Publish(m)) = self.next(wait).await {
            panic!("unexpected PUBLISH {m:?}");
        }
    }

    /// Sends DISCONNECT and waits for the connection to end.
    pub async fn disconnect(mut self) {
        match &self.client {
            Client::V4(c) => c.disconnect().await.unwrap(),
            Client::V5(c) => c.disconnect().await.unwrap(),
        }
        while let Some(g) = self.next(TIMEOUT).await {
            if matches!(g, Got::Closed(_)) {
                break;
            }
        }
        self.task.abort();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes `range` as QoS `qos` messages `"<i>"` on `topic` and waits for the acks.
pub async fn publish(server: &Server, topic: &str, range: std::ops::Range<u64>, qos: QoS) {
    let mut p = mqtt_client(server, &format!("pub-{}", rand_suffix())).await;
    for i in range.clone() {
        p.publish(topic, qos, false, i.to_string()).await;
    }
    if qos != QoS::AtMostOnce {
        p.wait_pubacks(range.count(), Duration::from_secs(60)).await;
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A number no other call in this process returned.
pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The payloads of `msgs` as the numbers [`publish`] sent.
pub fn payloads(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter().map(|m| m.payload.parse().unwrap()).collect()
}
