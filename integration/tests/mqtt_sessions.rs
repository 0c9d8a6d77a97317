//! Persistent MQTT sessions on the real binary, with rumqttc clients of both versions: a
//! session's subscriptions and position are stored with the log, so what was published while
//! its client was away arrives when it returns, also after kill -9 or a SIGTERM restart, in
//! order, once, with `session present`. Session and message expiry, Receive Maximum 1 over a
//! backlog, a filter added later, QoS 0 while away, the session limit, takeover and logins.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mqws_integration::{hash_password, mqtt_client, Server, TIMEOUT};
use rumqttc::QoS;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a subscriber's event loop saw.
#[derive(Debug)]
enum Got {
    /// The CONNACK: session present, and the return / reason code as a number.
    ConnAck(bool, u8),
    SubAck,
    Publish(Msg),
    /// The connection ended (why).
    Closed(String),
}

/// A received PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    topic: String,
    payload: String,
    qos: u8,
    dup: bool,
    /// MQTT 5 Message Expiry Interval.
    expiry: Option<u32>,
    /// MQTT 5 user property `mqws-gap`.
    gap: Option<String>,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// One MQTT connection (either version) whose packets arrive on a channel.
struct Sub {
    client: Client,
    rx: mpsc::UnboundedReceiver<Got>,
    task: JoinHandle<()>,
    present: bool,
    code: u8,
    /// PUBLISHes that came while waiting for something else.
    stash: std::collections::VecDeque<Msg>,
}

/// How a subscriber connects.
#[derive(Clone, Copy)]
struct Opts<'a> {
    v5: bool,
    /// 3.1.1 clean session / 5 clean start.
    clean: bool,
    /// MQTT 5 Session Expiry Interval.
    expiry: Option<u32>,
    receive_max: Option<u16>,
    login: Option<(&'a str, &'a str)>,
}

