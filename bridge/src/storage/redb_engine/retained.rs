//! Retained values on redb: table `retained`, topic → latest retained payload. Each
//! [`RetainedStore::apply`] is one durable commit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata};

use super::engine_error;
use super::handle::Handle;
use super::tables::RETAINED;
use crate::storage::{RetainedStore, RetainedValue, StorageError};

pub(super) struct RedbRetained {
    handle: Arc<Handle>,
    max: usize,
    count: AtomicUsize,
}

impl RedbRetained {
    /// Keeps at most `max` topics; counts the stored ones once.
    pub(super) fn open(handle: Arc<Handle>, max: usize) -> Result<RedbRetained, StorageError> {
        let count = {
            let tx = handle.read()?;
            let table = tx.open_table(RETAINED).map_err(engine_error)?;
            table.len().map_err(engine_error)?
        };
        Ok(RedbRetained {
            handle,
            max,
            count: AtomicUsize::new(usize::try_from(count).unwrap_or(usize::MAX)),
        })
    }
}

impl RetainedStore for RedbRetained {
    fn apply(&self, values: &[RetainedValue]) -> Result<usize, StorageError> {
        let bytes: u64 = values
            .iter()
            .map(|v| (v.topic.len() + v.payload.len()) as u64)
            .sum();
        self.handle.check_space(bytes)?;
        // Count changes are published only once the commit is durable, so a failed (retried)
        // batch is not counted twice.
        let (count, refused) = self.handle.write(true, |tx| {
            let mut table = tx.open_table(RETAINED).map_err(engine_error)?;
            let mut count = self.count.load(Ordering::Relaxed);
            let mut refused = 0;
            for v in values {
                let key = v.topic.as_str();
                if v.payload.is_empty() {
                    if table.remove(key).map_err(engine_error)?.is_some() {
                        count -= 1;
                    }
                } else if count < self.max || table.get(key).map_err(engine_error)?.is_some() {
                    if table
                        .insert(key, v.stored().as_ref())
                        .map_err(engine_error)?
                        .is_none()
                    {
                        count += 1;
                    }
                } else {
                    refused += 1;
                }
            }
            Ok((count, refused))
        })?;
        self.count.store(count, Ordering::Relaxed);
        Ok(refused)
    }

    fn load(&self) -> Result<Vec<RetainedValue>, StorageError> {
        let tx = self.handle.read()?;
        let table = tx.open_table(RETAINED).map_err(engine_error)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(engine_error)? {
            let (k, v) = item.map_err(engine_error)?;
            out.push(RetainedValue::from_stored(
                k.value().to_owned(),
                Bytes::copy_from_slice(v.value()),
            ));
        }
        Ok(out)
    }
}
