//! The cluster engine: the log as one NATS JetStream stream that every mqws node of a cluster
//! appends to and reads. The only module of mqws that names async-nats.
//!
//! - `seq` is the stream sequence, assigned by the stream's (Raft-replicated) leader, so every
//!   node agrees on it. An append returns only after JetStream's publish acks, i.e. once the
//!   messages are stored on a quorum of the stream's replicas.
//! - Subjects: `<stream>.m.<one token per topic level>` ([`mqws_topic::topic_to_subject`],
//!   reversible); a range of messages lost before the log is one marker on `<stream>.x.lost`.
//! - `epoch`: derived from the stream's name and creation time, so a recreated stream is a new
//!   epoch.
//! - Retention is JetStream's own (`max_age`, `max_bytes`, `max_msgs` from `log.*`);
//!   [`log::JsLog::enforce`] only refreshes the counters. What it removed is below the stream's
//!   first sequence.
//! - Following: [`crate::storage::LogFeed`] reads the stream in order from where the node
//!   started, so messages that entered on any node reach this node's clients ([`cursor`]).
//! - Replay reads only the subjects the client's filters select ([`replay`]).
//! - Sessions and retained values live in key-value buckets beside the stream ([`kv`]).
//!
//! The storage traits are blocking; every call runs the async client on the runtime and waits
//! (`block_in_place` + `Handle::block_on`, so a caller on a runtime worker hands the worker
//! over meanwhile). `head`, `first` and
//! `stats` are cached and never wait.

mod cursor;
mod headers;
mod kv;
mod log;
mod reader;
mod replay;

use std::sync::Arc;
use std::time::Duration;

use log::JsLog;

use super::{Log, RetainedStore, SessionStore, StorageError};

/// What the JetStream log needs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `cluster.nats.urls`.
    pub(crate) urls: Vec<String>,
    /// `cluster.nats.stream`.
    pub(crate) stream: String,
    /// `cluster.nats.replicas`.
    pub(crate) replicas: usize,
    /// `cluster.nats.connect_timeout`.
    pub(crate) connect_timeout: Duration,
    /// `cluster.nats.read_ahead`.
    pub(crate) read_ahead: usize,
    /// `cluster.nats.max_readers`.
    pub(crate) max_readers: usize,
    /// `log.max_age`.
    pub(crate) max_age: Duration,
    /// `log.max_bytes`.
    pub(crate) max_bytes: u64,
    /// `log.max_messages`.
    pub(crate) max_messages: u64,
    /// `broker.max_payload_size`: NATS must carry a message this large plus its subject and
    /// headers.
    pub(crate) max_payload: usize,
    /// `session.ttl`: the sessions bucket's `max_age`.
    pub(crate) session_ttl: Duration,
    /// `session.max`: the sessions bucket's message limit.
    pub(crate) session_max: usize,
    /// `broker.max_session_expiry`: how long the MQTT sessions bucket keeps a session not
    /// saved since (a connected session is saved more often than that).
    pub(crate) mqtt_session_expiry: Duration,
}

/// The shared stores of a cluster node.
pub(crate) struct Parts {
    pub(crate) log: Arc<dyn Log>,
    pub(crate) sessions: Arc<dyn SessionStore>,
    pub(crate) mqtt_sessions: Arc<dyn SessionStore>,
    pub(crate) retained: Arc<dyn RetainedStore>,
}

/// Connects to NATS and opens the log stream and the key-value buckets. Blocking.
pub(crate) fn open(
    opts: &Options,
    rt: tokio::runtime::Handle,
    max_retained: usize,
) -> Result<Parts, StorageError> {
    // A NATS cluster that just started elects the leaders of new streams (the buckets too) a
    // few seconds after it listens: everything start-up asks of it is retried until
    // `cluster.nats.connect_timeout`.
    let deadline = std::time::Instant::now() + opts.connect_timeout;
    let log = JsLog::open(opts, rt)?;
    let inner = log.inner();
    let mut waiting = false;
    let (sessions, mqtt_sessions, retained) = loop {
        let opened = kv::JsSessions::open(
            inner.clone(),
            "sessions",
            opts.session_ttl,
            Some(opts.session_max),
            opts.replicas,
        )
        .and_then(|s| {
            // MQTT sessions are refused past `broker.max_sessions`, never dropped: no limit.
            let mqtt = kv::JsSessions::open(
                inner.clone(),
                "mqtt-sessions",
                opts.mqtt_session_expiry,
                None,
                opts.replicas,
            )?;
            Ok((
                s,
                mqtt,
                kv::JsRetained::open(inner.clone(), max_retained, opts.replicas)?,
            ))
        });
        match opened {
            Ok(stores) => break stores,
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                if !waiting {
                    tracing::info!(error = %e, "waiting for NATS JetStream's key-value buckets");
                    waiting = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    };
    Ok(Parts {
        log: Arc::new(log),
        sessions: Arc::new(sessions),
        mqtt_sessions: Arc::new(mqtt_sessions),
        retained: Arc::new(retained),
    })
}

/// Room for the subject and headers beside the largest payload.
const OVERHEAD: usize = 8 * 1024;

/// Names a failed NATS request: what mqws asked for, and what NATS or its client said.
fn js_error(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Shared(format!("{what}: {e}"))
}

/// Longest wait for one answer from NATS. async-nats can leave a request waiting for good
/// when the server it went to dies (a stream info request hung the log's follower after the
/// stream's leader was killed), so every request mqws makes is bounded by this.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A NATS request bounded by [`ANSWER_WAIT`], its failure named.
trait Answer<T, E: std::fmt::Display>: std::future::Future<Output = Result<T, E>> + Sized {
    /// The answer, or what failed: `what`, and NATS's error or its silence.
    async fn answer(self, what: &str) -> Result<T, StorageError> {
        match tokio::time::timeout(ANSWER_WAIT, self).await {
            Ok(r) => r.map_err(|e| js_error(what, e)),
            Err(_) => Err(js_error(what, "no answer from NATS within 5 s")),
        }
    }
}

impl<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>> Answer<T, E> for F {}

/// Milliseconds since the Unix epoch of a JetStream timestamp.
fn ms_of(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
