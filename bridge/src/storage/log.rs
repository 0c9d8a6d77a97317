//! The log interface: what mqws needs from a durable, ordered message log, shaped so that both
//! the embedded redb engine and a NATS JetStream stream can provide it.
//!
//! - The engine assigns seqs: [`Log::append`] returns the records with their seqs only once
//!   they are durable (redb: a journal write + `fdatasync`, or a durable commit without the
//!   journal; JetStream: the stream's publish acks, which carry the stream sequence).
//! - Reads are filtered ranges through a [`LogCursor`] (redb: its per-topic index or a scan;
//!   JetStream: an ordered consumer with subject filters from a start sequence).
//! - Following the log is a cursor up to [`Log::head`], again and again (JetStream: the
//!   consumer's own stream of new messages moves the head).
//! - Time lookups, last value per topic, lost ranges and retention are engine operations, so a
//!   JetStream stream can answer them with start-by-time, last-per-subject, the stream's first
//!   sequence and its own limits.
//!
//! Every method blocks: call them from a blocking thread (`spawn_blocking`, the ingest thread).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::StorageError;

/// A place in the log: which log (`epoch`) and how far (`seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    /// Random id of this log, created with it; a new epoch means earlier seqs mean nothing.
    pub(crate) epoch: String,
    /// The last seq at this position (0 before the first message).
    pub(crate) seq: u64,
}

/// What an MQTT subscriber needs of a message beyond its topic, payload and retain flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MqttMeta {
    /// The QoS it was published with (0, 1 or 2).
    pub(crate) qos: u8,
    /// The id of the MQTT client that published it (for no-local); none for a browser publish.
    pub(crate) origin: Option<Arc<str>>,
    /// Its MQTT 5 PUBLISH properties as on the wire, without their length and without those
    /// of one connection (topic alias, subscription identifier); empty for MQTT 3.1.1.
    pub(crate) properties: Bytes,
}

/// A logged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Position in the log; strictly increasing, never reused within an epoch.
    pub(crate) seq: u64,
    /// When it was logged, in ms since the Unix epoch; never decreasing in seq order.
    pub(crate) ts_ms: u64,
    /// MQTT topic.
    pub(crate) topic: String,
    /// MQTT payload bytes.
    pub(crate) payload: Bytes,
    /// MQTT retain flag.
    pub(crate) retain: bool,
    /// Its MQTT details; `None` for a message logged before mqws kept them.
    pub(crate) mqtt: Option<MqttMeta>,
}

impl Record {
    /// Topic plus payload bytes: what retention's `log.max_bytes` counts.
    pub(crate) fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }
}

/// Something to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A message; it gets the next seq.
    Message {
        /// MQTT topic.
        topic: String,
        /// Payload bytes.
        payload: Bytes,
        /// MQTT retain flag.
        retain: bool,
        /// Its MQTT details.
        mqtt: Option<MqttMeta>,
    },
    /// `n` messages were lost before they could be logged: they consume `n` seqs, recorded as a
    /// lost range so a reader across them is told.
    Lost(u64),
}

/// What an append made durable.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    /// The messages, with their seqs and timestamps, in order.
    pub(crate) records: Vec<Record>,
    /// Seq ranges consumed by [`Entry::Lost`], inclusive.
    pub(crate) lost: Vec<(u64, u64)>,
}

/// Why a seq range cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LostReason {
    /// Retention removed it.
    Evicted,
    /// It was never logged (messages lost before the log).
    Dropped,
}

/// A seq range that cannot be read, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    /// Why.
    pub(crate) reason: LostReason,
    /// First lost seq.
    pub(crate) from: u64,
    /// Last lost seq.
    pub(crate) to: u64,
}

/// Retention limits, enforced oldest first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// `log.max_messages`.
    pub(crate) max_messages: u64,
    /// `log.max_bytes` (topic + payload bytes).
    pub(crate) max_bytes: u64,
    /// `log.max_age`.
    pub(crate) max_age: std::time::Duration,
    /// `log.retention_batch`: most records removed per step.
    pub(crate) batch: usize,
}

