//! The session core: a client's frames after `hello` in, effects out, without I/O.
//!
//! It owns what a session decides by itself: its filters, its acks and the browser publish
//! rate; admission checks are [`crate::admit`]'s. What needs the outside world (the hub, the session
//! store, the broker, the log) comes out as an [`Effect`] for the transport driver to carry out;
//! answers that need such an effect's result are sent by the driver. The WebSocket driver
//! (`ws::requests`) is one such driver; unit tests drive it with no socket at all.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use mqws_broker::PublishRequest;
use mqws_config::WsConfig;

use super::bucket::Bucket;
use crate::admit::{Admission, Publish, Refusal};
use crate::auth::Grant;
use crate::protocol::client::{ClientFrame, ReplayFrom, RequestId};
use crate::protocol::server::ServerFrame;
use crate::protocol::{ErrorCode, Start};

/// What the driver must do, in order.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Send this frame (JSON text).
    Send(String),
    /// Add these filters to the live stream (the hub).
    Subscribe(Vec<String>),
    /// Remove these filters from the live stream.
    Unsubscribe(Vec<String>),
    /// Save the session's filters durably (they changed).
    SaveFilters,
    /// Hand a publish to the broker, then answer `puback` or `error` with `id`.
    Publish {
        /// Request id.
        id: RequestId,
        /// What to publish.
        request: PublishRequest,
    },
    /// Answer a `history` query.
    History {
        /// Request id.
        id: RequestId,
        /// The admitted filter.
        filter: String,
        /// Where to start.
        start: Start,
        /// Most messages.
        limit: usize,
    },
    /// Answer a `last` query.
    Last {
        /// Request id.
        id: RequestId,
        /// The admitted filter.
        filter: String,
    },
}

/// Limits the machine applies beyond `ws.*`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest payload a browser may publish (the broker's own limit).
    pub(crate) max_publish_bytes: usize,
    /// Largest `history` page.
    pub(crate) max_history: usize,
}

/// One session's protocol state.
#[derive(Debug)]
pub(crate) struct Machine {
    grant: Grant,
    /// Shared, not copied: every idle connection holds a machine.
    ws: Arc<WsConfig>,
    limits: Limits,
    /// Sorted, without duplicates; shared with the catch-up task (one copy per connection).
    filters: Arc<Vec<String>>,
    /// Highest seq acknowledged on this connection.
    acked: Option<u64>,
    bucket: Bucket,
}

fn error(id: Option<&RequestId>, code: ErrorCode, message: &str) -> Effect {
    metrics::counter!("mqws_errors_total", "code" => code.as_str()).increment(1);
    Effect::Send(ServerFrame::Error { id, code, message }.to_text())
}

fn refused(id: &RequestId, r: &Refusal) -> Vec<Effect> {
    vec![error(Some(id), r.code, &r.message)]
}

impl Machine {
    /// A session for a client with `grant`.
    pub(crate) fn new(grant: Grant, ws: Arc<WsConfig>, limits: Limits) -> Machine {
        let bucket = Bucket::new(ws.publish_rate, ws.publish_burst);
        Machine {
            grant,
            ws,
            limits,
            filters: Arc::new(Vec::new()),
            acked: None,
            bucket,
        }
    }

