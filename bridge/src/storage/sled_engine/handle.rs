//! The one owner of the `sled::Db`: opens it (checking the storage format), hands its trees to
//! the stores per operation, and reopens it in place after a failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use super::{be_u64, engine_error};
use crate::storage::{Engine, StorageError};

/// The storage format this build reads and writes: chunked log records (chunk version 2,
/// record version 1), JSON sessions, raw retained payloads. Data dirs written before the
/// format was stamped hold exactly this and are stamped when first opened.
pub(super) const FORMAT: u32 = 1;
const FORMAT_KEY: &[u8] = b"format";
/// Sled's backstop flush period; durability comes from explicit flushes.
const FLUSH_EVERY_MS: u64 = 1000;
/// How long a reopen waits for operations in flight on the old database to finish.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The trees of one opened database.
pub(super) struct Trees {
    pub(super) db: sled::Db,
    pub(super) log: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) gaps: sled::Tree,
    pub(super) sessions: sled::Tree,
    pub(super) sessions_idle: sled::Tree,
    pub(super) retained: sled::Tree,
}

impl Trees {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Trees, StorageError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(dir, e));
        let trees = Trees {
            log: tree("log")?,
            meta: tree("meta")?,
            gaps: tree("gaps")?,
            sessions: tree("sessions")?,
            sessions_idle: tree("sessions_idle")?,
            retained: tree("retained")?,
            db,
        };
        trees.check_format(dir)?;
        Ok(trees)
    }

    /// Refuses a data dir of another format; stamps one that has none (new, or written before
    /// formats were stamped, which is this format).
    fn check_format(&self, dir: &Path) -> Result<(), StorageError> {
        let stored = self.meta.get(FORMAT_KEY).map_err(engine_error)?;
        match stored {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StorageError::Corrupt {
                        what: "the format marker".to_owned(),
                        detail: format!("{} bytes instead of 4", v.len()),
                    })?;
                if found != FORMAT {
                    return Err(StorageError::Format {
                        dir: dir.to_owned(),
                        found,
                        supported: FORMAT,
                    });
                }
            }
            None => {
                self.meta
                    .insert(FORMAT_KEY, &FORMAT.to_be_bytes())
                    .map_err(engine_error)?;
                self.db.flush().map_err(engine_error)?;
            }
        }
        Ok(())
    }

    /// A `meta` value as a big-endian u64.
    pub(super) fn meta_u64(&self, key: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(self
            .meta
            .get(key)
            .map_err(engine_error)?
            .and_then(|v| be_u64(&v)))
    }
}

fn open_error(dir: &Path, e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StorageError::Locked {
                dir: dir.to_owned(),
            }
        }
        sled::Error::Io(io) => StorageError::Open {
            dir: dir.to_owned(),
            detail: io.to_string(),
        },
        other => engine_error(other),
    }
}

/// The replaceable handle.
pub(super) struct Handle {
    dir: PathBuf,
    cache_bytes: u64,
    min_free_bytes: u64,
    current: RwLock<Option<Arc<Trees>>>,
    /// One reopen at a time.
    reopening: Mutex<()>,
}

impl Handle {
    /// Opens the database in `dir`.
    pub(super) fn open(
        dir: &Path,
        cache_bytes: u64,
        min_free_bytes: u64,
    ) -> Result<Handle, StorageError> {
        let trees = Trees::open(dir, cache_bytes)?;
        Ok(Handle {
            dir: dir.to_owned(),
            cache_bytes,
            min_free_bytes,
            current: RwLock::new(Some(Arc::new(trees))),
            reopening: Mutex::new(()),
        })
    }

    /// The current trees, for one operation. [`StorageError::Unavailable`] while a reopen has
    /// closed the database and not yet opened it again.
    pub(super) fn trees(&self) -> Result<Arc<Trees>, StorageError> {
        self.current.read().clone().ok_or(StorageError::Unavailable)
    }

    /// Refuses a write of about `bytes` that would leave less than the reserve free. sled
    /// 0.34 cannot be relied on after it meets a full disk mid-write (its files may stay
    /// locked by a flush that never completes), so this keeps it from meeting one.
    pub(super) fn check_space(&self, bytes: u64) -> Result<(), StorageError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = fs2::available_space(&self.dir).map_err(super::io_error)?;
        // sled writes a value to its log and again when it rewrites pages.
        let need = self.min_free_bytes.saturating_add(bytes.saturating_mul(2));
        if free < need {
            return Err(StorageError::Reserve {
                free,
                reserve: self.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Closes the database (waiting for operations in flight, so sled releases its files and
    /// lock) and opens it again. On failure the database stays closed and the next call tries
    /// again.
    fn reopen(&self) -> Result<(), StorageError> {
        let _one = self.reopening.lock();
        if let Some(mut old) = self.current.write().take() {
            let started = Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(trees) => {
                        close(trees)?;
                        break;
                    }
                    Err(still) if started.elapsed() < DRAIN_WAIT => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still) => {
                        *self.current.write() = Some(still);
                        warn!("storage reopen postponed: operations still hold the database");
                        return Err(StorageError::Unavailable);
                    }
                }
            }
        }
        // sled's background threads release the old database's file lock a moment after it
        // is dropped.
        let started = Instant::now();
        let trees = loop {
            match Trees::open(&self.dir, self.cache_bytes) {
                Err(StorageError::Locked { .. }) if started.elapsed() < DRAIN_WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        *self.current.write() = Some(Arc::new(trees));
        info!(dir = %self.dir.display(), "storage reopened");
        Ok(())
    }
}

/// Drops a database on a helper thread and waits for it a bounded time: sled flushes on drop,
/// and after a failed write that flush can wait forever; the files stay locked then.
fn close(trees: Trees) -> Result<(), StorageError> {
    let (done, closed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mqws-storage-close".to_owned())
        .spawn(move || {
            drop(trees);
            let _ = done.send(());
        })
        .map_err(StorageError::Io)?;
    closed.recv_timeout(DRAIN_WAIT).map_err(|_| {
        tracing::error!(
            "the failed database does not close; mqws must be restarted to write again"
        );
        StorageError::Engine("the failed database did not close; restart mqws".to_owned())
    })
}

#[cfg(test)]
impl Handle {
    pub(super) fn reopen_for_test(&self) -> Result<(), StorageError> {
        self.reopen()
    }
}

impl Engine for Handle {
    fn recover(&self) -> Result<(), StorageError> {
        // sled 0.34 keeps failing after its first I/O error even when a probe write seems to
        // pass, so a failed write always reopens the database.
        self.reopen()
    }

    fn disk_bytes(&self) -> Result<u64, StorageError> {
        self.trees()?.db.size_on_disk().map_err(engine_error)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.trees()?.db.flush().map_err(engine_error)?;
        Ok(())
    }
}
