//! MQTT subscribers served from the stream core: the third driver beside `ws` and `sse`. The
//! broker's proxy answers SUBSCRIBE for filters inside `bridge.filters` itself and takes each
//! connection's messages from here ([`mqws_broker::served`]): the hub queues them into the
//! connection's outbox as records, and a connection that does not keep up (its client's
//! Receive Maximum is full, or its socket is slow) falls behind and catches up from the tail
//! or the log like a WebSocket, closed after `ws.slow_consumer_timeout` behind.
//!
//! A persistent MQTT session resumes here too: its feed starts behind, at the position the
//! proxy stored, and the same catch-up brings it to live. The sessions themselves are kept
//! in the storage layer's MQTT session store ([`crate::storage::expiring`]).

use std::sync::Arc;

use mqws_broker::served::{
    BoxFuture, Delivery, Feed, LoggedTopics, Resumed, ServedMessage, SessionClaim,
    SessionStoreError,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catchup::{follow, plan};
use crate::fanout::outbox::{Form, Receiver};
use crate::fanout::{Hub, Outbox, Outgoing};
use crate::protocol::server::Gap;
use crate::protocol::Start;
use crate::state::CoreCtx;
use crate::storage::expiring::Claim;
use crate::storage::{Record, StorageError};

fn failed(e: impl std::fmt::Display) -> SessionStoreError {
    SessionStoreError(e.to_string())
}

/// Runs a blocking store call off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, SessionStoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(failed),
        Err(e) => Err(failed(e)),
    }
}

/// The bridge's side of served subscriptions.
#[derive(Debug)]
pub(crate) struct Served {
    /// The stream core's context: the hub, the log, the MQTT session store, the outbox limits.
    core: Arc<CoreCtx>,
    /// `bridge.filters`: what is logged.
    logged: Vec<String>,
}

impl Served {
    /// Served subscriptions from `core`'s hub and log, for the filters inside `logged`.
    pub(crate) fn new(core: Arc<CoreCtx>, logged: Vec<String>) -> Served {
        Served { core, logged }
    }
}

impl LoggedTopics for Served {
    fn covers(&self, filter: &str) -> bool {
        self.logged.iter().any(|l| covers(l, filter))
    }

    fn overlaps(&self, filter: &str) -> bool {
        self.logged
            .iter()
            .any(|l| mqws_topic::filters_overlap(l, filter))
    }

    fn open(&self) -> Box<dyn Feed> {
        Box::new(self.feed())
    }

    fn epoch(&self) -> String {
        self.core.epoch.clone()
    }

    fn resume(
        &self,
        epoch: &str,
        after: u64,
        filters: &[String],
    ) -> BoxFuture<'static, Result<Resumed, SessionStoreError>> {
        let mut feed = self.feed();
        let same_log = epoch == self.core.epoch;
        let cut = feed.join(filters, same_log);
        let log = self.core.storage.log.clone();
        let start = Start::After {
            epoch: epoch.to_owned(),
            seq: after,
        };
        Box::pin(async move {
            if !same_log {
                return Ok(Resumed {
                    feed: Box::new(feed),
                    cut,
                    lost: Vec::new(),
                    log_replaced: true,
                });
            }
            let planned = blocking(move || plan(&start, cut, log.as_ref())).await?;
            let (after, gaps) = planned.map_or((cut, Vec::new()), |p| (p.after, p.gaps));
            feed.outbox.start_after(after);
            let lost = gaps
                .into_iter()
                .filter_map(|g| match g {
                    Gap::Evicted { from, to } | Gap::Dropped { from, to } => Some((from, to)),
                    Gap::Epoch => None,
                })
                .collect();
            Ok(Resumed {
                feed: Box::new(feed),
                cut,
                lost,
                log_replaced: false,
            })
        })
    }

    fn load_session(
        &self,
        client_id: &str,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, SessionStoreError>> {
        let store = self.core.storage.mqtt_sessions.clone();
        let id = client_id.to_owned();
        Box::pin(blocking(move || store.load(&id)))
    }

    fn save_session(
        &self,
        client_id: &str,
        (login, claim): (Option<&str>, SessionClaim),
        value: Vec<u8>,
        deadline: (u64, Option<u64>),
        flush: bool,
    ) -> BoxFuture<'static, Result<bool, SessionStoreError>> {
        let store = self.core.storage.mqtt_sessions.clone();
        let (id, login) = (client_id.to_owned(), login.map(str::to_owned));
        let claim = match claim {
            SessionClaim::Take(h) => Claim::Take(h),
            SessionClaim::Keep(h) => Claim::Keep(h),
        };
        Box::pin(blocking(move || {
            store.save(&id, (login.as_deref(), claim), &value, deadline, flush)
        }))
    }

    fn forget_session(
        &self,
        client_id: &str,
        deadline_ms: u64,
    ) -> BoxFuture<'static, Result<(), SessionStoreError>> {
        let store = self.core.storage.mqtt_sessions.clone();
        let id = client_id.to_owned();
        Box::pin(blocking(move || store.forget(&id, deadline_ms)))
    }

    fn sessions_of(&self, login: &str) -> usize {
        self.core.storage.mqtt_sessions.owned_by(login)
    }

    fn session_count(&self) -> usize {
        self.core.storage.mqtt_sessions.count()
    }
}

