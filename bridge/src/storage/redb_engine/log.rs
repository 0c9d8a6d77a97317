//! The log on redb: group-commit appends of chunked records, reads by range and by topic
//! through the in-memory [`Index`], lost ranges, time lookups and retention.
//!
//! Seqs are never reused: at start the next seq is past the last chunk, the last lost range and
//! `meta.next_seq`, which retention writes with every removal (the head then), so a log that
//! retention emptied still continues after its last seq. An append writes only its chunks and
//! lost ranges: one table less per commit, which is most of a small commit's cost besides the
//! fsync. An append is one journal frame (checksummed) and one commit, so a crash keeps all of
//! it or none. Seqs and timestamps advance only when an append succeeds: a failed append is
//! retried with the same seqs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use redb::ReadableTable;

use super::chunk;
use super::cursor::RedbCursor;
use super::handle::Handle;
use super::index::Index;
use super::journal::Frame;
use super::record::{self, DecodeError};
use super::tables::{GAPS, LOG, META};
use super::{be_u64, engine_error, now_ms};
use crate::storage::{
    Appended, Entry, Log, LogCursor, LogStats, Lost, LostReason, Record, Retention, StorageError,
};

const EPOCH: &str = "epoch";
const NEXT_SEQ: &str = "next_seq";
/// ts of the newest record retention removed.
const EVICTED_TS: &str = "evicted_ts";

/// The next seq and the last ts handed out; advanced only by a successful append.
#[derive(Debug)]
struct Seqs {
    next: u64,
    last_ts: u64,
}

/// A record's header as retention needs it, owned (the stored bytes are not held).
struct Oldest {
    seq: u64,
    ts_ms: u64,
    topic: String,
    size: u64,
}

/// What the log and its cursors share.
pub(super) struct Inner {
    handle: Arc<Handle>,
    epoch: String,
    sync: bool,
    pub(super) index: RwLock<Index>,
    seqs: Mutex<Seqs>,
    head: AtomicU64,
}

/// The log.
pub(super) struct RedbLog {
    inner: Arc<Inner>,
}

impl RedbLog {
    /// Opens the log (creating its epoch on first use) and rebuilds the index with a scan.
    pub(super) fn open(handle: Arc<Handle>, sync: bool) -> Result<RedbLog, StorageError> {
        let epoch = match meta_get(&handle, EPOCH)? {
            Some(e) => String::from_utf8(e).map_err(|_| StorageError::Corrupt {
                what: "the epoch".to_owned(),
                detail: "not UTF-8".to_owned(),
            })?,
            None => {
                let e = format!("{:032x}", rand::random::<u128>());
                handle.write(true, |tx| {
                    let mut meta = tx.open_table(META).map_err(engine_error)?;
                    meta.insert(EPOCH, e.as_bytes()).map_err(engine_error)?;
                    Ok(())
                })?;
                e
            }
        };
        let mut index = Index::default();
        let mut last = None;
        {
            let tx = handle.read()?;
            let log = tx.open_table(LOG).map_err(engine_error)?;
            for item in log.iter().map_err(engine_error)? {
                let (k, v) = item.map_err(engine_error)?;
                let (k, v) = (k.value(), v.value());
                for r in chunk::metas(v).map_err(|cause| corrupt(k, cause))? {
                    index.add(r.topic, r.seq, r.size);
                    last = Some((r.seq, r.ts_ms));
                }
            }
        }
        let stored_next = meta_get(&handle, NEXT_SEQ)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(1);
        let after_gaps = {
            let tx = handle.read()?;
            let gaps = tx.open_table(GAPS).map_err(engine_error)?;
            let last_gap = gaps.last().map_err(engine_error)?;
            last_gap.map_or(1, |(_, to)| to.value() + 1)
        };
        let next = stored_next
            .max(after_gaps)
            .max(last.map_or(1, |(s, _)| s + 1));
        let last_ts = last.map_or(0, |(_, ts)| ts);
        Ok(RedbLog {
            inner: Arc::new(Inner {
                handle,
                epoch,
                sync,
                index: RwLock::new(index),
                seqs: Mutex::new(Seqs { next, last_ts }),
                head: AtomicU64::new(next - 1),
            }),
        })
    }
}

/// A `meta` value.
fn meta_get(handle: &Handle, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let tx = handle.read()?;
    let meta = tx.open_table(META).map_err(engine_error)?;
    let value = meta.get(key).map_err(engine_error)?;
    Ok(value.map(|v| v.value().to_vec()))
}

