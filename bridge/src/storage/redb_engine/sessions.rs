//! Sessions on redb: table `sessions` (id → value) and table `sessions_idle` ((last-used ms,
//! id) → nothing), which orders sessions by idleness for expiry and the count bound; MQTT
//! sessions the same way in `mqtt_sessions` and `mqtt_sessions_idle` (ordered by deadline). Writes are
//! committed without fsync; they become durable with the next log commit, an explicit
//! [`SessionStore::flush`] or the handle's periodic flush.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata};

use super::engine_error;
use super::handle::Handle;
use super::tables::{META, MQTT_SESSIONS, MQTT_SESSIONS_IDLE, SESSIONS, SESSIONS_IDLE};
use crate::storage::{SessionStore, StorageError};

/// `meta` key of the session signing key.
const SECRET_KEY: &str = "session_key";

/// A value table and its idle index.
type Tables = (
    redb::TableDefinition<'static, &'static str, &'static [u8]>,
    redb::TableDefinition<'static, (u64, &'static str), ()>,
);

pub(super) struct RedbSessions {
    handle: Arc<Handle>,
    count: AtomicUsize,
    tables: Tables,
}

impl RedbSessions {
    /// WebSocket sessions; counts them once.
    pub(super) fn open(handle: Arc<Handle>) -> Result<RedbSessions, StorageError> {
        RedbSessions::open_tables(handle, (SESSIONS, SESSIONS_IDLE))
    }

    /// Persistent MQTT sessions, kept apart so that neither kind's bound or expiry touches
    /// the other's.
    pub(super) fn open_mqtt(handle: Arc<Handle>) -> Result<RedbSessions, StorageError> {
        RedbSessions::open_tables(handle, (MQTT_SESSIONS, MQTT_SESSIONS_IDLE))
    }

    fn open_tables(handle: Arc<Handle>, tables: Tables) -> Result<RedbSessions, StorageError> {
        let count = {
            let tx = handle.read()?;
            let table = tx.open_table(tables.0).map_err(engine_error)?;
            table.len().map_err(engine_error)?
        };
        Ok(RedbSessions {
            handle,
            count: AtomicUsize::new(usize::try_from(count).unwrap_or(usize::MAX)),
            tables,
        })
    }
}

impl SessionStore for RedbSessions {
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let tx = self.handle.read()?;
        let table = tx.open_table(self.tables.0).map_err(engine_error)?;
        let value = table.get(id).map_err(engine_error)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn put(
        &self,
        id: &str,
        value: &[u8],
        seen_ms: u64,
        previous_seen_ms: Option<u64>,
    ) -> Result<bool, StorageError> {
        let new = self.put_if(id, value, seen_ms, previous_seen_ms, &|_| true)?;
        Ok(new.unwrap_or(false))
    }

    fn put_if(
        &self,
        id: &str,
        value: &[u8],
        seen_ms: u64,
        previous_seen_ms: Option<u64>,
        check: &dyn Fn(Option<&[u8]>) -> bool,
    ) -> Result<Option<bool>, StorageError> {
        let new = self.handle.write(false, |tx| {
            let mut sessions = tx.open_table(self.tables.0).map_err(engine_error)?;
            let accepted = {
                let now = sessions.get(id).map_err(engine_error)?;
                check(now.as_ref().map(|v| v.value()))
            };
            if !accepted {
                return Ok(None);
            }
            let old = sessions.insert(id, value).map_err(engine_error)?;
            let mut idle = tx.open_table(self.tables.1).map_err(engine_error)?;
            if let Some(prev) = previous_seen_ms {
                idle.remove((prev, id)).map_err(engine_error)?;
            }
            idle.insert((seen_ms, id), ()).map_err(engine_error)?;
            Ok(Some(old.is_none()))
        })?;
        if new == Some(true) {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(new)
    }

    fn delete(&self, id: &str, seen_ms: u64) -> Result<bool, StorageError> {
        let existed = self.handle.write(false, |tx| {
            let mut idle = tx.open_table(self.tables.1).map_err(engine_error)?;
            idle.remove((seen_ms, id)).map_err(engine_error)?;
            let mut sessions = tx.open_table(self.tables.0).map_err(engine_error)?;
            let old = sessions.remove(id).map_err(engine_error)?;
            Ok(old.is_some())
        })?;
        if existed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(existed)
    }

    fn idle_before(&self, before_ms: u64, limit: usize) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut stale = Vec::new();
        {
            let tx = self.handle.read()?;
            let idle = tx.open_table(self.tables.1).map_err(engine_error)?;
            let sessions = tx.open_table(self.tables.0).map_err(engine_error)?;
            for item in idle.range((0, "")..(before_ms, "")).map_err(engine_error)? {
                if out.len() == limit {
                    break;
                }
                let (k, _) = item.map_err(engine_error)?;
                let (seen, id) = k.value();
                // An idle entry whose session is gone is stale: dropped as it is found.
                if sessions.get(id).map_err(engine_error)?.is_some() {
                    out.push(id.to_owned());
                } else {
                    stale.push((seen, id.to_owned()));
                }
            }
        }
        if !stale.is_empty() {
            self.handle.write(false, |tx| {
                let mut idle = tx.open_table(self.tables.1).map_err(engine_error)?;
                for (seen, id) in &stale {
                    idle.remove((*seen, id.as_str())).map_err(engine_error)?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.handle.write(true, |_| Ok(()))
    }

    fn secret(&self) -> Result<[u8; 32], StorageError> {
        self.handle.write(true, |tx| {
            let mut meta = tx.open_table(META).map_err(engine_error)?;
            let stored = meta
                .get(SECRET_KEY)
                .map_err(engine_error)?
                .map(|v| v.value().to_vec());
            if let Some(v) = stored {
                return <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StorageError::Corrupt {
                    what: "the session signing key".to_owned(),
                    detail: format!("{} bytes instead of 32", v.len()),
                });
            }
            let key: [u8; 32] = rand::random();
            meta.insert(SECRET_KEY, key.as_slice())
                .map_err(engine_error)?;
            Ok(key)
        })
    }
}
