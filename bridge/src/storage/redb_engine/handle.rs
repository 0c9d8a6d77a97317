//! The one owner of the `redb::Database`: opens it (checking the storage format, applying the
//! log's journal), hands every write to its write side (`commits.rs`: one transaction at a
//! time, appends journaled and then committed without a sync), has the flusher thread make
//! non-durable commits durable within [`FLUSH_EVERY`] (a checkpoint, sooner when appends ask),
//! and reopens the database in place after a failure.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use tracing::{info, warn};

use super::commits::{self, Commits, Due};
use super::journal::{self, Frame};
use super::tables::{
    GAPS, LOG, META, MQTT_SESSIONS, MQTT_SESSIONS_IDLE, RETAINED, SESSIONS, SESSIONS_IDLE,
};
use super::{engine_error, FILE};
use crate::storage::{Engine, StorageError};

/// The storage format this build reads and writes: one redb file holding chunked log records
/// (chunk version 2, record version 1), JSON sessions and raw retained payloads, and the log's
/// journal beside it (`journal.rs`). Format 2 is the same without a journal: it is marked 3 when
/// opened, so that a release that knows no journal refuses the dir instead of ignoring appends
/// only the journal holds. Format 1 was the same data in a sled database (mqws before the engine
/// swap); it is upgraded on start (`upgrade.rs`) before the database is opened, so finding one
/// here is refused.
pub(super) const FORMAT: u32 = 3;
/// The format without a journal, opened as it is.
const NO_JOURNAL_FORMAT: u32 = 2;
/// The format of a data dir holding a sled database.
const SLED_FORMAT: u32 = 1;
const FORMAT_KEY: &str = "format";
/// Longest time a non-durable commit (a session write, an append with `log.sync` off) stays
/// only in the page cache before the flusher makes it durable.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Shortest time between two checkpoints the flusher makes: at high rates appends ask for one
/// every 256 KiB, and checkpointing that often costs more (a durable commit each) than their
/// bursts save (benches/RESULTS.md, 2026-12-08, the journal).
const CHECKPOINT_GAP: Duration = Duration::from_millis(50);
/// How long a reopen waits for operations in flight on the old database to finish.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The replaceable handle.
pub(super) struct Handle {
    dir: PathBuf,
    cache_bytes: u64,
    min_free_bytes: u64,
    journal_bytes: u64,
    current: RwLock<Option<Arc<Database>>>,
    commits: Commits,
    /// One reopen at a time.
    reopening: Mutex<()>,
}

impl Handle {
    /// Opens (or creates) the database in `dir`, replays the journal into it, and starts the
    /// flusher thread, which ends when the handle is dropped. `journal_bytes` 0: no journal.
    pub(super) fn open(
        dir: &Path,
        cache_bytes: u64,
        min_free_bytes: u64,
        journal_bytes: u64,
    ) -> Result<Arc<Handle>, StorageError> {
        let db = open_db(dir, cache_bytes)?;
        let journal = commits::start_journal(&db, dir, journal_bytes)?;
        let due = Arc::new(Due::default());
        let handle = Arc::new(Handle {
            dir: dir.to_owned(),
            cache_bytes,
            min_free_bytes,
            journal_bytes,
            current: RwLock::new(Some(Arc::new(db))),
            commits: Commits::new(journal, due.clone()),
            reopening: Mutex::new(()),
        });
        let weak = Arc::downgrade(&handle);
        std::thread::Builder::new()
            .name("mqws-storage-flush".to_owned())
            .spawn(move || flusher(&weak, &due))
            .map_err(StorageError::Io)?;
        Ok(handle)
    }

    /// The current database, for one operation. [`StorageError::Unavailable`] while a reopen
    /// has closed it and not yet opened it again.
    fn db(&self) -> Result<Arc<Database>, StorageError> {
        self.current.read().clone().ok_or(StorageError::Unavailable)
    }

    /// A read transaction: a consistent snapshot. Keep it for one bounded operation only, since
    /// pages freed after it began are not reused while it lives.
    pub(super) fn read(&self) -> Result<ReadTransaction, StorageError> {
        self.db()?.begin_read().map_err(engine_error)
    }

    /// A read transaction that sees every append of a seq up to `through` (one journaled but
    /// not yet committed to the database is waited for, at most [`DRAIN_WAIT`]).
    pub(super) fn read_through(&self, through: u64) -> Result<ReadTransaction, StorageError> {
        self.commits.wait_applied(through, DRAIN_WAIT)?;
        self.read()
    }

