//! Subscriptions the MQTT proxy serves itself, on the real binary: a filter inside
//! `bridge.filters` on a connection whose session ends with it is answered by the proxy and fed
//! from the log, not by rumqttd. Delivery at the lower of the publish and granted QoS, no-local,
//! the client's Maximum Packet Size and Receive Maximum, retained values with their own QoS
//! (also after a restart), a subscriber that falls behind catching up from the log; and a
//! persistent session that gets what was published while it was away (more in
//! `mqtt_sessions.rs`).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mqws_integration::raw::{handshake, packet, parse_publish, puback, raw_v5, readable};
use mqws_integration::v5::{level, received, V5};
use mqws_integration::{http_get, metric_value, wait_dispatched, Mqtt, RawMqtt, Server, TIMEOUT};
use rumqttc::v5::mqttbytes::v5::{Filter, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;

/// The QoS and payload of the next `n` PUBLISHes of an MQTT 3.1.1 client.
async fn received_v4(c: &mut Mqtt, n: usize) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let p = c.next_publish(TIMEOUT).await;
        out.push((
            p.qos as u8,
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    out
}

fn pairs(expected: &[(u8, &str)]) -> Vec<(u8, String)> {
    expected
        .iter()
        .map(|(q, s)| (*q, (*s).to_owned()))
        .collect()
}

/// A raw MQTT 5 client (CONNECT properties `props`) granted QoS 1 on `filter`.
async fn raw_subscriber(
    addr: SocketAddr,
    id: &'static str,
    props: &'static [u8],
    filter: &'static [u8],
) -> RawMqtt {
    tokio::task::spawn_blocking(move || {
        let mut sub = raw_v5(addr, id, props);
        assert_eq!(sub.subscribe(1, &[filter]), vec![1]);
        sub
    })
    .await
    .unwrap()
}

/// Payload `i`: its number, then (when `size` is larger) `|` and padding up to `size` bytes.
fn counted(i: usize, size: usize) -> Vec<u8> {
    let mut p = i.to_string().into_bytes();
    if size > p.len() {
        p.push(b'|');
        p.resize(size, b'.');
    }
    p
}

/// The number a [`counted`] payload carries.
fn count_of(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|b| *b == b'|')
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// Publishes `n` QoS 1 messages with [`counted`] payloads of `size` bytes on `topic` from an
/// MQTT 3.1.1 client and waits for every PUBACK.
async fn publish_counted(server: &Server, id: &str, topic: &str, n: usize, size: usize) {
    let mut publisher = Mqtt::connect(server.mqtt_addr, id).await;
    for i in 0..n {
        publisher
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, counted(i, size))
            .await;
    }
    publisher.wait_pubacks(n, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_at_the_lower_of_publish_and_granted_qos() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    // MQTT 5.
    let mut at2 = V5::connect(addr, "qos-at2", |_| {}).await;
    at2.subscribe_one("q/#", QoS::ExactlyOnce).await;
    let mut at1 = V5::connect(addr, "qos-at1", |_| {}).await;
    at1.subscribe_one("q/#", QoS::AtLeastOnce).await;
    let mut publisher = V5::connect(addr, "qos-pub", |_| {}).await;
    publisher
        .publish_acked("q/a", QoS::AtMostOnce, false, b"0")
        .await;
    publisher
        .publish_acked("q/a", QoS::AtLeastOnce, false, b"1")
        .await;
    publisher
        .publish_acked("q/a", QoS::ExactlyOnce, false, b"2")
        .await;
    assert_eq!(
        received(&mut at2, 3).await,
        pairs(&[(0, "0"), (1, "1"), (2, "2")]),
        "granted QoS 2: each at its publish QoS"
    );
    assert_eq!(
        received(&mut at1, 3).await,
        pairs(&[(0, "0"), (1, "1"), (1, "2")]),
        "granted QoS 1: QoS 2 downgraded to 1"
    );
    // MQTT 3.1.1.
    let mut v4_at1 = Mqtt::connect(addr, "qos-v4-at1").await;
    v4_at1.subscribe("q4/#", rumqttc::QoS::AtLeastOnce).await;
    let mut v4_at2 = Mqtt::connect(addr, "qos-v4-at2").await;
    v4_at2.subscribe("q4/#", rumqttc::QoS::ExactlyOnce).await;
    publisher
        .publish_acked("q4/a", QoS::AtMostOnce, false, b"0")
        .await;
    publisher
        .publish_acked("q4/a", QoS::ExactlyOnce, false, b"2")
        .await;
    assert_eq!(
        received_v4(&mut v4_at1, 2).await,
        pairs(&[(0, "0"), (1, "2")]),
        "MQTT 3.1.1 granted QoS 1"
    );
    assert_eq!(
        received_v4(&mut v4_at2, 2).await,
        pairs(&[(0, "0"), (2, "2")]),
        "MQTT 3.1.1 granted QoS 2"
    );
    // Nothing more anywhere (one copy each).
    assert!(at2
        .try_next_publish(Duration::from_millis(300))
        .await
        .is_none());
    assert!(at1
        .try_next_publish(Duration::from_millis(100))
        .await
        .is_none());
    assert!(v4_at1
        .try_next_publish(Duration::from_millis(100))
        .await
        .is_none());
    assert!(v4_at2
        .try_next_publish(Duration::from_millis(100))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_keeps_a_clients_own_messages_from_it() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    let mut me = V5::connect(addr, "nl-me", |_| {}).await;
    let mut no_local = Filter::new("n/t", QoS::AtLeastOnce);
    no_local.nolocal = true;
    let codes = me
        .subscribe(vec![no_local, Filter::new("n2/t", QoS::AtLeastOnce)])
        .await;
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]
    );
    me.publish_acked("n/t", QoS::AtLeastOnce, false, b"mine")
        .await;
    assert!(
        me.try_next_publish(Duration::from_secs(1)).await.is_none(),
        "its own message on a no-local subscription"
    );
    let mut other = V5::connect(addr, "nl-other", |_| {}).await;
    other
        .publish_acked("n/t", QoS::AtLeastOnce, false, b"theirs")
        .await;
    let got = me.next_publish().await;
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        (&b"n/t"[..], &b"theirs"[..])
    );
    // Without no-local it gets its own.
    me.publish_acked("n2/t", QoS::AtLeastOnce, false, b"mine too")
        .await;
    let got = me.next_publish().await;
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        (&b"n2/t"[..], &b"mine too"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_packet_size_is_never_exceeded() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    // rumqttc states 512 in its CONNECT and fails the connection on a larger incoming packet.
    let mut sub = V5::connect(addr, "mps-sub", |o| {
        o.set_max_packet_size(Some(512));
    })
    .await;
    sub.subscribe_one("mps/t", QoS::AtLeastOnce).await;
    let mut publisher = V5::connect(addr, "mps-pub", |o| {
        o.set_max_packet_size(Some(1 << 20));
    })
    .await;
    publisher
        .publish_acked("mps/t", QoS::AtLeastOnce, false, &[b'x'; 2000])
        .await;
    publisher
        .publish_acked("mps/t", QoS::AtLeastOnce, false, b"0123456789")
        .await;
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], b"0123456789", "only the small one");
    // Still connected: a later message arrives, and nothing else does.
    publisher
        .publish_acked("mps/t", QoS::AtLeastOnce, false, b"after")
        .await;
    assert_eq!(&sub.next_publish().await.payload[..], b"after");
    assert!(sub
        .try_next_publish(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_1_gets_1000_qos1_messages_in_order() {
    const N: usize = 1000;
    let server = Server::start();
    let addr = server.mqtt_addr;
    // Receive Maximum 1; each PUBACK is sent 2 ms after its PUBLISH arrived, and nothing may
    // arrive in between.
    let mut sub = raw_subscriber(addr, "rm-sub", &[0x21, 0, 1], b"rm/t").await;
    let reader = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for i in 0..N {
            let p = parse_publish(&sub.packet(), true);
            assert_eq!(
                (p.qos, p.retain, &p.topic[..]),
                (1, false, "rm/t"),
                "message {i}: {p:?}"
            );
            assert_eq!(
                String::from_utf8_lossy(&p.payload),
                i.to_string(),
                "in order, no duplicate"
            );
            let id = p.id.unwrap();
            assert!(id >= 101, "the proxy's packet ids: {id}");
            std::thread::sleep(Duration::from_millis(2));
            assert!(
                !readable(&sub),
                "something arrived before the PUBACK of message {i} (Receive Maximum 1)"
            );
            sub.send(&puback(id));
            assert!(
                started.elapsed() < Duration::from_secs(25),
                "too slow at {i}"
            );
        }
        sub.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(sub.try_packet(), None, "nothing after the {N} messages");
    });
    publish_counted(&server, "rm-pub", "rm/t", N, 0).await;
    reader.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_values_arrive_with_their_own_qos() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let mut publisher = V5::connect(server.mqtt_addr, "ret-pub", |_| {}).await;
    publisher
        .publish_acked("r/0", QoS::AtMostOnce, true, b"zero")
        .await;
    publisher
        .publish_acked("r/1", QoS::AtLeastOnce, true, b"one")
        .await;
    // Acknowledged after the two before it (held in order): all three are stored.
    publisher
        .publish_acked("r/2", QoS::ExactlyOnce, true, b"two")
        .await;
    async fn check(server: &Server, id: &str) {
        let mut sub = V5::connect(server.mqtt_addr, id, |_| {}).await;
        sub.subscribe_one("r/+", QoS::ExactlyOnce).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let p = sub.next_publish().await;
            assert!(p.retain, "retain flag set: {p:?}");
            got.push((
                String::from_utf8_lossy(&p.topic).into_owned(),
                level(p.qos),
                String::from_utf8_lossy(&p.payload).into_owned(),
            ));
        }
        got.sort();
        let want: Vec<(String, u8, String)> =
            [("r/0", 0, "zero"), ("r/1", 1, "one"), ("r/2", 2, "two")]
                .iter()
                .map(|(t, q, p)| ((*t).to_owned(), *q, (*p).to_owned()))
                .collect();
        assert_eq!(got, want, "{id}: each retained value at its own QoS");
        assert!(sub
            .try_next_publish(Duration::from_millis(300))
            .await
            .is_none());
    }
    check(&server, "ret-sub").await;
    drop(publisher);
    server.sigterm();
    assert!(server.wait(Duration::from_secs(15)).await.success());
    let server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    check(&server, "ret-sub-after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_values_wait_for_a_receive_maximum_of_1() {
    let server = Server::start();
    let mut publisher = V5::connect(server.mqtt_addr, "rw-pub", |_| {}).await;
    for t in ["rw/a", "rw/b", "rw/c"] {
        publisher
            .publish_acked(t, QoS::AtLeastOnce, true, t.as_bytes())
            .await;
    }
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        let mut sub = raw_v5(addr, "rw-sub", &[0x21, 0, 1]);
        assert_eq!(sub.subscribe(1, &[b"rw/+"]), vec![1]);
        let mut got = Vec::new();
        for i in 0..3 {
            let p = parse_publish(&sub.packet(), true);
            assert!(p.retain && p.qos == 1, "retained at QoS 1: {p:?}");
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !readable(&sub),
                "a second PUBLISH before the PUBACK of retained value {i} (Receive Maximum 1)"
            );
            sub.send(&puback(p.id.unwrap()));
            got.push(p.topic);
        }
        got.sort();
        assert_eq!(got, ["rw/a", "rw/b", "rw/c"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_mqtt_subscriber_catches_up_from_the_log() {
    // 2,000 messages of 1 KiB: more than the 1 MiB tail holds, so the first ones can only come
    // from the log.
    const N: usize = 2000;
    let server = Server::start_configured(
        "[ws]\nmax_pending_messages = 16\ntail_bytes = \"1MiB\"\n",
        &[],
        None,
    );
    let addr = server.mqtt_addr;
    // Receive Maximum 10, and it reads nothing while the messages are published: after ten
    // PUBLISHes the proxy stops taking from the feed, whose queue of 16 overflows.
    let mut sub = raw_subscriber(addr, "slow-sub", &[0x21, 0, 10], b"slow/t").await;
    publish_counted(&server, "slow-pub", "slow/t", N, 1024).await;
    wait_dispatched(&server, N as u64, Duration::from_secs(20)).await;
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    let fell = metric_value(&metrics, "mqws_ws_fell_behind_total").unwrap_or(0.0);
    assert!(fell > 0.0, "the subscriber's queue fell behind: {fell}");
    // It reads again: everything, in order, once.
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for i in 0..N {
            let p = parse_publish(&sub.packet(), true);
            assert_eq!(
                (p.qos, count_of(&p.payload), p.payload.len()),
                (1, i.to_string(), 1024),
                "message {i} in order, none lost"
            );
            sub.send(&puback(p.id.unwrap()));
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "too slow at {i}"
            );
        }
        sub.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(sub.try_packet(), None, "nothing after the {N} messages");
    })
    .await
    .unwrap();
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    let replayed = metric_value(&metrics, "mqws_replay_messages_total").unwrap_or(0.0);
    assert!(
        replayed >= (N - 26) as f64,
        "all but the first 26 came through the catch-up: {replayed}"
    );
}

