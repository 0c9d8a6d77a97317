//! Server-held sessions: what lets a client that dropped come back with `session` +
//! `resume_token` and continue where it was.
//!
//! Kept as JSON values in the storage layer's [`SessionStore`], which also orders them by last
//! activity, so expiry and the count bound remove the longest-idle first without a scan. Only
//! the SHA-256 of a resume token is stored; tokens are compared in constant time.
//! At most one connection holds a session: a newer one closes the older with 4002 and waits for
//! it to save its cursor before reading it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::fanout::Outbox;
use crate::protocol::close;
use crate::storage::{SessionStore, StorageError};

/// How long a takeover waits for the older connection to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// What is kept of a session between connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stored {
    token_sha256: String,
    /// The session's filters.
    pub(crate) filters: Vec<String>,
    /// The log epoch the cursor belongs to.
    pub(crate) epoch: String,
    /// Last seq written to the client.
    pub(crate) delivered: u64,
    /// Last seq the client acknowledged, once it sends acks.
    pub(crate) acked: Option<u64>,
    /// Last activity, ms since the Unix epoch.
    pub(crate) last_seen_ms: u64,
}

impl Stored {
    /// Where a resume continues: after the last ack if the client acks, else after the last
    /// delivered message.
    pub(crate) fn cursor(&self) -> u64 {
        self.acked.unwrap_or(self.delivered)
    }
}

struct Live {
    conn: u64,
    outbox: Arc<Outbox>,
    ended: CancellationToken,
}

/// The session registry.
pub(crate) struct Sessions {
    store: Arc<dyn SessionStore>,
    live: Mutex<HashMap<String, Live>>,
    ttl: Duration,
    max: usize,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.count())
            .field("ttl", &self.ttl)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// A session this connection holds; give it back with [`Sessions::release`].
