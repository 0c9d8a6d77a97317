//! The bridge's error type.

use crate::storage::StorageError;

/// Why mqws could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The storage (log, sessions, retained values) failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The broker side failed.
    #[error("broker: {0}")]
    Broker(#[from] mqws_broker::BrokerError),
    /// The `auth` section could not be turned into a verifier (unreadable key, …).
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    /// The TLS certificate or key could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// A thread could not be started.
    #[error("could not start {what}: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A start-up task panicked or was cancelled.
    #[error("{what} did not complete: {detail}")]
    Task {
        /// Which task.
        what: &'static str,
        /// The join error.
        detail: String,
    },
    /// Listener I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
