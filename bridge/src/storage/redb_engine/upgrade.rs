//! The automatic upgrade of a data dir of storage format 1 (a sled database: mqws before the
//! engine was redb) to this format, at start, before the database is opened.
//!
//! Format 1 holds the same data as format 2 in sled trees of the same names and byte layouts
//! (chunked log records keyed by their first seq, lost ranges, the meta values: epoch, next
//! seq, last eviction, the key that signs resume tokens; JSON sessions and their idle index;
//! retained payloads), so the upgrade copies each tree into its table, checking every log
//! chunk as it goes. Clients resume across it with `recovered: true`: the epoch, the seqs and
//! the signing key are the same.
//!
//! Steps, each safe to interrupt (the next start carries on):
//! 1. free space for a backup copy and the new database (twice the old files, plus
//!    `log.min_free_disk`), else refused with the figures;
//! 2. the old files copied to `format1-backup/` (written as `format1-backup.partial/` and
//!    renamed once complete), untouched from then on;
//! 3. the new database written as `mqws.redb.upgrading`, committed, renamed to its name;
//! 4. the old files removed from the data dir (the backup stays until the operator removes
//!    it). One log line says what was converted and where the backup is.

use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTableMetadata};
use tracing::info;

use super::chunk;
use super::tables::{GAPS, LOG, META, RETAINED, SESSIONS, SESSIONS_IDLE};
use crate::storage::StorageError;

/// Where the old files are kept once copied.
pub(super) const BACKUP: &str = "format1-backup";
/// The backup while it is being copied.
const BACKUP_PARTIAL: &str = "format1-backup.partial";
/// The new database while it is being written.
const UPGRADING: &str = "mqws.redb.upgrading";
/// Bytes of values per write transaction: bounds the memory the upgrade holds at once.
const COMMIT_BYTES: u64 = 32 << 20;
/// The format the meta table records for the new database.
const FORMAT_KEY: &str = "format";

/// What was converted, for the log line.
#[derive(Debug, Default)]
struct Converted {
    chunks: u64,
    gaps: u64,
    sessions: u64,
    retained: u64,
}

/// True when `name` is one of sled's own files in a data dir.
fn sled_file(name: &str) -> bool {
    name == "conf" || name == "db" || name == "blobs" || name.starts_with("snap.")
}

/// Upgrades `dir` when it holds a format 1 database (see the module). `format` is the format
/// the new database is stamped with; `min_free` is `log.min_free_disk`.
pub(super) fn if_needed(dir: &Path, format: u32, min_free: u64) -> Result<(), StorageError> {
    let new = dir.join(super::FILE);
    if !super::holds_sled(dir) {
        return Ok(());
    }
    let backup = dir.join(BACKUP);
    if new.is_file() {
        if backup.is_dir() {
            // Converted before; the old files were not yet removed.
            return remove_old(dir);
        }
        return Err(StorageError::Upgrade {
            dir: dir.to_owned(),
            detail: format!(
                "it holds a sled database and {} beside it, and no {BACKUP} dir: move one of \
                 them elsewhere",
                super::FILE
            ),
        });
    }
    let started = Instant::now();
    if !backup.is_dir() {
        check_space(dir, min_free)?;
        copy_old(dir, &backup)?;
    }
    let upgrading = dir.join(UPGRADING);
    let _ = std::fs::remove_file(&upgrading);
    let converted = convert(dir, &upgrading, format).map_err(|detail| {
        let _ = std::fs::remove_file(&upgrading);
        StorageError::Upgrade {
            dir: dir.to_owned(),
            detail,
        }
    })?;
    std::fs::rename(&upgrading, &new).map_err(|e| failed(dir, "rename the new database", &e))?;
    sync_dir(dir)?;
    remove_old(dir)?;
    info!(
        dir = %dir.display(),
        chunks = converted.chunks,
        lost_ranges = converted.gaps,
        sessions = converted.sessions,
        retained = converted.retained,
        secs = started.elapsed().as_secs_f64(),
        backup = %backup.display(),
        "upgraded the data dir from storage format 1 (sled) to {format} (redb); the old files \
         are kept in the backup dir until you remove it"
    );
    Ok(())
}

