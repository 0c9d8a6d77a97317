//! MQTT over WebSocket on the HTTP listener (`/mqtt`, subprotocol `mqtt`) against the real
//! binary: MQTT 3.1.1 and 5 clients whose packets are split across binary messages or share
//! one, delivery both ways with MQTT clients on the MQTT port, logging (a `/ws` client gets
//! what a `/mqtt` client published, with its seq), the logins of the MQTT port, its connection
//! limit, the Origin policy of `/ws`, refused subprotocols, and text messages closed with 1003.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mqws_integration::raw::{connect_packet, packet};
use mqws_integration::{
    hash_password, hello, mqtt_client, next_message, ws_connect, Server, TIMEOUT,
};
use rumqttc::QoS;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// One MQTT connection over `/mqtt`, reading packets across message boundaries.
struct MqttWs {
    ws: WebSocketStream<TcpStream>,
    buf: Vec<u8>,
}

/// Opens `/mqtt` with `protocol` offered and `origin` sent; the handshake's result as it is.
async fn open(
    server: &Server,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let addr = server.http_addr;
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut request = format!("ws://{addr}/mqtt")
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    if let Some(p) = protocol {
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    if let Some(o) = origin {
        headers.insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    let (ws, response) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, stream, None),
    )
    .await
    .expect("handshake in time")?;
    if protocol.is_some() {
        let chosen = response.headers().get("Sec-WebSocket-Protocol");
        assert_eq!(chosen.and_then(|v| v.to_str().ok()), Some("mqtt"));
    }
    Ok(ws)
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn publish_packet(v5: bool, topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

fn subscribe_packet(v5: bool, id: u16, filter: &str) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    string(&mut body, filter.as_bytes());
    body.push(1);
    packet(0x82, &body)
}

impl MqttWs {
    async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// The next whole packet; `None` when the connection closed first.
    async fn packet(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(p) = take_packet(&mut self.buf) {
                return Some(p);
            }
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a packet in time");
            match next {
                Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(other)) => panic!("only binary messages on /mqtt, got {other:?}"),
            }
        }
    }

    /// Connects with CONNECT split across two messages; returns the CONNACK.
    async fn connect(
        server: &Server,
        id: &str,
        v5: bool,
        login: Option<(&str, &str)>,
    ) -> (MqttWs, Vec<u8>) {
        let ws = open(server, Some("mqtt"), None).await.expect("handshake");
        let mut c = MqttWs {
            ws,
            buf: Vec::new(),
        };
        let connect = connect_packet(id, v5, 30, login);
        let (a, b) = connect.split_at(5);
        c.send(a).await;
        c.send(b).await;
        let connack = c.packet().await.expect("CONNACK");
        assert_eq!(connack[0] >> 4, 2, "CONNACK, got {connack:?}");
        (c, connack)
    }
}

/// Cuts one whole packet off the front of `buf`.
fn take_packet(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let (mut len, mut at) = (0usize, 1);
    loop {
        let b = *buf.get(at)?;
        len |= usize::from(b & 0x7f) << (7 * (at - 1));
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < at + len {
        return None;
    }
    Some(buf.drain(..at + len).collect())
}

/// The topic and payload of a PUBLISH packet (QoS > 0, so with a packet id).
fn topic_and_payload(p: &[u8], v5: bool) -> (String, Vec<u8>) {
    assert_eq!(p[0] >> 4, 3, "PUBLISH, got {p:?}");
    let header = 1 + p[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
    let body = &p[header..];
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
    let mut at = 2 + tlen;
    if p[0] & 0x06 != 0 {
        at += 2;
    }
    if v5 {
        at += 1 + usize::from(body[at]);
    }
    (topic, body[at..].to_vec())
}

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