impl Inner {
    /// The record at `seq`, if retained. Decodes only that record of its chunk.
    pub(super) fn get(&self, seq: u64) -> Result<Option<Record>, StorageError> {
        let tx = self.handle.read_through(seq)?;
        let log = tx.open_table(LOG).map_err(engine_error)?;
        let Some(item) = log.range(..=seq).map_err(engine_error)?.next_back() else {
            return Ok(None);
        };
        let (k, v) = item.map_err(engine_error)?;
        chunk::find(v.value(), seq).map_err(|cause| corrupt(k.value(), cause))
    }

    /// Up to `limit` records with `after < seq <= upto`, in seq order.
    pub(super) fn read_range(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        if after >= upto || limit == 0 {
            return Ok(Vec::new());
        }
        let tx = self.handle.read_through(upto)?;
        let log = tx.open_table(LOG).map_err(engine_error)?;
        let start = after + 1;
        // The chunk holding `start` begins at or before it.
        let from = match log.range(..=start).map_err(engine_error)?.next_back() {
            Some(item) => item.map_err(engine_error)?.0.value(),
            None => start,
        };
        let mut out = Vec::new();
        for item in log.range(from..).map_err(engine_error)? {
            let (k, v) = item.map_err(engine_error)?;
            let k = k.value();
            let bad = |cause| corrupt(k, cause);
            for entry in chunk::records(v.value()).map_err(bad)? {
                let (key, body) = entry.map_err(bad)?;
                let seq = record::seq_of(key).map_err(bad)?;
                if seq > upto || out.len() == limit {
                    return Ok(out);
                }
                if seq > after {
                    out.push(Record::decode(key, body).map_err(bad)?);
                }
            }
        }
        Ok(out)
    }

    /// The headers of up to `limit` of the oldest records, copying no payload: retention
    /// decides on these, so a step costs topics, not payloads, however large messages are.
    fn oldest(&self, limit: usize) -> Result<Vec<Oldest>, StorageError> {
        let tx = self
            .handle
            .read_through(self.head.load(Ordering::Acquire))?;
        let log = tx.open_table(LOG).map_err(engine_error)?;
        let mut out = Vec::new();
        for item in log.iter().map_err(engine_error)? {
            let (k, v) = item.map_err(engine_error)?;
            for m in chunk::metas(v.value()).map_err(|cause| corrupt(k.value(), cause))? {
                if out.len() == limit {
                    return Ok(out);
                }
                out.push(Oldest {
                    seq: m.seq,
                    ts_ms: m.ts_ms,
                    topic: m.topic.to_owned(),
                    size: m.size,
                });
            }
        }
        Ok(out)
    }

    /// Writes records and lost ranges as one append, durable in sync mode.
    fn write(&self, records: &[Record], lost: &[(u64, u64)]) -> Result<(), StorageError> {
        let bytes: u64 = records.iter().map(|r| r.size() + 32).sum();
        self.handle.check_space(bytes)?;
        let mut frame = Frame::new(usize::try_from(bytes).unwrap_or(0) + 17 * lost.len());
        for (from, to) in lost {
            frame.gap(*from, *to);
        }
        for c in chunk::split(records) {
            frame.chunk(c[0].seq, |v| chunk::encode_into(c, v));
        }
        self.handle.append(frame, self.sync)
    }

    /// Removes every record with seq <= `through`: whole chunks are dropped, a chunk that
    /// straddles `through` is rewritten with the rest; lost ranges wholly at or below it go too.
    /// Records the head + 1 as `next_seq`, so seqs continue past it even when nothing is left.
    fn remove_through(&self, through: u64, evicted_ts: u64) -> Result<(), StorageError> {
        let next = self.head.load(Ordering::Acquire) + 1;
        self.handle.write(self.sync, |tx| {
            let mut log = tx.open_table(LOG).map_err(engine_error)?;
            let mut doomed = Vec::new();
            let mut rest = Vec::new();
            for item in log.range(..=through).map_err(engine_error)? {
                let (k, v) = item.map_err(engine_error)?;
                let (k, v) = (k.value(), v.value());
                doomed.push(k);
                // Only the chunk that straddles `through` is decoded, to keep its newer records.
                let last = chunk::metas(v)
                    .map_err(|cause| corrupt(k, cause))?
                    .last()
                    .map(|m| m.seq);
                if last.is_some_and(|l| l > through) {
                    rest = decode_chunk(k, v)?
                        .into_iter()
                        .filter(|r| r.seq > through)
                        .collect();
                }
            }
            for k in doomed {
                log.remove(k).map_err(engine_error)?;
            }
            if let Some(first) = rest.first() {
                log.insert(first.seq, chunk::encode(&rest).as_slice())
                    .map_err(engine_error)?;
            }
            let mut gaps = tx.open_table(GAPS).map_err(engine_error)?;
            gaps.retain_in(..=through, |_, to| to > through)
                .map_err(engine_error)?;
            let mut meta = tx.open_table(META).map_err(engine_error)?;
            meta.insert(EVICTED_TS, evicted_ts.to_be_bytes().as_slice())
                .map_err(engine_error)?;
            meta.insert(NEXT_SEQ, next.to_be_bytes().as_slice())
                .map_err(engine_error)?;
            Ok(())
        })
    }

