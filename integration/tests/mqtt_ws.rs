//! MQTT over WebSocket on the HTTP listener (`/mqtt`, subprotocol `mqtt`) against the real
//! binary: MQTT 3.1.1 and 5 clients whose packets are split across binary messages or share
//! one, delivery both ways with MQTT clients on the MQTT port, logging (a `/ws` client gets
//! what a `/mqtt` client published, with its seq), the logins of the MQTT port, its connection
//! limit, the Origin policy of `/ws`, refused subprotocols, and text messages closed with 1003.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mqws_integration::mqtt_ws::{
    open, publish_packet, subscribe_packet, topic_and_payload, MqttWs,
};
use mqws_integration::{
    hash_password, hello, mqtt_client, next_message, ws_connect, Server, TIMEOUT,
};
use rumqttc::QoS;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_both_versions_both_ways_and_logged() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["mws/#"]).await;
    let mut native = mqtt_client(&server, "native-sub").await;
    native.subscribe("mws/#", QoS::AtLeastOnce).await;
    for v5 in [false, true] {
        let id = if v5 { "ws-v5" } else { "ws-v311" };
        let (mut c, connack) = MqttWs::connect(&server, id, v5, None).await;
        assert_eq!(connack[3], 0, "CONNACK success ({id}): {connack:?}");
        c.send(&subscribe_packet(v5, 7, "cmd/#")).await;
        let suback = c.packet().await.expect("SUBACK");
        assert_eq!(suback[0], 0x90, "SUBACK: {suback:?}");
        assert_eq!(*suback.last().unwrap(), 1, "granted QoS 1: {suback:?}");

        // Two PUBLISHes in one message, the second's last byte in a message of its own.
        let topic = format!("mws/{id}");
        let mut two = publish_packet(v5, &topic, 1, b"one");
        let second = publish_packet(v5, &topic, 2, b"two");
        two.extend_from_slice(&second[..second.len() - 1]);
        c.send(&two).await;
        c.send(&second[second.len() - 1..]).await;
        for want in [1u16, 2] {
            let ack = c.packet().await.expect("PUBACK");
            assert_eq!(ack[0], 0x40, "PUBACK: {ack:?}");
            assert_eq!(ack[2..4], want.to_be_bytes(), "PUBACK for packet id {want}");
        }
        // Logged: a /ws client gets both with seqs, and so does an MQTT client on the port.
        for want in ["one", "two"] {
            let m = next_message(&mut ws, TIMEOUT).await;
            assert_eq!(m["topic"], topic.as_str());
            assert_eq!(m["payload"], want, "{m}");
            assert!(m["seq"].as_u64().is_some_and(|s| s > 0), "{m}");
            let p = native.next_publish(TIMEOUT).await;
            assert_eq!(
                (p.topic.as_str(), &p.payload[..]),
                (topic.as_str(), want.as_bytes())
            );
        }

        // The other way: an MQTT client on the port publishes to the /mqtt client.
        native
            .publish(
                &format!("cmd/{id}"),
                QoS::AtLeastOnce,
                false,
                b"go".to_vec(),
            )
            .await;
        let p = c.packet().await.expect("PUBLISH");
        assert_eq!(
            topic_and_payload(&p, v5),
            (format!("cmd/{id}"), b"go".to_vec())
        );
        let pkid = {
            let header = 1 + p[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
            let tlen = usize::from(u16::from_be_bytes([p[header], p[header + 1]]));
            [p[header + 2 + tlen], p[header + 3 + tlen]]
        };
        c.send(&[0x40, 2, pkid[0], pkid[1]]).await;
        c.send(&[0xe0, 0]).await;
        assert!(c.packet().await.is_none(), "closed after DISCONNECT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_ports_logins_and_limit_hold_on_mqtt_over_websocket() {
    let hash = hash_password("s3cret");
    let config = format!(
        "[broker]\nmax_connections = 2\n[[broker.users]]\nusername = \"reader\"\npassword_hash = \"{hash}\"\n"
    );
    let server = Server::start_configured(&config, &[], None);

    let (_wrong, connack) = MqttWs::connect(&server, "r1", false, Some(("reader", "nope"))).await;
    assert_eq!(connack, vec![0x20, 2, 0, 5], "3.1.1 not authorized");
    let (_none, connack) = MqttWs::connect(&server, "r2", true, None).await;
    assert_eq!(connack[3], 0x87, "5: not authorized, got {connack:?}");
    let (mut ok, connack) = MqttWs::connect(&server, "r3", false, Some(("reader", "s3cret"))).await;
    assert_eq!(
        connack[3], 0,
        "the login of the MQTT port works: {connack:?}"
    );
    // One connection on the MQTT port and one on /mqtt fill broker.max_connections = 2.
    let tcp = TcpStream::connect(server.mqtt_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = open(&server, Some("mqtt"), None).await;
    match refused {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503 at broker.max_connections, got {other:?}"),
    }
    drop(tcp);
    ok.send(&[0xc0, 0]).await;
    assert_eq!(ok.packet().await, Some(vec![0xd0, 0]), "PINGRESP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_subprotocols_and_text_messages_are_refused() {
    let server = Server::start();
    match open(&server, Some("mqtt"), Some("http://evil.example")).await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 403, "another site's page"),
        other => panic!("expected 403, got {other:?}"),
    }
    let own = format!("http://{}", server.http_addr);
    open(&server, Some("mqtt"), Some(&own))
        .await
        .expect("mqws's own origin is allowed");
    match open(&server, Some("mqws.v1.json"), None).await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 400, "not the mqtt subprotocol"),
        other => panic!("expected 400, got {other:?}"),
    }
    let (mut c, _) = MqttWs::connect(&server, "texter", false, None).await;
    c.ws.send(Message::text("CONNECT")).await.unwrap();
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(
        closed,
        Some(CloseCode::Unsupported),
        "1003 for a text message"
    );
}

