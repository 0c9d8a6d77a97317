//! The embedded engine: redb, one file (`mqws.redb`) in the data dir, and the log's journal
//! beside it (`mqws.journal`, [`journal`]). The only module of mqws that names redb.
//!
//! redb was chosen over sled 0.34 for bounded memory: its page cache is held to
//! `log.cache_capacity`, and a commit's dirty pages are freed when it ends, where sled kept
//! hundreds of MiB of inserted values under large-payload floods (benches/RESULTS.md).
//!
//! One [`handle::Handle`] owns the `redb::Database`; the log, sessions and retained values reach
//! it through the handle on every operation, so reopening the database after a failure (redb
//! refuses further work after a failed commit) replaces it for all of them at once. Tables:
//! [`tables`]. A data dir of the sled releases (format 1) is upgraded on start ([`upgrade`]):
//! the only module that names sled.

mod chunk;
mod commits;
mod cursor;
mod handle;
mod index;
mod journal;
mod log;
mod record;
mod retained;
mod sessions;
mod tables;
mod upgrade;

use std::sync::Arc;

use super::{Engine, Options, RetainedStore, SessionStore, StorageError};
use crate::storage::now_ms;
use handle::Handle;

/// The database file's name in the data dir.
const FILE: &str = "mqws.redb";

/// The stores of one opened database.
pub(super) struct Parts {
    pub(super) log: Arc<dyn super::Log>,
    pub(super) sessions: Arc<dyn SessionStore>,
    pub(super) mqtt_sessions: Arc<dyn SessionStore>,
    pub(super) retained: Arc<dyn RetainedStore>,
    pub(super) engine: Arc<dyn Engine>,
}

/// Opens the database in `opts.dir`, checks its format, rebuilds the log's index.
pub(super) fn open(opts: &Options<'_>) -> Result<Parts, StorageError> {
    upgrade::if_needed(opts.dir, handle::FORMAT, opts.min_free_bytes)?;
    let handle = Handle::open(
        opts.dir,
        opts.cache_bytes,
        opts.min_free_bytes,
        opts.journal_bytes,
    )?;
    let log = log::RedbLog::open(handle.clone(), opts.sync)?;
    let sessions = sessions::RedbSessions::open(handle.clone())?;
    let mqtt_sessions = sessions::RedbSessions::open_mqtt(handle.clone())?;
    let retained = retained::RedbRetained::open(handle.clone(), opts.max_retained)?;
    Ok(Parts {
        log: Arc::new(log),
        sessions: Arc::new(sessions),
        mqtt_sessions: Arc::new(mqtt_sessions),
        retained: Arc::new(retained),
        engine: handle,
    })
}

/// True when `dir` holds a database of this engine or of the earlier sled one (upgraded when
/// opened). Opens nothing.
pub(super) fn exists(dir: &std::path::Path) -> bool {
    dir.join(FILE).is_file() || holds_sled(dir)
}

/// The size of the journal file in `dir`, 0 when there is none.
pub(super) fn journal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join(journal::FILE)).map_or(0, |m| m.len())
}

/// True when `dir` holds a sled database and no database of this engine yet.
pub(super) fn needs_upgrade(dir: &std::path::Path) -> bool {
    holds_sled(dir) && !dir.join(FILE).is_file()
}

/// True when `dir` holds a sled database (its `conf` and `db` files), written by mqws before
/// the engine was redb.
fn holds_sled(dir: &std::path::Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Maps redb's error to what really failed.
fn engine_error(e: impl Into<redb::Error>) -> StorageError {
    match e.into() {
        redb::Error::Io(io) => io_error(io),
        redb::Error::PreviousIo => StorageError::Io(std::io::Error::other(
            "an earlier write failed; the database must be reopened",
        )),
        redb::Error::DatabaseAlreadyOpen => {
            StorageError::Engine("the database file is already open in this process".to_owned())
        }
        redb::Error::Corrupted(detail) => StorageError::Corrupt {
            what: "the database file".to_owned(),
            detail,
        },
        redb::Error::UpgradeRequired(v) => StorageError::Corrupt {
            what: "the database file".to_owned(),
            detail: format!("written in redb file format {v}, which this build does not read"),
        },
        other => StorageError::Engine(other.to_string()),
    }
}

fn io_error(io: std::io::Error) -> StorageError {
    if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
        StorageError::Full
    } else {
        StorageError::Io(io)
    }
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