    /// One retention step: removes up to `limits.batch` of the oldest records that break a
    /// limit. Returns how many, and whether more may be due.
    fn retention_step(
        &self,
        limits: &Retention,
        too_old: u64,
    ) -> Result<(u64, bool), StorageError> {
        let (mut count, mut bytes) = {
            let ix = self.index.read();
            (ix.count(), ix.bytes())
        };
        if count <= limits.max_messages && bytes <= limits.max_bytes {
            // Only age can still apply: look at the oldest record before reading a batch.
            match self.oldest(1)?.first() {
                Some(r) if r.ts_ms < too_old => {}
                _ => return Ok((0, false)),
            }
        }
        let oldest = self.oldest(limits.batch)?;
        let mut doomed: usize = 0;
        for r in &oldest {
            if count > limits.max_messages || bytes > limits.max_bytes || r.ts_ms < too_old {
                count -= 1;
                bytes = bytes.saturating_sub(r.size);
                doomed += 1;
            } else {
                break;
            }
        }
        let Some(last) = doomed.checked_sub(1).map(|i| &oldest[i]) else {
            return Ok((0, false));
        };
        self.remove_through(last.seq, last.ts_ms)?;
        let next_first = match oldest.get(doomed) {
            Some(r) => Some(r.seq),
            None => self
                .read_range(last.seq, u64::MAX, 1)?
                .first()
                .map(|r| r.seq),
        };
        let mut ix = self.index.write();
        for r in &oldest[..doomed] {
            ix.remove_oldest(&r.topic, r.seq, r.size, next_first);
        }
        tracing::debug!(through = last.seq, first = ?ix.first(), count = ix.count(), "retention step");
        let more = doomed == oldest.len() && oldest.len() == limits.batch;
        Ok((doomed as u64, more))
    }
}

impl Log for RedbLog {
    fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    fn first(&self) -> Option<u64> {
        self.inner.index.read().first()
    }

    fn head(&self) -> u64 {
        self.inner.head.load(Ordering::Acquire)
    }

    fn append(&self, batch: &mut Vec<Entry>) -> Result<Appended, StorageError> {
        let mut seqs = self.inner.seqs.lock();
        let ts_ms = now_ms().max(seqs.last_ts);
        let start = seqs.next;
        // The entries move into records (no copies); a failed write moves them back.
        let (out, next) = assign(batch.drain(..), start, ts_ms);
        if next == start {
            return Ok(out);
        }
        if let Err(e) = self.inner.write(&out.records, &out.lost) {
            *batch = restore(out, start, next);
            return Err(e);
        }
        (seqs.next, seqs.last_ts) = (next, ts_ms);
        {
            let mut ix = self.inner.index.write();
            for r in &out.records {
                ix.add(&r.topic, r.seq, r.size());
            }
        }
        self.inner.head.store(next - 1, Ordering::Release);
        Ok(out)
    }

    fn cursor(&self, filters: &[String], after: u64, upto: u64) -> Box<dyn LogCursor> {
        Box::new(RedbCursor::new(self.inner.clone(), filters, after, upto))
    }

