//! Each message once on a connection where rumqttd holds filters beside the proxy's served ones,
//! on the real binary: a filter that matches logged and unlogged topics (served for the logged
//! part, rumqttd for the rest) and a shared subscription overlapping a served filter get one
//! copy of each logged message, QoS 1 and 2 and retained alike; rumqttd's copies are kept from
//! the client and acknowledged to rumqttd in its order, so its deliveries never stall; and
//! rumqttd's PUBLISHes over the client's Maximum Packet Size are kept from it too; and the
//! client's Receive Maximum counts the proxy's PUBLISHes and rumqttd's together; and a PUBREL
//! rumqttd sends again after a persistent session reconnects holds back the proxy's own
//! acknowledgements until the client answered it (rumqttd ends a connection whose PUBCOMPs
//! come out of its order).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use mqws_integration::raw::{ack, packet, parse_publish, puback, raw_v5, readable, RawMqtt};
use mqws_integration::v5::V5;
use mqws_integration::{http_get, metric_value, Mqtt, Server};
use rumqttc::v5::mqttbytes::v5::{Filter, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;

/// Logs `site/#` only, so `+/x` matches logged (`site/x`) and unlogged (`other/x`) topics.
fn server() -> Server {
    Server::start_with(&[("MQWS_BRIDGE__FILTERS", "[\"site/#\"]")], None)
}

/// How many times each payload arrived until nothing came for `quiet`.
async fn tally(sub: &mut V5, quiet: Duration) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    while let Some(p) = sub.try_next_publish(quiet).await {
        *seen
            .entry(String::from_utf8_lossy(&p.payload).into_owned())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_filters_rumqttd_also_holds_get_each_logged_message_once() {
    let server = server();
    let addr = server.mqtt_addr;
    let mut sub = V5::connect(addr, "once-sub", |_| {}).await;
    let codes = sub
        .subscribe(vec![
            Filter::new("+/x", QoS::ExactlyOnce),
            Filter::new("site/#", QoS::ExactlyOnce),
            Filter::new("$share/g/site/#", QoS::ExactlyOnce),
        ])
        .await;
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::Success(QoS::ExactlyOnce); 3]
    );
    let mut publisher = V5::connect(addr, "once-pub", |_| {}).await;
    // More QoS 1 and 2 messages than rumqttd keeps in flight to one client (100): if the
    // copies kept from the client were not acknowledged to rumqttd, its deliveries to this
    // connection (the unlogged `other/x` ones) would stop.
    let mut expected = Vec::new();
    for i in 0..120 {
        let (topic, qos) = match i % 4 {
            0 => ("site/x", QoS::AtLeastOnce),
            1 => ("site/x", QoS::ExactlyOnce),
            2 => ("other/x", QoS::AtLeastOnce),
            _ => ("site/y", QoS::AtMostOnce),
        };
        let payload = format!("{topic} {i}");
        publisher
            .publish_acked(topic, qos, false, payload.as_bytes())
            .await;
        expected.push(payload);
    }
    publisher
        .publish_acked("site/x", QoS::AtLeastOnce, true, b"retained")
        .await;
    publisher
        .publish_acked("other/x", QoS::AtLeastOnce, false, b"last")
        .await;
    expected.push("retained".into());
    expected.push("last".into());
    let seen = tally(&mut sub, Duration::from_secs(2)).await;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let missing: Vec<_> = expected.iter().filter(|p| !seen.contains_key(*p)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert_eq!(seen.len(), expected.len());
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    let kept = metric_value(
        &metrics,
        "mqws_mqtt_broker_copies_kept_total{why=\"duplicate\"}",
    );
    assert!(
        kept.unwrap_or(0.0) >= 60.0,
        "rumqttd's copies kept: {kept:?}"
    );
    // A new subscriber to `+/x` gets the retained value once: from mqws's retained store
    // (rumqttd's copy, which it sends too, is kept from it).
    let mut late = V5::connect(addr, "once-late", |_| {}).await;
    late.subscribe_one("+/x", QoS::AtLeastOnce).await;
    let seen = tally(&mut late, Duration::from_secs(1)).await;
    assert_eq!(seen.get("retained"), Some(&1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttds_publishes_over_the_clients_maximum_packet_size_are_kept_from_it() {
    let server = server();
    let addr = server.mqtt_addr;
    // rumqttc states 512 in its CONNECT and fails the connection on a larger packet.
    let mut sub = V5::connect(addr, "mps-rumqttd-sub", |o| {
        o.set_max_packet_size(Some(512));
    })
    .await;
    // Outside bridge.filters: rumqttd alone holds this filter.
    sub.subscribe_one("other/#", QoS::AtLeastOnce).await;
    let mut publisher = V5::connect(addr, "mps-rumqttd-pub", |o| {
        o.set_max_packet_size(Some(1 << 20));
    })
    .await;
    for i in 0..110 {
        publisher
            .publish_acked("other/big", QoS::AtLeastOnce, false, &[b'x'; 2000])
            .await;
        let small = format!("small {i}");
        publisher
            .publish_acked("other/small", QoS::AtLeastOnce, false, small.as_bytes())
            .await;
    }
    let seen = tally(&mut sub, Duration::from_secs(2)).await;
    assert_eq!(
        seen.len(),
        110,
        "every small one, none of the large: {seen:?}"
    );
    assert!(seen.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_1_counts_the_proxys_publishes_and_rumqttds_together() {
    const N: usize = 150;
    let server = server();
    let addr = server.mqtt_addr;
    // Receive Maximum 1, `site/#` served by the proxy from the log, `other/#` by rumqttd.
    // Each PUBACK goes 2 ms after its PUBLISH arrived, and nothing may arrive in between.
    let (subscribed, ready) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let mut sub = raw_v5(addr, "rm-both-sub", &[0x21, 0, 1]);
        assert_eq!(sub.subscribe(1, &[b"site/#", b"other/#"]), vec![1, 1]);
        let _ = subscribed.send(());
        let mut got: HashMap<String, Vec<usize>> = HashMap::new();
        for i in 0..2 * N {
            let p = parse_publish(&sub.packet(), true);
            assert_eq!(p.qos, 1, "message {i}: {p:?}");
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            let (who, n) = payload.split_once(' ').unwrap();
            got.entry(who.to_owned())
                .or_default()
                .push(n.parse().unwrap());
            std::thread::sleep(Duration::from_millis(2));
            assert!(
                !readable(&sub),
                "something arrived before the PUBACK of message {i} ({payload}): \
                 Receive Maximum 1"
            );
            sub.send(&puback(p.id.unwrap()));
        }
        got
    });
    // The subscriber is in place before the flood (its SUBACK came back).
    ready.await.unwrap();
    let mut publisher = Mqtt::connect(addr, "rm-both-pub").await;
    for i in 0..N {
        for topic in ["site/t", "other/t"] {
            let who = topic.split('/').next().unwrap();
            publisher
                .publish(
                    topic,
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    format!("{who} {i}"),
                )
                .await;
        }
    }
    publisher.wait_pubacks(2 * N, Duration::from_secs(30)).await;
    let got = reader.await.unwrap();
    let want: Vec<usize> = (0..N).collect();
    assert_eq!(got.get("site"), Some(&want), "the proxy's, in order");
    assert_eq!(got.get("other"), Some(&want), "rumqttd's, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubrel_rumqttd_sends_again_after_a_reconnect_keeps_the_acks_in_its_order() {
    let server = server();
    let addr = server.mqtt_addr;
    let (mut sub, _) = RawMqtt::connect_persistent(addr, "rel-again");
    // At QoS 2: `site/#`, served (and kept in mqws's session), and `+/x`, held by rumqttd
    // for `other/x` and `site/x` alike (rumqttd's copies of `site/x` are kept from the client
    // and acknowledged by the proxy).
    sub.send(&packet(
        0x82,
        &[
            0, 1, 0, 6, b's', b'i', b't', b'e', b'/', b'#', 2, 0, 3, b'+', b'/', b'x', 2,
        ],
    ));
    assert_eq!(sub.packet(), vec![0x90, 4, 0, 1, 2, 2]);
    let mut publisher = V5::connect(addr, "rel-again-pub", |_| {}).await;
    publisher
        .publish_acked("other/x", QoS::ExactlyOnce, false, b"first")
        .await;
    // The first exchange completes; the second stops after rumqttd's PUBREL, so the PUBREL
    // rumqttd keeps has another packet id than the copy it sends after the reconnect (which
    // starts its ids again), and PUBCOMPs out of its order would end the connection.
    let first = parse_publish(&sub.packet(), false);
    assert_eq!((first.topic.as_str(), first.qos), ("other/x", 2));
    let done = first.id.unwrap();
    sub.send(&ack(0x50, done));
    assert_eq!(sub.packet(), ack(0x62, done));
    sub.send(&ack(0x70, done));
    publisher
        .publish_acked("other/x", QoS::ExactlyOnce, false, b"first-b")
        .await;
    let pending = parse_publish(&sub.packet(), false);
    assert_eq!(&pending.payload[..], b"first-b");
    let id = pending.id.unwrap();
    assert_ne!(id, done);
    sub.send(&ack(0x50, id));
    assert_eq!(sub.packet(), ack(0x62, id));
    // Gone before its PUBCOMP: rumqttd keeps the PUBREL for the session.
    drop(sub);
    let (mut sub, present) = RawMqtt::connect_persistent(addr, "rel-again");
    assert!(present, "the session is back");
    // rumqttd sends the session's PUBREL again, but only with its next packet to the
    // connection (its link takes one wake-up for the CONNACK alone). A logged QoS 2 message:
    // the proxy delivers it, rumqttd's copy is kept (and brings the PUBREL along), and the
    // proxy's PUBCOMP for that copy must wait for the client's PUBCOMP of the PUBREL.
    publisher
        .publish_acked("site/x", QoS::ExactlyOnce, false, b"second")
        .await;
    let (mut rel, mut second) = (None, None);
    while rel.is_none() || second.is_none() {
        let p = sub.packet();
        if p[0] == 0x62 {
            rel = Some(p);
        } else {
            second = Some(parse_publish(&p, false));
        }
    }
    assert_eq!(
        rel.unwrap(),
        ack(0x62, id),
        "rumqttd sends its PUBREL again"
    );
    let second = second.unwrap();
    assert_eq!(
        (second.topic.as_str(), &second.payload[..]),
        ("site/x", &b"second"[..])
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    sub.send(&ack(0x70, id));
    let served = second.id.unwrap();
    sub.send(&ack(0x50, served));
    assert_eq!(sub.packet(), ack(0x62, served));
    sub.send(&ack(0x70, served));
    // rumqttd kept the connection: it still delivers.
    publisher
        .publish_acked("other/x", QoS::AtLeastOnce, false, b"third")
        .await;
    let third = sub
        .try_packet()
        .map(|p| parse_publish(&p, false))
        .expect("the connection lives on");
    assert_eq!(
        (third.topic.as_str(), &third.payload[..]),
        ("other/x", &b"third"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_sessions_filter_rumqttd_holds_outlives_the_connection() {
    let server = server();
    let addr = server.mqtt_addr;
    // Outside bridge.filters: rumqttd alone holds `other/x`.
    let (mut sub, present) = RawMqtt::connect_persistent(addr, "keeps-other");
    assert!(!present);
    sub.send(&packet(
        0x82,
        &[0, 1, 0, 7, b'o', b't', b'h', b'e', b'r', b'/', b'x', 1],
    ));
    assert_eq!(sub.packet(), vec![0x90, 3, 0, 1, 1]);
    drop(sub);
    let mut publisher = V5::connect(addr, "keeps-other-pub", |_| {}).await;
    publisher
        .publish_acked("other/x", QoS::AtLeastOnce, false, b"away")
        .await;
    let (mut sub, present) = RawMqtt::connect_persistent(addr, "keeps-other");
    assert!(present);
    let away = parse_publish(&sub.try_packet().expect("queued while away"), false);
    assert_eq!(&away.payload[..], b"away");
    sub.send(&puback(away.id.unwrap()));
    publisher
        .publish_acked("other/x", QoS::AtLeastOnce, false, b"back")
        .await;
    let back = parse_publish(&sub.try_packet().expect("still subscribed"), false);
    assert_eq!(&back.payload[..], b"back");
}

/// PUBLISHes that arrive within `quiet` of each other, acknowledged, as (topic, payload, the
/// proxy's packet id or rumqttd's: ids from 101 are the proxy's).
fn drain(sub: &mut RawMqtt, quiet: Duration) -> Vec<(String, String, bool)> {
    let mut got = Vec::new();
    loop {
        if !readable(sub) {
            std::thread::sleep(quiet);
            if !readable(sub) {
                return got;
            }
        }
        let m = parse_publish(&sub.packet(), false);
        let id = m.id.expect("QoS 1");
        sub.send(&puback(id));
        got.push((m.topic, String::from_utf8(m.payload).unwrap(), id >= 101));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_spanning_logged_and_unlogged_topics_gets_both_also_in_a_resumed_session() {
    let server = server();
    let addr = server.mqtt_addr;
    // `+/x` matches logged `site/x` (the proxy serves it) and unlogged `other/x` (rumqttd).
    let (mut sub, present) = RawMqtt::connect_persistent(addr, "spans");
    assert!(!present);
    sub.send(&packet(0x82, &[0, 1, 0, 3, b'+', b'/', b'x', 1]));
    assert_eq!(sub.packet(), vec![0x90, 3, 0, 1, 1]);
    let mut publisher = V5::connect(addr, "spans-pub", |_| {}).await;
    let both = |a: &str, b: &str, from_log: bool| {
        vec![
            ("site/x".to_owned(), a.to_owned(), from_log),
            ("other/x".to_owned(), b.to_owned(), false),
        ]
    };
    publisher
        .publish_acked("site/x", QoS::AtLeastOnce, false, b"live-site")
        .await;
    publisher
        .publish_acked("other/x", QoS::AtLeastOnce, false, b"live-other")
        .await;
    let mut got = drain(&mut sub, Duration::from_millis(500));
    got.sort();
    let mut expect = both("live-site", "live-other", true);
    expect.sort();
    assert_eq!(got, expect, "each once, the logged one from the proxy");
    drop(sub);
    publisher
        .publish_acked("site/x", QoS::AtLeastOnce, false, b"away-site")
        .await;
    publisher
        .publish_acked("other/x", QoS::AtLeastOnce, false, b"away-other")
        .await;
    let (mut sub, present) = RawMqtt::connect_persistent(addr, "spans");
    assert!(present);
    publisher
        .publish_acked("site/x", QoS::AtLeastOnce, false, b"back-site")
        .await;
    publisher
        .publish_acked("other/x", QoS::AtLeastOnce, false, b"back-other")
        .await;
    let mut got = drain(&mut sub, Duration::from_millis(500));
    got.sort();
    let mut expect = both("away-site", "away-other", true);
    expect.extend(both("back-site", "back-other", true));
    expect.sort();
    assert_eq!(
        got, expect,
        "what was missed and what came after, each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_persistent_sessions_each_keeps_its_filter_rumqttd_holds() {
    const N: usize = 40;
    let server = server();
    let addr = server.mqtt_addr;
    // Each new persistent session first makes rumqttd forget its client id (a clean
    // connection of the proxy's); N at once must not disturb one another.
    let subscribe_all = || {
        let threads: Vec<_> = (0..N)
            .map(|i| {
                std::thread::spawn(move || {
                    let (mut sub, present) =
                        RawMqtt::connect_persistent(addr, &format!("burst-{i}"));
                    let topic = format!("other/{i}");
                    let mut body = vec![0, 1];
                    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
                    body.extend_from_slice(topic.as_bytes());
                    body.push(1);
                    sub.send(&packet(0x82, &body));
                    assert_eq!(sub.packet(), vec![0x90, 3, 0, 1, 1], "SUBACK of burst-{i}");
                    present
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<bool>>()
    };
    assert!(subscribe_all().iter().all(|p| !p), "all new");
    let mut publisher = V5::connect(addr, "burst-pub", |_| {}).await;
    for i in 0..N {
        publisher
            .publish_acked(&format!("other/{i}"), QoS::AtLeastOnce, false, b"away")
            .await;
    }
    let threads: Vec<_> = (0..N)
        .map(|i| {
            std::thread::spawn(move || {
                let (mut sub, present) = RawMqtt::connect_persistent(addr, &format!("burst-{i}"));
                assert!(present, "burst-{i} resumed");
                let m = parse_publish(&sub.try_packet().expect("queued while away"), false);
                assert_eq!(
                    (m.topic.as_str(), &m.payload[..]),
                    (format!("other/{i}").as_str(), &b"away"[..])
                );
                sub.send(&puback(m.id.unwrap()));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
