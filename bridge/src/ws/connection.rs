//! One WebSocket connection: the hello handshake, then client frames until either side ends.
//!
//! The task owns the session's state (its filters); the writer task owns the socket's sending
//! half. Errors end here, logged in the connection's span; they never reach the accept loop.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use mqws_broker::{PublishRequest, QoS};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::limits::{check_size, Bucket};
use super::replay;
use super::writer::{self, Keepalive, Liveness};
use crate::auth::Grant;
use crate::catchup::{plan, Start};
use crate::fanout::Outbox;
use crate::protocol::client::{self, ClientFrame, ReplayFrom, RequestId};
use crate::protocol::server::ServerFrame;
use crate::protocol::{close, payload, ErrorCode};
use crate::session::{Held, Stored};
use crate::state::{Shared, Slot};
use crate::storage::Position;
use mqws_topic::{check_filter, check_topic};

/// How long the writer may take, beyond `ws.close_timeout`, to send what was queued before
/// the connection ended.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The `server` field of `welcome`.
const SERVER: &str = concat!("mqws/", env!("CARGO_PKG_VERSION"));

/// Serves one upgraded socket until it ends. Holds `slot` for the connection's lifetime.
pub(crate) async fn serve(socket: WebSocket, slot: Slot) {
    let shared = slot.shared().clone();
    let (sink, stream) = socket.split();
    let (outbox, rx) = Outbox::new(
        shared.ws.max_pending_messages,
        usize::try_from(shared.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX),
    );
    let outbox = Arc::new(outbox);
    let live = Arc::new(Liveness::default());
    let keepalive = Keepalive {
        interval: shared.ws.ping_interval,
        timeout: shared.ws.pong_timeout,
        close_timeout: shared.ws.close_timeout,
    };
    let writer = tokio::spawn(writer::run(
        sink,
        rx,
        outbox.clone(),
        live.clone(),
        keepalive,
        shared.shutdown.clone(),
    ));
    let bucket = Bucket::new(shared.ws.publish_rate, shared.ws.publish_burst);
    let mut conn = Connection {
        id: slot.id,
        grant: Grant::none(),
        expires: None,
        bucket,
        shared,
        outbox,
        filters: BTreeSet::new(),
        session: None,
        start: 0,
        acked: None,
        replay: None,
    };
    conn.read(stream, &live).await;
    conn.stop();
    // Frames queued before the end (an error, a 4004 or 1008 close) go out first; a writer
    // stuck on a peer that does not read is cut off after a grace period.
    let mut writer = writer;
    let grace = CLOSE_GRACE + conn.shared.ws.close_timeout;
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        conn.outbox.abort(close::NORMAL);
        let _ = writer.await;
    }
    conn.save_session();
    debug!("connection ended");
}

struct Connection {
    id: u64,
    /// What the client's token allows (nothing until hello is accepted).
    grant: Grant,
    /// When the client's token expires (close 4003).
    expires: Option<Instant>,
    /// Browser publish rate limit.
    bucket: Bucket,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    filters: BTreeSet<String>,
    /// The server-held session, once hello is answered.
    session: Option<Held>,
    /// The seq the stream started after (the cursor a session keeps if nothing is delivered).
    start: u64,
    /// The highest seq the client acknowledged.
    acked: Option<u64>,
    replay: Option<tokio::task::JoinHandle<()>>,
}

/// What the reader does after a frame.
enum Next {
    Continue,
    Stop,
}

