//! Making rumqttd forget what it kept of a client id before mqws starts a new persistent
//! session for it.
//!
//! rumqttd keeps a session (its filters outside `bridge.filters`, `$share/…` ones, queued QoS
//! 1/2 messages and PUBRELs) only for a connection whose CONNECT said clean session 0, and a
//! clean CONNECT is the only way to make it drop one. So a connection whose session mqws keeps
//! reaches rumqttd with clean session 0, and when that session is new (none stored, expired,
//! or an MQTT 5 clean start) this clean connection with the client id goes first.
//!
//! It ends by closing its sending half and reading until rumqttd closes: rumqttd's link queues
//! its disconnect for the router before it closes the socket, so the router has handled it
//! before it can see the client's own CONNECT (two live connections of one client id make
//! rumqttd free a connection id twice, see [`super::takeover`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect::{self, Connect};
use super::will_publish::expect;

/// Longest wait for rumqttd to answer and to let go.
const WAIT: Duration = Duration::from_secs(5);

/// Ends rumqttd's session of `connect`'s client id (if it keeps one), with the client's login.
pub(super) async fn session(target: SocketAddr, connect: &Connect) -> Result<(), String> {
    tokio::time::timeout(WAIT, exchange(target, connect))
        .await
        .map_err(|_| "rumqttd did not answer in time".to_owned())?
        .map_err(|e| e.to_string())
}

async fn exchange(target: SocketAddr, connect: &Connect) -> std::io::Result<()> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    s.write_all(&connect::build(
        connect.level,
        &connect.client_id,
        connect.username.as_deref(),
        connect.password.as_deref(),
        false,
    ))
    .await?;
    expect(&mut s, 2, |body| body.get(1) == Some(&0)).await?;
    s.shutdown().await?;
    let mut rest = [0u8; 64];
    while s.read(&mut rest).await? > 0 {}
    Ok(())
}
