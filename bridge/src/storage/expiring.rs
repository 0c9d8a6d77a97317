//! Values that expire at a deadline of their owner's choosing, in a [`SessionStore`]: the
//! persistent MQTT sessions, whose content is the broker proxy's own encoding. Each value is
//! kept with its deadline (8 bytes, big-endian) and the login that owns it (a u16 length and
//! the name; empty without logins) in front, and indexed by the deadline, so the periodic
//! sweep forgets the expired ones of clients that never came back, and sessions are counted
//! per login, without reading the owner's format.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{SessionStore, StorageError};

/// The store with its count of values per login.
pub(crate) struct Expiring {
    store: Arc<dyn SessionStore>,
    /// Values per login, from a scan at open and every change since (on one node; a cluster
    /// node counts what it stored and removed itself).
    logins: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Expiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expiring")
            .field("count", &self.store.count())
            .finish_non_exhaustive()
    }
}

/// A stored value's deadline, login and content.
fn split(v: &[u8]) -> Option<(u64, &str, &[u8])> {
    let deadline = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let n = usize::from(u16::from_be_bytes(v.get(8..10)?.try_into().ok()?));
    let login = std::str::from_utf8(v.get(10..10 + n)?).ok()?;
    Some((deadline, login, v.get(10 + n..)?))
}

impl Expiring {
    /// Opens over `store`, counting its values per login (blocking: reads them all once).
    pub(crate) fn open(store: Arc<dyn SessionStore>) -> Result<Expiring, StorageError> {
        let mut logins: HashMap<String, usize> = HashMap::new();
        for id in store.idle_before(u64::MAX, usize::MAX)? {
            if let Some(v) = store.get(&id)? {
                if let Some((_, login, _)) = split(&v).filter(|(_, l, _)| !l.is_empty()) {
                    *logins.entry(login.to_owned()).or_default() += 1;
                }
            }
        }
        Ok(Expiring {
            store,
            logins: Mutex::new(logins),
        })
    }

    /// Values stored.
    pub(crate) fn count(&self) -> usize {
        self.store.count()
    }

    /// Values stored for `login`.
    pub(crate) fn owned_by(&self, login: &str) -> usize {
        self.logins.lock().get(login).copied().unwrap_or(0)
    }

    fn counted(&self, login: &str, up: bool) {
        if login.is_empty() {
            return;
        }
        let mut logins = self.logins.lock();
        let n = logins.entry(login.to_owned()).or_default();
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                logins.remove(login);
            }
        }
    }

    /// The stored value of `client_id`, without its deadline and login.
    pub(crate) fn load(&self, client_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .store
            .get(client_id)?
            .and_then(|v| split(&v).map(|(_, _, value)| value.to_vec())))
    }

    /// Saves `value` of `login` with its deadline.
    pub(crate) fn save(
        &self,
        client_id: &str,
        login: Option<&str>,
        value: &[u8],
        deadline_ms: u64,
        previous: Option<u64>,
        flush: bool,
    ) -> Result<(), StorageError> {
        let login = login.unwrap_or("");
        let n = login.len().min(usize::from(u16::MAX));
        let mut stored = Vec::with_capacity(10 + n + value.len());
        stored.extend_from_slice(&deadline_ms.to_be_bytes());
        stored.extend_from_slice(&(n as u16).to_be_bytes());
        stored.extend_from_slice(&login.as_bytes()[..n]);
        stored.extend_from_slice(value);
        if self.store.put(client_id, &stored, deadline_ms, previous)? {
            self.counted(login, true);
        }
        if flush {
            self.store.flush()?;
        }
        Ok(())
    }

    /// Forgets `client_id` (last saved with `deadline_ms`).
    pub(crate) fn forget(&self, client_id: &str, deadline_ms: u64) -> Result<(), StorageError> {
        let login = self
            .store
            .get(client_id)?
            .and_then(|v| split(&v).map(|(_, l, _)| l.to_owned()));
        if self.store.delete(client_id, deadline_ms)? {
            self.counted(login.as_deref().unwrap_or(""), false);
        }
        Ok(())
    }

    /// Forgets up to `limit` values whose deadline passed before `now_ms`; returns how many.
    pub(crate) fn sweep(&self, now_ms: u64, limit: usize) -> Result<usize, StorageError> {
        let mut n = 0;
        for id in self.store.idle_before(now_ms, limit)? {
            let Some(v) = self.store.get(&id)? else {
                continue;
            };
            let (deadline, login) = split(&v).map_or((0, ""), |(d, l, _)| (d, l));
            if deadline < now_ms && self.store.delete(&id, deadline)? {
                self.counted(login, false);
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_session_is_kept_until_its_deadline_then_swept_and_counted_per_login() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = crate::storage::tests::open(dir.path());
        let e = storage.mqtt_sessions.clone();
        e.save("r1", Some("alice"), b"one", 1_000, None, true)
            .expect("store");
        e.save("r2", Some("alice"), b"two", 5_000, None, false)
            .expect("store");
        e.save("r3", None, b"three", 5_000, None, false)
            .expect("store");
        e.save("r1", Some("alice"), b"one again", 2_000, Some(1_000), false)
            .expect("store");
        assert_eq!(e.owned_by("alice"), 2, "saving again is not a new one");
        assert_eq!(
            e.load("r1").expect("store").as_deref(),
            Some(&b"one again"[..])
        );
        assert_eq!(e.sweep(1_500, 100).expect("store"), 0, "r1 was saved again");
        assert_eq!(e.sweep(3_000, 100).expect("store"), 1);
        assert_eq!(e.load("r1").expect("store"), None);
        assert_eq!(e.owned_by("alice"), 1);
        assert_eq!(e.count(), 2);
        // Counted again from the store after a restart.
        drop((e, storage));
        let storage = crate::storage::tests::open(dir.path());
        let again = storage.mqtt_sessions.clone();
        assert_eq!(again.owned_by("alice"), 1);
        again.forget("r2", 5_000).expect("store");
        assert_eq!(again.owned_by("alice"), 0);
        assert_eq!(
            again.load("r3").expect("store").as_deref(),
            Some(&b"three"[..])
        );
        assert_eq!(storage.sessions.count(), 0, "WebSocket sessions are apart");
    }
}
