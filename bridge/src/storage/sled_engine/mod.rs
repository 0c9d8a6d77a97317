//! The embedded engine: sled. The only module of mqws that names sled.
//!
//! One [`handle::Handle`] owns the `sled::Db`; the log, sessions and retained values reach their
//! trees through it on every operation, so reopening the database after a failure (sled 0.34
//! stays failed after its first ENOSPC) replaces it for all of them at once.
//!
//! Trees (see ARCHITECTURE.md, "Storage layout"): `log` (chunks of records by first seq),
//! `meta` (`format`, `epoch`, `next_seq`, `evicted_ts`), `gaps` (lost seq ranges), `sessions`
//! and `sessions_idle`, `retained`.

mod chunk;
mod cursor;
mod handle;
mod index;
mod log;
mod record;
mod retained;
mod sessions;

use std::sync::Arc;

use super::{Engine, Options, RetainedStore, SessionStore, StorageError};
use handle::Handle;

/// The stores of one opened sled database.
pub(super) struct Parts {
    pub(super) log: Arc<dyn super::Log>,
    pub(super) sessions: Arc<dyn SessionStore>,
    pub(super) retained: Arc<dyn RetainedStore>,
    pub(super) engine: Arc<dyn Engine>,
}

/// Opens the database in `opts.dir`, checks its format, rebuilds the log's index.
pub(super) fn open(opts: &Options<'_>) -> Result<Parts, StorageError> {
    let handle = Arc::new(Handle::open(
        opts.dir,
        opts.cache_bytes,
        opts.min_free_bytes,
    )?);
    let log = log::SledLog::open(handle.clone(), opts.sync)?;
    let sessions = sessions::SledSessions::open(handle.clone())?;
    let retained = retained::SledRetained::open(handle.clone(), opts.max_retained)?;
    Ok(Parts {
        log: Arc::new(log),
        sessions: Arc::new(sessions),
        retained: Arc::new(retained),
        engine: handle,
    })
}

/// True when `dir` holds a sled database (its `conf` and `db` files). Opens nothing.
pub(super) fn exists(dir: &std::path::Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Maps sled's error to what really failed.
fn engine_error(e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) => io_error(io),
        sled::Error::Corruption { at, .. } => StorageError::Corrupt {
            what: "the engine's files".to_owned(),
            detail: format!("sled found corruption at {at:?}"),
        },
        sled::Error::CollectionNotFound(_) => StorageError::Engine("a tree disappeared".to_owned()),
        sled::Error::Unsupported(s) | sled::Error::ReportableBug(s) => StorageError::Engine(s),
    }
}

fn io_error(io: std::io::Error) -> StorageError {
    if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
        StorageError::Full
    } else {
        StorageError::Io(io)
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A big-endian u64 key or value.
fn be_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// Decoders of stored bytes, for the fuzz targets.
pub(super) mod fuzzing {
    use crate::storage::Record;

    /// The re-encoding of a record that decodes.
    pub(crate) fn record_round_trip(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        Record::decode(key, value).ok().map(|r| r.encode_value())
    }

    /// How many records a chunk that decodes holds.
    pub(crate) fn chunk_len(value: &[u8]) -> Option<usize> {
        super::chunk::decode(value).ok().map(|c| c.len())
    }
}
#[cfg(test)]
mod tests;
