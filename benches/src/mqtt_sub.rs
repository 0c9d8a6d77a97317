//! Native MQTT subscribers (rumqttc, TCP_NODELAY): the baseline the bridge is compared with,
//! and, with a `ws://` URL, MQTT-over-WebSocket subscribers (rumqttc's `websocket` feature,
//! subprotocol `mqtt`) for Mosquitto's WebSocket listener.
//!
//! With `MQWS_LOAD_MQTT_WS=tungstenite` in the environment, the MQTT-over-WebSocket subscribers
//! use a lighter client instead of rumqttc's event loop: tokio-tungstenite (as the mqws
//! subscribers) carrying rumqttc's `mqttbytes` v4 packets (CONNECT, SUBSCRIBE, then PUBLISH
//! frames decoded as they come; QoS 0 only). It exists because at 1,000 subscribers rumqttc's
//! WebSocket client took more than a core and competed with the broker under test.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, QoS};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::payload;
use crate::publisher::{max_packet_for, mqtt_options, mqtt_ws_options, set_nodelay};
use crate::stats::{SubStats, Window};
use crate::ws_sub::Ready;

/// How long CONNECT → SUBACK may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything a native subscriber needs.
#[derive(Debug, Clone)]
pub struct MqttSubConfig {
    /// Broker address.
    pub mqtt: SocketAddr,
    /// When set, connect over WebSocket to this `ws://host:port/path` URL instead of `mqtt`.
    pub ws_url: Option<String>,
    /// Client id (unique per run).
    pub client_id: String,
    /// The subscription filter.
    pub filter: String,
    /// Subscription QoS.
    pub qos: QoS,
    /// Payload size (to size the max packet).
    pub payload_bytes: usize,
    /// Limits concurrent connection attempts.
    pub connect_gate: Arc<Semaphore>,
    /// Receives `true` when the phase is over.
    pub stop: watch::Receiver<bool>,
    /// The phase's measure window.
    pub window: Arc<Window>,
    /// Reports readiness.
    pub ready: mpsc::Sender<Ready>,
    /// Hard deadline: the subscriber returns by then whatever happens.
    pub deadline: Instant,
}

/// Runs one native subscriber for a phase.
pub async fn run(cfg: MqttSubConfig, live: Arc<AtomicU64>, peak: Arc<AtomicU64>) -> SubStats {
    if cfg.ws_url.is_some() && std::env::var("MQWS_LOAD_MQTT_WS").is_ok_and(|v| v == "tungstenite")
    {
        return light::run(cfg, live, peak).await;
    }
    let mut stats = SubStats::new(live, peak);
    let max_packet = max_packet_for(cfg.payload_bytes);
    let opts = match &cfg.ws_url {
        None => mqtt_options(&cfg.client_id, cfg.mqtt, max_packet),
        Some(url) => mqtt_ws_options(&cfg.client_id, url, cfg.mqtt, max_packet),
    };
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    set_nodelay(&mut eventloop);

    // Connect and subscribe, bounded.
    let opened = {
        let _permit = cfg.connect_gate.acquire().await;
        tokio::time::timeout(OPEN_TIMEOUT, async {
            client
                .subscribe(cfg.filter.clone(), cfg.qos)
                .await
                .map_err(|e| anyhow::anyhow!("subscribe: {e}"))?;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                        let refused = ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                        if refused {
                            anyhow::bail!("broker refused the subscription to {}", cfg.filter);
                        }
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) => anyhow::bail!("MQTT connect/subscribe: {e}"),
                }
            }
        })
        .await
    };
    let result = match opened {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "subscribe timed out after {OPEN_TIMEOUT:?}"
        )),
    };
    if let Err(e) = &result {
        stats.ended_early = Some(format!("open failed: {e:#}"));
    }
    let failed = result.is_err();
    let _ = cfg
        .ready
        .send(Ready {
            result: result.map(|()| "native MQTT".to_string()),
        })
        .await;
    drop(cfg.ready);
    if failed {
        return stats;
    }

    let mut stop = cfg.stop;
    let deadline = tokio::time::sleep_until(cfg.deadline);
    tokio::pin!(deadline);
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = &mut deadline => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let now = payload::now_us();
                match payload::parse_stamp(&p.payload) {
                    Some(s) => stats.record(s, now, &cfg.window),
                    None => stats.foreign += 1,
                }
            }
            Ok(Event::Incoming(Incoming::Disconnect)) => {
                stats.ended_early = Some("broker sent DISCONNECT".into());
                return stats;
            }
            Ok(_) => {}
            Err(e) => {
                stats.ended_early = Some(format!("MQTT error: {e}"));
                return stats;
            }
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    stats
}

