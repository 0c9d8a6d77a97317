//! Cluster mode: where the shared log lives when `log.backend = "jetstream"` (NATS JetStream),
//! validated like the rest of the tree.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Which engine holds the log.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// The embedded redb file in `log.dir`, one node.
    #[default]
    Embedded,
    /// A NATS JetStream stream shared by every node (`cluster.nats.*`).
    Jetstream,
}

/// Cluster settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS servers holding the shared log.
    pub nats: NatsConfig,
}

/// How to reach NATS JetStream and which stream is the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS server URLs (`nats://host:4222`); required with `log.backend = "jetstream"`.
    /// Default empty.
    pub urls: Vec<String>,
    /// Name of the JetStream stream that is the log; its subjects are `<stream>.>`. Every node
    /// of one cluster uses the same name. Default `mqws`.
    pub stream: String,
    /// Copies JetStream keeps of the stream (1, 3 or 5 in a NATS cluster). Used when mqws
    /// creates the stream. Default 1.
    pub replicas: usize,
    /// How long start-up waits for NATS before it gives up. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bytes each reader of the stream lets NATS send ahead of what mqws has taken (a reader
    /// holds up to 1.5 times this); raised to the largest message the stream takes. Default
    /// 2 MiB.
    pub read_ahead: ByteSize,
    /// Stream readers that catch-ups and history queries run at once on a node (a catch-up
    /// runs up to 4); more wait for one to finish. The node's follower is one more. Default 8.
    pub max_readers: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: Vec::new(),
            stream: "mqws".to_owned(),
            replicas: 1,
            connect_timeout: Duration::from_secs(10),
            read_ahead: ByteSize::mib(2),
            max_readers: 8,
        }
    }
}

impl ClusterConfig {
    /// Checks the cluster keys; `backend` says whether they are used at all.
    pub(crate) fn validate(&self, backend: LogBackend) -> Result<(), ConfigError> {
        let nats = &self.nats;
        if backend == LogBackend::Jetstream && nats.urls.is_empty() {
            return Err(ConfigError::invalid(
                "cluster.nats.urls",
                "[]",
                "at least one NATS URL when log.backend = \"jetstream\"",
            ));
        }
        for u in &nats.urls {
            if !(u.starts_with("nats://") || u.starts_with("tls://")) || u.len() < 8 {
                return Err(ConfigError::invalid(
                    "cluster.nats.urls",
                    format!("{u:?}"),
                    "URLs like nats://host:4222 or tls://host:4222",
                ));
            }
        }
        let name_ok = !nats.stream.is_empty()
            && nats.stream.len() <= 32
            && nats
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(ConfigError::invalid(
                "cluster.nats.stream",
                format!("{:?}", nats.stream),
                "1 to 32 ASCII letters, digits, '-' or '_'",
            ));
        }
        if !(1..=5).contains(&nats.replicas) {
            return Err(ConfigError::invalid(
                "cluster.nats.replicas",
                nats.replicas,
                "1 to 5",
            ));
        }
        if nats.max_readers < 4 {
            return Err(ConfigError::invalid(
                "cluster.nats.max_readers",
                nats.max_readers,
                "at least 4 (one catch-up runs up to 4 readers)",
            ));
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&nats.read_ahead.as_u64()) {
            return Err(ConfigError::invalid(
                "cluster.nats.read_ahead",
                nats.read_ahead,
                "64 KiB to 64 MiB",
            ));
        }
        if nats.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "cluster.nats.connect_timeout",
                "0s",
                "a positive duration",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_needs_urls_and_sane_names() {
        let mut c = ClusterConfig::default();
        assert!(
            c.validate(LogBackend::Embedded).is_ok(),
            "unused keys may stay empty"
        );
        let err = c.validate(LogBackend::Jetstream).expect_err("no URL");
        assert!(err.to_string().contains("cluster.nats.urls"), "{err}");
        c.nats.urls = vec!["nats://127.0.0.1:4222".to_owned()];
        assert!(c.validate(LogBackend::Jetstream).is_ok());
        c.nats.urls = vec!["127.0.0.1:4222".to_owned()];
        assert!(
            c.validate(LogBackend::Jetstream).is_err(),
            "a URL needs its scheme"
        );
        c.nats.urls = vec!["tls://nats.example:4222".to_owned()];
        c.nats.stream = "mqws.log".to_owned();
        let err = c
            .validate(LogBackend::Jetstream)
            .expect_err("a dot in the name");
        assert!(err.to_string().contains("cluster.nats.stream"), "{err}");
        c.nats.stream = "mqws".to_owned();
        c.nats.replicas = 7;
        assert!(
            c.validate(LogBackend::Jetstream).is_err(),
            "at most 5 replicas"
        );
    }
}
