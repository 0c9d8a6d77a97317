//! Retained values on sled: tree `retained`, topic → latest retained payload. Each
//! [`RetainedStore::apply`] is flushed before it returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::engine_error;
use super::handle::Handle;
use crate::storage::{RetainedStore, RetainedValue, StorageError};

pub(super) struct SledRetained {
    handle: Arc<Handle>,
    max: usize,
    count: AtomicUsize,
}

impl SledRetained {
    /// Keeps at most `max` topics; counts the stored ones once.
    pub(super) fn open(handle: Arc<Handle>, max: usize) -> Result<SledRetained, StorageError> {
        let count = handle.trees()?.retained.len();
        Ok(SledRetained {
            handle,
            max,
            count: AtomicUsize::new(count),
        })
    }
}

impl RetainedStore for SledRetained {
    fn apply(&self, values: &[RetainedValue]) -> Result<usize, StorageError> {
        let bytes: u64 = values
            .iter()
            .map(|v| (v.topic.len() + v.payload.len()) as u64)
            .sum();
        self.handle.check_space(bytes)?;
        let t = self.handle.trees()?;
        let mut count = self.count.load(Ordering::Relaxed);
        let mut refused = 0;
        // Count changes are published only once the batch is durable, so a failed (retried)
        // batch is not counted twice.
        for v in values {
            let key = v.topic.as_bytes();
            if v.payload.is_empty() {
                if t.retained.remove(key).map_err(engine_error)?.is_some() {
                    count -= 1;
                }
            } else if count < self.max || t.retained.contains_key(key).map_err(engine_error)? {
                if t.retained
                    .insert(key, v.payload.as_ref())
                    .map_err(engine_error)?
                    .is_none()
                {
                    count += 1;
                }
            } else {
                refused += 1;
            }
        }
        t.db.flush().map_err(engine_error)?;
        self.count.store(count, Ordering::Relaxed);
        Ok(refused)
    }

    fn load(&self) -> Result<Vec<RetainedValue>, StorageError> {
        let t = self.handle.trees()?;
        let mut out = Vec::new();
        for item in t.retained.iter() {
            let (k, v) = item.map_err(engine_error)?;
            let Ok(topic) = String::from_utf8(k.to_vec()) else {
                continue;
            };
            out.push(RetainedValue {
                topic,
                payload: Bytes::copy_from_slice(&v),
            });
        }
        Ok(out)
    }
}
