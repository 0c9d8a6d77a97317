//! The broker crate's error type.

use std::net::SocketAddr;

/// What can go wrong starting or using the broker side.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// rumqttd's router refused the bridge's in-process link.
    #[error("the embedded broker refused the bridge link: {0}")]
    Link(String),
    /// An internal listener did not come up in time.
    #[error(
        "the embedded broker's {what} listener on {addr} did not start within {secs} s \
         (is the port taken? RUST_LOG=rumqttd=debug shows rumqttd's own error)"
    )]
    ListenerTimeout {
        /// Which listener.
        what: &'static str,
        /// Where it should have listened.
        addr: SocketAddr,
        /// How long we waited.
        secs: u64,
    },
    /// Operating-system error while setting up listeners or threads.
    #[error("embedded broker I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("broker tls: {0}")]
    Tls(String),
    /// The broker link is gone (the bridge is shutting down or rumqttd dropped the link).
    #[error("the broker link is closed")]
    Closed,
    /// The broker did not take a publish in time.
    #[error("the broker did not take the publish within the timeout")]
    Timeout,
}

impl BrokerError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> BrokerError {
        move |source| BrokerError::Io { context, source }
    }
}
