//! One public MQTT port for both protocol versions.
//!
//! rumqttd serves MQTT 3.1.1 and 5.0 on separate listeners and binds them itself. mqws owns the
//! public listener instead: it reads the CONNECT packet's protocol level and splices the
//! connection to rumqttd's internal v4 or v5 listener on loopback. This also lets the public
//! port be 0 in tests, and sets TCP_NODELAY on the client's socket (rumqttd never does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::observe::{Observer, RetainedUpdate};

/// Where to splice each protocol version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    pub(crate) v4: SocketAddr,
    pub(crate) v5: SocketAddr,
}

/// Limits of the public listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) connect_timeout: Duration,
    /// Largest retained body the observer buffers (the broker's own packet limit).
    pub(crate) max_packet: usize,
}

/// Which internal listener a CONNECT belongs to, or why it cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// More bytes are needed.
    Incomplete,
    /// MQTT 3.1 (level 3) or 3.1.1 (level 4).
    V4,
    /// MQTT 5.0.
    V5,
    /// Not an MQTT CONNECT we serve.
    Reject(&'static str),
}

/// Reads the protocol level from the start of a CONNECT packet.
pub(crate) fn sniff(buf: &[u8]) -> Sniff {
    let Some(&first) = buf.first() else {
        return Sniff::Incomplete;
    };
    if first != 0x10 {
        return Sniff::Reject("first packet is not CONNECT");
    }
    // Remaining length: 1 to 4 bytes, 7 bits each.
    let mut pos = 1;
    loop {
        let Some(&b) = buf.get(pos) else {
            return Sniff::Incomplete;
        };
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
        if pos > 4 {
            return Sniff::Reject("malformed remaining length");
        }
    }
    let (Some(&hi), Some(&lo)) = (buf.get(pos), buf.get(pos + 1)) else {
        return Sniff::Incomplete;
    };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    let level_at = pos + 2 + name_len;
    let Some(name) = buf.get(pos + 2..level_at) else {
        return if name_len > 6 {
            Sniff::Reject("unknown protocol name")
        } else {
            Sniff::Incomplete
        };
    };
    if name != b"MQTT" && name != b"MQIsdp" {
        return Sniff::Reject("unknown protocol name");
    }
    match buf.get(level_at) {
        None => Sniff::Incomplete,
        Some(3 | 4) => Sniff::V4,
        Some(5) => Sniff::V5,
        Some(_) => Sniff::Reject("unsupported protocol level"),
    }
}

/// Accepts MQTT clients until `shutdown` flips, splicing each to its rumqttd listener.
pub(crate) async fn serve(
    listener: TcpListener,
    targets: Targets,
    limits: Limits,
    retained: mpsc::Sender<RetainedUpdate>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                warn!(error = %e, "mqtt accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("mqws_mqtt_refused_total", "reason" => "max_connections")
                .increment(1);
            warn!(%peer, limit = limits.max_connections, "mqtt connection refused: limit reached");
            continue;
        };
        let span = tracing::debug_span!("mqtt_conn", %peer);
        let retained = retained.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                if let Err(why) = splice(stream, targets, limits, retained).await {
                    debug!(%why, "mqtt connection ended");
                }
            }
            .instrument(span),
        );
    }
    info!("mqtt listener stopped");
}

async fn splice(
    mut client: TcpStream,
    targets: Targets,
    limits: Limits,
    retained: mpsc::Sender<RetainedUpdate>,
) -> Result<(), String> {
    client.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(64);
    let (target, v5) = tokio::time::timeout(limits.connect_timeout, async {
        let mut chunk = [0u8; 64];
        loop {
            match sniff(&head) {
                Sniff::Incomplete => {}
                Sniff::V4 => return Ok((targets.v4, false)),
                Sniff::V5 => return Ok((targets.v5, true)),
                Sniff::Reject(why) => return Err(why.to_owned()),
            }
            let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before CONNECT".to_owned());
            }
            head.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| "no CONNECT within the connect timeout".to_owned())??;
    let upstream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("internal listener {target}: {e}"))?;
    upstream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut broker_rx, mut broker_tx) = upstream.into_split();
    let down = tokio::io::copy(&mut broker_rx, &mut client_tx);
    let up = async {
        let mut observer = Observer::new(v5, limits.max_packet);
        let mut updates = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut data = head;
        loop {
            if data.is_empty() {
                let n = client_rx.read(&mut buf).await?;
                if n == 0 {
                    broker_tx.shutdown().await?;
                    return Ok::<(), std::io::Error>(());
                }
                data.extend_from_slice(&buf[..n]);
            }
            broker_tx.write_all(&data).await?;
            observer.feed(&data, &mut updates);
            data.clear();
            for update in updates.drain(..) {
                // Waits when the retained store lags: back-pressure on this client only.
                if retained.send(update).await.is_err() {
                    debug!("retained store gone");
                }
            }
        }
    };
    tokio::select! {
        r = down => r.map(|_| ()).map_err(|e| e.to_string()),
        r = up => r.map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(name: &[u8], level: u8) -> Vec<u8> {
        let mut v = vec![0x10, 0x20, 0, name.len() as u8];
        v.extend_from_slice(name);
        v.push(level);
        v.extend_from_slice(&[0x02, 0, 60]);
        v
    }

    #[test]
    fn reads_levels() {
        assert_eq!(sniff(&connect(b"MQTT", 4)), Sniff::V4);
        assert_eq!(sniff(&connect(b"MQTT", 5)), Sniff::V5);
        assert_eq!(sniff(&connect(b"MQIsdp", 3)), Sniff::V4);
        assert_eq!(
            sniff(&connect(b"MQTT", 9)),
            Sniff::Reject("unsupported protocol level")
        );
    }

    #[test]
    fn waits_for_more_bytes_at_every_cut() {
        let full = connect(b"MQTT", 5);
        for cut in 0..9 {
            assert_eq!(sniff(&full[..cut]), Sniff::Incomplete, "cut at {cut}");
        }
        assert_eq!(sniff(&full[..9]), Sniff::V5);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(sniff(b"GET / HTTP/1.1"), Sniff::Reject(_)));
        assert!(matches!(
            sniff(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Sniff::Reject(_)
        ));
        assert!(matches!(
            sniff(&[0x10, 5, 0, 4, b'H', b'T', b'T', b'P', 4]),
            Sniff::Reject(_)
        ));
        assert!(matches!(sniff(&[0x10, 5, 0, 200, b'M']), Sniff::Reject(_)));
    }

    #[test]
    fn multi_byte_remaining_length() {
        let mut v = vec![0x10, 0x80, 0x01, 0, 4];
        v.extend_from_slice(b"MQTT");
        v.push(4);
        assert_eq!(sniff(&v), Sniff::V4);
    }
}
