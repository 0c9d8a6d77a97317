//! MQTT publishers (rumqttc, TCP_NODELAY), paced in bursts per tick or flat out.
//!
//! Each publisher owns one connection and publishes to `PREFIX/p{id}`. Counting is done on the
//! event loop: a message is *published* when rumqttc writes it to the socket
//! (`Outgoing::Publish`), *acked* on `Incoming::PubAck`. After its deadline the publisher queues
//! a DISCONNECT behind the remaining publishes, so every queued message is written before the
//! connection closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use serde::Serialize;
use tokio::time::Instant;

use crate::payload::{self, Stamp};
use crate::stats::Window;

/// Settings shared by all publishers of a phase.
#[derive(Debug, Clone)]
pub struct PubConfig {
    /// Broker address.
    pub mqtt: std::net::SocketAddr,
    /// QoS of every publish.
    pub qos: QoS,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Messages per second for this publisher; 0 = flat out.
    pub rate: f64,
    /// Pacing tick.
    pub tick: Duration,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Max in-flight QoS 1 publishes.
    pub inflight: u16,
    /// Client id prefix (unique per run and phase).
    pub client_prefix: String,
    /// When set, connect over WebSocket (subprotocol `mqtt`) to this `ws://host:port/path` URL
    /// instead of `mqtt`.
    pub ws_url: Option<String>,
    /// Over WebSocket, publish with [`crate::lean_publisher`] instead of rumqttc.
    pub lean: bool,
    /// PUBLISHes per WebSocket message at most, for [`crate::lean_publisher`].
    pub lean_batch: usize,
}

/// What one publisher did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PubStats {
    /// Publishes written to the socket.
    pub published: u64,
    /// Publishes whose send time fell inside the measure window.
    pub published_window: u64,
    /// PUBACKs received (QoS 1).
    pub acked: u64,
    /// Connection errors seen by the event loop.
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// The MQTT options every benchmark client uses: NODELAY-capable, big packets, our id.
pub fn mqtt_options(id: &str, mqtt: std::net::SocketAddr, max_packet: usize) -> MqttOptions {
    let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(max_packet, max_packet);
    o
}

/// [`mqtt_options`] for MQTT over WebSocket (rumqttc's `websocket` feature, subprotocol
/// `mqtt`): rumqttc takes host and path from the URL, the port from `mqtt`.
pub fn mqtt_ws_options(
    id: &str,
    url: &str,
    mqtt: std::net::SocketAddr,
    max_packet: usize,
) -> MqttOptions {
    let mut o = MqttOptions::new(id, url, mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(max_packet, max_packet);
    o.set_transport(rumqttc::Transport::Ws);
    o
}

/// Turns on TCP_NODELAY on an event loop (rumqttc defaults it off).
pub fn set_nodelay(eventloop: &mut rumqttc::EventLoop) {
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);
}

/// Largest packet a client accepts/sends for a payload size: payload plus generous headroom.
pub fn max_packet_for(payload_bytes: usize) -> usize {
    payload_bytes.saturating_add(64 * 1024).max(1024 * 1024)
}

/// Runs publisher `id` until `end`, returning its stats. `window` decides which publishes count
/// as inside the measure window; `live` counts publishes for progress reports.
pub async fn run(
    id: u32,
    cfg: PubConfig,
    start: Instant,
    end: Instant,
    window: Arc<Window>,
    live: Arc<AtomicU64>,
) -> PubStats {
    let client_id = format!("{}-pub-{id}", cfg.client_prefix);
    let max_packet = max_packet_for(cfg.payload_bytes);
    let mut opts = match &cfg.ws_url {
        None => mqtt_options(&client_id, cfg.mqtt, max_packet),
        Some(url) => mqtt_ws_options(&client_id, url, cfg.mqtt, max_packet),
    };
    opts.set_inflight(cfg.inflight.max(1));
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    set_nodelay(&mut eventloop);

    let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let el_counters = counters.clone();
    let hard_stop = end + Duration::from_secs(10);
    let el = tokio::spawn(async move {
        let mut st = PubStats::default();
        loop {
            let ev = tokio::time::timeout_at(hard_stop, eventloop.poll()).await;
            match ev {
                Err(_) => break,
                Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => {
                    el_counters.0.fetch_add(1, Ordering::Relaxed);
                    live.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => {
                    el_counters.1.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => {
                    // Read until the broker closes, so unread bytes (late PUBACKs) do not turn
                    // our close into a RST that makes the broker drop what it has not read.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        loop {
                            match eventloop.poll().await {
                                Ok(Event::Incoming(Incoming::PubAck(_))) => {
                                    el_counters.1.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                    })
                    .await;
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    st.errors += 1;
                    if st.first_error.is_none() {
                        st.first_error = Some(e.to_string());
                    }
                    if Instant::now() >= end {
                        break;
                    }
                    // rumqttc reconnects on the next poll with no backoff: add one.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        st
    });

    let topic = format!("{}/p{id}", cfg.topic_prefix);
    let size = cfg.payload_bytes;
    let mut n: u64 = 0;
    let mut in_window: u64 = 0;
    // Builds message `n`, stamped now; rumqttc wants an owned Vec per publish.
    let mut make = |n: u64| {
        let t_us = payload::now_us();
        if window.contains(t_us) {
            in_window += 1;
        }
        let mut buf = Vec::with_capacity(size.max(64));
        let r = window.tag();
        payload::build(&mut buf, Stamp { t_us, r, p: id, n }, size);
        buf
    };
    tokio::time::sleep_until(start).await;
    if cfg.rate <= 0.0 {
        while Instant::now() < end {
            if client
                .publish(&topic, cfg.qos, false, make(n))
                .await
                .is_err()
            {
                break;
            }
            n += 1;
        }
    } else {
        let mut iv = tokio::time::interval_at(start, cfg.tick);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        'outer: loop {
            let now = iv.tick().await;
            if now >= end {
                break;
            }
            // Everything due up to this tick goes out as one burst.
            let due = ((now - start).as_secs_f64() * cfg.rate) as u64 + 1;
            while n < due {
                if client
                    .publish(&topic, cfg.qos, false, make(n))
                    .await
                    .is_err()
                {
                    break 'outer;
                }
                n += 1;
            }
        }
    }
    if cfg.qos != QoS::AtMostOnce {
        // Wait (bounded) for the PUBACKs of everything queued before disconnecting.
        let t0 = Instant::now();
        while counters.1.load(Ordering::Relaxed) < n && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = client.disconnect().await;
    let mut st = el.await.unwrap_or_default();
    st.published = counters.0.load(Ordering::Relaxed);
    st.acked = counters.1.load(Ordering::Relaxed);
    st.published_window = in_window;
    st
}

/// Splits a total rate over `publishers`: each gets `total / publishers` msgs/s.
pub fn per_publisher_rate(total: u64, publishers: u32) -> f64 {
    if total == 0 {
        0.0
    } else {
        total as f64 / f64::from(publishers.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_split() {
        assert_eq!(per_publisher_rate(0, 4), 0.0);
        assert_eq!(per_publisher_rate(10_000, 4), 2_500.0);
        assert_eq!(per_publisher_rate(500, 1), 500.0);
    }

    #[test]
    fn packet_size_is_raised() {
        assert!(max_packet_for(256) >= 1024 * 1024);
        assert!(max_packet_for(4 << 20) > 4 << 20);
    }
}
