//! Publishing a will, which the proxy owns (rumqttd never sees one, see
//! [`super::connect::strip_will`]): kept when retained, logged when its topic is logged, then
//! handed to rumqttd for its MQTT subscribers, as a client's PUBLISH is.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::wire::{publish, read_varint, Short};
use super::{connect, Sinks};
use crate::link::queue_retained;

/// Wills being handed to rumqttd at once; more wait. Each holds one internal connection, and
/// rumqttd's connection limit leaves 16 beyond `broker.max_connections`.
const AT_ONCE: usize = 4;
/// How long handing one will to rumqttd may take.
const BROKER_WAIT: Duration = Duration::from_secs(5);

/// How the proxy reaches rumqttd to publish a will: its MQTT 5 listener, a client id of the
/// bridge's reserved prefix and the per-process login its auth handler takes.
#[derive(Debug)]
pub(crate) struct WillBroker {
    target: SocketAddr,
    client_prefix: String,
    login: Option<(String, String)>,
    at_once: Semaphore,
}

impl WillBroker {
    pub(crate) fn new(
        target: SocketAddr,
        client_prefix: String,
        login: Option<(String, String)>,
    ) -> WillBroker {
        WillBroker {
            target,
            client_prefix,
            login,
            at_once: Semaphore::new(AT_ONCE),
        }
    }

    /// Publishes `will` to rumqttd at its QoS, retained or not, with its MQTT 5 properties,
    /// and waits for rumqttd to take it (its acknowledgement; a PINGRESP for QoS 0).
    async fn publish(&self, will: &connect::Will) -> Result<(), String> {
        let _turn = self.at_once.acquire().await.map_err(|e| e.to_string())?;
        tokio::time::timeout(BROKER_WAIT, self.exchange(will))
            .await
            .map_err(|_| "rumqttd did not answer in time".to_owned())?
            .map_err(|e| e.to_string())
    }

    async fn exchange(&self, will: &connect::Will) -> std::io::Result<()> {
        let id = format!("{}will-{:016x}", self.client_prefix, rand::random::<u64>());
        let login = self.login.as_ref();
        let mut s = TcpStream::connect(self.target).await?;
        s.set_nodelay(true)?;
        s.write_all(&connect::build(
            5,
            &id,
            login.map(|(u, _)| u.as_str()),
            login.map(|(_, p)| p.as_bytes()),
            false,
        ))
        .await?;
        expect(&mut s, 2, |body| body.get(1) == Some(&0)).await?;
        let packet_id = (will.qos > 0).then_some(1u16);
        let packet = publish(
            &will.topic,
            &will.payload,
            will.qos,
            will.retain,
            packet_id,
            Some(&will.properties),
        );
        s.write_all(&packet).await?;
        match will.qos {
            0 => {
                s.write_all(&[0xc0, 0]).await?;
                expect(&mut s, 13, |_| true).await?;
            }
            1 => expect(&mut s, 4, accepted).await?,
            _ => {
                expect(&mut s, 5, accepted).await?;
                s.write_all(&[0x62, 2, 0, 1]).await?;
                expect(&mut s, 7, |_| true).await?;
            }
        }
        // Closed without DISCONNECT: rumqttd frees a connection id twice on DISCONNECT and
        // then its link's end, which can drop a client given that id meanwhile.
        Ok(())
    }
}

/// True when an acknowledgement body (packet id, MQTT 5 reason code) says success.
fn accepted(body: &[u8]) -> bool {
    body.get(2).is_none_or(|&r| r < 0x80)
}

/// Reads packets until one of `kind` arrives and checks it with `ok`.
pub(super) async fn expect(
    s: &mut TcpStream,
    kind: u8,
    ok: impl Fn(&[u8]) -> bool,
) -> std::io::Result<()> {
    loop {
        let first = s.read_u8().await?;
        let mut len_bytes = Vec::with_capacity(4);
        let len = loop {
            len_bytes.push(s.read_u8().await?);
            match read_varint(&len_bytes) {
                Ok((len, _)) => break len,
                Err(Short::Incomplete) => {}
                Err(Short::Malformed) => return Err(std::io::Error::other("malformed length")),
            }
        };
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await?;
        if first >> 4 == kind {
            return if ok(&body) {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "rumqttd refused it (packet {kind}, {body:?})"
                )))
            };
        }
    }
}

/// Publishes the will of `client_id`: kept when retained, logged when its topic is logged, then
/// given to rumqttd for its MQTT subscribers (after the log, as every logged message).
pub(super) async fn publish_will(sinks: &Sinks, client_id: &str, will: connect::Will) {
    let properties = bytes::Bytes::from(will.properties.clone());
    let message = crate::InboundMessage {
        topic: will.topic.clone(),
        payload: bytes::Bytes::from(will.payload.clone()),
        retain: will.retain,
        qos: will.qos,
        origin: Some(std::sync::Arc::from(client_id)),
        properties: properties.clone(),
    };
    if message.retain {
        let update = crate::RetainedUpdate {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            properties,
        };
        match queue_retained(&sinks.retained, update).await {
            Some(kept) => {
                let _ = kept.await;
            }
            None => warn!(client_id, "retained will not kept: the store is gone"),
        }
    }
    if sinks.ingress.wants(&message.topic) {
        let logged = match sinks.ingress.log(message).await {
            Some(durable) => durable.await.is_ok(),
            None => false,
        };
        if !logged {
            warn!(client_id, "will not published: the log is gone");
            return;
        }
        debug!(client_id, "will logged");
    }
    match sinks.will_broker.publish(&will).await {
        Ok(()) => debug!(client_id, "will published"),
        Err(why) => warn!(client_id, %why, "will not passed to MQTT subscribers"),
    }
}