impl Connection {
    async fn read(&mut self, mut stream: SplitStream<WebSocket>, live: &Liveness) {
        if !self.handshake(&mut stream, live).await {
            return;
        }
        live.open.store(true, Ordering::Relaxed);
        let never = Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600);
        loop {
            let expiry = self.expires.unwrap_or(never);
            let item = tokio::select! {
                item = stream.next() => item,
                _ = self.outbox.aborted() => return,
                _ = tokio::time::sleep_until(expiry), if self.expires.is_some() => {
                    info!("token expired; closing 4003");
                    metrics::counter!("mqws_auth_expired_total").increment(1);
                    self.outbox.abort(close::TOKEN_EXPIRED);
                    return;
                }
            };
            let next = match item {
                None => Next::Stop,
                Some(Err(e)) => self.socket_error(e),
                Some(Ok(Message::Text(text))) => self.on_text(&text).await,
                Some(Ok(Message::Binary(_))) => {
                    self.error(
                        None,
                        ErrorCode::BadRequest,
                        "binary frames are not supported; send JSON text",
                    );
                    Next::Continue
                }
                Some(Ok(Message::Pong(_))) => {
                    live.pongs.fetch_add(1, Ordering::Relaxed);
                    Next::Continue
                }
                Some(Ok(Message::Ping(_))) => Next::Continue,
                Some(Ok(Message::Close(_))) => Next::Stop,
            };
            if let Next::Stop = next {
                return;
            }
        }
    }

    /// Waits for `hello` and answers it. False when the connection must end.
    async fn handshake(&mut self, stream: &mut SplitStream<WebSocket>, live: &Liveness) -> bool {
        let deadline = Instant::now() + self.shared.ws.hello_timeout;
        loop {
            let item = tokio::select! {
                item = tokio::time::timeout_at(deadline, stream.next()) => item,
                _ = self.outbox.aborted() => return false,
            };
            let message = match item {
                Err(_) => {
                    info!("no hello in time");
                    self.outbox
                        .close_after_pending(close::HELLO_TIMEOUT, "hello timeout");
                    return false;
                }
                Ok(None) => return false,
                Ok(Some(Err(e))) => {
                    self.socket_error(e);
                    return false;
                }
                Ok(Some(Ok(m))) => m,
            };
            let text = match message {
                Message::Pong(_) => {
                    live.pongs.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Message::Ping(_) => continue,
                Message::Close(_) => return false,
                Message::Text(t) => t,
                Message::Binary(_) => Utf8Bytes::from_static(""),
            };
            return match client::decode(&text) {
                Ok(ClientFrame::Hello {
                    filters,
                    session,
                    resume_token,
                    from,
                    token,
                }) => {
                    if !self.authenticate(token.as_deref()) {
                        return false;
                    }
                    let resume = session.as_deref().zip(resume_token.as_deref());
                    self.hello(filters, resume, from.as_ref()).await
                }
                _ => {
                    self.error(
                        None,
                        ErrorCode::HelloRequired,
                        "the first frame must be hello",
                    );
                    self.outbox
                        .close_after_pending(close::POLICY, "hello required");
                    false
                }
            };
        }
    }

    /// Checks `hello.token`; on success keeps the grant and the expiry. On failure the client
    /// gets `unauthorized` and close 1008.
    fn authenticate(&mut self, token: Option<&str>) -> bool {
        match self.shared.auth.authenticate(token) {
            Ok(identity) => {
                self.expires = identity
                    .time_left(std::time::SystemTime::now())
                    .map(|left| Instant::now() + left);
                self.grant = identity.grant;
                true
            }
            Err(e) => {
                metrics::counter!("mqws_auth_refused_total", "reason" => e.reason()).increment(1);
                info!(reason = e.reason(), "hello refused");
                self.error(None, ErrorCode::Unauthorized, &e.to_string());
                self.outbox
                    .close_after_pending(close::POLICY, "unauthorized");
                false
            }
        }
    }

    /// The first filter the grant does not allow, as a `forbidden` message.
    fn not_granted<'a>(&self, filters: impl IntoIterator<Item = &'a String>) -> Result<(), String> {
        for f in filters {
            if !self.grant.may_subscribe(f) {
                metrics::counter!("mqws_forbidden_total", "what" => "subscribe").increment(1);
                return Err(format!("filter {f:?} is not within your grant"));
            }
        }
        Ok(())
    }

    async fn hello(
        &mut self,
        filters: Vec<String>,
        resume: Option<(&str, &str)>,
        from: Option<&ReplayFrom>,
    ) -> bool {
        let asked = match from.map(ReplayFrom::to_start).transpose() {
            Ok(s) => s,
            Err(message) => {
                self.error(None, ErrorCode::BadRequest, &message);
                self.outbox.close_after_pending(close::POLICY, "bad hello");
                return false;
            }
        };
        let shared = self.shared.clone();
        let held = match shared
            .sessions
            .take(resume, self.id, &self.outbox, &shared.epoch)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "session store failed");
                self.error(None, ErrorCode::Internal, "the session could not be opened");
                self.outbox
                    .close_after_pending(close::INTERNAL, "internal error");
                return false;
            }
        };
        let mut wanted = dedup(filters);
        if held.resumed {
            wanted.extend(held.state.filters.iter().cloned());
        }
        let refusal = self
            .check_filters(&wanted)
            .map_err(|m| (ErrorCode::BadFilter, m))
            .and_then(|()| {
                self.not_granted(&wanted)
                    .map_err(|m| (ErrorCode::Forbidden, m))
            })
            .and_then(|()| {
                if wanted.len() > shared.ws.max_filters {
                    Err((
                        ErrorCode::BadRequest,
                        format!("a session holds at most {} filters", shared.ws.max_filters),
                    ))
                } else {
                    Ok(())
                }
            });
        if let Err((code, message)) = refusal {
            shared.sessions.release(&held, self.id, &held.state);
            self.error(None, code, &message);
            self.outbox.close_after_pending(close::POLICY, "bad hello");
            return false;
        }
        // A `from` overrides the stored cursor; a resumed session without one continues.
        let start = match asked {
            Some(s) => s,
            None if held.resumed => Start::After {
                epoch: held.state.epoch.clone(),
                seq: held.state.cursor(),
            },
            None => Start::Latest,
        };
        self.filters = wanted;
        let listed: Vec<String> = self.filters.iter().cloned().collect();
        let replaying = start != Start::Latest;
        let outbox = self.outbox.clone();
        if replaying {
            outbox.hold();
        }
        let (session_id, token, resumed) = (held.id.clone(), held.token.clone(), held.resumed);
        let welcome_text =
            |cut: u64, recovered: Option<bool>, gap: Option<Option<&crate::catchup::Gap>>| {
                let position = Position {
                    epoch: shared.epoch.clone(),
                    seq: cut,
                };
                ServerFrame::Welcome {
                    session: &session_id,
                    resume_token: &token,
                    server: SERVER,
                    position: &position,
                    filters: &listed,
                    resumed,
                    recovered,
                    gap,
                }
                .to_text()
            };
        let cut = shared.hub.subscribe(self.id, &listed, &self.outbox, |cut| {
            if !replaying {
                outbox.start_after(cut);
                outbox.push(Utf8Bytes::from(welcome_text(cut, None, None)));
            }
        });
        self.start = cut;
        self.session = Some(held);
        metrics::counter!("mqws_ws_sessions_total").increment(1);
        info!(session = %session_id, resumed, filters = listed.len(), "session opened");
        if !replaying {
            return true;
        }
        let planned = {
            let (log, start) = (shared.storage.log.clone(), start.clone());
            tokio::task::spawn_blocking(move || plan(&start, cut, log.as_ref())).await
        };
        let planned = match planned {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return true,
            Ok(Err(e)) => {
                warn!(error = %e, "replay planning failed");
                self.outbox.abort(close::INTERNAL);
                return false;
            }
            Err(e) => {
                warn!(error = %e, "replay planning task failed");
                self.outbox.abort(close::INTERNAL);
                return false;
            }
        };
        self.start = planned.after;
        self.outbox.push(Utf8Bytes::from(welcome_text(
            cut,
            Some(planned.recovered),
            Some(planned.gap.as_ref()),
        )));
        if !planned.recovered {
            metrics::counter!("mqws_replay_unrecovered_total").increment(1);
        }
        self.replay = Some(tokio::spawn(
            replay::run(
                shared.clone(),
                self.outbox.clone(),
                listed.clone(),
                planned.after,
                cut,
            )
            .instrument(tracing::Span::current()),
        ));
        true
    }

    /// Ends delivery: stops a running replay, removes the filters from the hub, and queues a
    /// normal close behind whatever is already queued (the first close queued wins).
    fn stop(&mut self) {
        if let Some(r) = self.replay.take() {
            r.abort();
        }
        let filters: Vec<String> = self.filters.iter().cloned().collect();
        self.shared.hub.unsubscribe(self.id, &filters);
        self.outbox.close_after_pending(close::NORMAL, "");
    }

    /// Saves the session's filters and cursor once the writer is done.
    fn save_session(&mut self) {
        let filters: Vec<String> = std::mem::take(&mut self.filters).into_iter().collect();
        if let Some(held) = self.session.take() {
            let mut state: Stored = held.state.clone();
            state.filters = filters;
            state.epoch = self.shared.epoch.clone();
            state.delivered = self.start.max(self.outbox.delivered());
            // Acks of another epoch mean nothing in this one.
            let same_epoch = held.state.epoch == self.shared.epoch;
            state.acked = self.acked.or(held.state.acked.filter(|_| same_epoch));
            self.shared.sessions.release(&held, self.id, &state);
        }
    }

    async fn on_text(&mut self, text: &str) -> Next {
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
                self.publish(&id, topic, &payload, enc.as_deref(), qos, retain)
                    .await
            }
            ClientFrame::Ping { id } => self.reply(&ServerFrame::Pong { id: id.as_ref() }),
            ClientFrame::Ack { seq } => {
                // An ack beyond what this session was given would make a resume skip messages.
                let delivered = self
                    .outbox
                    .delivered()
                    .max(self.session.as_ref().map_or(0, |h| h.state.delivered));
                if seq > delivered {
                    let message = format!(
                        "ack {seq} is above the last seq delivered to this session ({delivered})"
                    );
                    self.error(None, ErrorCode::BadRequest, &message);
                } else {
                    self.acked = Some(self.acked.map_or(seq, |a| a.max(seq)));
                }
            }
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

    fn subscribe(&mut self, id: &RequestId, filters: Vec<String>) {
        if filters.is_empty() {
            return self.error(Some(id), ErrorCode::BadRequest, "filters must not be empty");
        }
        let filters = dedup(filters);
        if let Err(message) = self.check_filters(&filters) {
            return self.error(Some(id), ErrorCode::BadFilter, &message);
        }
        if let Err(message) = self.not_granted(&filters) {
            return self.error(Some(id), ErrorCode::Forbidden, &message);
        }
        let new: Vec<String> = filters.difference(&self.filters).cloned().collect();
        if self.filters.len() + new.len() > self.shared.ws.max_filters {
            let message = format!(
                "a session holds at most {} filters",
                self.shared.ws.max_filters
            );
            return self.error(Some(id), ErrorCode::BadRequest, &message);
        }
        self.shared
            .hub
            .subscribe(self.id, &new, &self.outbox, |_| {});
        self.filters.extend(new);
        let listed: Vec<String> = filters.into_iter().collect();
        self.reply(&ServerFrame::Subscribed {
            id,
            filters: &listed,
        });
    }

    fn unsubscribe(&mut self, id: &RequestId, filters: Vec<String>) {
        let filters = dedup(filters);
        if let Err(message) = self.check_filters(&filters) {
            return self.error(Some(id), ErrorCode::BadFilter, &message);
        }
        let held: Vec<String> = filters.intersection(&self.filters).cloned().collect();
        self.shared.hub.unsubscribe(self.id, &held);
        for f in &held {
            self.filters.remove(f);
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
        if let Err(e) = check_topic(&topic) {
            return self.error(Some(id), ErrorCode::BadTopic, &format!("topic {e}"));
        }
        if let Err(e) = self.sized(&topic) {
            return self.error(Some(id), ErrorCode::BadTopic, &format!("topic is {e}"));
        }
        if !self.grant.may_publish(&topic) {
            metrics::counter!("mqws_forbidden_total", "what" => "publish").increment(1);
            let message = format!("publishing to {topic:?} is not within your grant");
            return self.error(Some(id), ErrorCode::Forbidden, &message);
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
        let one = BTreeSet::from([filter.to_owned()]);
        if let Err(message) = self.check_filters(&one) {
            return self.error(Some(id), ErrorCode::BadFilter, &message);
        }
        if let Err(message) = self.not_granted(&one) {
            return self.error(Some(id), ErrorCode::Forbidden, &message);
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
        match replay::history(&self.shared, filter, start, limit).await {
            Ok(replay::Page::Messages { messages, next }) => {
                let values = crate::protocol::server::message_values(&messages);
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
            Ok(replay::Page::OtherEpoch) => {
                self.error(
                    Some(id),
                    ErrorCode::BadRequest,
                    "from belongs to another epoch of the log",
                );
            }
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
        let one = BTreeSet::from([filter.to_owned()]);
        if let Err(message) = self.check_filters(&one) {
            return self.error(Some(id), ErrorCode::BadFilter, &message);
        }
        if let Err(message) = self.not_granted(&one) {
            return self.error(Some(id), ErrorCode::Forbidden, &message);
        }
        match replay::last(&self.shared, filter).await {
            Ok(records) => {
                let values = crate::protocol::server::message_values(&records);
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

    fn check_filters(&self, filters: &BTreeSet<String>) -> Result<(), String> {
        for f in filters {
            if let Err(e) = check_filter(f) {
                return Err(format!("filter {f:?}: {e}"));
            }
            if let Err(e) = self.sized(f) {
                return Err(format!("filter is {e}"));
            }
        }
        Ok(())
    }

    /// The configured topic and filter size limits.
    fn sized(&self, s: &str) -> Result<(), String> {
        check_size(
            s,
            self.shared.ws.max_topic_length,
            self.shared.ws.max_topic_levels,
        )
    }

    fn socket_error(&self, e: axum::Error) -> Next {
        let too_large = e
            .into_inner()
            .downcast::<tungstenite::Error>()
            .map(|e| matches!(*e, tungstenite::Error::Capacity(_)))
            .unwrap_or(false);
        if too_large {
            info!("message over the size limit; closing 1009");
            metrics::counter!("mqws_errors_total", "code" => "too_large").increment(1);
            self.outbox.abort(close::TOO_LARGE);
        } else {
            debug!("socket read failed");
        }
        Next::Stop
    }

    fn reply(&self, frame: &ServerFrame<'_>) {
        self.outbox.push(Utf8Bytes::from(frame.to_text()));
    }

    fn error(&self, id: Option<&RequestId>, code: ErrorCode, message: &str) {
        metrics::counter!("mqws_errors_total", "code" => code.as_str()).increment(1);
        debug!(code = code.as_str(), message, "client error");
        self.reply(&ServerFrame::Error { id, code, message });
    }
}

fn dedup(filters: Vec<String>) -> BTreeSet<String> {
    filters.into_iter().collect()
}
