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
    /// [`SessionStore::put`] if `check` accepts what `id` holds now (`None`: nothing), with no
    /// other writer in between (a revision check, also across the nodes of a cluster). `None`
    /// when `check` refused, else whether `id` is new.
    fn put_if(
        &self,
        id: &str,
        value: &[u8],
        seen_ms: u64,
        previous_seen_ms: Option<u64>,
        check: &dyn Fn(Option<&[u8]>) -> bool,
    ) -> Result<Option<bool>, StorageError>;
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
    /// The QoS it was published with; `None` for a value stored before mqws kept it.
    pub(crate) qos: Option<u8>,
    /// Its MQTT 5 PUBLISH properties (as a logged message keeps them).
    pub(crate) properties: Bytes,
}

/// Marks a stored retained value that carries its MQTT details. Values stored before carry
/// only their payload; one that starts with these bytes by chance would be misread, which a
/// NUL followed by this name makes unlikely enough.
const RETAINED_V1: &[u8] = b"\0mqws-retained-1";

impl RetainedValue {
    /// The bytes a store keeps: the marker, QoS, properties length (u32 BE), properties,
    /// payload.
    pub(crate) fn stored(&self) -> Bytes {
        let mut out =
            Vec::with_capacity(RETAINED_V1.len() + 5 + self.properties.len() + self.payload.len());
        out.extend_from_slice(RETAINED_V1);
        out.push(self.qos.unwrap_or(0));
        out.extend_from_slice(&(self.properties.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.properties);
        out.extend_from_slice(&self.payload);
        Bytes::from(out)
    }

    /// Reads what [`RetainedValue::stored`] wrote, or a bare payload stored before.
    pub(crate) fn from_stored(topic: String, stored: Bytes) -> RetainedValue {
        let details = stored.strip_prefix(RETAINED_V1).and_then(|rest| {
            let (&qos, rest) = rest.split_first()?;
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let start = RETAINED_V1.len() + 5;
            (qos <= 2 && rest.len() >= 4 + len).then_some((qos, start, start + len))
        });
        match details {
            Some((qos, start, end)) => RetainedValue {
                topic,
                properties: stored.slice(start..end),
                payload: stored.slice(end..),
                qos: Some(qos),
            },
            None => RetainedValue {
                topic,
                payload: stored,
                qos: None,
                properties: Bytes::new(),
            },
        }
    }
}

/// The latest retained value of each topic.
pub(crate) trait RetainedStore: Send + Sync {
    /// Applies `values` in order and makes them durable. Returns how many new topics were
    /// refused because the store holds its maximum.
    fn apply(&self, values: &[RetainedValue]) -> Result<usize, StorageError>;
    /// Every kept value.
    fn load(&self) -> Result<Vec<RetainedValue>, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_values_keep_their_details_and_old_ones_read_as_payloads() {
        let v = RetainedValue {
            topic: "t".to_owned(),
            payload: Bytes::from_static(b"{\"on\":true}"),
            qos: Some(2),
            properties: Bytes::from_static(&[0x01, 1]),
        };
        assert_eq!(RetainedValue::from_stored("t".to_owned(), v.stored()), v);
        let old = RetainedValue::from_stored("t".to_owned(), Bytes::from_static(b"raw"));
        assert_eq!((old.payload.as_ref(), old.qos), (&b"raw"[..], None));
        let cut = v.stored().slice(..20);
        let torn = RetainedValue::from_stored("t".to_owned(), cut.clone());
        assert_eq!(
            (torn.payload, torn.qos),
            (cut, None),
            "not well formed: a payload"
        );
    }
}
