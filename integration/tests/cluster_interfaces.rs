//! The HTTP interfaces across the nodes of a cluster, on real binaries and a real nats-server:
//! an SSE stream read on one node resumes on another by `Last-Event-ID` with every seq once,
//! a `POST /publish` on one node reaches a WebSocket client and an MQTT subscriber of
//! another, MQTT-over-WebSocket (`/mqtt`) clients of two nodes reach each other at QoS 1, and a
//! retained value and a will set on one node reach the subscribers of another.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// A node on `nats`'s stream.
fn node(nats: &Nats) -> Server {
    let urls = format!("[\"{}\"]", nats.url());
    Server::start_with(
        &[
            ("MQWS_LOG__BACKEND", "jetstream"),
            ("MQWS_CLUSTER__NATS__URLS", urls.as_str()),
            ("MQWS_CLUSTER__NATS__STREAM", "interfaces"),
        ],
        None,
    )
}

async fn publish(mqtt: &mut Mqtt, range: std::ops::RangeInclusive<u64>) {
    let n = range.clone().count();
    for i in range {
        mqtt.publish(&format!("s/{i}"), QoS::AtLeastOnce, false, format!("m{i}"))
            .await;
    }
    mqtt.wait_pubacks(n, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_of_one_node_resumes_on_another_by_last_event_id() {
    let nats = Nats::start();
    let (a, b) = (node(&nats), node(&nats));
    let mut mqtt = mqtt_client(&a, "sse-cluster-pub").await;
    publish(&mut mqtt, 1..=5).await;
    let path = "/sse?filter=s%2F%23&from=earliest";
    let mut sse = sse_connect(b.http_addr, path, &[]).await;
    let welcome = sse.expect("welcome").await;
    assert_eq!(welcome.data["recovered"], true, "{welcome:?}");
    let (first, last) = sse.messages(5).await;
    drop(sse);
    // Logged while the stream was away, through node B's MQTT listener this time.
    let mut other = mqtt_client(&b, "sse-cluster-pub-b").await;
    publish(&mut other, 6..=9).await;
    let mut sse = sse_connect(a.http_addr, path, &[("Last-Event-ID", &last)]).await;
    let welcome = sse.expect("welcome").await;
    assert_eq!(welcome.data["recovered"], true, "{welcome:?}");
    let (then, _) = sse.messages(4).await;
    let all: Vec<u64> = first.iter().chain(&then).copied().collect();
    let expected: Vec<u64> = (all[0]..all[0] + 9).collect();
    assert_eq!(
        all, expected,
        "every seq once, in order, across the two nodes"
    );
    sse.expect("caught_up").await;
    // And live on node A from node B's publisher.
    publish(&mut other, 10..=10).await;
    let (live, _) = sse.messages(1).await;
    assert_eq!(live, [all[8] + 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_one_node_reaches_the_clients_of_another() {
    let nats = Nats::start();
    let (a, b) = (node(&nats), node(&nats));
    let mut ws = ws_connect(&b).await;
    hello(&mut ws, &["cmd/#"]).await;
    let mut sub = mqtt_client(&b, "post-cluster-sub").await;
    sub.subscribe("cmd/#", QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = http_request(
        a.http_addr,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        json!({"topic": "cmd/r1", "payload": {"op": "start"}, "qos": 1})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(
        (m["topic"].as_str(), &m["payload"]),
        (Some("cmd/r1"), &json!({"op": "start"})),
        "{m}"
    );
    let p = sub.next_publish(WAIT).await;
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        ("cmd/r1", &br#"{"op":"start"}"#[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_clients_of_two_nodes_reach_each_other_at_qos_1() {
    use mqws_integration::mqtt_ws::{subscribe_packet, MqttWs};
    let nats = Nats::start();
    let (a, b) = (node(&nats), node(&nats));
    let mut watcher = ws_connect(&a).await;
    hello(&mut watcher, &["mws/#"]).await;
    // MQTT 5 on node B subscribes; MQTT 3.1.1 on node A publishes, and the other way round.
    let (mut on_b, connack) = MqttWs::connect(&b, "mws-b", true, None).await;
    assert_eq!(connack[3], 0, "CONNACK {connack:?}");
    let (mut on_a, connack) = MqttWs::connect(&a, "mws-a", false, None).await;
    assert_eq!(connack[3], 0, "CONNACK {connack:?}");
    for (c, v5) in [(&mut on_b, true), (&mut on_a, false)] {
        c.send(&subscribe_packet(v5, 1, "mws/#")).await;
        let suback = c.packet().await.expect("SUBACK");
        assert_eq!(
            (suback[0], *suback.last().unwrap()),
            (0x90, 1),
            "{suback:?}"
        );
    }
    let mut pair = [on_a, on_b];
    pass_on(&mut pair, false, "mws/from-a", &mut watcher).await;
    pair.reverse();
    pass_on(&mut pair, true, "mws/from-b", &mut watcher).await;
}

/// `pair[0]` (MQTT 5 when `v5`) publishes `hi` on `topic` at QoS 1; `pair[1]` (the other
/// version) gets it at QoS 1 and so does the `/ws` `watcher`.
async fn pass_on(
    pair: &mut [mqws_integration::mqtt_ws::MqttWs; 2],
    v5: bool,
    topic: &str,
    watcher: &mut Ws,
) {
    use mqws_integration::mqtt_ws::{publish_packet, topic_and_payload};
    let [from, to] = pair;
    from.send(&publish_packet(v5, topic, 9, b"hi")).await;
    // The publisher's own copy (no-local is off) and its PUBACK, in either order.
    let mut acked = false;
    for _ in 0..2 {
        let p = from.packet().await.expect("PUBACK or own copy");
        if p[0] == 0x40 {
            acked = true;
        } else {
            ack_publish(from, &p).await;
        }
    }
    assert!(acked, "PUBACK for {topic}");
    let p = to.packet().await.expect("the other node's PUBLISH");
    assert_eq!(p[0] & 0x06, 0x02, "delivered at QoS 1: {p:?}");
    assert_eq!(
        topic_and_payload(&p, !v5),
        (topic.to_owned(), b"hi".to_vec())
    );
    ack_publish(to, &p).await;
    let m = next_message(watcher, WAIT).await;
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some(topic), Some("hi")),
        "{m}"
    );
}

/// Acknowledges a QoS 1 PUBLISH packet `p` read from `c`.
async fn ack_publish(c: &mut mqws_integration::mqtt_ws::MqttWs, p: &[u8]) {
    assert_eq!(p[0] >> 4, 3, "a PUBLISH, got {p:?}");
    let header = 1 + p[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
    let tlen = usize::from(u16::from_be_bytes([p[header], p[header + 1]]));
    let id = [p[header + 2 + tlen], p[header + 3 + tlen]];
    c.send(&[0x40, 2, id[0], id[1]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_value_and_a_will_from_one_node_reach_the_subscribers_of_another() {
    let nats = Nats::start();
    let (a, b) = (node(&nats), node(&nats));
    let mut publisher = mqtt_client(&a, "ret-cluster-pub").await;
    publisher
        .publish("ret/x", QoS::AtLeastOnce, true, "kept")
        .await;
    publisher.wait_pubacks(1, WAIT).await;
    // A subscriber arriving later on the other node gets the value node A stored.
    let mut late = mqtt_client(&b, "ret-cluster-late").await;
    late.subscribe("ret/#", QoS::AtLeastOnce).await;
    let p = late.next_publish(WAIT).await;
    assert_eq!(
        (p.retain, &p.topic[..], &p.payload[..]),
        (true, "ret/x", &b"kept"[..])
    );

    let mut ws = ws_connect(&b).await;
    hello(&mut ws, &["will/#"]).await;
    let mut sub = mqtt_client(&b, "will-cluster-sub").await;
    sub.subscribe("will/#", QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A client of node A with a will (QoS 1, no delay) vanishes without DISCONNECT.
    let addr = a.mqtt_addr;
    let (gone, _) = tokio::task::spawn_blocking(move || {
        raw::connect_v5_with_will(addr, "will-cluster", true, "will/a", 0)
    })
    .await
    .unwrap();
    drop(gone);
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("will/a"), Some("gone")),
        "{m}"
    );
    let p = sub.next_publish(WAIT).await;
    assert_eq!((&p.topic[..], &p.payload[..]), ("will/a", &b"gone"[..]));
}