/// The largest PUBLISH (broker.max_payload_size, 1 MiB, counts the packet after its fixed
/// header) fits in one `/mqtt` message and reaches the log; a larger one gets an MQTT 5
/// DISCONNECT "packet too large" and is not logged; garbage closes that connection only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_publish_is_logged_a_larger_one_refused_and_garbage_closes_one_connection() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["big/#"]).await;
    let (mut c, _) = MqttWs::connect(&server, "big-pub", true, None).await;
    // Topic (2 + 7), packet id (2) and properties length (1): the rest of 1 MiB is payload.
    let payload: Vec<u8> = (0..1024 * 1024 - 12)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    c.send(&publish_packet(true, "big/one", 1, &payload)).await;
    let ack = c.packet().await.expect("PUBACK");
    assert_eq!(ack[..4], [0x40, 2, 0, 1], "PUBACK: {ack:?}");
    let m = next_message(&mut ws, Duration::from_secs(20)).await;
    assert_eq!(m["topic"], "big/one");
    assert_eq!(
        m["payload"].as_str().map(str::len),
        Some(payload.len()),
        "the whole payload"
    );

    let (mut over, _) = MqttWs::connect(&server, "over", true, None).await;
    over.send(&publish_packet(
        true,
        "big/two",
        1,
        &[b'x'; 1024 * 1024 - 11],
    ))
    .await;
    assert_eq!(
        over.packet().await,
        Some(vec![0xe0, 2, 0x95, 0]),
        "DISCONNECT, packet too large"
    );
    assert!(over.packet().await.is_none(), "and closed");

    let (mut bad, _) = MqttWs::connect(&server, "garbage", false, None).await;
    bad.send(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x13]).await;
    assert!(
        bad.packet().await.is_none(),
        "a packet that is not MQTT closes the connection"
    );
    c.send(&[0xc0, 0]).await;
    assert_eq!(
        c.packet().await,
        Some(vec![0xd0, 0]),
        "the other connection still works"
    );
    c.send(&publish_packet(true, "big/three", 2, b"small"))
        .await;
    assert_eq!(c.packet().await.expect("PUBACK")[..4], [0x40, 2, 0, 2]);
    let m = next_message(&mut ws, TIMEOUT).await;
    assert_eq!(
        m["topic"], "big/three",
        "nothing of the refused one was logged: {m}"
    );
}
