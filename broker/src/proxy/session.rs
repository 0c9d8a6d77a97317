//! Persistent MQTT sessions, which the proxy owns (rumqttd never holds a served filter): what a
//! session keeps between connections ([`Stored`]), deciding at CONNECT whether one resumes,
//! starts, expired or is refused ([`open`]), and the one connection that holds each client
//! id's session at a time ([`Sessions`]).
//!
//! The bridge keeps the stored bytes (in the same storage as WebSocket sessions, so a session
//! resumes on any node of a cluster); the content is this module's. Expiry is decided here,
//! at CONNECT, from the deadline saved with the session; the bridge's periodic sweep only
//! frees the room of sessions whose clients never came back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::connect::Connect;
use super::outflow::Sub;
use crate::served::{LoggedTopics, SessionClaim};

/// How long a new connection waits for the one holding its client id's session to save it.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What a persistent session keeps between connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// The login that made it (`None` without logins): no other may take it.
    pub(crate) user: Option<String>,
    /// The log the positions below belong to.
    pub(crate) epoch: String,
    /// Its served subscriptions.
    pub(crate) subs: Vec<Sub>,
    /// Every matching message at or below this seq is done: a resume continues after it.
    pub(crate) acked: u64,
    /// The highest seq sent (QoS 1/2 ones at or below go again with DUP).
    pub(crate) sent: u64,
    /// QoS 2 exchanges past PUBREC: (packet id, seq).
    pub(crate) released: Vec<(u16, u64)>,
    /// Session Expiry Interval in seconds, as granted.
    pub(crate) expiry_s: u32,
    /// When it expires unless saved again (ms since the Unix epoch).
    pub(crate) deadline_ms: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Limits and defaults of persistent sessions (`broker.max_sessions` and friends).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    /// Sessions stored at once; a new one past this is refused.
    pub(crate) max: usize,
    /// The same per login (with `broker.users`).
    pub(crate) max_per_login: usize,
    /// The expiry of 3.1.1 sessions and the most an MQTT 5 client gets, in seconds.
    pub(crate) max_expiry_s: u32,
    /// Deliver QoS 0 messages logged while a session was away.
    pub(crate) queue_qos0: bool,
}

/// Which connection holds each client id's session.
#[derive(Debug)]
pub(crate) struct Sessions {
    pub(crate) limits: SessionLimits,
    holders: Mutex<HashMap<String, Holder>>,
    next: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Holder {
    id: u64,
    /// Cancelled when a newer connection wants the session.
    taken: CancellationToken,
    /// Held while the session is in use; a newer connection waits for it.
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// One connection's hold on its client id's session; released when dropped.
#[derive(Debug)]
pub(crate) struct Hold {
    sessions: Arc<Sessions>,
    client_id: String,
    id: u64,
    /// Cancelled when a newer connection of the same client id wants the session.
    pub(crate) taken: CancellationToken,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut holders = self.sessions.holders.lock();
        if holders
            .get(&self.client_id)
            .is_some_and(|h| h.id == self.id)
        {
            holders.remove(&self.client_id);
        }
    }
}

impl Sessions {
    pub(crate) fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits,
            holders: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Takes `client_id`'s session from the connection holding it (which saves it and lets
    /// go); `None` when it did not let go in time.
    async fn hold(self: &Arc<Self>, client_id: &str) -> Option<Hold> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let taken = CancellationToken::new();
        let lock = {
            let mut holders = self.holders.lock();
            let lock = holders
                .get(client_id)
                .map(|h| {
                    h.taken.cancel();
                    h.lock.clone()
                })
                .unwrap_or_default();
            holders.insert(
                client_id.to_owned(),
                Holder {
                    id,
                    taken: taken.clone(),
                    lock: lock.clone(),
                },
            );
            lock
        };
        let guard = tokio::time::timeout(TAKEOVER_WAIT, lock.lock_owned())
            .await
            .ok()?;
        Some(Hold {
            sessions: self.clone(),
            client_id: client_id.to_owned(),
            id,
            taken,
            _guard: guard,
        })
    }
}

/// Why a session was not saved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SaveError {
    /// Another connection of the client id holds it now (on another node): this one lost it.
    #[error("taken by another connection")]
    Lost,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::served::SessionStoreError),
}

/// A token for one connection in the store's revision check (never 0, which marks a session
/// saved before holders were kept).
fn holder() -> u64 {
    rand::random::<u64>() | 1
}

/// A session this connection continues or started.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client_id: String,
    pub(crate) stored: Stored,
    /// The deadline it was last saved with.
    pub(crate) saved_deadline: Option<u64>,
    /// It existed before this CONNECT (CONNACK's session present).
    pub(crate) present: bool,
    pub(crate) hold: Hold,
    /// This connection's token in the store's revision check, and whether it has taken the
    /// session yet (its first save does).
    holder: u64,
    taken: bool,
}