fn failed(dir: &Path, what: &str, e: &dyn std::fmt::Display) -> StorageError {
    StorageError::Upgrade {
        dir: dir.to_owned(),
        detail: format!("{what}: {e}"),
    }
}

/// The old files of `dir`: sled's files and its blobs dir.
fn old_files(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| failed(dir, "list the data dir", &e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| failed(dir, "list the data dir", &e))?;
        if entry.file_name().to_str().is_some_and(sled_file) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Bytes under `path` (a file, or a dir's files).
fn size_of(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += size_of(&entry?.path())?;
    }
    Ok(total)
}

/// Refuses the upgrade when the disk cannot take the backup and the new database.
fn check_space(dir: &Path, min_free: u64) -> Result<(), StorageError> {
    let mut old = 0u64;
    for f in old_files(dir)? {
        old += size_of(&f).map_err(|e| failed(dir, "size the old files", &e))?;
    }
    let need = old.saturating_mul(2).saturating_add(min_free);
    let free = fs2::available_space(dir).map_err(|e| failed(dir, "read free space", &e))?;
    if free < need {
        return Err(StorageError::UpgradeSpace {
            dir: dir.to_owned(),
            need,
            free,
        });
    }
    Ok(())
}

/// Copies the old files into `backup`, through a partial dir renamed once all is on disk.
fn copy_old(dir: &Path, backup: &Path) -> Result<(), StorageError> {
    let partial = dir.join(BACKUP_PARTIAL);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir(&partial).map_err(|e| failed(dir, "create the backup dir", &e))?;
    for f in old_files(dir)? {
        let Some(name) = f.file_name() else {
            continue;
        };
        copy_tree(&f, &partial.join(name)).map_err(|e| failed(dir, "copy the old files", &e))?;
    }
    sync_dir(&partial)?;
    std::fs::rename(&partial, backup).map_err(|e| failed(dir, "rename the backup dir", &e))?;
    sync_dir(dir)
}

/// Copies a file (synced) or a dir's files.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::metadata(from)?.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return std::fs::File::open(to)?.sync_all();
    }
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(dir, "sync the data dir", &e))
}

/// Removes the old files from the data dir (the backup keeps them).
fn remove_old(dir: &Path) -> Result<(), StorageError> {
    for f in old_files(dir)? {
        let removed = if f.is_dir() {
            std::fs::remove_dir_all(&f)
        } else {
            std::fs::remove_file(&f)
        };
        removed.map_err(|e| failed(dir, "remove the old files", &e))?;
    }
    sync_dir(dir)
}

/// A big-endian u64 sled key or value.
fn be_u64(bytes: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("{} bytes where a u64 was stored", bytes.len()))
}