/// Counters for gauges and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogStats {
    /// Messages retained.
    pub(crate) messages: u64,
    /// Topic + payload bytes retained.
    pub(crate) bytes: u64,
    /// Distinct topics retained.
    pub(crate) topics: u64,
}

/// A read of `(after, upto]` restricted to some filters, in bounded batches.
pub(crate) trait LogCursor: Send {
    /// The next up-to-`limit` matching records, ascending; possibly none while not
    /// [`LogCursor::done`]. [`StorageError::Overtaken`] when retention removed records this
    /// read still had to return.
    fn next_batch(&mut self, limit: usize) -> Result<Vec<Record>, StorageError>;
    /// The last seq covered so far.
    fn position(&self) -> u64;
    /// True once everything up to `upto` is covered.
    fn done(&self) -> bool;
}

/// A record read from a shared log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fed {
    /// The record.
    pub(crate) record: Record,
    /// True when this process appended it (its own MQTT clients already have it).
    pub(crate) local: bool,
}

/// Everything appended to a shared log after a position, in order, whoever appended it.
pub(crate) trait LogFeed: Send {
    /// The next records, up to `max`, waiting up to `wait` for the first; possibly none.
    fn next(&mut self, max: usize, wait: std::time::Duration) -> Result<Vec<Fed>, StorageError>;
    /// The last seq read so far.
    fn position(&self) -> u64;
    /// The end of a range the last [`LogFeed::next`] found removed from the log before this
    /// feed could read it (a node that fell behind the log's retention); the records that call
    /// returned all come after it. Readers must be told of the range, never skip it silently.
    fn missed(&self) -> Option<u64> {
        None
    }
}

/// The durable log.
pub(crate) trait Log: Send + Sync {
    /// This log's epoch.
    fn epoch(&self) -> &str;
    /// The oldest retained seq, if any.
    fn first(&self) -> Option<u64>;
    /// The oldest retained seq as the engine holds it now. A shared log's retention runs on
    /// its own and [`Log::first`] may lag it; a replay plan must not (it would replay from the
    /// memory tail what it reports as evicted).
    fn first_now(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.first())
    }
    /// The last seq handed out (a message or a lost one), 0 before the first.
    fn head(&self) -> u64;
    /// Makes `batch` durable in order and returns it with seqs. On success `batch` is drained;
    /// on failure it is left as it was and nothing of it may be treated as logged: retry it.
    fn append(&self, batch: &mut Vec<Entry>) -> Result<Appended, StorageError>;
    /// A cursor over `(after, upto]` for records matching any of `filters` (valid filters).
    fn cursor(&self, filters: &[String], after: u64, upto: u64) -> Box<dyn LogCursor>;
    /// For a log that other processes append to as well (JetStream): a feed of everything
    /// after `after`, which the fan-out follows instead of this process's own appends. `None`
    /// for a log only this process writes.
    fn feed(&self, _after: u64) -> Option<Box<dyn LogFeed>> {
        None
    }
    /// The newest record of each topic matching `filter`, at most `limit` (the most recent),
    /// oldest first.
    fn last_per_topic(&self, filter: &str, limit: usize) -> Result<Vec<Record>, StorageError>;
    /// The first retained seq logged at or after `ts_ms`.
    fn first_at_or_after(&self, ts_ms: u64) -> Result<Option<u64>, StorageError>;
    /// True when retention removed a record logged at or after `ts_ms`.
    fn evicted_since(&self, ts_ms: u64) -> Result<bool, StorageError>;
    /// Every lost range intersecting `(after, upto]`, oldest first, at most `limit` (the bool
    /// says whether there were more). Ranges are clipped to `(after, upto]`.
    fn lost(&self, after: u64, upto: u64, limit: usize) -> Result<(Vec<Lost>, bool), StorageError>;
    /// Removes the oldest records until every limit holds, in bounded steps. Returns how many.
    fn enforce(&self, limits: &Retention) -> Result<u64, StorageError>;
    /// Counters.
    fn stats(&self) -> LogStats;
    /// The engine's own type, for its unit tests.
    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any;
}