    /// Runs `f` in a write transaction and commits it; `durable` commits fsync before they
    /// return, the others become durable with the next durable commit or within
    /// [`FLUSH_EVERY`]. When `f` fails nothing of it is committed.
    pub(super) fn write<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.commits.write(&*self.db()?, durable, f)
    }

    /// Makes one append to the log's tables durable (when `durable`) and commits it: see
    /// `commits.rs`. When this fails nothing of the append is kept.
    pub(super) fn append(&self, frame: Frame, durable: bool) -> Result<(), StorageError> {
        self.commits.append(&*self.db()?, frame, durable)
    }

    /// Refuses a write of about `bytes` that would leave less than the reserve free, so the
    /// engine does not meet a full disk mid-commit.
    pub(super) fn check_space(&self, bytes: u64) -> Result<(), StorageError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = fs2::available_space(&self.dir).map_err(super::io_error)?;
        // redb writes new pages (copy on write) before it frees the old ones.
        let need = self.min_free_bytes.saturating_add(bytes.saturating_mul(2));
        if free < need {
            return Err(StorageError::Reserve {
                free,
                reserve: self.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Closes the database (waiting for operations in flight) and opens it again; redb repairs
    /// a file whose last commit failed while opening it. On failure the database stays closed
    /// and the next call tries again.
    fn reopen(&self) -> Result<(), StorageError> {
        let _one = self.reopening.lock();
        if let Some(mut old) = self.current.write().take() {
            let started = Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
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
        let db = open_db(&self.dir, self.cache_bytes)?;
        self.commits.reset(&db, &self.dir, self.journal_bytes)?;
        *self.current.write() = Some(Arc::new(db));
        info!(dir = %self.dir.display(), "storage reopened");
        Ok(())
    }

    /// A checkpoint when one has work; a reopen instead when a commit failed, so that appends
    /// already journaled reach the database even if no further write comes to ask for it.
    fn sync_if_needed(&self) -> Result<(), StorageError> {
        if self.commits.failed() {
            return self.reopen();
        }
        if self.commits.checkpoint_due() {
            let started = Instant::now();
            self.write(true, |_| Ok(()))?;
            tracing::debug!(took = ?started.elapsed(), "storage checkpoint");
        }
        Ok(())
    }
}

/// Opens the database file in `dir`, creating the dir, the file and every table.
fn open_db(dir: &Path, cache_bytes: u64) -> Result<Database, StorageError> {
    if super::holds_sled(dir) {
        return Err(StorageError::Format {
            dir: dir.to_owned(),
            found: SLED_FORMAT,
            supported: FORMAT,
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
        dir: dir.to_owned(),
        detail: e.to_string(),
    })?;
    let db = Database::builder()
        .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
        .create(dir.join(FILE))
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Locked {
                dir: dir.to_owned(),
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) => StorageError::Open {
                dir: dir.to_owned(),
                detail: io.to_string(),
            },
            other => engine_error(other),
        })?;
    let tx = db.begin_write().map_err(engine_error)?;
    {
        tx.open_table(LOG).map_err(engine_error)?;
        tx.open_table(GAPS).map_err(engine_error)?;
        tx.open_table(SESSIONS).map_err(engine_error)?;
        tx.open_table(SESSIONS_IDLE).map_err(engine_error)?;
        tx.open_table(MQTT_SESSIONS).map_err(engine_error)?;
        tx.open_table(MQTT_SESSIONS_IDLE).map_err(engine_error)?;
        tx.open_table(RETAINED).map_err(engine_error)?;
        let mut meta = tx.open_table(META).map_err(engine_error)?;
        let stored = meta
            .get(FORMAT_KEY)
            .map_err(engine_error)?
            .map(|v| v.value().to_vec());
        match stored {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StorageError::Corrupt {
                        what: "the format marker".to_owned(),
                        detail: format!("{} bytes instead of 4", v.len()),
                    })?;
                if found == NO_JOURNAL_FORMAT {
                    meta.insert(FORMAT_KEY, FORMAT.to_be_bytes().as_slice())
                        .map_err(engine_error)?;
                    info!(
                        dir = %dir.display(),
                        "storage format {NO_JOURNAL_FORMAT} marked {FORMAT}: the log now has a journal"
                    );
                } else if found != FORMAT {
                    return Err(StorageError::Format {
                        dir: dir.to_owned(),
                        found,
                        supported: FORMAT,
                    });
                }
            }
            None => {
                meta.insert(FORMAT_KEY, FORMAT.to_be_bytes().as_slice())
                    .map_err(engine_error)?;
            }
        }
    }
    tx.commit().map_err(engine_error)?;
    Ok(db)
}

/// Makes non-durable commits durable every [`FLUSH_EVERY`], and sooner when appends ask for
/// it, until the handle is gone; reopens the database after a failed commit.
fn flusher(handle: &Weak<Handle>, due: &Due) {
    let mut last = Instant::now();
    loop {
        due.wait(FLUSH_EVERY);
        if let Some(rest) = CHECKPOINT_GAP.checked_sub(last.elapsed()) {
            std::thread::sleep(rest);
        }
        let Some(h) = handle.upgrade() else {
            return;
        };
        if let Err(e) = h.sync_if_needed() {
            warn!(error = %e, "periodic storage flush failed");
        }
        last = Instant::now();
    }
}

#[cfg(test)]
impl Handle {
    pub(super) fn reopen_for_test(&self) -> Result<(), StorageError> {
        self.reopen()
    }
}

impl Engine for Handle {
    fn recover(&self) -> Result<(), StorageError> {
        // After a failed commit redb refuses further work (`PreviousIo`) until reopened.
        self.reopen()
    }

    fn disk_bytes(&self) -> Result<u64, StorageError> {
        // Blocks really allocated: redb grows its file ahead of use and leaves the unused part
        // sparse, so the file's length overstates what the disk holds.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.dir.join(FILE)).map_err(StorageError::Io)?;
        let journal = std::fs::metadata(self.dir.join(journal::FILE)).map_or(0, |m| m.blocks());
        Ok((meta.blocks() + journal) * 512)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.write(true, |_| Ok(()))
    }
}