    /// The admission rules for this client.
    pub(crate) fn admission(&self) -> Admission<'_> {
        Admission {
            grant: &self.grant,
            ws: &self.ws,
        }
    }

    /// The session's filters, sorted, without duplicates. A new `Arc` whenever they change, so
    /// a holder of the old one keeps a consistent view.
    pub(crate) fn filters(&self) -> &Arc<Vec<String>> {
        &self.filters
    }

    /// Sets the filters `hello` admitted.
    pub(crate) fn open(&mut self, filters: BTreeSet<String>) {
        self.filters = Arc::new(filters.into_iter().collect());
    }

    /// The highest seq acknowledged on this connection.
    pub(crate) fn acked(&self) -> Option<u64> {
        self.acked
    }

    /// Handles one frame after `hello`. `delivered` is the highest seq delivered to the session
    /// so far (the most it may acknowledge).
    pub(crate) fn on_frame(
        &mut self,
        frame: ClientFrame,
        delivered: u64,
        now: Instant,
    ) -> Vec<Effect> {
        match frame {
            ClientFrame::Hello { .. } => vec![error(
                None,
                ErrorCode::BadRequest,
                "hello was already received",
            )],
            ClientFrame::Subscribe { id, filters } => self.subscribe(&id, filters),
            ClientFrame::Unsubscribe { id, filters } => self.unsubscribe(&id, filters),
            ClientFrame::Publish {
                id,
                topic,
                payload,
                enc,
                qos,
                retain,
            } => {
                let asked = Publish {
                    topic: &topic,
                    payload: &payload,
                    enc: enc.as_deref(),
                    qos,
                    retain,
                };
                self.publish(id, asked, now)
            }
            ClientFrame::Ping { id } => {
                vec![Effect::Send(
                    ServerFrame::Pong { id: id.as_ref() }.to_text(),
                )]
            }
            ClientFrame::Ack { seq } => self.ack(seq, delivered),
            ClientFrame::History {
                id,
                filter,
                from,
                limit,
            } => self.history(id, filter, from.as_ref(), limit),
            ClientFrame::Last { id, filter } => match self.admission().query(&filter) {
                Ok(()) => vec![Effect::Last { id, filter }],
                Err(r) => refused(&id, &r),
            },
        }
    }

    /// An ack beyond what this session was given would make a resume skip messages: refused,
    /// and it changes nothing.
    fn ack(&mut self, seq: u64, delivered: u64) -> Vec<Effect> {
        if seq > delivered {
            let message =
                format!("ack {seq} is above the last seq delivered to this session ({delivered})");
            return vec![error(None, ErrorCode::BadRequest, &message)];
        }
        self.acked = Some(self.acked.map_or(seq, |a| a.max(seq)));
        Vec::new()
    }

    fn subscribe(&mut self, id: &RequestId, filters: Vec<String>) -> Vec<Effect> {
        if filters.is_empty() {
            return vec![error(
                Some(id),
                ErrorCode::BadRequest,
                "filters must not be empty",
            )];
        }
        let filters: BTreeSet<String> = filters.into_iter().collect();
        let new: Vec<String> = filters
            .iter()
            .filter(|f| self.filters.binary_search(f).is_err())
            .cloned()
            .collect();
        if let Err(r) = self
            .admission()
            .filters(&filters, self.filters.len() + new.len())
        {
            return refused(id, &r);
        }
        if !new.is_empty() {
            let mut all: Vec<String> = self.filters.iter().chain(&new).cloned().collect();
            all.sort_unstable();
            self.filters = Arc::new(all);
        }
        let listed: Vec<String> = filters.into_iter().collect();
        let reply = ServerFrame::Subscribed {
            id,
            filters: &listed,
        }
        .to_text();
        if new.is_empty() {
            return vec![Effect::Send(reply)];
        }
        vec![
            Effect::Subscribe(new),
            Effect::SaveFilters,
            Effect::Send(reply),
        ]
    }

    fn unsubscribe(&mut self, id: &RequestId, filters: Vec<String>) -> Vec<Effect> {
        let filters: BTreeSet<String> = filters.into_iter().collect();
        if let Err(r) = self.admission().valid_filters(&filters) {
            return refused(id, &r);
        }
        let held: Vec<String> = filters
            .iter()
            .filter(|f| self.filters.binary_search(f).is_ok())
            .cloned()
            .collect();
        if !held.is_empty() {
            let rest: Vec<String> = self
                .filters
                .iter()
                .filter(|f| !filters.contains(*f))
                .cloned()
                .collect();
            self.filters = Arc::new(rest);
        }
        let listed: Vec<String> = filters.into_iter().collect();
        let reply = ServerFrame::Unsubscribed {
            id,
            filters: &listed,
        }
        .to_text();
        if held.is_empty() {
            return vec![Effect::Send(reply)];
        }
        vec![
            Effect::Unsubscribe(held),
            Effect::SaveFilters,
            Effect::Send(reply),
        ]
    }

    fn publish(&mut self, id: RequestId, asked: Publish<'_>, now: Instant) -> Vec<Effect> {
        let request = match self
            .admission()
            .publish(asked, self.limits.max_publish_bytes)
        {
            Ok(r) => r,
            Err(r) => return refused(&id, &r),
        };
        if !self.bucket.take(now) {
            metrics::counter!("mqws_ws_rate_limited_total").increment(1);
            let message = format!(
                "more than {} publishes per second; retry in {} ms",
                self.ws.publish_rate,
                self.bucket.retry_after().as_millis().max(1)
            );
            return vec![error(Some(&id), ErrorCode::RateLimited, &message)];
        }
        vec![Effect::Publish { id, request }]
    }

    fn history(
        &self,
        id: RequestId,
        filter: String,
        from: Option<&ReplayFrom>,
        limit: Option<usize>,
    ) -> Vec<Effect> {
        if let Err(r) = self.admission().query(&filter) {
            return refused(&id, &r);
        }
        let start = match from.map(ReplayFrom::to_start).transpose() {
            Ok(s) => s.unwrap_or(Start::Earliest),
            Err(message) => return vec![error(Some(&id), ErrorCode::BadRequest, &message)],
        };
        let limit = limit.unwrap_or_else(|| 100.min(self.limits.max_history));
        if limit == 0 || limit > self.limits.max_history {
            let message = format!("limit must be between 1 and {}", self.limits.max_history);
            return vec![error(Some(&id), ErrorCode::BadRequest, &message)];
        }
        vec![Effect::History {
            id,
            filter,
            start,
            limit,
        }]
    }
}

#[cfg(test)]
mod tests;
