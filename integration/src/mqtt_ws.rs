//! An MQTT client over mqws's `/mqtt` WebSocket (subprotocol `mqtt`) that writes raw packets
//! and reads them across message boundaries.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::raw::{connect_packet, packet};
use crate::{Server, TIMEOUT};

/// One MQTT connection over `/mqtt`, reading packets across message boundaries.
pub struct MqttWs {
    /// The WebSocket.
    pub ws: WebSocketStream<TcpStream>,
    /// Bytes received and not yet cut into packets.
    pub buf: Vec<u8>,
}

/// Opens `/mqtt` with `protocol` offered and `origin` sent; the handshake's result as it is.
pub async fn open(
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

/// A QoS 1 PUBLISH with packet id `id`.
pub fn publish_packet(v5: bool, topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

/// A SUBSCRIBE of `filter` at QoS 1.
pub fn subscribe_packet(v5: bool, id: u16, filter: &str) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    string(&mut body, filter.as_bytes());
    body.push(1);
    packet(0x82, &body)
}

impl MqttWs {
    /// Sends `bytes` as one binary message.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// The next whole packet; `None` when the connection closed first.
    pub async fn packet(&mut self) -> Option<Vec<u8>> {
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
    pub async fn connect(
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
pub fn take_packet(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
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
pub fn topic_and_payload(p: &[u8], v5: bool) -> (String, Vec<u8>) {
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