/// Writes every tree of the sled database in `dir` into a new redb file at `to`.
fn convert(dir: &Path, to: &Path, format: u32) -> Result<Converted, String> {
    let sled = sled::Config::new()
        .path(dir)
        .open()
        .map_err(|e| format!("open the sled database: {e}"))?;
    let tree = |name: &str| {
        sled.open_tree(name)
            .map_err(|e| format!("open sled tree {name}: {e}"))
    };
    // A sled database that is not mqws's (or that sled opened as empty) has no epoch: nothing
    // to convert, and its files must not be replaced by an empty log.
    if tree("meta")?
        .get("epoch")
        .map_err(|e| format!("read the epoch: {e}"))?
        .is_none()
    {
        return Err("it holds no mqws log (no epoch in its meta tree)".to_owned());
    }
    let db = Database::create(to).map_err(|e| format!("create the new database: {e}"))?;
    let mut w = Batches::new(&db);
    let out = Converted {
        chunks: each(&tree("log")?, &mut w, |k, v, tx| {
            let seq = be_u64(k)?;
            chunk::decode(v).map_err(|e| format!("the log chunk at seq {seq}: {e}"))?;
            put(tx.open_table(LOG), seq, v)
        })?,
        gaps: each(&tree("gaps")?, &mut w, |k, v, tx| {
            put(tx.open_table(GAPS), be_u64(k)?, be_u64(v)?)
        })?,
        sessions: each(&tree("sessions")?, &mut w, |k, v, tx| {
            put(tx.open_table(SESSIONS), utf8(k, "a session id")?, v)
        })?,
        retained: each(&tree("retained")?, &mut w, |k, v, tx| {
            // A bare payload, which this format reads as it is (without MQTT details).
            put(tx.open_table(RETAINED), utf8(k, "a retained topic")?, v)
        })?,
    };
    each(&tree("sessions_idle")?, &mut w, |k, _, tx| {
        let seen = be_u64(k.get(..8).unwrap_or_default())?;
        let id = utf8(k.get(8..).unwrap_or_default(), "a session id")?;
        put(tx.open_table(SESSIONS_IDLE), (seen, id), ())
    })?;
    each(&tree("meta")?, &mut w, |k, v, tx| {
        match utf8(k, "a meta key")? {
            FORMAT_KEY => Ok(()),
            key => put(tx.open_table(META), key, v),
        }
    })?;
    w.put(4, |tx| {
        put(
            tx.open_table(META),
            FORMAT_KEY,
            format.to_be_bytes().as_slice(),
        )
    })?;
    w.finish()?;
    // What was written reads back.
    let check = db.begin_read().map_err(|e| e.to_string())?;
    let written = check
        .open_table(LOG)
        .map_err(|e| e.to_string())?
        .len()
        .map_err(|e| e.to_string())?;
    if written != out.chunks {
        return Err(format!(
            "{written} log chunks written of {} read",
            out.chunks
        ));
    }
    Ok(out)
}

/// Writes every entry of `tree` with `f` through `w`; how many there were.
fn each(
    tree: &sled::Tree,
    w: &mut Batches<'_>,
    mut f: impl FnMut(&[u8], &[u8], &redb::WriteTransaction) -> Result<(), String>,
) -> Result<u64, String> {
    let mut n = 0;
    for item in tree.iter() {
        let (k, v) = item.map_err(|e| format!("read sled tree {:?}: {e}", tree.name()))?;
        w.put(k.len() + v.len(), |tx| f(&k, &v, tx))?;
        n += 1;
    }
    Ok(n)
}

/// Inserts `key` → `value` into an opened table.
fn put<'k, 'v, K: redb::Key + 'static, V: redb::Value + 'static>(
    table: Result<redb::Table<'_, K, V>, redb::TableError>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
    value: impl std::borrow::Borrow<V::SelfType<'v>>,
) -> Result<(), String> {
    let mut table = table.map_err(|e| format!("open a table of the new database: {e}"))?;
    table
        .insert(key, value)
        .map_err(|e| format!("write the new database: {e}"))?;
    Ok(())
}

/// `bytes` as UTF-8, or an error naming `what`.
fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))
}

/// Write transactions of about [`COMMIT_BYTES`] each, every one committed durably.
struct Batches<'a> {
    db: &'a Database,
    tx: Option<redb::WriteTransaction>,
    bytes: u64,
}

impl<'a> Batches<'a> {
    fn new(db: &'a Database) -> Batches<'a> {
        Batches {
            db,
            tx: None,
            bytes: 0,
        }
    }

    /// Runs `f` in the current transaction, committing it once it holds enough.
    fn put(
        &mut self,
        len: usize,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), String>,
    ) -> Result<(), String> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => self.db.begin_write().map_err(|e| e.to_string())?,
        };
        f(&tx)?;
        self.bytes += len as u64;
        if self.bytes >= COMMIT_BYTES {
            tx.commit().map_err(|e| e.to_string())?;
            self.bytes = 0;
        } else {
            self.tx = Some(tx);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        if let Some(tx) = self.tx.take() {
            tx.commit().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
