//! The bridge's error type.

use crate::log::LogError;

/// Why mqws could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The durable log failed.
    #[error("durable log: {0}")]
    Log(#[from] LogError),
    /// The broker side failed.
    #[error("broker: {0}")]
    Broker(#[from] mqws_broker::BrokerError),
    /// The `auth` section could not be turned into a verifier (unreadable key, …).
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    /// The TLS certificate or key could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// Listener or task I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
