//! Sessions and retained values in JetStream key-value buckets that every node of a cluster
//! shares, so a `session` + `resume_token` from one node is accepted by every other, and a
//! retained value set through one node is restored by all.
//!
//! Buckets: `<stream>-sessions` (one value per session, the bucket's `max_age` is `session.ttl`:
//! JetStream expires a session not written for that long, and every save writes it again) and
//! `<stream>-retained` (topic → payload). Keys are the hex of the session id or topic, since
//! KV keys allow only a few characters. The signing key of resume tokens is the sessions
//! bucket's `signing-key`, created once by whichever node comes first; NATS permissions must
//! keep the bucket from anyone who must not forge tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use super::log::Inner;
use super::{js_error, Answer, ANSWER_WAIT};
use crate::storage::{RetainedStore, RetainedValue, SessionStore, StorageError};

const SECRET_KEY: &str = "signing-key";
/// Reads and checked writes of a session before giving up when other writers keep coming
/// between them.
const CHECKED_TRIES: usize = 3;

/// Opens (or creates) a bucket.
fn bucket(inner: &Inner, name: String, config: kv::Config) -> Result<kv::Store, StorageError> {
    inner.wait(async {
        match inner
            .js
            .get_key_value(&name)
            .answer("open a key-value bucket")
            .await
        {
            Ok(store) => Ok(store),
            Err(_) => {
                inner
                    .js
                    .create_key_value(kv::Config {
                        bucket: name,
                        ..config
                    })
                    .answer("create a key-value bucket")
                    .await
            }
        }
    })
}

/// Brings the limits of bucket `name`'s stream in line with the configuration (a bucket
/// created earlier keeps the limits it was created with otherwise). `max_messages` bounds the
/// keys (with a history of one, one message per key; JetStream drops the oldest written).
fn set_limits(
    inner: &Inner,
    name: &str,
    max_age: std::time::Duration,
    max_messages: i64,
) -> Result<(), StorageError> {
    inner.wait(async {
        let stream_name = format!("KV_{name}");
        let mut stream = inner
            .js
            .get_stream(&stream_name)
            .answer("open a key-value bucket's stream")
            .await?;
        let mut config = stream
            .info()
            .answer("a key-value bucket's limits")
            .await?
            .config
            .clone();
        // Buckets refuse new writes at a limit (discard new); at this one the oldest go.
        let discard = async_nats::jetstream::stream::DiscardPolicy::Old;
        if config.max_age == max_age
            && config.max_messages == max_messages
            && config.discard == discard
        {
            return Ok(());
        }
        config.max_age = max_age;
        config.max_messages = max_messages;
        config.discard = discard;
        inner
            .js
            .update_stream(&config)
            .answer("set a key-value bucket's limits")
            .await?;
        Ok(())
    })
}

/// Whether `key` holds a value (the stores count what they hold).
async fn exists(store: &kv::Store, key: &str, what: &str) -> Result<bool, StorageError> {
    let value = store.get(key.to_owned()).answer(what).await?;
    Ok(value.is_some())
}

/// Sessions in `<stream>-sessions`, expired by the bucket's `max_age` (`session.ttl`) and held
/// to `session.max` by its message limit: JetStream drops the session saved longest ago. The
/// key that signs resume tokens is in `<stream>-keys`, which no limit touches.
pub(crate) struct JsSessions {
    inner: Arc<Inner>,
    store: kv::Store,
    secret: [u8; 32],
    count: AtomicUsize,
}

