//! Values that expire at a deadline of their owner's choosing, in a [`SessionStore`]: the
//! persistent MQTT sessions, whose content is the broker proxy's own encoding. Each value is
//! kept with its deadline in front (8 bytes, big-endian) and indexed by it, so the periodic
//! sweep forgets the expired ones of clients that never came back without reading the
//! owner's format.

use std::sync::Arc;

use crate::storage::{SessionStore, StorageError};

/// The stored value of `client_id`, without its deadline.
pub(crate) fn load(
    store: &Arc<dyn SessionStore>,
    client_id: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(store
        .get(client_id)?
        .filter(|v| v.len() >= 8)
        .map(|v| v[8..].to_vec()))
}

/// Saves `value` with its deadline.
pub(crate) fn save(
    store: &Arc<dyn SessionStore>,
    client_id: &str,
    value: &[u8],
    deadline_ms: u64,
    previous: Option<u64>,
    flush: bool,
) -> Result<(), StorageError> {
    let mut stored = Vec::with_capacity(8 + value.len());
    stored.extend_from_slice(&deadline_ms.to_be_bytes());
    stored.extend_from_slice(value);
    store.put(client_id, &stored, deadline_ms, previous)?;
    if flush {
        store.flush()?;
    }
    Ok(())
}

/// Forgets up to `limit` sessions whose deadline passed before `now_ms`; returns how many.
pub(crate) fn sweep(
    store: &Arc<dyn SessionStore>,
    now_ms: u64,
    limit: usize,
) -> Result<usize, StorageError> {
    let mut n = 0;
    for id in store.idle_before(now_ms, limit)? {
        let Some(v) = store.get(&id)? else {
            continue;
        };
        let deadline = v
            .get(..8)
            .and_then(|d| <[u8; 8]>::try_from(d).ok())
            .map_or(0, u64::from_be_bytes);
        if deadline < now_ms && store.delete(&id, deadline)? {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_kept_until_its_deadline_then_swept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = crate::storage::tests::open(dir.path());
        let store = storage.mqtt_sessions.clone();
        save(&store, "r1", b"one", 1_000, None, true).expect("store");
        save(&store, "r2", b"two", 5_000, None, false).expect("store");
        save(&store, "r1", b"one again", 2_000, Some(1_000), false).expect("store");
        assert_eq!(
            load(&store, "r1").expect("store").as_deref(),
            Some(&b"one again"[..])
        );
        assert_eq!(
            sweep(&store, 1_500, 100).expect("store"),
            0,
            "r1 was saved again"
        );
        assert_eq!(sweep(&store, 3_000, 100).expect("store"), 1);
        assert_eq!(load(&store, "r1").expect("store"), None);
        assert_eq!(
            load(&store, "r2").expect("store").as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(store.count(), 1);
        assert_eq!(storage.sessions.count(), 0, "WebSocket sessions are apart");
    }
}