impl Served {
    /// A feed subscribed to nothing yet.
    fn feed(&self) -> ServedFeed {
        let core = &self.core;
        let (outbox, rx) = Outbox::with_form(
            Form::Records,
            core.ws.max_pending_messages,
            usize::try_from(core.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX),
            core.budget.clone(),
        );
        let outbox = Arc::new(outbox);
        let (filters_tx, watch) = watch::channel(Arc::new(Vec::new()));
        let follow = crate::subscription::catch_up(&core.view(), &outbox, watch);
        metrics::gauge!("mqws_mqtt_served_connections").increment(1.0);
        ServedFeed {
            hub: core.hub.clone(),
            id: core.ids.next(),
            outbox,
            rx,
            filters: Vec::new(),
            filters_tx,
            follow,
            catch_up: None,
        }
    }
}

/// True when every topic `filter` matches also matches `logged`.
fn covers(logged: &str, filter: &str) -> bool {
    let mut l = logged.split('/');
    let mut f = filter.split('/');
    loop {
        match (l.next(), f.next()) {
            (Some("#"), _) => return !filter.starts_with('$') || logged.starts_with('$'),
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "+" => {}
            _ => return false,
        }
    }
}

/// One MQTT connection's served subscriptions: its place in the hub and its outbox.
struct ServedFeed {
    /// The hub this connection has its place in.
    hub: Arc<Hub>,
    id: u64,
    outbox: Arc<Outbox>,
    rx: Receiver,
    filters: Vec<String>,
    filters_tx: watch::Sender<Arc<Vec<String>>>,
    /// A template of the connection's catch-up, cloned for each one started.
    follow: follow::Follow,
    catch_up: Option<JoinHandle<()>>,
}

impl ServedFeed {
    fn publish_filters(&self) {
        let _ = self.filters_tx.send(Arc::new(self.filters.clone()));
    }

    /// Joins the hub with a resumed session's filters; `behind`: nothing live is queued until
    /// the replay's start is set (the catch-up then brings it to live). Returns the cut.
    fn join(&mut self, filters: &[String], behind: bool) -> u64 {
        let outbox = &self.outbox;
        let cut = self.hub.subscribe(self.id, filters, outbox, |cut| {
            if behind {
                outbox.start_behind(0);
            } else {
                outbox.start_after(cut);
            }
        });
        self.filters = filters.to_vec();
        self.publish_filters();
        cut
    }
}

fn message(record: &Record) -> ServedMessage {
    let mqtt = record.mqtt.as_ref();
    ServedMessage {
        seq: record.seq,
        ts_ms: record.ts_ms,
        topic: record.topic.clone(),
        payload: record.payload.clone(),
        retain: record.retain,
        qos: mqtt.map(|m| m.qos),
        origin: mqtt.and_then(|m| m.origin.clone()),
        properties: mqtt.map(|m| m.properties.clone()).unwrap_or_default(),
    }
}