#[derive(Debug)]
pub(crate) struct Held {
    /// Session id.
    pub(crate) id: String,
    /// Resume token (only in memory; the store has its hash).
    pub(crate) token: String,
    /// Whether it existed before this hello.
    pub(crate) resumed: bool,
    /// Its state when taken.
    pub(crate) state: Stored,
    ended: CancellationToken,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Sessions {
    /// Sessions kept in `store`.
    pub(crate) fn new(store: Arc<dyn SessionStore>, ttl: Duration, max: usize) -> Sessions {
        Sessions {
            store,
            live: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    /// Sessions stored.
    pub(crate) fn count(&self) -> usize {
        self.store.count()
    }

    /// A stored session; one that does not decode is treated as unknown (the client gets a
    /// new session) and reported.
    fn load(&self, id: &str) -> Result<Option<Stored>, StorageError> {
        let Some(v) = self.store.get(id)? else {
            return Ok(None);
        };
        match serde_json::from_slice(&v) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                warn!(session = id, error = %e, "stored session does not decode; ignoring it");
                Ok(None)
            }
        }
    }

    fn store(&self, id: &str, old: Option<&Stored>, new: &Stored) -> Result<(), StorageError> {
        let value = serde_json::to_vec(new).map_err(|e| StorageError::Encoding(e.to_string()))?;
        self.store
            .put(id, &value, new.last_seen_ms, old.map(|o| o.last_seen_ms))?;
        Ok(())
    }

    fn forget(&self, id: &str, state: &Stored) -> Result<(), StorageError> {
        self.store.delete(id, state.last_seen_ms)?;
        Ok(())
    }

    /// Takes the session `id` if `token` proves it and it has not expired; otherwise creates a
    /// new one. Either way this connection now holds it; an older holder is closed with 4002.
    pub(crate) async fn take(
        &self,
        requested: Option<(&str, &str)>,
        conn: u64,
        outbox: &Arc<Outbox>,
        epoch: &str,
    ) -> Result<Held, StorageError> {
        if let Some((id, token)) = requested {
            if let Some(state) = self.load(id)? {
                let good: bool = state
                    .token_sha256
                    .as_bytes()
                    .ct_eq(sha256_hex(token).as_bytes())
                    .into();
                let fresh = now_ms().saturating_sub(state.last_seen_ms) <= self.ttl_ms();
                if good && fresh {
                    self.take_over(id, conn, outbox).await;
                    // Read again: the previous holder saved its cursor on the way out.
                    let state = self.load(id)?.unwrap_or(state);
                    let ended = self.register(id, conn, outbox);
                    return Ok(Held {
                        id: id.to_owned(),
                        token: token.to_owned(),
                        resumed: true,
                        state,
                        ended,
                    });
                }
                debug!(good, fresh, "session not resumed");
            }
        }
        self.make_room()?;
        let id = format!("s-{:032x}", rand::random::<u128>());
        // 256 random bits; only its hash is stored.
        let token = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let state = Stored {
            token_sha256: sha256_hex(&token),
            filters: Vec::new(),
            epoch: epoch.to_owned(),
            delivered: 0,
            acked: None,
            last_seen_ms: now_ms(),
        };
        self.store(&id, None, &state)?;
        let ended = self.register(&id, conn, outbox);
        Ok(Held {
            id,
            token,
            resumed: false,
            state,
            ended,
        })
    }

    async fn take_over(&self, id: &str, conn: u64, _outbox: &Arc<Outbox>) {
        let older = {
            let live = self.live.lock();
            live.get(id)
                .filter(|l| l.conn != conn)
                .map(|l| (l.outbox.clone(), l.ended.clone()))
        };
        if let Some((outbox, ended)) = older {
            info!(
                session = id,
                "session taken over by a newer connection (4002)"
            );
            outbox.abort(close::TAKEN_OVER);
            if tokio::time::timeout(TAKEOVER_WAIT, ended.cancelled())
                .await
                .is_err()
            {
                warn!(session = id, "older connection did not end in time");
            }
        }
    }

    fn register(&self, id: &str, conn: u64, outbox: &Arc<Outbox>) -> CancellationToken {
        let ended = CancellationToken::new();
        self.live.lock().insert(
            id.to_owned(),
            Live {
                conn,
                outbox: outbox.clone(),
                ended: ended.clone(),
            },
        );
        ended
    }

    /// Saves the session's state at the end of a connection and lets a waiting takeover go on.
    pub(crate) fn release(&self, held: &Held, conn: u64, state: &Stored) {
        let mut state = state.clone();
        state.last_seen_ms = now_ms();
        let before = self.load(&held.id).ok().flatten();
        if let Err(e) = self.store(&held.id, before.as_ref(), &state) {
            warn!(error = %e, "could not save the session");
        }
        {
            let mut live = self.live.lock();
            if live.get(&held.id).is_some_and(|l| l.conn == conn) {
                live.remove(&held.id);
            }
        }
        held.ended.cancel();
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Forgets the longest-idle sessions not in use until there is room for one more.
    fn make_room(&self) -> Result<(), StorageError> {
        let excess = (self.count() + 1).saturating_sub(self.max);
        if excess == 0 {
            return Ok(());
        }
        let live: Vec<String> = self.live.lock().keys().cloned().collect();
        for id in self.store.idle_before(u64::MAX, excess + live.len())? {
            if self.count() < self.max {
                break;
            }
            if live.contains(&id) {
                continue;
            }
            if let Some(state) = self.load(&id)? {
                self.forget(&id, &state)?;
                metrics::counter!("mqws_sessions_evicted_total").increment(1);
            }
        }
        Ok(())
    }

    /// Forgets sessions idle longer than the TTL, at most `limit` per call. Returns how many.
    pub(crate) fn expire(&self, limit: usize) -> Result<usize, StorageError> {
        let cutoff = now_ms().saturating_sub(self.ttl_ms());
        let live: Vec<String> = self.live.lock().keys().cloned().collect();
        let mut n = 0;
        for id in self.store.idle_before(cutoff, limit + live.len())? {
            if live.contains(&id) {
                continue;
            }
            if let Some(state) = self.load(&id)? {
                self.forget(&id, &state)?;
                n += 1;
            }
        }
        if n > 0 {
            metrics::counter!("mqws_sessions_expired_total").increment(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(ttl: Duration, max: usize) -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::storage::tests::open(dir.path());
        (dir, Sessions::new(storage.sessions, ttl, max))
    }

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(10, 1000).0)
    }

    #[tokio::test]
    async fn resume_needs_the_right_token() {
        let (_d, s) = setup(Duration::from_secs(60), 10);
        let held = s.take(None, 1, &outbox(), "e").await.expect("new");
        assert!(!held.resumed);
        let mut state = held.state.clone();
        state.delivered = 42;
        state.filters = vec!["a/#".to_owned()];
        s.release(&held, 1, &state);
        let wrong = s
            .take(Some((&held.id, "nope")), 2, &outbox(), "e")
            .await
            .expect("wrong");
        assert!(!wrong.resumed);
        assert_ne!(wrong.id, held.id);
        let back = s
            .take(Some((&held.id, &held.token)), 3, &outbox(), "e")
            .await
            .expect("back");
        assert!(back.resumed);
        assert_eq!(
            (back.state.delivered, back.state.filters.clone()),
            (42, vec!["a/#".to_owned()])
        );
    }

    #[tokio::test]
    async fn takeover_closes_the_older_connection_with_4002() {
        let (_d, s) = setup(Duration::from_secs(60), 10);
        let first_box = outbox();
        let held = s.take(None, 1, &first_box, "e").await.expect("new");
        let s = Arc::new(s);
        let s2 = s.clone();
        let (id, token) = (held.id.clone(), held.token.clone());
        let newer =
            tokio::spawn(async move { s2.take(Some((&id, &token)), 2, &outbox(), "e").await });
        first_box.aborted().await;
        assert_eq!(first_box.abort_code(), Some(close::TAKEN_OVER));
        let mut state = held.state.clone();
        state.delivered = 7;
        s.release(&held, 1, &state);
        let newer = newer.await.expect("join").expect("take");
        assert!(newer.resumed);
        assert_eq!(newer.state.delivered, 7, "newer reads what the older saved");
    }

    #[tokio::test]
    async fn expiry_and_count_bound() {
        let (_d, s) = setup(Duration::from_millis(1), 2);
        let a = s.take(None, 1, &outbox(), "e").await.expect("a");
        s.release(&a, 1, &a.state);
        // Idle order has millisecond resolution.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let b = s.take(None, 2, &outbox(), "e").await.expect("b");
        s.release(&b, 2, &b.state);
        let c = s.take(None, 3, &outbox(), "e").await.expect("c");
        assert_eq!(s.count(), 2, "oldest idle evicted at the bound");
        assert!(s.load(&a.id).expect("load").is_none());
        s.release(&c, 3, &c.state);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.expire(100).expect("expire"), 2);
        assert_eq!(s.count(), 0);
        let late = s
            .take(Some((&c.id, &c.token)), 4, &outbox(), "e")
            .await
            .expect("late");
        assert!(!late.resumed, "expired sessions are not resumed");
    }
}
