//! A lean MQTT-over-WebSocket publisher (`--lean-publisher`): MQTT 3.1.1 packets encoded with
//! rumqttc's codec and written straight to a tokio-tungstenite WebSocket, up to `--lean-batch`
//! PUBLISHes per binary message, no client event loop.
//!
//! rumqttc's own WebSocket transport took 64–130% of a core in the `mqtt-ws` phases, about
//! 9.5 µs per message, so on this 2-core machine the load generator, not the server, set the
//! rate that phase could show. This one counts the same way as [`crate::publisher`]: a message
//! is *published* when its WebSocket message is written, *acked* on its PUBACK; QoS 1 keeps at
//! most `inflight` unacknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::mqttbytes::v4::{Disconnect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::payload::{self, Stamp};
use crate::publisher::{PubConfig, PubStats};
use crate::stats::Window;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `url` with the `mqtt` subprotocol and connects as `client_id`.
async fn open(url: &str, client_id: &str) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .context("WebSocket handshake")?;
    crate::mqtt_ws::connect(&mut ws, client_id.to_owned(), 600).await?;
    Ok(ws)
}

/// Runs lean publisher `id` until `end` (see [`crate::publisher::run`], whose arguments and
/// counting it shares).
pub async fn run(
    id: u32,
    cfg: PubConfig,
    start: Instant,
    end: Instant,
    window: Arc<Window>,
    live: Arc<AtomicU64>,
) -> PubStats {
    let mut st = PubStats::default();
    let url = cfg.ws_url.clone().unwrap_or_default();
    let ws = match open(&url, &format!("{}-pub-{id}", cfg.client_prefix)).await {
        Ok(ws) => ws,
        Err(e) => {
            st.errors = 1;
            st.first_error = Some(format!("{e:#}"));
            return st;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let window_slots = Arc::new(Semaphore::new(usize::from(cfg.inflight.max(1))));
    let acked = Arc::new(AtomicU64::new(0));
    let reader = {
        let (slots, acked) = (window_slots.clone(), acked.clone());
        tokio::spawn(async move {
            let mut inbuf = BytesMut::new();
            while let Some(Ok(m)) = rx.next().await {
                if let Message::Binary(b) = m {
                    inbuf.extend_from_slice(&b);
                    while let Ok(p) = Packet::read(&mut inbuf, 1 << 20) {
                        if matches!(p, Packet::PubAck(_)) {
                            acked.fetch_add(1, Ordering::Relaxed);
                            slots.add_permits(1);
                        }
                    }
                }
            }
        })
    };
    let mut writer = Writer {
        topic: format!("{}/p{id}", cfg.topic_prefix),
        id,
        cfg: &cfg,
        window: &window,
        slots: &window_slots,
        end,
        n: 0,
        pkid: 0,
        in_window: 0,
        buf: BytesMut::new(),
    };
    tokio::time::sleep_until(start).await;
    let written = writer.until(start, end, &mut tx, &live).await;
    if let Err(e) = &written {
        st.errors = 1;
        st.first_error = Some(format!("{e:#}"));
    }
    let n = writer.n;
    if cfg.qos != QoS::AtMostOnce {
        let t0 = Instant::now();
        while acked.load(Ordering::Relaxed) < n && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut bye = BytesMut::new();
    let _ = Disconnect.write(&mut bye);
    let _ = tx.send(Message::binary(bye.freeze())).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    st.published = n;
    st.published_window = writer.in_window;
    st.acked = acked.load(Ordering::Relaxed);
    st
}

/// The publishing half: numbers, stamps and batches the PUBLISHes.
struct Writer<'a> {
    topic: String,
    id: u32,
    cfg: &'a PubConfig,
    window: &'a Window,
    /// QoS 1 window: one permit per unacknowledged PUBLISH.
    slots: &'a Arc<Semaphore>,
    /// When the phase ends: no wait for the window lasts past it.
    end: Instant,
    /// Messages published so far.
    n: u64,
    pkid: u16,
    in_window: u64,
    buf: BytesMut,
}

impl Writer<'_> {
    /// Publishes flat out, or at the configured rate in bursts per tick, until `end`.
    async fn until(
        &mut self,
        start: Instant,
        end: Instant,
        tx: &mut futures_util::stream::SplitSink<Ws, Message>,
        live: &AtomicU64,
    ) -> anyhow::Result<()> {
        if self.cfg.rate <= 0.0 {
            while Instant::now() < end {
                self.batch(self.cfg.lean_batch, tx, live).await?;
            }
            return Ok(());
        }
        let mut iv = tokio::time::interval_at(start, self.cfg.tick);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let now = iv.tick().await;
            if now >= end {
                return Ok(());
            }
            let due = ((now - start).as_secs_f64() * self.cfg.rate) as u64 + 1;
            while self.n < due && Instant::now() < end {
                let k = usize::try_from(due - self.n).unwrap_or(usize::MAX);
                self.batch(k.min(self.cfg.lean_batch), tx, live).await?;
            }
        }
    }

    /// Writes up to `k` PUBLISHes as one WebSocket message (at QoS 1, as many as the window
    /// lets go without waiting, at least one).
    async fn batch(
        &mut self,
        k: usize,
        tx: &mut futures_util::stream::SplitSink<Ws, Message>,
        live: &AtomicU64,
    ) -> anyhow::Result<()> {
        let mut count = 0;
        while count < k {
            if self.cfg.qos != QoS::AtMostOnce {
                // Bounded: a server that stops acknowledging ends the phase, not the run.
                let permit = if count == 0 {
                    tokio::time::timeout_at(self.end, self.slots.acquire())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    self.slots.try_acquire().ok()
                };
                let Some(permit) = permit else { break };
                permit.forget();
            }
            self.push();
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let bytes: Bytes = self.buf.split().freeze();
        tx.send(Message::binary(bytes)).await?;
        live.fetch_add(count as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Encodes the next PUBLISH into the buffer.
    fn push(&mut self) {
        let t_us = payload::now_us();
        if self.window.contains(t_us) {
            self.in_window += 1;
        }
        let mut body = Vec::with_capacity(self.cfg.payload_bytes.max(64));
        let stamp = Stamp {
            t_us,
            r: self.window.tag(),
            p: self.id,
            n: self.n,
        };
        payload::build(&mut body, stamp, self.cfg.payload_bytes);
        let mut publish = Publish::new(&self.topic, self.cfg.qos, body);
        if self.cfg.qos != QoS::AtMostOnce {
            self.pkid = self.pkid.checked_add(1).unwrap_or(1);
            publish.pkid = self.pkid;
        }
        // Writing into a BytesMut cannot fail for a packet this size.
        let _ = publish.write(&mut self.buf);
        self.n += 1;
    }
}