/// Why a CONNECT gets no session.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Another login's session (CONNACK not authorized).
    NotOwner,
    /// `broker.max_sessions` reached (MQTT 5 quota exceeded; 3.1.1 server unavailable).
    Full,
    /// The store failed, or the previous connection did not let go (server unavailable).
    Unavailable,
    /// MQTT 3.1.1: an empty client id cannot have a persistent session (identifier rejected).
    EmptyId,
}

impl Refused {
    /// The CONNACK that says so.
    pub(crate) fn connack(&self, level: u8) -> &'static [u8] {
        match (self, level) {
            (Refused::NotOwner, 5) => &[0x20, 0x03, 0x00, 0x87, 0x00],
            (Refused::NotOwner, _) => &[0x20, 0x02, 0x00, 0x05],
            (Refused::Full, 5) => &[0x20, 0x03, 0x00, 0x97, 0x00],
            (Refused::Unavailable, 5) => &[0x20, 0x03, 0x00, 0x88, 0x00],
            (Refused::EmptyId, _) => &[0x20, 0x02, 0x00, 0x02],
            (_, _) => &[0x20, 0x02, 0x00, 0x03],
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Refused::NotOwner => "session_owner",
            Refused::Full => "max_sessions",
            Refused::Unavailable => "session_store",
            Refused::EmptyId => "client_id",
        }
    }
}

/// The session `connect` continues or starts: `Ok(None)` when its session ends with the
/// connection and no stored one is resumed.
pub(crate) async fn open(
    topics: &Arc<dyn LoggedTopics>,
    sessions: &Arc<Sessions>,
    connect: &Connect,
    login: Option<&str>,
) -> Result<Option<Session>, Refused> {
    let keeps = connect.persistent();
    if connect.client_id.is_empty() {
        // MQTT 5: rumqttd assigns an id, which the client learns from the CONNACK; no session
        // is kept under it (the client could not name it again before this one ends).
        return if connect.level == 5 || connect.clean {
            Ok(None)
        } else {
            refuse(Refused::EmptyId)
        };
    }
    // A clean connection ends any stored session of its client id; with none stored at all
    // (the common case) there is nothing to look up.
    if !keeps && connect.clean && topics.session_count() == 0 {
        return Ok(None);
    }
    let client_id = connect.client_id.as_str();
    let Some(hold) = sessions.hold(client_id).await else {
        warn!(
            client_id,
            "the connection holding this session did not let go in time"
        );
        return refuse(Refused::Unavailable);
    };
    let old = still_stored(topics, connect, login).await?;
    let max_expiry = sessions.limits.max_expiry_s;
    let expiry_s = if connect.level == 5 {
        connect.session_expiry.min(max_expiry)
    } else {
        max_expiry
    };
    match old {
        Some(mut stored) => {
            let saved_deadline = Some(stored.deadline_ms);
            stored.expiry_s = expiry_s;
            let mut session = Session {
                client_id: client_id.to_owned(),
                stored,
                saved_deadline,
                present: true,
                hold,
                holder: holder(),
                taken: false,
            };
            // Taken at once: a connection still holding it (on another node) loses it at its
            // next save.
            if let Err(e) = session.save(topics, false).await {
                warn!(client_id, error = %e, "could not take an MQTT session");
                return refuse(Refused::Unavailable);
            }
            Ok(Some(session))
        }
        None if !keeps => Ok(None),
        None => start(topics, sessions, (client_id, login), expiry_s, hold).await,
    }
}

/// Counts a refusal and returns it.
fn refuse<T>(r: Refused) -> Result<T, Refused> {
    crate::proxy::refused(r.label());
    Err(r)
}

/// The stored session `connect` may continue: `None` when there is none, it expired, or the
/// client starts clean (then it is forgotten). Refused when it belongs to another login.
async fn still_stored(
    topics: &Arc<dyn LoggedTopics>,
    connect: &Connect,
    login: Option<&str>,
) -> Result<Option<Stored>, Refused> {
    let client_id = connect.client_id.as_str();
    let loaded = match topics.load_session(client_id).await {
        Ok(v) => v,
        Err(e) => {
            warn!(client_id, error = %e, "could not read an MQTT session");
            return refuse(Refused::Unavailable);
        }
    };
    let Some(stored) = loaded.and_then(|v| match serde_json::from_slice::<Stored>(&v) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(client_id, error = %e, "an unreadable MQTT session was dropped");
            None
        }
    }) else {
        return Ok(None);
    };
    if stored.user.as_deref() != login && login.is_some() {
        info!(client_id, "refused: the session belongs to another login");
        return refuse(Refused::NotOwner);
    }
    let expired = stored.deadline_ms <= now_ms();
    if !connect.clean && !expired {
        return Ok(Some(stored));
    }
    if expired {
        metrics::counter!("mqws_mqtt_sessions_expired_total").increment(1);
    }
    if let Err(e) = topics.forget_session(client_id, stored.deadline_ms).await {
        warn!(client_id, error = %e, "could not forget an MQTT session");
    }
    Ok(None)
}

