//! Storage: everything mqws keeps, behind interfaces that name no engine.
//!
//! The bottom layer of the bridge: it imports nothing else from it. Above it, ingest appends,
//! catch-up reads, sessions and retained values keep their state, and retention trims; none of
//! them sees the engine. Two engines implement the interfaces ([`log::Log`],
//! [`kv::SessionStore`], [`kv::RetainedStore`]): redb on one node ([`redb_engine`], the only
//! module that names it) and, in cluster mode, a NATS JetStream stream with key-value buckets
//! ([`jetstream`]; see ARCHITECTURE.md, "Cluster mode").
//!
//! One [`Storage`] owns the engine through one replaceable handle: when a write fails and the
//! engine stays failed (redb after a failed commit), [`Storage::recover`] reopens it in place and
//! every store continues on the new handle without a restart.

mod error;
pub(crate) mod expiring;
mod jetstream;
pub(crate) mod kv;
pub(crate) mod log;
mod redb_engine;

use std::path::Path;
use std::sync::Arc;

pub use error::StorageError;
pub(crate) use jetstream::Options as ClusterOptions;
pub(crate) use kv::{RetainedStore, RetainedValue, SessionStore};
pub(crate) use log::{
    Appended, Entry, Fed, Log, LogCursor, LogFeed, LogStats, Lost, LostReason, MqttMeta, Position,
    Record, Retention,
};

/// The opened storage: the log, the session and retained-value stores, and control of the
/// engine under them.
#[derive(Clone)]
pub(crate) struct Storage {
    /// The durable log.
    pub(crate) log: Arc<dyn Log>,
    /// Server-held sessions.
    pub(crate) sessions: Arc<dyn SessionStore>,
    /// Persistent MQTT sessions (the broker's proxy owns their content).
    pub(crate) mqtt_sessions: Arc<expiring::Expiring>,
    /// Retained values.
    pub(crate) retained: Arc<dyn RetainedStore>,
    engine: Arc<dyn Engine>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("epoch", &self.log.epoch())
            .finish_non_exhaustive()
    }
}

/// What the owner of an engine can do with it as a whole.
pub(crate) trait Engine: Send + Sync {
    /// Reopens the engine after a failed write (an engine may stay failed after one); stores
    /// continue on the new handle. Costs a reopen: call it after failures, not routinely.
    fn recover(&self) -> Result<(), StorageError>;
    /// Bytes the engine occupies on disk.
    fn disk_bytes(&self) -> Result<u64, StorageError>;
    /// Writes everything buffered to disk.
    fn flush(&self) -> Result<(), StorageError>;
}

/// How to open the embedded engine.
#[derive(Debug, Clone)]
pub(crate) struct Options<'a> {
    /// The data dir (`log.dir`).
    pub(crate) dir: &'a Path,
    /// Page cache bytes (`log.cache_capacity`).
    pub(crate) cache_bytes: u64,
    /// Flush every append before it returns (`log.sync`).
    pub(crate) sync: bool,
    /// Most topics whose retained value is kept (`broker.max_retained`).
    pub(crate) max_retained: usize,
    /// Free disk space appends leave untouched (`log.min_free_disk`).
    pub(crate) min_free_bytes: u64,
    /// Size of the log's journal (`log.journal_bytes`); 0: appends are durable redb commits.
    pub(crate) journal_bytes: u64,
}

impl Storage {
    /// Opens (or creates) the embedded redb storage in `opts.dir`. Blocking: rebuilds the log
    /// index with a scan.
    pub(crate) fn open(opts: &Options<'_>) -> Result<Storage, StorageError> {
        let parts = redb_engine::open(opts)?;
        Ok(Storage {
            log: parts.log,
            sessions: parts.sessions,
            mqtt_sessions: Arc::new(expiring::Expiring::open(parts.mqtt_sessions)?),
            retained: parts.retained,
            engine: parts.engine,
        })
    }

    /// Opens cluster storage: the log on the JetStream stream `cluster` names and sessions and
    /// retained values in its key-value buckets, all shared with the other nodes (the embedded
    /// engine is opened too, for the disk checks of `log.dir`). Blocking.
    pub(crate) fn open_cluster(
        opts: &Options<'_>,
        cluster: &ClusterOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<Storage, StorageError> {
        let mut storage = Storage::open(opts)?;
        let shared = jetstream::open(cluster, rt, opts.max_retained)?;
        storage.engine = Arc::new(SharedEngine {
            local: storage.engine,
            log: shared.log.clone(),
        });
        storage.log = shared.log;
        storage.sessions = shared.sessions;
        storage.mqtt_sessions = Arc::new(expiring::Expiring::open(shared.mqtt_sessions)?);
        storage.retained = shared.retained;
        Ok(storage)
    }

    /// True when `dir` already holds storage; creates and opens nothing (for tools that must
    /// not turn an arbitrary directory into a data dir).
    pub(crate) fn exists(dir: &Path) -> bool {
        redb_engine::exists(dir)
    }

    /// True when `dir` holds storage of an earlier format that opening it would upgrade (for
    /// tools that must not write).
    pub(crate) fn needs_upgrade(dir: &Path) -> bool {
        redb_engine::needs_upgrade(dir)
    }

    /// The size of the log's journal in `dir` (0 when there is none), for tools that keep it.
    pub(crate) fn journal_bytes(dir: &Path) -> u64 {
        redb_engine::journal_bytes(dir)
    }

    /// See [`Engine::recover`].
    pub(crate) fn recover(&self) -> Result<(), StorageError> {
        self.engine.recover()
    }

    /// See [`Engine::disk_bytes`].
    pub(crate) fn disk_bytes(&self) -> Result<u64, StorageError> {
        self.engine.disk_bytes()
    }

    /// See [`Engine::flush`].
    pub(crate) fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush()
    }
}

/// The engine of a cluster node: the shared log is the stream, which NATS keeps; the local
/// file only holds `log.dir`.
struct SharedEngine {
    local: Arc<dyn Engine>,
    log: Arc<dyn Log>,
}

impl Engine for SharedEngine {
    fn recover(&self) -> Result<(), StorageError> {
        // The NATS client reconnects by itself; there is nothing local to reopen.
        Ok(())
    }

    fn disk_bytes(&self) -> Result<u64, StorageError> {
        // The stream's size, as of the last refresh (each replica holds this much).
        Ok(self.log.stats().bytes)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.local.flush()
    }
}

/// Decoders of stored bytes, for the fuzz targets.
pub(crate) mod fuzzing {
    pub(crate) use super::redb_engine::fuzzing::{chunk_len, record_round_trip};
}

#[cfg(test)]
pub(crate) mod tests;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
