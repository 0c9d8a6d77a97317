//! The seam through which the proxy serves MQTT subscriptions to logged topics itself, from
//! the bridge's stream core, instead of passing them to rumqttd.
//!
//! The broker crate defines the interface and the bridge implements it on its fan-out (hub,
//! outbox, catch-up), so `broker` never imports `bridge`. A subscription served this way never
//! reaches rumqttd: no never-forgotten filter state, and every message arrives with its QoS,
//! retain flag, publisher and MQTT 5 properties, so the proxy delivers it as the
//! specification says (QoS downgrade, no-local, retain-as-published, the client's Maximum
//! Packet Size and Receive Maximum).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// A logged message as the proxy delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedMessage {
    /// Its seq in the log (0 for a retained value).
    pub seq: u64,
    /// When it was logged, in ms since the Unix epoch (message expiry counts from here).
    pub ts_ms: u64,
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// The retain flag it was published with.
    pub retain: bool,
    /// The QoS it was published with; `None` when the log did not keep it (messages logged
    /// before mqws kept MQTT details): delivered at the granted QoS then.
    pub qos: Option<u8>,
    /// The MQTT client that published it, for no-local.
    pub origin: Option<Arc<str>>,
    /// Its MQTT 5 PUBLISH properties, without their length (see `InboundMessage`).
    pub properties: Bytes,
}

/// What a feed yields next.
#[derive(Debug)]
pub enum Delivery {
    /// A message on one of the feed's filters, in log order.
    Message(ServedMessage),
    /// Messages `from..=to` cannot be delivered: retention removed them while the subscriber
    /// was behind. MQTT has no way to say so on the wire; the proxy counts and logs it.
    Lost {
        /// First seq lost.
        from: u64,
        /// Last seq lost.
        to: u64,
    },
    /// The feed ended: the subscriber stayed behind too long (`ws.slow_consumer_timeout`) or
    /// the log failed; the proxy disconnects the client.
    Ended(&'static str),
}

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store of persistent MQTT sessions failed (the detail is for the log, not the client).
#[derive(Debug, thiserror::Error)]
#[error("MQTT session store: {0}")]
pub struct SessionStoreError(pub String);

/// Who saves a persistent session: the connection that just took it (whoever held it), or
/// the one holding it, only while it still does. A revision check in the store decides, so
/// of two connections of one client id on two nodes the later one keeps the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionClaim {
    /// Becomes the holder (a token unique to the connection).
    Take(u64),
    /// Saves only while still the holder.
    Keep(u64),
}

/// A feed resumed at a stored position.
pub struct Resumed {
    /// The feed, subscribed to the session's filters; it delivers every matching message
    /// after the position, then live ones.
    pub feed: Box<dyn Feed>,
    /// The log head when it joined the live stream: what was logged while the session was
    /// away is at or below this.
    pub cut: u64,
    /// Ranges retention removed after the position before they could be delivered.
    pub lost: Vec<(u64, u64)>,
    /// The position belongs to another log (reset or replaced): what was logged meanwhile
    /// cannot be known; the feed starts live.
    pub log_replaced: bool,
}

/// The bridge's side of served subscriptions.
pub trait LoggedTopics: Send + Sync + fmt::Debug {
    /// True when every topic `filter` can match is logged (inside `bridge.filters`), so the
    /// proxy may serve it without rumqttd.
    fn covers(&self, filter: &str) -> bool;
    /// True when some logged topic matches `filter`: the proxy serves that part of a filter it
    /// does not cover, beside rumqttd, which gets the filter for the rest.
    fn overlaps(&self, filter: &str) -> bool;
    /// A feed for one MQTT connection, subscribed to nothing yet.
    fn open(&self) -> Box<dyn Feed>;
    /// The log's epoch: a stored position is only meaningful in the log it came from.
    fn epoch(&self) -> String;
    /// A feed subscribed to `filters` that first delivers what was logged after `after` (of
    /// log `epoch`), for a persistent session coming back.
    fn resume(
        &self,
        epoch: &str,
        after: u64,
        filters: &[String],
    ) -> BoxFuture<'static, Result<Resumed, SessionStoreError>>;
    /// The persistent session of `client_id`, as the proxy saved it.
    fn load_session(
        &self,
        client_id: &str,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, SessionStoreError>>;
    /// Saves `client_id`'s session of `owner` (its login, and the `SessionClaim` it is saved
    /// under), to expire at `deadline` (the new deadline in ms, and the one it was last saved
    /// with) unless saved again. `flush`: durable before it resolves. False when another
    /// connection holds the session now (or it is gone): nothing was written.
    fn save_session(
        &self,
        client_id: &str,
        owner: (Option<&str>, SessionClaim),
        value: Vec<u8>,
        deadline: (u64, Option<u64>),
        flush: bool,
    ) -> BoxFuture<'static, Result<bool, SessionStoreError>>;
    /// Forgets `client_id`'s session (last saved with `deadline_ms`).
    fn forget_session(
        &self,
        client_id: &str,
        deadline_ms: u64,
    ) -> BoxFuture<'static, Result<(), SessionStoreError>>;
    /// Persistent sessions stored (on every node, in cluster mode).
    fn session_count(&self) -> usize;
    /// Persistent sessions stored for `login` (in cluster mode: those this node stored and
    /// removed since it started).
    fn sessions_of(&self, login: &str) -> usize;
}

/// One MQTT connection's served subscriptions.
pub trait Feed: Send {
    /// Adds `filters`: every message logged after this call that matches one of them is
    /// delivered, in log order, each once. Returns the retained values on `filters` (each
    /// topic once), which the caller sends first, and the log head the filters joined at
    /// (messages at or below it that a catch-up brings are not theirs).
    fn subscribe(&mut self, filters: &[String]) -> BoxFuture<'_, (Vec<ServedMessage>, u64)>;
    /// Removes `filters`.
    fn unsubscribe(&mut self, filters: &[String]);
    /// The next delivery; waits while there is none. Cancel-safe: nothing is lost when the
    /// future is dropped before it resolves.
    fn next(&mut self) -> BoxFuture<'_, Delivery>;
    /// The next delivery if one is ready now (so a driver can write several at once).
    fn try_next(&mut self) -> Option<Delivery>;
    /// Resolves with why the feed ended, while the caller takes nothing (its client's window
    /// is full): the feed still falls behind, catches up as far as its queue allows, and ends
    /// once behind too long. Cancel-safe.
    fn ended(&mut self) -> BoxFuture<'_, &'static str>;
}

/// Where the bridge puts its [`LoggedTopics`] once its stream core runs: until then (and in a
/// process without one) every subscription goes to rumqttd.
#[derive(Debug, Clone, Default)]
pub struct ServedSlot(Arc<OnceLock<Arc<dyn LoggedTopics>>>);

impl ServedSlot {
    /// Installs the bridge's implementation; a second call is ignored.
    pub fn install(&self, topics: Arc<dyn LoggedTopics>) {
        let _ = self.0.set(topics);
    }

    /// The implementation, once installed.
    pub(crate) fn get(&self) -> Option<&Arc<dyn LoggedTopics>> {
        self.0.get()
    }
}
