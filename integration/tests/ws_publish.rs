//! Browser publishing (`publish` frames): exact bytes at an MQTT subscriber, `puback` ids,
//! `bad_topic` errors, retained publishes, and delivery of browser publishes to other
//! WebSocket subscribers through the log.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// Sends a raw `publish` frame text and expects `{"type":"puback","id":id}` as the next frame.
async fn publish_expect_puback(ws: &mut Ws, frame: &str, id: u64) {
    send_text(ws, frame).await;
    let reply = next_json(ws, WAIT).await;
    assert_eq!(reply["type"], "puback", "reply to {frame}: {reply}");
    assert_eq!(reply["id"], id, "puback id for {frame}: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_publish_reaches_mqtt_with_exact_bytes() {
    let server = Server::start();
    let mut sub = mqtt_client(&server, "wsp-sub").await;
    sub.subscribe("wsp/#", QoS::AtLeastOnce).await;
    let mut observer = ws_connect(&server).await;
    hello(&mut observer, &["wsp/#"]).await;
    let mut publisher = ws_connect(&server).await;
    hello(&mut publisher, &[]).await;

    // (frame text, topic, bytes the MQTT subscriber must get, enc and payload a WS subscriber
    // must get). The JSON object is written with whitespace: the broker must get compact text.
    let cases: Vec<(&str, &str, Vec<u8>, &str, Value)> = vec![
        (
            r#"{"type":"publish","id":1,"topic":"wsp/json","payload": {"a": 1, "b": [true, null, "x"]},"qos":1,"retain":false}"#,
            "wsp/json",
            br#"{"a":1,"b":[true,null,"x"]}"#.to_vec(),
            "json",
            json!({"a": 1, "b": [true, null, "x"]}),
        ),
        (
            r#"{"type":"publish","id":2,"topic":"wsp/str","payload":"héllo wörld","qos":1,"retain":false}"#,
            "wsp/str",
            "héllo wörld".as_bytes().to_vec(),
            "text",
            json!("héllo wörld"),
        ),
        (
            r#"{"type":"publish","id":3,"topic":"wsp/b64","payload":"AAH/gA==","enc":"base64","qos":1,"retain":false}"#,
            "wsp/b64",
            vec![0x00, 0x01, 0xff, 0x80],
            "base64",
            json!("AAH/gA=="),
        ),
        (
            r#"{"type":"publish","id":4,"topic":"wsp/arr","payload":[1, "two"],"qos":0}"#,
            "wsp/arr",
            br#"[1,"two"]"#.to_vec(),
            "json",
            json!([1, "two"]),
        ),
        (
            r#"{"type":"publish","id":5,"topic":"wsp/jsontext","payload":"{\"k\":1}","qos":1}"#,
            "wsp/jsontext",
            br#"{"k":1}"#.to_vec(),
            "json",
            json!({"k": 1}),
        ),
    ];
    for (i, (frame, topic, bytes, _, _)) in cases.iter().enumerate() {
        publish_expect_puback(&mut publisher, frame, i as u64 + 1).await;
        let p = sub.next_publish(WAIT).await;
        assert_eq!(p.topic, *topic, "MQTT topic for {frame}");
        assert_eq!(
            p.payload.as_ref(),
            bytes.as_slice(),
            "MQTT payload for {frame}"
        );
        assert!(!p.retain, "retain flag for {frame}");
    }
    let got = collect_messages(&mut observer, cases.len(), WAIT).await;
    for ((frame, topic, _, enc, value), m) in cases.iter().zip(&got) {
        assert_eq!(m["topic"], *topic, "WS delivery of {frame}: {m}");
        assert_eq!(m["enc"], *enc, "WS enc of {frame}: {m}");
        assert_eq!(m["payload"], *value, "WS payload of {frame}: {m}");
    }
    // The publisher subscribed to nothing, so it got nothing but its pubacks.
    ping_pong(&mut publisher, 99).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_publish_to_invalid_topic_is_bad_topic() {
    let server = Server::start();
    let mut sub = mqtt_client(&server, "badtopic-sub").await;
    sub.subscribe("#", QoS::AtLeastOnce).await;
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &[]).await;
    for (id, topic) in [(11u64, "a/+/b"), (12, "a/#"), (13, "")] {
        send_json(
            &mut ws,
            &json!({"type":"publish","id":id,"topic":topic,"payload":"x","qos":1,"retain":false}),
        )
        .await;
        let e = next_json(&mut ws, WAIT).await;
        assert_eq!(e["type"], "error", "publish to {topic:?}: {e}");
        assert_eq!(e["code"], "bad_topic", "publish to {topic:?}: {e}");
        assert_eq!(e["id"], id, "error id for {topic:?}: {e}");
        assert!(e["message"].is_string(), "error.message: {e}");
    }
    // Still open, and none of them reached the broker: a good publish is the sentinel.
    ping_pong(&mut ws, 14).await;
    publish_expect_puback(
        &mut ws,
        r#"{"type":"publish","id":15,"topic":"good/topic","payload":"ok","qos":1}"#,
        15,
    )
    .await;
    let p = sub.next_publish(WAIT).await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref()),
        ("good/topic", b"ok".as_ref()),
        "first message at the broker must be the good publish"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_retained_publish_is_seen_by_later_mqtt_subscriber() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &[]).await;
    publish_expect_puback(
        &mut ws,
        r#"{"type":"publish","id":21,"topic":"wsr/r1/status","payload":"kept","qos":1,"retain":true}"#,
        21,
    )
    .await;
    // Subscribed only after the puback: the message can reach it only as a retained one.
    let mut late = mqtt_client(&server, "retain-late-sub").await;
    late.subscribe("wsr/#", QoS::AtLeastOnce).await;
    let p = late.next_publish(WAIT).await;
    assert_eq!(p.topic, "wsr/r1/status");
    assert_eq!(p.payload.as_ref(), b"kept");
    assert!(
        p.retain,
        "a retained message must carry the retain flag: {p:?}"
    );
}
