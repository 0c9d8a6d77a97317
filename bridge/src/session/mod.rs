//! Server-held sessions: what lets a client that dropped come back with `session` +
//! `resume_token` and continue where it was.
//!
//! The cursor moves only on the client's `ack` (contract 2.3): without acks a resume replays
//! everything after the log head at the session's creation. A new session is not written at
//! `hello`: its signed resume token ([`token`]) carries what it needs until it first changes,
//! so a session created just before a crash still resumes. Filter changes are written and
//! flushed; acks and delivery progress are saved when the connection ends (a crash loses only
//! acks, and a resume then repeats messages instead of missing any).
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
use token::{Claims, Signer, MAX_FILTER_BYTES};

pub(crate) mod bucket;
pub(crate) mod machine;
mod token;

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
    /// The log head when the session was created (or its epoch last changed): where a resume
    /// continues before the client acks anything. Sessions stored by releases before this
    /// field have 0 (replay all that is retained).
    #[serde(default)]
    pub(crate) start: u64,
    /// Last seq written to the client: the most it may acknowledge.
    pub(crate) delivered: u64,
    /// Last seq the client acknowledged, once it sends acks.
    pub(crate) acked: Option<u64>,
    /// Last activity, ms since the Unix epoch.
    pub(crate) last_seen_ms: u64,
}

impl Stored {
    /// Where a resume continues: after the last ack, else after the session's start. Never
    /// after what was merely written to a socket.
    pub(crate) fn cursor(&self) -> u64 {
        self.acked.unwrap_or(self.start)
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
    signer: Signer,
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

/// The connection claiming a session in [`Sessions::take`], and where a new one would start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claimant<'a> {
    /// The connection's queue (closed with 4002 if a newer connection takes the session).
    pub(crate) outbox: &'a Arc<Outbox>,
    /// The log's epoch.
    pub(crate) epoch: &'a str,
    /// The log's head now: where a new session's cursor starts.
    pub(crate) head: u64,
    /// The filters of a new session.
    pub(crate) filters: &'a [String],
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
    /// Sessions kept in `store`; tokens signed with the store's key. Blocking: reads (or first
    /// creates and flushes) the key.
    pub(crate) fn open(
        store: Arc<dyn SessionStore>,
        ttl: Duration,
        max: usize,
    ) -> Result<Sessions, StorageError> {
        let signer = Signer::new(store.secret()?);
        Ok(Sessions {
            store,
            signer,
            live: Mutex::new(HashMap::new()),
            ttl,
            max,
        })
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
    /// new one starting at `claimant.head` with `claimant.filters`. Either way this connection now
    /// holds it; an older holder is closed with 4002.
    pub(crate) async fn take(
        &self,
        requested: Option<(&str, &str)>,
        conn: u64,
        claimant: Claimant<'_>,
    ) -> Result<Held, StorageError> {
        if let Some((id, token)) = requested {
            if let Some(state) = self.find(id, token)? {
                self.take_over(id, conn).await;
                // Read again: the previous holder saved its cursor on the way out.
                let state = self.load(id)?.unwrap_or(state);
                let ended = self.register(id, conn, claimant.outbox);
                return Ok(Held {
                    id: id.to_owned(),
                    token: token.to_owned(),
                    resumed: true,
                    state,
                    ended,
                });
            }
        }
        self.make_room()?;
        let id = format!("s-{:032x}", rand::random::<u128>());
        let small = serde_json::to_vec(claimant.filters).map_or(0, |v| v.len()) <= MAX_FILTER_BYTES;
        let claims = Claims {
            session: id.clone(),
            epoch: claimant.epoch.to_owned(),
            start: claimant.head,
            filters: small.then(|| claimant.filters.to_vec()),
            created_ms: now_ms(),
            nonce: format!("{:032x}", rand::random::<u128>()),
        };
        let token = self.signer.sign(&claims);
        let state = Stored {
            token_sha256: sha256_hex(&token),
            filters: claimant.filters.to_vec(),
            epoch: claimant.epoch.to_owned(),
            start: claimant.head,
            delivered: claimant.head,
            acked: None,
            last_seen_ms: now_ms(),
        };
        if !small {
            // The token cannot carry these filters: save the session now, durably.
            self.store(&id, None, &state)?;
            self.store.flush()?;
        }
        let ended = self.register(&id, conn, claimant.outbox);
        Ok(Held {
            id,
            token,
            resumed: false,
            state,
            ended,
        })
    }

    /// The state of session `id` if `token` proves it and it has not expired: the stored one,
    /// or, when none was stored yet (the server died first), the one its signed token carries.
    fn find(&self, id: &str, token: &str) -> Result<Option<Stored>, StorageError> {
        let ttl = self.ttl_ms();
        if let Some(state) = self.load(id)? {
            let good: bool = state
                .token_sha256
                .as_bytes()
                .ct_eq(sha256_hex(token).as_bytes())
                .into();
            let fresh = now_ms().saturating_sub(state.last_seen_ms) <= ttl;
            debug!(good, fresh, "stored session found");
            return Ok((good && fresh).then_some(state));
        }
        let Some(claims) = self.signer.verify(token).filter(|c| c.session == id) else {
            return Ok(None);
        };
        // Created less than a TTL ago, so it cannot have expired; it was never saved.
        if now_ms().saturating_sub(claims.created_ms) > ttl {
            return Ok(None);
        }
        let Some(filters) = claims.filters else {
            return Ok(None);
        };
        metrics::counter!("mqws_sessions_restored_from_token_total").increment(1);
        info!(session = id, "session restored from its resume token");
        Ok(Some(Stored {
            token_sha256: sha256_hex(token),
            filters,
            epoch: claims.epoch,
            start: claims.start,
            delivered: claims.start,
            acked: None,
            last_seen_ms: now_ms(),
        }))
    }

    /// Saves `state` of session `id` now; with `flush`, durably (filter changes). Blocking.
    pub(crate) fn save(&self, id: &str, state: &Stored, flush: bool) -> Result<(), StorageError> {
        let mut state = state.clone();
        state.last_seen_ms = now_ms();
        let before = self.load(id)?;
        self.store(id, before.as_ref(), &state)?;
        if flush {
            self.store.flush()?;
        }
        Ok(())
    }

    async fn take_over(&self, id: &str, conn: u64) {
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
        if let Err(e) = self.save(&held.id, state, false) {
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
mod tests;