fn persistent(v5: bool) -> Opts<'static> {
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
    async fn connect(addr: SocketAddr, id: &str, o: Opts<'_>) -> Sub {
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

    async fn next(&mut self, timeout: Duration) -> Option<Got> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        match &self.client {
            Client::V4(c) => c.subscribe(filter, qos).await.unwrap(),
            Client::V5(c) => {
                let q = match qos {
                    QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                };
                c.subscribe(filter, q).await.unwrap()
            }
        }
        loop {
            match self.next(TIMEOUT).await {
                Some(Got::SubAck) => return,
                Some(Got::Publish(m)) => self.stash.push_back(m),
                other => panic!("no SUBACK for {filter}: {other:?}"),
            }
        }
    }

    /// The next `n` PUBLISHes; panics when one does not come within `TIMEOUT`.
    async fn publishes(&mut self, n: usize) -> Vec<Msg> {
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
    async fn nothing_more(&mut self, wait: Duration) {
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
    async fn disconnect(mut self) {
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
async fn publish(server: &Server, topic: &str, range: std::ops::Range<u64>, qos: QoS) {
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

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn payloads(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter().map(|m| m.payload.parse().unwrap()).collect()
}

/// Subscribes a 3.1.1 and a 5 client with persistent sessions to `cmd/#` and disconnects them.
async fn two_sessions(server: &Server) {
    for (v5, id) in [(false, "reader-v4"), (true, "reader-v5")] {
        let mut s = Sub::connect(server.mqtt_addr, id, persistent(v5)).await;
        assert_eq!((s.code, s.present), (0, false), "{id}: a new session");
        s.subscribe("cmd/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
    }
}

/// Both clients come back and get `range`, in order, once each, with session present.
async fn both_get(server: &Server, range: std::ops::Range<u64>) {
    for (v5, id) in [(false, "reader-v4"), (true, "reader-v5")] {
        let mut s = Sub::connect(server.mqtt_addr, id, persistent(v5)).await;
        assert_eq!((s.code, s.present), (0, true), "{id}: session present");
        let got = s.publishes(range.clone().count()).await;
        assert_eq!(payloads(&got), range.clone().collect::<Vec<_>>(), "{id}");
        assert!(
            got.iter().all(|m| m.qos == 1 && m.topic == "cmd/r1"),
            "{id}"
        );
        s.nothing_more(Duration::from_millis(500)).await;
        s.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_what_was_published_while_away_across_kill_9_and_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let dir: PathBuf = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    two_sessions(&server).await;
    publish(&server, "cmd/r1", 0..1000, QoS::AtLeastOnce).await;
    server.kill9();

    let mut server = Server::start_with(&[], Some(dir.clone()));
    both_get(&server, 0..1000).await;

    // Away again; this time the server stops with SIGTERM.
    publish(&server, "cmd/r1", 1000..1500, QoS::AtLeastOnce).await;
    server.sigterm();
    server.wait(Duration::from_secs(30)).await;
    let server = Server::start_with(&[], Some(dir));
    both_get(&server, 1000..1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_gone_and_an_expired_message_is_not_delivered() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    let short = Opts {
        expiry: Some(2),
        ..persistent(true)
    };
    let mut s = Sub::connect(addr, "short", short).await;
    s.subscribe("cmd/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let mut kept = Sub::connect(addr, "kept", persistent(true)).await;
    kept.subscribe("cmd/#", QoS::AtLeastOnce).await;
    kept.disconnect().await;

    // One message that expires after 1 s, one after 60 s, published while both are away.
    let mut p = Sub::connect(
        addr,
        "expiring-pub",
        Opts {
            clean: true,
            expiry: None,
            ..persistent(true)
        },
    )
    .await;
    let Client::V5(c) = &p.client else {
        unreachable!()
    };
    for (payload, expiry) in [("soon", 1), ("later", 60)] {
        let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
            message_expiry_interval: Some(expiry),
            ..Default::default()
        };
        c.publish_with_properties(
            "cmd/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            payload,
            props,
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    p.nothing_more(Duration::from_millis(10)).await;

    let mut s = Sub::connect(addr, "short", persistent(true)).await;
    assert!(!s.present, "expiry 2 s: gone after 3.5 s");
    s.nothing_more(Duration::from_secs(1)).await;

    let mut kept = Sub::connect(addr, "kept", persistent(true)).await;
    assert!(kept.present);
    let got = kept.publishes(1).await;
    assert_eq!(got[0].payload, "later");
    let left = got[0].expiry.expect("the remaining expiry interval");
    assert!((50..60).contains(&left), "remaining interval {left}");
    kept.nothing_more(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_1_gets_a_1000_message_backlog_in_order() {
    let server = Server::start();
    let one = Opts {
        receive_max: Some(1),
        ..persistent(true)
    };
    let mut s = Sub::connect(server.mqtt_addr, "narrow", one).await;
    s.subscribe("cmd/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    publish(&server, "cmd/r1", 0..1000, QoS::AtLeastOnce).await;
    let mut s = Sub::connect(server.mqtt_addr, "narrow", one).await;
    assert!(s.present);
    let got = s.publishes(1000).await;
    assert_eq!(payloads(&got), (0..1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_added_later_gets_nothing_from_before_it_and_qos0_waits_only_if_configured() {
    for (queue_qos0, want) in [("false", vec!["a1"]), ("true", vec!["a0", "a1"])] {
        let server = Server::start_with(&[("MQWS_BROKER__QUEUE_QOS0_MESSAGES", queue_qos0)], None);
        let addr = server.mqtt_addr;
        let mut s = Sub::connect(addr, "later", persistent(false)).await;
        s.subscribe("a/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
        publish(&server, "a/t", 0..1, QoS::AtMostOnce).await;
        publish(&server, "b/t", 0..1, QoS::AtLeastOnce).await;
        let mut p = mqtt_client(&server, "later-pub").await;
        p.publish("a/t", QoS::AtLeastOnce, false, "a1").await;
        p.wait_pubacks(1, TIMEOUT).await;
        // Payloads: "0" on a/t (QoS 0) is "a0", "a1" on a/t (QoS 1).
        let mut s = Sub::connect(addr, "later", persistent(false)).await;
        assert!(s.present);
        s.subscribe("b/#", QoS::AtLeastOnce).await;
        let got = s.publishes(want.len()).await;
        let got: Vec<String> = got
            .iter()
            .map(|m| match (m.topic.as_str(), m.payload.as_str()) {
                ("a/t", "0") => "a0".to_owned(),
                (_, p) => p.to_owned(),
            })
            .collect();
        assert_eq!(got, want, "queue_qos0_messages = {queue_qos0}");
        s.nothing_more(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_past_the_limit_is_refused_and_none_is_evicted() {
    let server = Server::start_with(&[("MQWS_BROKER__MAX_SESSIONS", "2")], None);
    let addr = server.mqtt_addr;
    for id in ["s1", "s2"] {
        let mut s = Sub::connect(addr, id, persistent(true)).await;
        s.subscribe("cmd/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
    }
    assert_eq!(Sub::connect(addr, "s3", persistent(true)).await.code, 0x97);
    let v4 = Sub::connect(addr, "s3", persistent(false)).await;
    assert_eq!(v4.code, 3, "3.1.1: server unavailable");
    // A clean session needs no room.
    let clean = Opts {
        clean: true,
        expiry: None,
        ..persistent(true)
    };
    assert_eq!(Sub::connect(addr, "s3", clean).await.code, 0);
    publish(&server, "cmd/r1", 0..1, QoS::AtLeastOnce).await;
    for id in ["s1", "s2"] {
        let mut s = Sub::connect(addr, id, persistent(true)).await;
        assert!(s.present, "{id} kept");
        assert_eq!(payloads(&s.publishes(1).await), vec![0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_takes_the_session_over() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    let mut first = Sub::connect(addr, "twice", persistent(false)).await;
    first.subscribe("cmd/#", QoS::AtLeastOnce).await;
    publish(&server, "cmd/r1", 0..10, QoS::AtLeastOnce).await;
    assert_eq!(
        payloads(&first.publishes(10).await),
        (0..10).collect::<Vec<_>>()
    );
    let mut second = Sub::connect(addr, "twice", persistent(false)).await;
    assert!(second.present);
    publish(&server, "cmd/r1", 10..20, QoS::AtLeastOnce).await;
    // What the older connection had not yet acknowledged when it was taken over (its client's
    // last PUBACKs may still be on their way) comes again, marked DUP; then the rest, once.
    let mut again = Vec::new();
    loop {
        let m = second.publishes(1).await.remove(0);
        let n: u64 = m.payload.parse().unwrap();
        if n >= 10 {
            second.stash.push_front(m);
            break;
        }
        assert!(m.dup, "{n} sent again without DUP");
        again.push(n);
    }
    assert!(
        again.len() <= 10 && again.iter().all(|n| *n < 10),
        "{again:?}"
    );
    assert_eq!(
        payloads(&second.publishes(10).await),
        (10..20).collect::<Vec<_>>(),
        "the newer connection continues after what the older one acknowledged"
    );
    second.nothing_more(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_its_login_and_logins_have_their_own_limit() {
    let config = format!(
        "[[broker.users]]\nusername = \"alice\"\npassword_hash = \"{}\"\n\n[[broker.users]]\nusername = \"bob\"\npassword_hash = \"{}\"\n",
        hash_password("a-pass"),
        hash_password("b-pass")
    );
    let server = Server::start_configured(
        &config,
        &[("MQWS_BROKER__MAX_SESSIONS_PER_LOGIN", "2")],
        None,
    );
    let addr = server.mqtt_addr;
    let alice = Opts {
        login: Some(("alice", "a-pass")),
        ..persistent(true)
    };
    let bob = Opts {
        login: Some(("bob", "b-pass")),
        ..persistent(true)
    };
    let mut s = Sub::connect(addr, "reader", alice).await;
    s.subscribe("cmd/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    assert_eq!(Sub::connect(addr, "reader", bob).await.code, 0x87);
    let s = Sub::connect(addr, "reader", alice).await;
    assert_eq!((s.code, s.present), (0, true));
    drop(s);
    // Two sessions per login: alice's third is refused, bob still gets his.
    Sub::connect(addr, "reader-2", alice)
        .await
        .disconnect()
        .await;
    assert_eq!(Sub::connect(addr, "reader-3", alice).await.code, 0x97);
    let b = Sub::connect(addr, "bob-1", bob).await;
    assert_eq!(
        (b.code, b.present),
        (0, false),
        "another login is not locked out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_retention_removed_while_away_is_told_to_mqtt_5_and_counted() {
    let server = Server::start_with(
        &[
            ("MQWS_LOG__MAX_MESSAGES", "100"),
            ("MQWS_LOG__RETENTION_INTERVAL", "50ms"),
        ],
        None,
    );
    let addr = server.mqtt_addr;
    for v5 in [true, false] {
        let id = if v5 { "gap-v5" } else { "gap-v4" };
        let mut s = Sub::connect(addr, id, persistent(v5)).await;
        s.subscribe("cmd/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
    }
    publish(&server, "cmd/r1", 0..300, QoS::AtLeastOnce).await;
    // Retention keeps the last 100 (the `mqws_log_messages` gauge can show 100 before the
    // last step ran: wait for the evictions themselves).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = mqws_integration::http_get(server.http_addr, "/metrics").await;
        if mqws_integration::metric_value(&m.body, "mqws_log_evicted_total") == Some(200.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for v5 in [true, false] {
        let id = if v5 { "gap-v5" } else { "gap-v4" };
        let mut s = Sub::connect(addr, id, persistent(v5)).await;
        let got = s.publishes(100).await;
        assert_eq!(
            payloads(&got),
            (200..300).collect::<Vec<_>>(),
            "{id}: the rest, in order"
        );
        if v5 {
            let gap = got[0]
                .gap
                .as_deref()
                .unwrap_or_else(|| panic!("mqws-gap on the first PUBLISH: {:?}", got[0]));
            let (from, to) = gap.split_once('-').expect("FROM-TO");
            let lost = to.parse::<u64>().unwrap() - from.parse::<u64>().unwrap() + 1;
            assert_eq!(lost, 200, "{gap}");
            assert!(got[1..].iter().all(|m| m.gap.is_none()), "told once");
        }
    }
    let m = mqws_integration::http_get(server.http_addr, "/metrics").await;
    assert_eq!(
        mqws_integration::metric_value(&m.body, "mqws_mqtt_served_lost_total"),
        Some(400.0),
        "200 for each session"
    );
}
