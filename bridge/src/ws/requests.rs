//! Client frames after `hello`: subscriptions, acks, publishes, queries and pings. Each answers
//! through the connection's outbox; none ends the connection.

use mqws_broker::{PublishRequest, QoS};
use serde_json::Value;
use tracing::warn;

use super::connection::{dedup, Connection, Next};
use crate::protocol::client::{self, ClientFrame, ReplayFrom, RequestId};
use crate::protocol::server::{message_values, ServerFrame};
use crate::protocol::{payload, ErrorCode, Start};
use crate::queries::{self, Page};
use crate::storage::Position;

impl Connection {
    /// Handles one text frame.
    pub(super) async fn on_text(&mut self, text: &str) -> Next {
        let frame = match client::decode(text) {
            Ok(f) => f,
            Err(e) => {
                self.error(e.id.as_ref(), e.code, &e.message);
                return Next::Continue;
            }
        };
        match frame {
            ClientFrame::Hello { .. } => {
                self.error(None, ErrorCode::BadRequest, "hello was already received");
            }
            ClientFrame::Subscribe { id, filters } => self.subscribe(&id, filters).await,
            ClientFrame::Unsubscribe { id, filters } => self.unsubscribe(&id, filters).await,
            ClientFrame::Publish {
                id,
                topic,
                payload,
                enc,
                qos,
                retain,
            } => {
                self.publish(&id, topic, &payload, enc.as_deref(), qos, retain)
                    .await
            }
            ClientFrame::Ping { id } => self.reply(&ServerFrame::Pong { id: id.as_ref() }),
            ClientFrame::Ack { seq } => self.ack(seq),
            ClientFrame::History {
                id,
                filter,
                from,
                limit,
            } => self.history(&id, &filter, from.as_ref(), limit).await,
            ClientFrame::Last { id, filter } => self.last(&id, &filter).await,
        }
        Next::Continue
    }

    /// Moves the session's cursor. An ack beyond what this session was given would make a
    /// resume skip messages, so it is refused and changes nothing.
    fn ack(&mut self, seq: u64) {
        let delivered = self
            .outbox
            .delivered()
            .max(self.session.as_ref().map_or(0, |h| h.state.delivered));
        if seq > delivered {
            let message =
                format!("ack {seq} is above the last seq delivered to this session ({delivered})");
            self.error(None, ErrorCode::BadRequest, &message);
        } else {
            self.acked = Some(self.acked.map_or(seq, |a| a.max(seq)));
        }
    }

    async fn subscribe(&mut self, id: &RequestId, filters: Vec<String>) {
        if filters.is_empty() {
            return self.error(Some(id), ErrorCode::BadRequest, "filters must not be empty");
        }
        let filters = dedup(filters);
        let new: Vec<String> = filters.difference(&self.filters).cloned().collect();
        if let Err(r) = self
            .admission()
            .filters(&filters, self.filters.len() + new.len())
        {
            return self.error(Some(id), r.code, &r.message);
        }
        self.shared
            .hub
            .subscribe(self.id, &new, &self.outbox, |_| {});
        let mut all = self.filters.clone();
        all.extend(new.iter().cloned());
        self.set_filters(all);
        if !new.is_empty() {
            self.save_filters().await;
        }
        let listed: Vec<String> = filters.into_iter().collect();
        self.reply(&ServerFrame::Subscribed {
            id,
            filters: &listed,
        });
    }

    async fn unsubscribe(&mut self, id: &RequestId, filters: Vec<String>) {
        let filters = dedup(filters);
        if let Err(r) = self.admission().valid_filters(&filters) {
            return self.error(Some(id), r.code, &r.message);
        }
        let held: Vec<String> = filters.intersection(&self.filters).cloned().collect();
        self.shared.hub.unsubscribe(self.id, &held);
        let mut left = self.filters.clone();
        for f in &held {
            left.remove(f);
        }
        self.set_filters(left);
        if !held.is_empty() {
            self.save_filters().await;
        }
        let listed: Vec<String> = filters.into_iter().collect();
        self.reply(&ServerFrame::Unsubscribed {
            id,
            filters: &listed,
        });
    }