    fn last_per_topic(&self, filter: &str, limit: usize) -> Result<Vec<Record>, StorageError> {
        let mut seqs = self.inner.index.read().last_of_each(filter);
        let keep = seqs.len().saturating_sub(limit);
        seqs.drain(..keep);
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(r) = self.inner.get(seq)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn first_at_or_after(&self, ts_ms: u64) -> Result<Option<u64>, StorageError> {
        let (first, last) = {
            let ix = self.inner.index.read();
            (ix.first(), ix.last())
        };
        let Some(mut lo) = first else {
            return Ok(None);
        };
        let mut hi = last;
        // The next stored record at or after `seq`, with its ts. Monotonic in `seq`.
        let next = |seq: u64| -> Result<Option<(u64, u64)>, StorageError> {
            Ok(self
                .inner
                .read_range(seq.saturating_sub(1), u64::MAX, 1)?
                .first()
                .map(|r| (r.seq, r.ts_ms)))
        };
        let late_enough = |seq: u64| -> Result<bool, StorageError> {
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

    fn evicted_since(&self, ts_ms: u64) -> Result<bool, StorageError> {
        Ok(meta_get(&self.inner.handle, EVICTED_TS)?
            .and_then(|v| be_u64(&v))
            .is_some_and(|v| v >= ts_ms))
    }

    fn lost(&self, after: u64, upto: u64, limit: usize) -> Result<(Vec<Lost>, bool), StorageError> {
        let mut out = Vec::new();
        if after >= upto || limit == 0 {
            return Ok((out, false));
        }
        // Below the first retained seq everything was evicted (or is a lost range that
        // retention removed with it).
        let evicted_through = self.first().map_or(self.head(), |f| f - 1).min(upto);
        if evicted_through > after {
            out.push(Lost {
                reason: LostReason::Evicted,
                from: after + 1,
                to: evicted_through,
            });
        }
        let lo = after.max(evicted_through);
        let tx = self.inner.handle.read_through(upto)?;
        let gaps = tx.open_table(GAPS).map_err(engine_error)?;
        let before = gaps.range(..=lo).map_err(engine_error)?.next_back();
        let rest = gaps.range(lo + 1..=upto).map_err(engine_error)?;
        for item in before.into_iter().chain(rest) {
            let (k, v) = item.map_err(engine_error)?;
            let (from, to) = (k.value(), v.value());
            if to <= lo || from > upto {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(Lost {
                reason: LostReason::Dropped,
                from: from.max(lo + 1),
                to: to.min(upto),
            });
        }
        Ok((out, false))
    }

    fn enforce(&self, limits: &Retention) -> Result<u64, StorageError> {
        let max_age = u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX);
        let too_old = now_ms().saturating_sub(max_age);
        let mut total = 0;
        loop {
            let (n, more) = self.inner.retention_step(limits, too_old)?;
            total += n;
            if !more {
                return Ok(total);
            }
        }
    }

    fn stats(&self) -> LogStats {
        let ix = self.inner.index.read();
        LogStats {
            messages: ix.count(),
            bytes: ix.bytes(),
            topics: ix.topic_count() as u64,
        }
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
impl RedbLog {
    pub(super) fn inner(&self) -> Arc<Inner> {
        self.inner.clone()
    }
}

#[cfg(test)]
impl Inner {
    pub(super) fn handle_for_test(&self) -> &Handle {
        &self.handle
    }
}

/// Gives `entries` their seqs from `start` and the timestamp `ts_ms`; returns them and the
/// next free seq.
fn assign(entries: impl Iterator<Item = Entry>, start: u64, ts_ms: u64) -> (Appended, u64) {
    let mut out = Appended::default();
    let mut next = start;
    for entry in entries {
        match entry {
            Entry::Message {
                topic,
                payload,
                retain,
                mqtt,
            } => {
                out.records.push(Record {
                    seq: next,
                    ts_ms,
                    topic,
                    payload,
                    retain,
                    mqtt,
                });
                next += 1;
            }
            Entry::Lost(n) if n > 0 => {
                out.lost.push((next, next + n - 1));
                next += n;
            }
            Entry::Lost(_) => {}
        }
    }
    (out, next)
}

/// The entries of a failed append, in their order: messages and lost ranges interleave by
/// seq over `start..next`.
fn restore(appended: Appended, start: u64, next: u64) -> Vec<Entry> {
    let mut lost = appended.lost.into_iter().peekable();
    let mut records = appended.records.into_iter().peekable();
    let mut out = Vec::new();
    let mut seq = start;
    while seq < next {
        if let Some((from, to)) = lost.next_if(|(from, _)| *from == seq) {
            out.push(Entry::Lost(to - from + 1));
            seq = to + 1;
        } else if let Some(r) = records.next() {
            seq = r.seq + 1;
            out.push(Entry::Message {
                topic: r.topic,
                payload: r.payload,
                retain: r.retain,
                mqtt: r.mqtt,
            });
        } else {
            break;
        }
    }
    out
}

fn corrupt(key: u64, cause: DecodeError) -> StorageError {
    StorageError::Corrupt {
        what: format!("the log chunk at seq {key}"),
        detail: cause.to_string(),
    }
}

fn decode_chunk(key: u64, value: &[u8]) -> Result<Vec<Record>, StorageError> {
    chunk::decode(value).map_err(|cause| corrupt(key, cause))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_failed_append_gives_back_its_batch_in_order() {
        let m = |t: &str| Entry::Message {
            topic: t.to_owned(),
            payload: Bytes::from_static(b"p"),
            retain: t == "b",
            mqtt: None,
        };
        let batch = vec![Entry::Lost(2), m("a"), m("b"), Entry::Lost(1), m("c")];
        let (out, next) = assign(batch.clone().into_iter(), 10, 1);
        assert_eq!(next, 16);
        assert_eq!(restore(out, 10, next), batch);
    }
}