impl JsSessions {
    /// The bucket `<stream>-<suffix>`; `max`: its message limit (`None`: no limit).
    pub(crate) fn open(
        inner: Arc<Inner>,
        suffix: &str,
        ttl: std::time::Duration,
        max: Option<usize>,
        replicas: usize,
    ) -> Result<JsSessions, StorageError> {
        let name = format!("{}-{suffix}", inner.stream_name());
        let config = kv::Config {
            history: 1,
            max_age: ttl,
            num_replicas: replicas,
            ..Default::default()
        };
        let store = bucket(&inner, name.clone(), config)?;
        let max = max.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        set_limits(&inner, &name, ttl, max)?;
        let keys = kv::Config {
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        };
        let keys = bucket(&inner, format!("{}-keys", inner.stream_name()), keys)?;
        let secret = signing_key(&inner, &keys)?;
        let sessions = JsSessions {
            inner,
            store,
            secret,
            count: AtomicUsize::new(0),
        };
        sessions.recount();
        Ok(sessions)
    }

    /// Takes the bucket's count (every node's sessions, less what JetStream dropped).
    fn recount(&self) {
        let n = self.inner.wait(async {
            match self.store.status().answer("bucket status").await {
                Ok(s) => usize::try_from(s.values()).ok(),
                Err(_) => None,
            }
        });
        if let Some(n) = n {
            self.count.store(n, Ordering::Relaxed);
        }
    }
}

