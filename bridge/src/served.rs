//! MQTT subscribers served from the stream core: the third driver beside `ws` and `sse`. The
//! broker's proxy answers SUBSCRIBE for filters inside `bridge.filters` itself and takes each
//! connection's messages from here ([`mqws_broker::served`]): the hub queues them into the
//! connection's outbox as records, and a connection that does not keep up (its client's
//! Receive Maximum is full, or its socket is slow) falls behind and catches up from the tail
//! or the log like a WebSocket, closed after `ws.slow_consumer_timeout` behind.

use std::sync::Arc;

use mqws_broker::served::{BoxFuture, Delivery, Feed, LoggedTopics, ServedMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catchup::follow;
use crate::fanout::outbox::{Form, Receiver};
use crate::fanout::{Outbox, Outgoing};
use crate::state::Shared;
use crate::storage::Record;

/// The bridge's side of served subscriptions.
#[derive(Debug)]
pub(crate) struct Served {
    shared: Arc<Shared>,
    /// `bridge.filters`: what is logged.
    logged: Vec<String>,
}

impl Served {
    pub(crate) fn new(shared: Arc<Shared>, logged: Vec<String>) -> Served {
        Served { shared, logged }
    }
}

impl LoggedTopics for Served {
    fn covers(&self, filter: &str) -> bool {
        self.logged.iter().any(|l| covers(l, filter))
    }

    fn open(&self) -> Box<dyn Feed> {
        let shared = &self.shared;
        let (outbox, rx) = Outbox::with_form(
            Form::Records,
            shared.ws.max_pending_messages,
            usize::try_from(shared.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX),
            shared.budget.clone(),
        );
        let outbox = Arc::new(outbox);
        let (filters_tx, watch) = watch::channel(Arc::new(Vec::new()));
        let follow = crate::stream::catch_up(shared, &outbox, watch);
        metrics::gauge!("mqws_mqtt_served_connections").increment(1.0);
        Box::new(ServedFeed {
            shared: shared.clone(),
            id: shared.slots.id(),
            outbox,
            rx,
            filters: Vec::new(),
            filters_tx,
            follow,
            catch_up: None,
        })
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
    shared: Arc<Shared>,
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
    fn subscribe(&mut self, filters: &[String]) -> BoxFuture<'_, Vec<ServedMessage>> {
        let new: Vec<String> = filters
            .iter()
            .filter(|f| !self.filters.contains(f))
            .cloned()
            .collect();
        let first = self.filters.is_empty();
        let (hub, outbox) = (&self.shared.hub, &self.outbox);
        let mut values = Vec::new();
        hub.subscribe(self.id, &new, outbox, |cut| {
            if first {
                outbox.start_after(cut);
            }
            // Under the hub's lock: the retained values as of the cut, where live begins.
            values = hub.retained().matching(filters);
        });
        self.filters.extend(new);
        self.publish_filters();
        let values = values.iter().map(|v| message(&v.record)).collect();
        Box::pin(async move { values })
    }

    fn unsubscribe(&mut self, filters: &[String]) {
        self.shared.hub.unsubscribe(self.id, filters);
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
        self.shared.hub.leave(self.id, &self.filters);
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
