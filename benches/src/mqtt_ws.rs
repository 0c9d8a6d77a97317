//! MQTT over WebSocket (subprotocol `mqtt`) with tokio-tungstenite and rumqttc's packet codec:
//! the handshake that the Mosquitto WebSocket clients of `mqws-load` (`mqtt_sub`) and
//! `mqws-density` share. MQTT 3.1.1, one QoS 0 subscription.

use anyhow::{bail, Context as _};
use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::mqttbytes::v4::{Connect, Packet, Subscribe};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Largest MQTT packet these clients accept.
pub const MAX_PACKET: usize = 16 << 20;

/// Reads binary frames into `inbuf` until one whole MQTT packet is buffered, and decodes it.
pub async fn next_packet<S>(
    ws: &mut WebSocketStream<S>,
    inbuf: &mut BytesMut,
) -> anyhow::Result<Packet>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match Packet::read(inbuf, MAX_PACKET) {
            Ok(p) => return Ok(p),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => bail!("MQTT decode: {e:?}"),
        }
        match ws.next().await.context("connection closed")?? {
            Message::Binary(b) => inbuf.extend_from_slice(&b),
            Message::Close(c) => bail!("closed by the broker: {c:?}"),
            _ => {}
        }
    }
}

/// Sends CONNECT (`client_id`, `keep_alive` s) and waits for a successful CONNACK. Returns
/// what was read beyond it.
pub async fn connect<S>(
    ws: &mut WebSocketStream<S>,
    client_id: String,
    keep_alive: u16,
) -> anyhow::Result<BytesMut>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connect = Connect::new(client_id);
    connect.keep_alive = keep_alive;
    let mut buf = BytesMut::new();
    connect
        .write(&mut buf)
        .map_err(|e| anyhow::anyhow!("CONNECT: {e:?}"))?;
    ws.send(Message::binary(buf.freeze())).await?;
    let mut inbuf = BytesMut::new();
    match next_packet(ws, &mut inbuf).await? {
        Packet::ConnAck(a) if a.code == rumqttc::ConnectReturnCode::Success => Ok(inbuf),
        p => bail!("expected CONNACK success, got {p:?}"),
    }
}

/// [`connect`], then SUBSCRIBE (`filter`, QoS 0) and wait for a successful SUBACK. Returns what
/// was read beyond the SUBACK.
pub async fn connect_and_subscribe<S>(
    ws: &mut WebSocketStream<S>,
    client_id: String,
    keep_alive: u16,
    filter: &str,
) -> anyhow::Result<BytesMut>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut inbuf = connect(ws, client_id, keep_alive).await?;
    let mut buf = BytesMut::new();
    let mut sub = Subscribe::new(filter, QoS::AtMostOnce);
    sub.pkid = 1;
    sub.write(&mut buf)
        .map_err(|e| anyhow::anyhow!("SUBSCRIBE: {e:?}"))?;
    ws.send(Message::binary(buf.split().freeze())).await?;
    match next_packet(ws, &mut inbuf).await? {
        Packet::SubAck(a)
            if a.return_codes
                .iter()
                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
        {
            Ok(inbuf)
        }
        p => bail!("expected SUBACK success, got {p:?}"),
    }
}
