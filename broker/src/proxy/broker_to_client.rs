//! One proxied connection's broker→client side: rumqttd's bytes through the [`Downstream`]
//! machine to the client, with the packets the client→broker side asks the proxy to send
//! itself ([`Control`]) put between rumqttd's packets. `session_present`: what the CONNACK
//! says, when the proxy decides it (it owns the sessions of the subscriptions it serves).

use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client_to_broker::Acks;
use super::downstream::{Control, Downstream};
use super::READ_BUF;

/// MQTT 5 DISCONNECT, reason "server shutting down" (0x8B).
const SHUTTING_DOWN: [u8; 4] = [0xe0, 2, 0x8B, 0];
/// MQTT 5 DISCONNECT, reason "session taken over" (0x8E): a newer connection of the client id
/// took over, here or (found at a session save) on another node.
pub(super) const TAKEN_OVER: [u8; 4] = [0xe0, 2, 0x8E, 0];

/// Runs `machine` until rumqttd closes its side or the machine has said goodbye. `(shutdown, taken)`:
/// why the proxy closed the connection to rumqttd, when it did (mqws stops, or a newer
/// connection of the client id took over), which an MQTT 5 client is told.
pub(super) async fn run<W>(
    mut broker_rx: OwnedReadHalf,
    client_tx: &mut W,
    mut control_rx: mpsc::Receiver<Control>,
    mut machine: Downstream,
    acks: &Acks,
    (shutdown, taken): (&CancellationToken, &CancellationToken),
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let v5 = machine.v5();
    let window = machine.window();
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(READ_BUF);
    loop {
        let holding = machine.holding();
        let opened = async {
            match &window {
                Some(w) if holding => w.to_broker.notified().await,
                _ => std::future::pending().await,
            }
        };
        // Biased: a SUBACK rewrite is queued before its SUBSCRIBE reaches rumqttd, so it is
        // taken before rumqttd's answer can be read. All three are cancel safe (a control
        // stays queued, a notification's permit is kept, nothing is read).
        tokio::select! {
            biased;
            Some(c) = control_rx.recv() => machine.control(c, &mut out),
            () = opened => machine.release(&mut out),
            // While rumqttd's PUBLISHes wait for the client's Receive Maximum, reading stops
            // once a few are held: rumqttd keeps the rest.
            n = broker_rx.read(&mut buf), if !machine.full() => {
                let n = n?;
                if n == 0 {
                    if v5 && shutdown.is_cancelled() {
                        client_tx.write_all(&SHUTTING_DOWN).await?;
                    } else if v5 && taken.is_cancelled() {
                        client_tx.write_all(&TAKEN_OVER).await?;
                    }
                    return client_tx.shutdown().await;
                }
                // rumqttd never sets TCP_NODELAY, so its next write waits (Nagle) until we
                // acknowledge this one; acknowledging at once keeps that wait at loopback
                // round-trip time instead of the delayed-ACK timer.
                let _ = socket2::SockRef::from(broker_rx.as_ref()).set_tcp_quickack(true);
                machine.feed(&buf[..n], &mut out);
                acks.sent.store(machine.acks(), Ordering::Release);
                acks.publishes_out.store(machine.publishes(), Ordering::Relaxed);
            }
        }
        if !out.is_empty() {
            client_tx.write_all(&out).await?;
            out.clear();
        }
        if machine.done() {
            return client_tx.shutdown().await;
        }
    }
}
