//! Key-value interfaces for the state kept beside the log: server-held sessions and retained
//! values. Small on purpose, so a JetStream key-value bucket can serve them as well as redb.
//! Every method blocks. Retained values are durable when `apply` returns; session writes are
//! not flushed one by one (a session is saved at every disconnect), they reach the disk with
//! the next log commit or the engine's periodic flush (1 s for redb), or at an explicit
//! [`SessionStore::flush`].

use bytes::Bytes;

use super::StorageError;

/// Sessions as opaque values under their id, with the last time each was used so the oldest
/// idle can be found without reading every value.
pub(crate) trait SessionStore: Send + Sync {
    /// The value stored under `id`.
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores `value` under `id`, last used at `seen_ms`; `previous_seen_ms` is the time the
    /// caller last stored it with (its idle entry is replaced). True when `id` is new.
    fn put(
        &self,
        id: &str,
        value: &[u8],
        seen_ms: u64,
        previous_seen_ms: Option<u64>,
    ) -> Result<bool, StorageError>;
    /// Forgets `id` (last stored with `seen_ms`). True when it existed.
    fn delete(&self, id: &str, seen_ms: u64) -> Result<bool, StorageError>;
    /// Ids last used before `before_ms`, longest idle first, at most `limit`.
    fn idle_before(&self, before_ms: u64, limit: usize) -> Result<Vec<String>, StorageError>;
    /// Sessions stored.
    fn count(&self) -> usize;
    /// Makes every write so far durable (for changes a crash must not undo).
    fn flush(&self) -> Result<(), StorageError>;
    /// A random 256-bit key kept with the sessions, created on first use and durable before it
    /// is returned; it signs resume tokens.
    fn secret(&self) -> Result<[u8; 32], StorageError>;
}

/// A retained value to set, or to clear when `payload` is empty (as in MQTT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetainedValue {
    /// Topic name.
    pub(crate) topic: String,
    /// The payload; empty clears the topic.
    pub(crate) payload: Bytes,
}

/// The latest retained value of each topic.
pub(crate) trait RetainedStore: Send + Sync {
    /// Applies `values` in order and makes them durable. Returns how many new topics were
    /// refused because the store holds its maximum.
    fn apply(&self, values: &[RetainedValue]) -> Result<usize, StorageError>;
    /// Every kept value.
    fn load(&self) -> Result<Vec<RetainedValue>, StorageError>;
}
