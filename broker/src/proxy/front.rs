//! The proxy for MQTT connections that arrive another way than the MQTT port: MQTT over
//! WebSocket, whose HTTP side the bridge serves. Such a connection is the same as one on the
//! MQTT port from its first byte on: the same admission (counted against
//! `broker.max_connections` and the CONNECT deadline), logins, durable ingress, SUBSCRIBE
//! bounds, wills and shutdown.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Admitted, Proxy};

/// Takes MQTT byte streams from elsewhere into the proxy.
#[derive(Debug, Clone)]
pub struct MqttFront(pub(crate) Proxy);

/// A connection taken before its first byte: it holds a place under the connection limits
/// until it is served or dropped.
#[derive(Debug)]
pub struct MqttAdmission {
    proxy: Proxy,
    admitted: Admitted,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MQTT connection refused: {reason}")]
pub struct MqttRefused {
    /// `max_connections`, `max_pending_connects` or `max_pending_per_source`.
    pub reason: &'static str,
}

impl MqttFront {
    /// True when the embedded broker holds (or ever held) a filter matching `topic`, so that a
    /// message on it handed to the broker could reach one of its subscribers. The cluster
    /// follower hands other nodes' messages to the broker only then (and retained ones always).
    pub fn broker_routes(&self, topic: &str) -> bool {
        self.0.sinks.filters.registry.wanted(topic)
    }

    /// Takes a connection from `peer` if the limits allow it (do this before a WebSocket
    /// upgrade, so a refusal can still be an HTTP status).
    pub fn admit(&self, peer: SocketAddr) -> Result<MqttAdmission, MqttRefused> {
        let admitted = self
            .0
            .admit(peer)
            .map_err(|reason| MqttRefused { reason })?;
        Ok(MqttAdmission {
            proxy: self.0.clone(),
            admitted,
        })
    }
}

impl MqttAdmission {
    /// Serves the MQTT byte stream `stream` as a connection of the proxy, in a task of its own
    /// that the broker's shutdown waits for. `transport` names the way in for log lines.
    pub fn serve<S>(self, stream: S, transport: &'static str)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.proxy.spawn(self.admitted, stream, transport);
    }
}
