//! The accept loop of a public MQTT listener (plain or TLS): admits each connection
//! ([`Proxy::admit`]) before reading from it, then hands it to a tracked task.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::Proxy;

/// Accepts MQTT clients (over TLS when `tls` is set) until the proxy's shutdown is cancelled.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, proxy: Proxy) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = proxy.shutdown.cancelled() => break,
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
        let admitted = match proxy.admit(peer) {
            Ok(a) => a,
            Err("max_connections") => {
                warn!(%peer, limit = proxy.limits.max_connections, "mqtt connection refused: limit reached");
                continue;
            }
            Err(limit) => {
                debug!(%peer, limit, "mqtt connection refused: too many without CONNECT");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => proxy.spawn(admitted, stream, "tcp"),
            Some(acceptor) => {
                // The handshake runs in the connection's own task, bounded like a CONNECT.
                let (acceptor, inner, timeout) = (
                    acceptor.clone(),
                    proxy.clone(),
                    proxy.limits.connect_timeout,
                );
                proxy.connections.spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => inner.spawn(admitted, s, "tls"),
                        Ok(Err(e)) => debug!(%peer, error = %e, "mqtt tls handshake failed"),
                        Err(_) => debug!(%peer, "mqtt tls handshake timed out"),
                    }
                });
            }
        }
    }
    info!("mqtt listener stopped");
}