/// A new session of `client_id` for `login`, within the limits, stored before it is used.
async fn start(
    topics: &Arc<dyn LoggedTopics>,
    sessions: &Arc<Sessions>,
    (client_id, login): (&str, Option<&str>),
    expiry_s: u32,
    hold: Hold,
) -> Result<Option<Session>, Refused> {
    if topics.session_count() >= sessions.limits.max {
        warn!(
            client_id,
            "refused a new MQTT session: broker.max_sessions reached"
        );
        return refuse(Refused::Full);
    }
    if let Some(user) = login {
        if topics.sessions_of(user) >= sessions.limits.max_per_login {
            warn!(
                client_id,
                login = user,
                "refused a new MQTT session: broker.max_sessions_per_login reached"
            );
            return refuse(Refused::Full);
        }
    }
    let mut session = Session {
        client_id: client_id.to_owned(),
        stored: Stored {
            user: login.map(str::to_owned),
            epoch: topics.epoch(),
            subs: Vec::new(),
            acked: 0,
            sent: 0,
            released: Vec::new(),
            expiry_s,
            deadline_ms: 0,
        },
        saved_deadline: None,
        present: false,
        hold,
        holder: holder(),
        taken: false,
    };
    if let Err(e) = session.save(topics, true).await {
        warn!(client_id, error = %e, "could not store a new MQTT session");
        return refuse(Refused::Unavailable);
    }
    Ok(Some(session))
}

impl Session {
    /// Saves the session, to expire `expiry_s` from now unless saved again.
    /// Fails with [`Lost`] when another connection (on another node) holds it now.
    pub(crate) async fn save(
        &mut self,
        topics: &Arc<dyn LoggedTopics>,
        flush: bool,
    ) -> Result<(), SaveError> {
        let deadline = now_ms().saturating_add(u64::from(self.stored.expiry_s) * 1000);
        self.stored.deadline_ms = deadline;
        let value = serde_json::to_vec(&self.stored)
            .map_err(|e| crate::served::SessionStoreError(e.to_string()))?;
        let claim = if self.taken {
            SessionClaim::Keep(self.holder)
        } else {
            SessionClaim::Take(self.holder)
        };
        let saved = topics
            .save_session(
                &self.client_id,
                (self.stored.user.as_deref(), claim),
                value,
                (deadline, self.saved_deadline),
                flush,
            )
            .await?;
        if !saved {
            return Err(SaveError::Lost);
        }
        self.taken = true;
        self.saved_deadline = Some(deadline);
        Ok(())
    }

    /// The session ends (its expiry is 0): forgets it.
    pub(crate) async fn forget(&mut self, topics: &Arc<dyn LoggedTopics>) {
        if let Some(d) = self.saved_deadline.take() {
            if let Err(e) = topics.forget_session(&self.client_id, d).await {
                warn!(client_id = %self.client_id, error = %e, "could not forget an MQTT session");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_use_each_version_s_codes() {
        assert_eq!(Refused::Full.connack(5), &[0x20, 3, 0, 0x97, 0]);
        assert_eq!(Refused::Full.connack(4), &[0x20, 2, 0, 3]);
        assert_eq!(Refused::NotOwner.connack(5), &[0x20, 3, 0, 0x87, 0]);
        assert_eq!(Refused::NotOwner.connack(4), &[0x20, 2, 0, 5]);
    }

    #[tokio::test]
    async fn a_newer_connection_takes_the_session_once_the_older_lets_go() {
        let sessions = Arc::new(Sessions::new(SessionLimits {
            max: 10,
            max_per_login: 10,
            max_expiry_s: 60,
            queue_qos0: false,
        }));
        let first = sessions.hold("r1").await.expect("free");
        let s = sessions.clone();
        let second = tokio::spawn(async move { s.hold("r1").await.map(|h| h.id) });
        first.taken.cancelled().await;
        assert!(!second.is_finished());
        drop(first);
        assert!(second.await.expect("the task").is_some());
        assert!(
            sessions.holders.lock().is_empty(),
            "the last hold removed its entry"
        );
    }
}
