//! Values that expire at a deadline of their owner's choosing, in a [`SessionStore`]: the
//! persistent MQTT sessions, whose content is the broker proxy's own encoding. Each value is
//! kept with a format byte (1), its deadline (8 bytes, big-endian), its holder (8 bytes: the
//! connection that saved it last) and the login that owns it (a u16 length and the name; empty
//! without logins) in front, and indexed by the deadline, so the periodic sweep forgets the
//! expired ones of clients that never came back, sessions are counted per login, and a
//! connection that lost its session to another (on another node) learns it at its next save,
//! all without reading the owner's format. Values written before the holder was kept (no
//! format byte: a deadline's first byte is 0) read as held by nobody.

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

/// The format byte of values that keep their holder.
const WITH_HOLDER: u8 = 1;

/// A stored value's parts.
struct Parts<'a> {
    deadline: u64,
    /// 0 for a value written before holders were kept.
    holder: u64,
    login: &'a str,
    value: &'a [u8],
}

fn split(v: &[u8]) -> Option<Parts<'_>> {
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let (deadline, holder, rest) = match v.split_first() {
        Some((&WITH_HOLDER, rest)) => (u64_at(rest, 0)?, u64_at(rest, 8)?, rest.get(16..)?),
        _ => (u64_at(v, 0)?, 0, v.get(8..)?),
    };
    let n = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    let login = std::str::from_utf8(rest.get(2..2 + n)?).ok()?;
    Some(Parts {
        deadline,
        holder,
        login,
        value: rest.get(2 + n..)?,
    })
}

/// Who saves a value: the connection taking it over (whoever held it), or the one holding it
/// (only while it still does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Becomes the holder.
    Take(u64),
    /// Saves only while still the holder.
    Keep(u64),
}

impl Expiring {
    /// Opens over `store`, counting its values per login (blocking: reads them all once).
    pub(crate) fn open(store: Arc<dyn SessionStore>) -> Result<Expiring, StorageError> {
        let mut logins: HashMap<String, usize> = HashMap::new();
        for id in store.idle_before(u64::MAX, usize::MAX)? {
            if let Some(v) = store.get(&id)? {
                if let Some(p) = split(&v).filter(|p| !p.login.is_empty()) {
                    *logins.entry(p.login.to_owned()).or_default() += 1;
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
            .and_then(|v| split(&v).map(|p| p.value.to_vec())))
    }

    /// Saves `value` of `login` with its deadline, as `claim` says. False when the claim is
    /// to keep it and another holder has it now (or it is gone): nothing was written.
    pub(crate) fn save(
        &self,
        client_id: &str,
        (login, claim): (Option<&str>, Claim),
        value: &[u8],
        (deadline_ms, previous): (u64, Option<u64>),
        flush: bool,
    ) -> Result<bool, StorageError> {
        let login = login.unwrap_or("");
        let n = login.len().min(usize::from(u16::MAX));
        let holder = match claim {
            Claim::Take(h) | Claim::Keep(h) => h,
        };
        let mut stored = Vec::with_capacity(19 + n + value.len());
        stored.push(WITH_HOLDER);
        stored.extend_from_slice(&deadline_ms.to_be_bytes());
        stored.extend_from_slice(&holder.to_be_bytes());
        stored.extend_from_slice(&(n as u16).to_be_bytes());
        stored.extend_from_slice(&login.as_bytes()[..n]);
        stored.extend_from_slice(value);
        let still_mine =
            |now: Option<&[u8]>| now.and_then(split).is_some_and(|p| p.holder == holder);
        let check: &dyn Fn(Option<&[u8]>) -> bool = match claim {
            Claim::Take(_) => &|_| true,
            Claim::Keep(_) => &still_mine,
        };
        let Some(new) = self
            .store
            .put_if(client_id, &stored, deadline_ms, previous, check)?
        else {
            return Ok(false);
        };
        if new {
            self.counted(login, true);
        }
        if flush {
            self.store.flush()?;
        }
        Ok(true)
    }

    /// Forgets `client_id` (last saved with `deadline_ms`).
    pub(crate) fn forget(&self, client_id: &str, deadline_ms: u64) -> Result<(), StorageError> {
        let login = self
            .store
            .get(client_id)?
            .and_then(|v| split(&v).map(|p| p.login.to_owned()));
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
            let (deadline, login) = split(&v).map_or((0, ""), |p| (p.deadline, p.login));
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
    use super::Claim;

    #[test]
    fn a_session_is_kept_until_its_deadline_then_swept_and_counted_per_login() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = crate::storage::tests::open(dir.path());
        let e = storage.mqtt_sessions.clone();
        let alice = (Some("alice"), Claim::Take(1));
        assert!(e
            .save("r1", alice, b"one", (1_000, None), true)
            .expect("store"));
        e.save("r2", alice, b"two", (5_000, None), false)
            .expect("store");
        e.save("r3", (None, Claim::Take(1)), b"three", (5_000, None), false)
            .expect("store");
        e.save("r1", alice, b"one again", (2_000, Some(1_000)), false)
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

    #[test]
    fn only_the_holder_saves_until_another_takes_the_session() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = crate::storage::tests::open(dir.path());
        let e = storage.mqtt_sessions.clone();
        let save = |claim, value: &[u8], deadline| {
            e.save("r1", (None, claim), value, (deadline, None), false)
                .expect("store")
        };
        assert!(!save(Claim::Keep(7), b"x", 1), "nothing to keep yet");
        assert!(save(Claim::Take(7), b"a", 1));
        assert!(save(Claim::Keep(7), b"b", 2));
        assert!(save(Claim::Take(9), b"c", 3), "another connection takes it");
        assert!(!save(Claim::Keep(7), b"d", 4), "the first one lost it");
        assert_eq!(e.load("r1").expect("store").as_deref(), Some(&b"c"[..]));
        assert!(save(Claim::Keep(9), b"e", 5));

        // A value written before holders were kept: held by nobody, readable, takeable.
        let mut legacy = 9_000u64.to_be_bytes().to_vec();
        legacy.extend_from_slice(&[0, 2, b'b', b'o', b'{', b'}']);
        e.store.put("old", &legacy, 9_000, None).expect("store");
        assert_eq!(e.load("old").expect("store").as_deref(), Some(&b"{}"[..]));
        let keep = e.save("old", (Some("bo"), Claim::Keep(7)), b"n", (1, None), false);
        assert!(!keep.expect("store"));
        let take = e.save(
            "old",
            (Some("bo"), Claim::Take(7)),
            b"n",
            (1, Some(9_000)),
            false,
        );
        assert!(take.expect("store"));
    }
}
