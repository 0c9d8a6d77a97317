//! The start of a proxied connection: read the whole CONNECT within the connect timeout, refuse
//! reserved client ids and wrong logins with a proper CONNACK, and take over keep alive.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use super::connect::{self, Connect, Parsed};
use super::pending::PendingGuard;
use super::{refused, Gate, Limits};

/// A client that may go on: its CONNECT, and the bytes read so far (the CONNECT, with its keep
/// alive rewritten for rumqttd, and whatever followed it in the same reads).
pub(super) struct Accepted {
    pub(super) connect: Connect,
    pub(super) head: Vec<u8>,
}

/// Reads and checks the CONNECT. `waiting` (the connection's place among those that have not
/// sent CONNECT) is given up once it has arrived.
pub(super) async fn run<R, W>(
    client_rx: &mut R,
    client_tx: &mut W,
    limits: &Limits,
    gate: &Gate,
    waiting: PendingGuard,
) -> Result<Accepted, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(256);
    let connect =
        tokio::time::timeout(limits.connect_timeout, read_connect(client_rx, &mut head)).await;
    let (connect, connect_len) = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => {
            refused("protocol");
            return Err(why);
        }
        Err(_) => {
            refused("connect_timeout");
            return Err("no CONNECT within the connect timeout".to_owned());
        }
    };
    drop(waiting);
    tracing::Span::current().record("client_id", connect.client_id.as_str());
    if connect.client_id.starts_with(&gate.reserved_prefix) {
        refused("client_id");
        warn!(client_id = %connect.client_id, "refused a client id reserved for the bridge");
        let _ = client_tx
            .write_all(connect::refusal(connect.level, false))
            .await;
        return Err("reserved client id".to_owned());
    }
    if gate.users.enabled() {
        let ok = match (&connect.username, &connect.password) {
            (Some(u), Some(p)) => gate.users.check(u, p).await,
            _ => false,
        };
        if !ok {
            refused("auth");
            info!(username = ?connect.username, client_id = %connect.client_id, "mqtt login refused");
            let _ = client_tx
                .write_all(connect::refusal(connect.level, true))
                .await;
            return Err("login refused".to_owned());
        }
    }
    // rumqttd refuses keep alive 0 (MQTT allows it), and would drop a client whose bytes the
    // proxy holds while the log catches up: it is given the longest keep alive, and the proxy
    // enforces the client's own (1.5 times it without a packet, as MQTT says).
    let at = connect.keep_alive_at;
    head[at..at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
    // The will goes first: it sits after the properties the next step may shorten.
    let connect_len = connect::strip_will(&mut head, connect_len, &connect);
    if connect.level == 5 {
        connect::strip_topic_alias_maximum(&mut head, connect_len, at + 2);
    }
    Ok(Accepted { connect, head })
}

/// Reads until `head` holds a whole CONNECT.
async fn read_connect<R>(client_rx: &mut R, head: &mut Vec<u8>) -> Result<(Connect, usize), String>
where
    R: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 1024];
    loop {
        match connect::parse(head) {
            Parsed::Incomplete => {}
            Parsed::Connect(c, len) => return Ok((c, len)),
            Parsed::Reject(why) => return Err(why.to_owned()),
        }
        let n = client_rx
            .read(&mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before CONNECT".to_owned());
        }
        head.extend_from_slice(&chunk[..n]);
    }
}