/// Starts a server whose MQTT subscribers are disconnected after 2 s behind, subscribes a raw
/// MQTT 5 client with Receive Maximum 1 to `stuck/t` and publishes 200 messages there.
async fn stuck_subscriber(id: &'static str) -> (Server, RawMqtt) {
    let server = Server::start_configured(
        "[ws]\nmax_pending_messages = 16\nslow_consumer_timeout = \"2s\"\n",
        &[],
        None,
    );
    let addr = server.mqtt_addr;
    let sub = tokio::task::spawn_blocking(move || {
        let mut sub = raw_v5(addr, id, &[0x21, 0, 1]);
        assert_eq!(sub.subscribe(1, &[b"stuck/t"]), vec![1]);
        sub.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        sub
    })
    .await
    .unwrap();
    publish_counted(&server, &format!("{id}-pub"), "stuck/t", 200, 0).await;
    (server, sub)
}

/// MQTT 5 DISCONNECT, reason 0x97: behind the live stream too long.
const BEHIND: [u8; 4] = [0xe0, 2, 0x97, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_too_long_is_disconnected_with_0x97() {
    let (_server, mut sub) = stuck_subscriber("behind-sub").await;
    // Two PUBACKs a second: far behind for longer than the 2 s allowed.
    let (got, last, took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut got = 0;
        loop {
            let Some(p) = sub
                .try_packet()
                .filter(|_| started.elapsed() < Duration::from_secs(10))
            else {
                return (got, None, started.elapsed());
            };
            if p[0] >> 4 != 3 {
                return (got, Some(p), started.elapsed());
            }
            let p = parse_publish(&p, true);
            assert_eq!(count_of(&p.payload), got.to_string(), "in order");
            got += 1;
            std::thread::sleep(Duration::from_millis(500));
            sub.send(&puback(p.id.unwrap()));
        }
    })
    .await
    .unwrap();
    assert_eq!(
        last,
        Some(BEHIND.to_vec()),
        "after {got} messages, {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "disconnected after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_acknowledges_is_disconnected_after_the_slow_consumer_timeout() {
    let (_server, mut sub) = stuck_subscriber("stuck-sub").await;
    let (first, next, took) = tokio::task::spawn_blocking(move || {
        let first = parse_publish(&sub.packet(), true);
        // No PUBACK ever: the window stays shut and the feed behind.
        let started = Instant::now();
        let next = sub.try_packet();
        (first, next, started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(count_of(&first.payload), "0");
    assert_eq!(
        next,
        Some(BEHIND.to_vec()),
        "DISCONNECT 0x97, waited {took:?}"
    );
}

/// A raw MQTT 3.1.1 CONNECT without clean session; returns the connection and whether the
/// CONNACK says a session was present.
fn persistent_v4(addr: SocketAddr, id: &str) -> (RawMqtt, bool) {
    handshake(addr, id, false, false, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_what_was_published_while_away() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        let (mut sub, _) = persistent_v4(addr, "persist-sub");
        assert_eq!(sub.subscribe(1, &[b"p/t"]), vec![1]);
        sub.send(&[0xe0, 0]);
        let mut rest = Vec::new();
        let _ = sub.stream.read_to_end(&mut rest);
        drop(sub);
        // Published while it is away: the session's position keeps it.
        let mut publisher = RawMqtt::connect(addr, "persist-pub", false, 60);
        publisher.publish("p/t", 1, b"while away");
        assert_eq!(publisher.packet()[0], 0x40, "PUBACK");
        let (mut sub, present) = persistent_v4(addr, "persist-sub");
        assert!(present, "the session was kept");
        let p = parse_publish(&sub.packet(), false);
        assert_eq!(
            (p.topic.as_str(), p.qos, &p.payload[..]),
            ("p/t", 1, &b"while away"[..])
        );
        sub.send(&puback(p.id.unwrap()));
    })
    .await
    .unwrap();
}

/// rumqttd keys the topic aliases it sends by subscription filter, not topic, so a client that
/// allows aliases could be told the wrong topic on a filter rumqttd holds (a shared one here):
/// the proxy keeps the Topic Alias Maximum from reaching rumqttd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttds_topic_aliases_never_reach_a_client() {
    let server = Server::start();
    let mut sub = V5::connect(server.mqtt_addr, "alias-sub", |o| {
        o.set_topic_alias_max(Some(10));
    })
    .await;
    sub.subscribe_one("$share/g/ta/+", QoS::AtMostOnce).await;
    let mut publisher = V5::connect(server.mqtt_addr, "alias-pub", |_| {}).await;
    let topics = ["ta/1", "ta/2", "ta/1", "ta/3"];
    for t in topics {
        publisher
            .publish_acked(t, QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    for t in topics {
        let p = sub.next_publish().await;
        assert_eq!(
            (
                String::from_utf8_lossy(&p.topic),
                String::from_utf8_lossy(&p.payload)
            ),
            (t.into(), t.into()),
            "the topic each message was published to"
        );
        assert!(p
            .properties
            .as_ref()
            .is_none_or(|props| props.topic_alias.is_none()));
    }
}

/// A logged PUBLISH no filter held by rumqttd could match never reaches rumqttd (its router
/// spends nothing on it): the proxy acknowledges it once it is in the log. Once rumqttd holds
/// a matching filter (a shared subscription here), it gets them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_no_rumqttd_filter_wants_are_acknowledged_by_the_proxy() {
    let server = Server::start();
    let bypassed = || async {
        let metrics = http_get(server.http_addr, "/metrics").await.body;
        metric_value(&metrics, "mqws_mqtt_bypassed_total").unwrap_or(0.0)
    };
    let mut publisher = V5::connect(server.mqtt_addr, "bp-pub", |_| {}).await;
    let mut served = V5::connect(server.mqtt_addr, "bp-served", |_| {}).await;
    served.subscribe_one("bp/#", QoS::AtLeastOnce).await;
    for i in 0..5u8 {
        publisher
            .publish_acked("bp/t", QoS::AtLeastOnce, false, &[i])
            .await;
    }
    assert_eq!(bypassed().await, 5.0, "acknowledged without rumqttd");
    for i in 0..5u8 {
        assert_eq!(&served.next_publish().await.payload[..], &[i]);
    }
    let mut shared = V5::connect(server.mqtt_addr, "bp-shared", |_| {}).await;
    shared
        .subscribe_one("$share/g/bp/#", QoS::AtLeastOnce)
        .await;
    publisher
        .publish_acked("bp/t", QoS::AtLeastOnce, false, b"x")
        .await;
    assert_eq!(&shared.next_publish().await.payload[..], b"x");
    assert_eq!(&served.next_publish().await.payload[..], b"x");
    assert_eq!(bypassed().await, 5.0, "rumqttd holds a filter for it now");
}

/// A client that sends CONNECT and a QoS 1 PUBLISH in one write (as `mosquitto_pub` does) gets
/// the CONNACK first, then the PUBACK, also when the proxy acknowledges the PUBLISH itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_connect_and_publish_get_connack_then_puback() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        for i in 0..50 {
            for v5 in [false, true] {
                let stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut raw = RawMqtt { stream, v5 };
                let mut bytes =
                    mqws_integration::raw::connect_packet(&format!("pipe-{i}"), v5, 30, None);
                let mut body = 6u16.to_be_bytes().to_vec();
                body.extend_from_slice(b"pipe/t");
                body.extend_from_slice(&7u16.to_be_bytes());
                if v5 {
                    body.push(0);
                }
                body.extend_from_slice(b"m");
                bytes.extend(packet(0x32, &body));
                raw.send(&bytes);
                assert_eq!(
                    raw.packet()[0],
                    0x20,
                    "round {i} v5 {v5}: the CONNACK first"
                );
                let ack = raw.packet();
                assert_eq!((ack[0], ack[2], ack[3]), (0x40, 0, 7), "then the PUBACK");
            }
        }
    })
    .await
    .unwrap();
}