    async fn publish(
        &mut self,
        id: &RequestId,
        topic: String,
        payload: &Value,
        enc: Option<&str>,
        qos: u8,
        retain: bool,
    ) {
        if let Err(r) = self.admission().topic(&topic) {
            return self.error(Some(id), r.code, &r.message);
        }
        if !self.bucket.take(std::time::Instant::now()) {
            metrics::counter!("mqws_ws_rate_limited_total").increment(1);
            let message = format!(
                "more than {} publishes per second; retry in {} ms",
                self.shared.ws.publish_rate,
                self.bucket.retry_after().as_millis().max(1)
            );
            return self.error(Some(id), ErrorCode::RateLimited, &message);
        }
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return self.error(Some(id), ErrorCode::BadRequest, "qos must be 0, 1 or 2"),
        };
        let bytes = match payload::decode(payload, enc) {
            Ok(b) => b,
            Err(e) => return self.error(Some(id), ErrorCode::BadRequest, &e.to_string()),
        };
        if bytes.len() > self.shared.max_publish_bytes {
            let message = format!(
                "payload is larger than {} bytes",
                self.shared.max_publish_bytes
            );
            return self.error(Some(id), ErrorCode::TooLarge, &message);
        }
        let request = PublishRequest {
            topic,
            payload: bytes,
            qos,
            retain,
        };
        let sent = tokio::time::timeout(
            self.shared.ws.publish_timeout,
            self.shared.publisher.publish(request),
        )
        .await;
        match sent {
            Ok(Ok(())) => {
                metrics::counter!("mqws_ws_publishes_total").increment(1);
                self.reply(&ServerFrame::Puback { id });
            }
            Ok(Err(e)) => {
                warn!(error = %e, "publish failed");
                self.error(
                    Some(id),
                    ErrorCode::Unavailable,
                    "the broker is not available",
                );
            }
            Err(_) => {
                warn!("publish timed out");
                self.error(
                    Some(id),
                    ErrorCode::Unavailable,
                    "the broker did not take the publish in time",
                );
            }
        }
    }

    async fn history(
        &self,
        id: &RequestId,
        filter: &str,
        from: Option<&ReplayFrom>,
        limit: Option<usize>,
    ) {
        if let Err(r) = self.admission().query(filter) {
            return self.error(Some(id), r.code, &r.message);
        }
        let start = match from.map(ReplayFrom::to_start).transpose() {
            Ok(s) => s.unwrap_or(Start::Earliest),
            Err(message) => return self.error(Some(id), ErrorCode::BadRequest, &message),
        };
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > self.shared.max_history {
            let message = format!("limit must be between 1 and {}", self.shared.max_history);
            return self.error(Some(id), ErrorCode::BadRequest, &message);
        }
        match queries::history(&self.shared, filter, start, limit).await {
            Ok(Page::Messages { messages, next }) => {
                let values = message_values(&messages);
                let next = next.map(|seq| Position {
                    epoch: self.shared.epoch.clone(),
                    seq,
                });
                self.reply(&ServerFrame::History {
                    id,
                    messages: &values,
                    next: next.as_ref(),
                });
            }
            Ok(Page::OtherEpoch) => self.error(
                Some(id),
                ErrorCode::BadRequest,
                "from belongs to another epoch of the log",
            ),
            Err(e) => {
                warn!(error = %e, "history failed");
                self.error(
                    Some(id),
                    ErrorCode::Internal,
                    "history is not available right now",
                );
            }
        }
    }

    async fn last(&self, id: &RequestId, filter: &str) {
        if let Err(r) = self.admission().query(filter) {
            return self.error(Some(id), r.code, &r.message);
        }
        match queries::last(&self.shared, filter).await {
            Ok(records) => {
                let values = message_values(&records);
                self.reply(&ServerFrame::Last {
                    id,
                    messages: &values,
                });
            }
            Err(e) => {
                warn!(error = %e, "last failed");
                self.error(
                    Some(id),
                    ErrorCode::Internal,
                    "last is not available right now",
                );
            }
        }
    }
}