impl SessionStore for JsSessions {
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self
            .inner
            .wait(self.store.get(hex::encode(id)).answer("read a session"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(
        &self,
        id: &str,
        value: &[u8],
        _seen_ms: u64,
        _previous_seen_ms: Option<u64>,
    ) -> Result<bool, StorageError> {
        let key = hex::encode(id);
        let new = self.inner.wait(async {
            let existed = exists(&self.store, &key, "read a session").await?;
            self.store
                .put(key, Bytes::copy_from_slice(value))
                .answer("save a session")
                .await?;
            Ok::<_, StorageError>(!existed)
        })?;
        if new {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(new)
    }

    fn put_if(
        &self,
        id: &str,
        value: &[u8],
        _seen_ms: u64,
        _previous_seen_ms: Option<u64>,
        check: &dyn Fn(Option<&[u8]>) -> bool,
    ) -> Result<Option<bool>, StorageError> {
        let key = hex::encode(id);
        let new = self.inner.wait(async {
            let mut last = super::js_error("save a session", "not tried");
            for _ in 0..CHECKED_TRIES {
                let entry = self
                    .store
                    .entry(key.clone())
                    .answer("read a session")
                    .await?;
                let revision = entry.as_ref().map(|e| e.revision);
                let now = entry
                    .as_ref()
                    .filter(|e| e.operation == kv::Operation::Put)
                    .map(|e| e.value.as_ref());
                if !check(now) {
                    return Ok(None);
                }
                let new = now.is_none();
                let value = Bytes::copy_from_slice(value);
                // Written only if nobody wrote since the read (its revision); else read again.
                let conflict = match revision {
                    Some(r) => {
                        let written = self.store.update(key.clone(), value, r);
                        match written.answer("save a session").await {
                            Ok(_) => return Ok(Some(new)),
                            Err(e) => e,
                        }
                    }
                    None => match self
                        .store
                        .create(key.clone(), value)
                        .answer("save a session")
                        .await
                    {
                        Ok(_) => return Ok(Some(new)),
                        Err(e) => e,
                    },
                };
                last = conflict;
            }
            Err(last)
        })?;
        if new == Some(true) {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(new)
    }

    fn delete(&self, id: &str, _seen_ms: u64) -> Result<bool, StorageError> {
        let key = hex::encode(id);
        let existed = self.inner.wait(async {
            let existed = exists(&self.store, &key, "read a session").await?;
            self.store.purge(key).answer("forget a session").await?;
            Ok::<_, StorageError>(existed)
        })?;
        if existed {
            let _ = self
                .count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        }
        Ok(existed)
    }

    fn idle_before(&self, _before_ms: u64, _limit: usize) -> Result<Vec<String>, StorageError> {
        // The bucket's max_age (session.ttl) and message limit (session.max) forget sessions
        // by themselves; nothing to list. The caller asks on its periodic expiry step, which
        // is when the count catches up with other nodes' sessions and JetStream's removals.
        self.recount();
        Ok(Vec::new())
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn flush(&self) -> Result<(), StorageError> {
        // Every put returned after JetStream stored it.
        Ok(())
    }

    fn secret(&self) -> Result<[u8; 32], StorageError> {
        Ok(self.secret)
    }
}

/// The signing key in `keys`: created by the first node, read by the others.
fn signing_key(inner: &Inner, keys: &kv::Store) -> Result<[u8; 32], StorageError> {
    inner.wait(async {
        let fresh: [u8; 32] = rand::random();
        let created = keys.create(SECRET_KEY, Bytes::copy_from_slice(&fresh));
        match tokio::time::timeout(ANSWER_WAIT, created).await {
            Ok(Ok(_)) => return Ok(fresh),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Ok(Err(e)) => return Err(js_error("create the signing key", e)),
            Err(_) => return Err(js_error("create the signing key", "no answer")),
        }
        let stored = keys
            .get(SECRET_KEY)
            .answer("read the signing key")
            .await?
            .ok_or_else(|| js_error("read the signing key", "it vanished"))?;
        <[u8; 32]>::try_from(stored.as_ref()).map_err(|_| StorageError::Corrupt {
            what: "the session signing key".to_owned(),
            detail: format!("{} bytes instead of 32", stored.len()),
        })
    })
}

/// Retained values in `<stream>-retained`.
pub(crate) struct JsRetained {
    inner: Arc<Inner>,
    store: kv::Store,
    max: usize,
    count: AtomicUsize,
}

impl JsRetained {
    pub(crate) fn open(
        inner: Arc<Inner>,
        max: usize,
        replicas: usize,
    ) -> Result<JsRetained, StorageError> {
        let name = format!("{}-retained", inner.stream_name());
        let config = kv::Config {
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        };
        let store = bucket(&inner, name, config)?;
        let retained = JsRetained {
            inner,
            store,
            max,
            count: AtomicUsize::new(0),
        };
        let n = retained.load()?.len();
        retained.count.store(n, Ordering::Relaxed);
        Ok(retained)
    }
}

impl RetainedStore for JsRetained {
    fn apply(&self, values: &[RetainedValue]) -> Result<usize, StorageError> {
        let (count, refused) = self.inner.wait(async {
            let mut count = self.count.load(Ordering::Relaxed);
            let mut refused = 0;
            for v in values {
                let key = hex::encode(&v.topic);
                let exists = exists(&self.store, &key, "read a retained value").await?;
                if v.payload.is_empty() {
                    if exists {
                        self.store
                            .purge(key)
                            .answer("clear a retained value")
                            .await?;
                        count = count.saturating_sub(1);
                    }
                } else if exists || count < self.max {
                    self.store
                        .put(key, v.stored())
                        .answer("save a retained value")
                        .await?;
                    if !exists {
                        count += 1;
                    }
                } else {
                    refused += 1;
                }
            }
            Ok::<_, StorageError>((count, refused))
        })?;
        self.count.store(count, Ordering::Relaxed);
        Ok(refused)
    }

    fn load(&self) -> Result<Vec<RetainedValue>, StorageError> {
        self.inner.wait(async {
            let mut keys = self.store.keys().answer("list retained values").await?;
            let mut names = Vec::new();
            while let Some(k) = keys
                .next()
                .map(Ok::<_, &str>)
                .answer("list retained values")
                .await?
            {
                names.push(k.map_err(|e| js_error("list retained values", e))?);
            }
            let mut out = Vec::new();
            for key in names {
                let Some(topic) = hex::decode(&key)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                else {
                    continue;
                };
                if let Some(payload) = self.store.get(key).answer("read a retained value").await? {
                    out.push(RetainedValue::from_stored(topic, payload));
                }
            }
            Ok(out)
        })
    }
}