impl Feed for ServedFeed {
    fn subscribe(&mut self, filters: &[String]) -> BoxFuture<'_, (Vec<ServedMessage>, u64)> {
        let new: Vec<String> = filters
            .iter()
            .filter(|f| !self.filters.contains(f))
            .cloned()
            .collect();
        let first = self.filters.is_empty();
        let (hub, outbox) = (&self.hub, &self.outbox);
        let mut values = Vec::new();
        let cut = hub.subscribe(self.id, &new, outbox, |cut| {
            if first {
                outbox.start_after(cut);
            }
            // Under the hub's lock: the retained values as of the cut, where live begins.
            values = hub.retained().matching(filters);
        });
        self.filters.extend(new);
        self.publish_filters();
        let values = values.iter().map(|v| message(&v.record)).collect();
        Box::pin(async move { (values, cut) })
    }

    fn unsubscribe(&mut self, filters: &[String]) {
        self.hub.unsubscribe(self.id, filters);
        self.filters.retain(|f| !filters.contains(f));
        self.publish_filters();
    }

    fn next(&mut self) -> BoxFuture<'_, Delivery> {
        Box::pin(async move {
            loop {
                self.catch_up_if_behind();
                tokio::select! {
                    item = self.rx.recv() => {
                        if let Some(d) = self.take(item) {
                            return d;
                        }
                    }
                    _ = self.outbox.wait_behind() => {}
                    _ = self.outbox.aborted() => return Delivery::Ended(BEHIND),
                }
            }
        })
    }

    fn try_next(&mut self) -> Option<Delivery> {
        while let Ok(item) = self.rx.try_recv() {
            if let Some(d) = self.take(Some(item)) {
                return Some(d);
            }
        }
        None
    }

    fn ended(&mut self) -> BoxFuture<'_, &'static str> {
        Box::pin(async move {
            loop {
                self.catch_up_if_behind();
                tokio::select! {
                    _ = self.outbox.wait_behind() => {}
                    _ = self.outbox.aborted() => return BEHIND,
                }
            }
        })
    }
}

/// Why a feed ends.
const BEHIND: &str = "behind the live stream too long";

impl ServedFeed {
    /// What an item of the outbox means to the driver (`None`: nothing, take the next);
    /// accounts for it as sent.
    fn take(&mut self, item: Option<Outgoing>) -> Option<Delivery> {
        match item {
            Some(Outgoing::Record(live)) => {
                // Sampled: one clock read per message would cost more than it tells.
                if let Some(logged) = live.logged_at.filter(|_| live.record.seq % 16 == 0) {
                    metrics::histogram!("mqws_mqtt_served_wait_seconds").record(logged.elapsed());
                }
                let n = crate::fanout::outbox::record_len(&live.record);
                self.outbox.sent(n, live.record.seq);
                Some(Delivery::Message(message(&live.record)))
            }
            Some(Outgoing::Lost(from, to)) => {
                self.outbox.sent(16, 0);
                Some(Delivery::Lost { from, to })
            }
            Some(Outgoing::Frame(f, seq)) => {
                self.outbox.sent(f.len(), seq);
                None
            }
            Some(Outgoing::Close(..)) | None => Some(Delivery::Ended(BEHIND)),
        }
    }

    /// Starts the catch-up when the outbox fell behind and none runs.
    fn catch_up_if_behind(&mut self) {
        if self.outbox.claim_catch_up() {
            let f = self.follow.clone();
            self.catch_up = Some(tokio::spawn(follow::until_live(f)));
        }
    }
}

impl Drop for ServedFeed {
    fn drop(&mut self) {
        self.hub.leave(self.id, &self.filters);
        self.outbox.abort(crate::protocol::close::GOING_AWAY);
        if let Some(c) = self.catch_up.take() {
            c.abort();
        }
        metrics::gauge!("mqws_mqtt_served_connections").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_filter_is_covered_only_when_every_topic_it_matches_is_logged() {
        for (logged, filter, expect) in [
            ("#", "a/b", true),
            ("#", "#", true),
            ("#", "$SYS/x", false),
            ("site/#", "site/+/tags/#", true),
            ("site/#", "site", true),
            ("site/#", "#", false),
            ("site/+/tags", "site/1/tags", true),
            ("site/+/tags", "site/+/tags", true),
            ("site/+/tags", "site/#", false),
            ("site/1/tags", "site/+/tags", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
        ] {
            assert_eq!(covers(logged, filter), expect, "{logged} covers {filter}");
        }
    }
}