/// MQTT over WebSocket with tokio-tungstenite and rumqttc's packet codec (QoS 0 subscriptions).
mod light {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::Context as _;
    use bytes::BytesMut;
    use futures_util::StreamExt as _;
    use rumqttc::mqttbytes::v4::Packet;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    use super::{MqttSubConfig, OPEN_TIMEOUT};
    use crate::mqtt_ws::{self, MAX_PACKET};
    use crate::payload;
    use crate::stats::SubStats;
    use crate::ws_sub::Ready;

    type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

    async fn open(cfg: &MqttSubConfig, url: &str) -> anyhow::Result<(Ws, BytesMut)> {
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(16 << 20));
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
            .await
            .context("WebSocket handshake")?;
        let inbuf =
            mqtt_ws::connect_and_subscribe(&mut ws, cfg.client_id.clone(), 600, &cfg.filter)
                .await?;
        Ok((ws, inbuf))
    }

    pub(super) async fn run(
        cfg: MqttSubConfig,
        live: Arc<AtomicU64>,
        peak: Arc<AtomicU64>,
    ) -> SubStats {
        let mut stats = SubStats::new(live, peak);
        let url = cfg.ws_url.clone().unwrap_or_default();
        let opened = {
            let _permit = cfg.connect_gate.acquire().await;
            tokio::time::timeout(OPEN_TIMEOUT, open(&cfg, &url))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("open timed out after {OPEN_TIMEOUT:?}")))
        };
        let (mut ws, mut inbuf) = match opened {
            Ok(x) => {
                let _ = cfg
                    .ready
                    .send(Ready {
                        result: Ok("MQTT over WebSocket (tungstenite)".into()),
                    })
                    .await;
                x
            }
            Err(e) => {
                stats.ended_early = Some(format!("open failed: {e:#}"));
                let _ = cfg.ready.send(Ready { result: Err(e) }).await;
                return stats;
            }
        };
        drop(cfg.ready);
        let mut stop = cfg.stop;
        let deadline = tokio::time::sleep_until(cfg.deadline);
        tokio::pin!(deadline);
        'outer: loop {
            let msg = tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = &mut deadline => break,
                m = ws.next() => m,
            };
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    let now = payload::now_us();
                    inbuf.extend_from_slice(&b);
                    loop {
                        match Packet::read(&mut inbuf, MAX_PACKET) {
                            Ok(Packet::Publish(p)) => match payload::parse_stamp(&p.payload) {
                                Some(s) => stats.record(s, now, &cfg.window),
                                None => stats.foreign += 1,
                            },
                            Ok(Packet::Disconnect) => {
                                stats.ended_early = Some("broker sent DISCONNECT".into());
                                return stats;
                            }
                            Ok(_) => {}
                            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                            Err(e) => {
                                stats.ended_early = Some(format!("MQTT decode: {e:?}"));
                                break 'outer;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    stats.ended_early = Some(format!("closed by the broker: {c:?}"));
                    return stats;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    stats.ended_early = Some(format!("WebSocket error: {e}"));
                    return stats;
                }
                None => {
                    stats.ended_early = Some("connection closed".into());
                    return stats;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        stats
    }
}
