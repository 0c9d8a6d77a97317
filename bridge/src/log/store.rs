//! The log's storage engine (sled) behind a small interface: open, append a batch durably,
//! read a range, head position.
//!
//! Trees: `log` maps the big-endian seq to an encoded [`Record`]; `meta` holds the `epoch` and
//! `next_seq`, the high-water mark that keeps seqs from being reused even after retention
//! empties the log.

use std::path::{Path, PathBuf};

use crate::log::record::{DecodeError, Record};

const EPOCH: &[u8] = b"epoch";
const NEXT_SEQ: &[u8] = b"next_seq";

/// Why the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database could not be opened (missing permissions, locked by another mqws, corrupt).
    #[error("cannot open the log at {dir}: {source}")]
    Open {
        /// Directory of the log.
        dir: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A read, write or flush failed (for example a full disk).
    #[error("log storage error: {0}")]
    Storage(#[from] sled::Error),
    /// Stored bytes did not decode.
    #[error("log record {seq} is corrupt: {cause}")]
    Corrupt {
        /// Which record.
        seq: u64,
        /// Why.
        cause: DecodeError,
    },
}

/// Handle to the on-disk log. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    epoch: String,
    sync: bool,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("epoch", &self.epoch)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates, with a fresh random epoch) the log in `dir`.
    pub fn open(dir: &Path, cache_capacity: u64, sync: bool) -> Result<LogStore, LogError> {
        let open_err = |source| LogError::Open {
            dir: dir.to_owned(),
            source,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            // Durability comes from the explicit flush of every batch; this is only a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(open_err)?;
        let log = db.open_tree("log").map_err(open_err)?;
        let meta = db.open_tree("meta").map_err(open_err)?;
        let epoch = match meta.get(EPOCH).map_err(open_err)? {
            Some(e) => String::from_utf8_lossy(&e).into_owned(),
            None => {
                let e = format!("{:032x}", rand::random::<u128>());
                meta.insert(EPOCH, e.as_bytes()).map_err(open_err)?;
                db.flush().map_err(open_err)?;
                e
            }
        };
        Ok(LogStore {
            db,
            log,
            meta,
            epoch,
            sync,
        })
    }

    /// This log's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The seq the next appended message gets: above every seq this log ever handed out.
    pub fn next_seq(&self) -> Result<u64, LogError> {
        let from_meta = self
            .meta
            .get(NEXT_SEQ)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1);
        let after_last = self.last_seq()?.map_or(1, |s| s + 1);
        Ok(from_meta.max(after_last))
    }

    /// The highest stored seq, if any.
    pub fn last_seq(&self) -> Result<Option<u64>, LogError> {
        Ok(self.log.last()?.and_then(|(k, _)| seq_of(&k)))
    }

    /// Stores `records` (consecutive, ascending seqs) atomically and, when the log is in sync
    /// mode, flushes them to disk before returning. Only then may they be delivered.
    pub fn append(&self, records: &[Record]) -> Result<(), LogError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for r in records {
            batch.insert(&Record::key(r.seq), r.encode_value());
        }
        self.log.apply_batch(batch)?;
        self.meta.insert(NEXT_SEQ, &(last.seq + 1).to_be_bytes())?;
        if self.sync {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Up to `limit` records with seq > `after`, in seq order.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        let start = after.saturating_add(1);
        let mut out = Vec::new();
        for item in self.log.range(Record::key(start)..).take(limit) {
            let (k, v) = item?;
            let seq = seq_of(&k).unwrap_or(0);
            out.push(Record::decode(&k, &v).map_err(|cause| LogError::Corrupt { seq, cause })?);
        }
        Ok(out)
    }

    /// Writes everything to disk (used at shutdown and by the non-sync mode's callers).
    pub fn flush(&self) -> Result<(), LogError> {
        self.db.flush()?;
        Ok(())
    }
}

fn seq_of(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            ts_ms: 1,
            topic: format!("t/{seq}"),
            payload: Bytes::from(vec![seq as u8; 3]),
            retain: false,
        }
    }

    #[test]
    fn append_read_and_reopen_keep_epoch_and_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let epoch;
        {
            let log = LogStore::open(dir.path(), 1 << 20, true).expect("open");
            epoch = log.epoch().to_owned();
            assert_eq!(log.next_seq().expect("next"), 1);
            log.append(&[rec(1), rec(2), rec(3)]).expect("append");
            let got = log.read_after(1, 10).expect("read");
            assert_eq!(got, vec![rec(2), rec(3)]);
            assert_eq!(log.read_after(0, 1).expect("read"), vec![rec(1)]);
        }
        let log = LogStore::open(dir.path(), 1 << 20, true).expect("reopen");
        assert_eq!(log.epoch(), epoch);
        assert_eq!(log.next_seq().expect("next"), 4);
    }

    #[test]
    fn next_seq_survives_an_emptied_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path(), 1 << 20, true).expect("open");
        log.append(&[rec(1), rec(2)]).expect("append");
        log.log.clear().expect("clear");
        assert_eq!(log.next_seq().expect("next"), 3, "seqs are never reused");
    }

    #[test]
    fn new_directory_gets_a_new_epoch() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let ea = LogStore::open(a.path(), 1 << 20, true)
            .expect("a")
            .epoch()
            .to_owned();
        let eb = LogStore::open(b.path(), 1 << 20, true)
            .expect("b")
            .epoch()
            .to_owned();
        assert_ne!(ea, eb);
        assert_eq!(ea.len(), 32);
    }
}
