//! The MQTT side of the storm benchmark: an MQTT 3.1.1 client (rumqttc) with a persistent
//! session (clean session 0) subscribes and leaves; later it reconnects and reads what was
//! published while it was away. MQTT has no `caught_up`: a client has caught up when it has
//! every message it expects. Outcomes use the WebSocket client's fields: `welcome` is the
//! CONNACK, `resumed` its session present flag.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::time::Instant;

use super::client::{Expect, Mark, Outcome};
use crate::payload::parse_stamp;
use crate::publisher::{mqtt_options, set_nodelay};

/// Largest packet the clients accept.
const MAX_PACKET: usize = 1 << 20;

fn options(mqtt: SocketAddr, id: &str) -> rumqttc::MqttOptions {
    let mut o = mqtt_options(id, mqtt, MAX_PACKET);
    o.set_clean_session(false);
    o
}

/// TCP_NODELAY, and as long to connect as a WebSocket storm client gets (the storm's deadline
/// bounds it; rumqttc's 5 s would fail clients the server is merely slow to accept).
fn tune(el: &mut EventLoop) {
    set_nodelay(el);
    let mut net = el.network_options();
    net.set_connection_timeout(300);
    el.set_network_options(net);
}

/// Polls until a packet `pick` accepts.
async fn until<T>(
    el: &mut EventLoop,
    mut pick: impl FnMut(Packet) -> Option<T>,
) -> anyhow::Result<T> {
    loop {
        if let Event::Incoming(p) = el.poll().await? {
            if let Some(t) = pick(p) {
                return Ok(t);
            }
        }
    }
}

/// Opens `id`'s persistent session subscribed to `filter` at QoS 1, then disconnects.
pub async fn open_session(mqtt: SocketAddr, id: &str, filter: &str) -> anyhow::Result<()> {
    let (client, mut el) = AsyncClient::new(options(mqtt, id), 16);
    tune(&mut el);
    let present = until(&mut el, |p| match p {
        Packet::ConnAck(c) => Some(c.session_present),
        _ => None,
    })
    .await
    .context("CONNACK")?;
    if present {
        bail!("{id}: a session was already present");
    }
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    until(&mut el, |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await
        .context("SUBACK")?;
    client.disconnect().await?;
    while el.poll().await.is_ok() {}
    Ok(())
}

/// Reconnects `id` and reads until `expect` is complete (or `deadline`).
pub async fn catch_up(
    mqtt: SocketAddr,
    id: String,
    mut expect: Expect,
    t0: Instant,
    deadline: Instant,
) -> Outcome {
    let ms = |t0: Instant| t0.elapsed().as_secs_f64() * 1000.0;
    let mut out = Outcome {
        expected: expect.expected(),
        ..Outcome::default()
    };
    let (client, mut el) = AsyncClient::new(options(mqtt, &id), 16);
    tune(&mut el);
    out.hello_ms = Some(ms(t0));
    let run = async {
        let present = until(&mut el, |p| match p {
            Packet::ConnAck(c) => Some(c.session_present),
            _ => None,
        })
        .await
        .context("CONNACK")?;
        out.connected_ms = Some(ms(t0));
        out.welcome_ms = out.connected_ms;
        out.resumed = Some(present);
        out.recovered = Some(true);
        let mut new = 0;
        while new < out.expected {
            let payload = until(&mut el, |p| match p {
                Packet::Publish(p) => Some(p.payload),
                _ => None,
            })
            .await?;
            out.replayed += 1;
            out.bytes += payload.len() as u64;
            if out.first_message_ms.is_none() {
                out.first_message_ms = Some(ms(t0));
            }
            match parse_stamp(&payload).map(|s| expect.mark(s.p, s.n)) {
                Some(Mark::New) => new += 1,
                Some(Mark::Duplicate) => out.duplicates += 1,
                _ => out.unexpected += 1,
            }
        }
        out.caught_up_ms = Some(ms(t0));
        // Let the last PUBACKs go out before leaving.
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.disconnect().await?;
        let quiet = Instant::now() + Duration::from_millis(200);
        while let Ok(Ok(e)) = tokio::time::timeout_at(quiet, el.poll()).await {
            if let Event::Incoming(Packet::Publish(_)) = e {
                out.after_caught_up += 1;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout_at(deadline, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.failed = Some(format!("{e:#}")),
        Err(_) => out.failed = Some("deadline before every message".into()),
    }
    out.missing = expect.missing();
    out
}
