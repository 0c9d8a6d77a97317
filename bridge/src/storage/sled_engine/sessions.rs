//! Sessions on sled: tree `sessions` (id → value) and tree `sessions_idle` (last-used time BE +
//! id → nothing), which orders sessions by idleness for expiry and the count bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::engine_error;
use super::handle::Handle;
use crate::storage::{SessionStore, StorageError};

/// `meta` key of the session signing key.
const SECRET_KEY: &[u8] = b"session_key";

pub(super) struct SledSessions {
    handle: Arc<Handle>,
    count: AtomicUsize,
}

fn idle_key(seen_ms: u64, id: &str) -> Vec<u8> {
    let mut k = seen_ms.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

impl SledSessions {
    /// Counts the stored sessions once (sled's `len` walks the tree).
    pub(super) fn open(handle: Arc<Handle>) -> Result<SledSessions, StorageError> {
        let count = handle.trees()?.sessions.len();
        Ok(SledSessions {
            handle,
            count: AtomicUsize::new(count),
        })
    }
}

impl SessionStore for SledSessions {
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .handle
            .trees()?
            .sessions
            .get(id.as_bytes())
            .map_err(engine_error)?
            .map(|v| v.to_vec()))
    }

    fn put(
        &self,
        id: &str,
        value: &[u8],
        seen_ms: u64,
        previous_seen_ms: Option<u64>,
    ) -> Result<bool, StorageError> {
        let t = self.handle.trees()?;
        if let Some(prev) = previous_seen_ms {
            t.sessions_idle
                .remove(idle_key(prev, id))
                .map_err(engine_error)?;
        }
        let new = t
            .sessions
            .insert(id.as_bytes(), value)
            .map_err(engine_error)?
            .is_none();
        t.sessions_idle
            .insert(idle_key(seen_ms, id), &[])
            .map_err(engine_error)?;
        if new {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(new)
    }

    fn delete(&self, id: &str, seen_ms: u64) -> Result<bool, StorageError> {
        let t = self.handle.trees()?;
        t.sessions_idle
            .remove(idle_key(seen_ms, id))
            .map_err(engine_error)?;
        let existed = t
            .sessions
            .remove(id.as_bytes())
            .map_err(engine_error)?
            .is_some();
        if existed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(existed)
    }

    fn idle_before(&self, before_ms: u64, limit: usize) -> Result<Vec<String>, StorageError> {
        let t = self.handle.trees()?;
        let mut out = Vec::new();
        for item in t.sessions_idle.range(..before_ms.to_be_bytes().to_vec()) {
            if out.len() == limit {
                break;
            }
            let (k, _) = item.map_err(engine_error)?;
            let id = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
            // An idle entry whose session is gone is stale: drop it as it is found.
            if t.sessions
                .contains_key(id.as_bytes())
                .map_err(engine_error)?
            {
                out.push(id);
            } else {
                t.sessions_idle.remove(k).map_err(engine_error)?;
            }
        }
        Ok(out)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.handle.trees()?.db.flush().map_err(engine_error)?;
        Ok(())
    }

    fn secret(&self) -> Result<[u8; 32], StorageError> {
        let t = self.handle.trees()?;
        if let Some(v) = t.meta.get(SECRET_KEY).map_err(engine_error)? {
            return <[u8; 32]>::try_from(v.as_ref()).map_err(|_| StorageError::Corrupt {
                what: "the session signing key".to_owned(),
                detail: format!("{} bytes instead of 32", v.len()),
            });
        }
        let key: [u8; 32] = rand::random();
        t.meta.insert(SECRET_KEY, &key[..]).map_err(engine_error)?;
        t.db.flush().map_err(engine_error)?;
        Ok(key)
    }
}
