//! The log's storage engine (sled) behind a small interface: open, append a batch durably,
//! read a range, head position.
//!
//! Trees: `log` maps the big-endian first seq of a [`chunk`] (up to 256 records of one group
//! commit) to the encoded chunk; `meta` holds the `epoch` and `next_seq`, the high-water mark
//! that keeps seqs from being reused even after retention empties the log; `gaps` holds the seq
//! ranges the broker dropped.

use std::path::{Path, PathBuf};

use crate::log::chunk;
use crate::log::record::{DecodeError, Record};

const EPOCH: &[u8] = b"epoch";
/// Gap records: key = first lost seq (BE), value = last lost seq (BE).
const GAPS: &str = "gaps";
const NEXT_SEQ: &[u8] = b"next_seq";
/// ts of the newest record retention removed.
const EVICTED_TS: &[u8] = b"evicted_ts";

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
    gaps: sled::Tree,
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
        let gaps = db.open_tree(GAPS).map_err(open_err)?;
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
            gaps,
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
        match self.log.last()? {
            Some((k, v)) => Ok(decode_chunk(&k, &v)?.last().map(|r| r.seq)),
            None => Ok(None),
        }
    }

    /// Stores `records` (ascending seqs) and the seq ranges in `gaps` (messages the broker
    /// dropped), then, when the log is in sync mode, flushes to disk before returning. Only
    /// then may the records be delivered. `next_seq` is the high-water mark after them.
    pub fn append(
        &self,
        records: &[Record],
        gaps: &[(u64, u64)],
        next_seq: u64,
    ) -> Result<(), LogError> {
        for (from, to) in gaps {
            self.gaps.insert(Record::key(*from), &Record::key(*to))?;
        }
        let mut batch = sled::Batch::default();
        for c in records.chunks(chunk::MAX_RECORDS) {
            batch.insert(&Record::key(c[0].seq), chunk::encode(c));
        }
        self.log.apply_batch(batch)?;
        self.meta.insert(NEXT_SEQ, &next_seq.to_be_bytes())?;
        if self.sync {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Up to `limit` records with seq > `after`, in seq order.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        self.read_range(after, u64::MAX, limit)
    }

    /// The record at `seq`, if retained. Decodes only that record of its chunk.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        match self.log.range(..=Record::key(seq)).next_back() {
            Some(item) => {
                let (k, v) = item?;
                chunk::find(&v, seq).map_err(|cause| LogError::Corrupt {
                    seq: seq_of(&k).unwrap_or(0),
                    cause,
                })
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` records with `after < seq <= upto`, in seq order.
    pub fn read_range(&self, after: u64, upto: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        if after >= upto || limit == 0 {
            return Ok(Vec::new());
        }
        let start = after + 1;
        // The chunk holding `start` begins at or before it.
        let from = match self.log.range(..=Record::key(start)).next_back() {
            Some(item) => item?.0,
            None => sled::IVec::from(&Record::key(start)),
        };
        let mut out = Vec::new();
        for item in self.log.range(from..) {
            let (k, v) = item?;
            for r in decode_chunk(&k, &v)? {
                if r.seq > upto || out.len() == limit {
                    return Ok(out);
                }
                if r.seq > after {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// The oldest retained seq.
    pub fn first_seq(&self) -> Result<Option<u64>, LogError> {
        match self.log.first()? {
            Some((k, v)) => Ok(decode_chunk(&k, &v)?.first().map(|r| r.seq)),
            None => Ok(None),
        }
    }

    /// The first seq logged at or after `ts_ms`, by binary search over the log (the writer
    /// keeps `ts` non-decreasing in seq order), so no scan is needed.
    pub fn first_at_or_after(&self, ts_ms: u64) -> Result<Option<u64>, LogError> {
        let (Some(mut lo), Some(mut hi)) = (self.first_seq()?, self.last_seq()?) else {
            return Ok(None);
        };
        // The next stored record at or after `seq`, with its ts. Monotonic in `seq`.
        let next = |seq: u64| -> Result<Option<(u64, u64)>, LogError> {
            Ok(self
                .read_range(seq.saturating_sub(1), u64::MAX, 1)?
                .first()
                .map(|r| (r.seq, r.ts_ms)))
        };
        let late_enough = |seq: u64| -> Result<bool, LogError> {
            Ok(next(seq)?.is_some_and(|(_, ts)| ts >= ts_ms))
        };
        if !late_enough(hi)? {
            return Ok(None);
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if late_enough(mid)? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(next(lo)?.map(|(s, _)| s))
    }

    /// The first recorded broker gap that overlaps `(after, upto]`.
    pub fn gap_within(&self, after: u64, upto: u64) -> Result<Option<(u64, u64)>, LogError> {
        for item in self.gaps.iter() {
            let (k, v) = item?;
            let (Some(from), Some(to)) = (seq_of(&k), seq_of(&v)) else {
                continue;
            };
            if to > after && from <= upto {
                return Ok(Some((from, to)));
            }
            if from > upto {
                break;
            }
        }
        Ok(None)
    }

    /// True when retention removed a record logged at or after `ts_ms`.
    pub fn evicted_since(&self, ts_ms: u64) -> Result<bool, LogError> {
        Ok(self
            .meta
            .get(EVICTED_TS)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .is_some_and(|v| u64::from_be_bytes(v) >= ts_ms))
    }

    /// Records that retention removed records up to `ts_ms`.
    pub fn note_evicted(&self, ts_ms: u64) -> Result<(), LogError> {
        self.meta.insert(EVICTED_TS, &ts_ms.to_be_bytes())?;
        Ok(())
    }

    /// Removes every record with seq <= `through` (retention, oldest first): whole chunks are
    /// dropped, a chunk that straddles `through` is rewritten with the rest; gap records wholly
    /// at or below it go too.
    pub fn remove_through(&self, through: u64) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=Record::key(through)) {
            let (k, v) = item?;
            batch.remove(k.clone());
            let rest: Vec<Record> = decode_chunk(&k, &v)?
                .into_iter()
                .filter(|r| r.seq > through)
                .collect();
            if let Some(first) = rest.first() {
                batch.insert(&Record::key(first.seq), chunk::encode(&rest));
            }
        }
        self.log.apply_batch(batch)?;
        for item in self.gaps.range(..=Record::key(through)) {
            let (k, v) = item?;
            if seq_of(&v).is_some_and(|to| to <= through) {
                self.gaps.remove(k)?;
            }
        }
        Ok(())
    }

    /// Up to `limit` of the oldest records.
    pub fn oldest(&self, limit: usize) -> Result<Vec<Record>, LogError> {
        self.read_after(0, limit)
    }

    /// Calls `f` on every stored record, oldest first (start-up index rebuild).
    pub fn for_each(&self, mut f: impl FnMut(&Record)) -> Result<(), LogError> {
        for item in self.log.iter() {
            let (k, v) = item?;
            for r in decode_chunk(&k, &v)? {
                f(&r);
            }
        }
        Ok(())
    }

    /// Another tree in the same database (sessions live beside the log).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, LogError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Writes everything to disk (used at shutdown and by the non-sync mode's callers).
    pub fn flush(&self) -> Result<(), LogError> {
        self.db.flush()?;
        Ok(())
    }
}

fn decode_chunk(key: &[u8], value: &[u8]) -> Result<Vec<Record>, LogError> {
    chunk::decode(value).map_err(|cause| LogError::Corrupt {
        seq: seq_of(key).unwrap_or(0),
        cause,
    })
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
            log.append(&[rec(1), rec(2), rec(3)], &[], 4)
                .expect("append");
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
        log.append(&[rec(1), rec(2)], &[], 3).expect("append");
        log.remove_through(2).expect("remove");
        assert_eq!(log.next_seq().expect("next"), 3, "seqs are never reused");
    }

    #[test]
    fn time_lookup_without_scanning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path(), 1 << 20, false).expect("open");
        let recs: Vec<Record> = (1..=100)
            .map(|s| Record {
                ts_ms: 1000 + (s / 10) * 10,
                ..rec(s)
            })
            .collect();
        log.append(&recs, &[], 101).expect("append");
        assert_eq!(log.first_at_or_after(0).expect("t"), Some(1));
        assert_eq!(log.first_at_or_after(1000).expect("t"), Some(1));
        assert_eq!(log.first_at_or_after(1001).expect("t"), Some(10));
        assert_eq!(log.first_at_or_after(1050).expect("t"), Some(50));
        assert_eq!(log.first_at_or_after(1100).expect("t"), Some(100));
        assert_eq!(log.first_at_or_after(1101).expect("t"), None);
        log.remove_through(55).expect("remove");
        assert_eq!(log.first_at_or_after(0).expect("t"), Some(56));
        assert_eq!(log.first_at_or_after(1060).expect("t"), Some(60));
    }

    #[test]
    fn gaps_are_found_by_overlap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path(), 1 << 20, false).expect("open");
        log.append(&[rec(1)], &[(2, 5)], 6).expect("append");
        assert_eq!(log.gap_within(0, 10).expect("g"), Some((2, 5)));
        assert_eq!(log.gap_within(4, 10).expect("g"), Some((2, 5)));
        assert_eq!(log.gap_within(5, 10).expect("g"), None);
        assert_eq!(log.gap_within(0, 1).expect("g"), None);
        log.remove_through(5).expect("remove");
        assert_eq!(
            log.gap_within(0, 10).expect("g"),
            None,
            "old gaps go with retention"
        );
    }

    #[test]
    fn chunks_are_transparent_to_readers_and_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path(), 1 << 20, false).expect("open");
        // 600 records in one append: three chunks (256, 256, 88), with a hole at 300.
        let recs: Vec<Record> = (1..=601).filter(|s| *s != 300).map(rec).collect();
        log.append(&recs, &[(300, 300)], 602).expect("append");
        assert_eq!(log.log.len(), 3);
        assert_eq!(log.get(1).expect("get"), Some(rec(1)));
        assert_eq!(log.get(300).expect("get"), None);
        assert_eq!(log.get(513).expect("get"), Some(rec(513)));
        assert_eq!(
            log.read_range(250, 262, 100)
                .expect("range")
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            (251..=262).collect::<Vec<_>>()
        );
        assert_eq!(
            log.read_range(295, 305, 3)
                .expect("range")
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![296, 297, 298]
        );
        assert_eq!(
            (log.first_seq().expect("f"), log.last_seq().expect("l")),
            (Some(1), Some(601))
        );
        log.remove_through(400).expect("trim");
        assert_eq!(
            log.first_seq().expect("f"),
            Some(401),
            "a straddling chunk keeps its tail"
        );
        assert_eq!(log.get(400).expect("get"), None);
        assert_eq!(
            log.read_after(0, 2)
                .expect("read")
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![401, 402]
        );
        let mut n = 0;
        log.for_each(|_| n += 1).expect("each");
        assert_eq!(n, 201);
        drop(log);
        let log = LogStore::open(dir.path(), 1 << 20, false).expect("reopen");
        assert_eq!(log.next_seq().expect("next"), 602);
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
