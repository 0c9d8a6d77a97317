//! One WebSocket connection: the hello handshake, then client frames until either side ends.
//!
//! The task owns the session's state (its filters, acks); the writer task owns the socket's
//! sending half; a catch-up task (`catchup::follow::until_live`), started by this task when
//! the outbox falls behind and ended once it is live again, brings the connection up to the
//! live stream, so an idle connection has none. Requests after `hello` are in
//! [`super::requests`]. Errors end here, logged in the connection's span; they never reach the
//! accept loop.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::writer::{self, Keepalive, Liveness};
use crate::admit::Refusal;
use crate::auth::Grant;
use crate::catchup::follow::{self, Follow};
use crate::fanout::Outbox;
use crate::protocol::client::{self, ClientFrame, ReplayFrom, RequestId};
use crate::protocol::server::{ServerFrame, WelcomeSession};
use crate::protocol::{close, ErrorCode, Start};
use crate::session::machine::{Limits, Machine};
use crate::session::{Claimant, Held, Stored};
use crate::state::{CoreCtx, Edge, Shared, Slot};
use crate::subscription;

/// How long the writer may take, beyond `ws.close_timeout`, to send what was queued before
/// the connection ended.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one upgraded socket until it ends. Holds `slot` for the connection's lifetime.
pub(crate) async fn serve(socket: WebSocket, shared: Shared, slot: Slot) {
    let Shared { core, edge } = shared;
    let (sink, stream) = socket.split();
    let (outbox, rx) = Outbox::new(
        core.ws.max_pending_messages,
        usize::try_from(core.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX),
        core.budget.clone(),
    );
    let outbox = Arc::new(outbox);
    let live = Arc::new(Liveness::default());
    let keepalive = Keepalive {
        interval: core.ws.ping_interval,
        timeout: core.ws.pong_timeout,
        close_timeout: core.ws.close_timeout,
        stall_timeout: core.ws.slow_consumer_timeout,
    };
    let started = Instant::now();
    let writer = tokio::spawn(
        writer::run(
            sink,
            rx,
            outbox.clone(),
            live.clone(),
            keepalive,
            edge.shutdown.clone(),
        )
        .instrument(tracing::Span::current()),
    );
    let (filters_tx, _) = watch::channel(Arc::new(Vec::new()));
    let machine = machine(&core, edge.max_publish_bytes, Grant::none());
    let mut conn = Connection {
        id: slot.id,
        machine,
        expires: None,
        core,
        edge,
        outbox,
        filters_tx,
        session: None,
        cut: 0,
        follow: None,
        catching_up: None,
    };
    conn.read(stream, &live).await;
    conn.stop();
    // Frames queued before the end (an error, a 4004 or 1008 close) go out first; a writer
    // stuck on a peer that does not read is cut off after a grace period.
    let mut writer = writer;
    let grace = CLOSE_GRACE + conn.core.ws.close_timeout;
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        conn.outbox.abort(close::NORMAL);
        let _ = writer.await;
    }
    let session = conn.session.as_ref().map(|h| h.id.clone());
    conn.save_session();
    let close = live.close_code.load(Ordering::Relaxed);
    info!(
        session = session.as_deref(),
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        frames_in = live.frames_in.load(Ordering::Relaxed),
        frames_out = live.frames_out.load(Ordering::Relaxed),
        close = (close != 0).then_some(close),
        "websocket closed"
    );
}

pub(super) struct Connection {
    /// This connection's id in the hub.
    pub(super) id: u64,
    /// The session core: grant, filters, acks, publish rate (no grant until hello).
    pub(super) machine: Machine,
    /// When the client's token expires (close 4003).
    expires: Option<Instant>,
    /// The stream core's context: the hub, the log, the sessions, the limits.
    pub(super) core: Arc<CoreCtx>,
    /// The HTTP edge's: the token check, shutdown, browser publishes.
    pub(super) edge: Arc<Edge>,
    pub(super) outbox: Arc<Outbox>,
    /// The machine's filters, as the catch-up task sees them.
    filters_tx: watch::Sender<Arc<Vec<String>>>,
    /// The server-held session, once hello is answered.
    pub(super) session: Option<Held>,
    /// The log head when this connection subscribed.
    cut: u64,
    /// What each catch-up starts from, once the stream is open.
    follow: Option<Follow>,
    /// The catch-up running now (or last), aborted when the connection ends.
    catching_up: Option<tokio::task::JoinHandle<()>>,
}

/// What the reader does after a frame.
pub(super) enum Next {
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
                _ = self.outbox.wait_behind() => {
                    self.start_catch_up();
                    continue;
                }
                _ = tokio::time::sleep_until(expiry), if self.expires.is_some() => {
                    info!("token expired; closing 4003");
                    metrics::counter!("mqws_auth_expired_total").increment(1);
                    self.outbox.abort(close::TOKEN_EXPIRED);
                    return;
                }
            };
            if matches!(item, Some(Ok(_))) {
                live.frames_in.fetch_add(1, Ordering::Relaxed);
            }
            let next = match item {
                None => Next::Stop,
                Some(Err(e)) => self.socket_error(e),
                // Boxed: one small allocation per client frame (publishes are rate-limited)
                // keeps the request state out of every idle connection (12 → 11 KiB each).
                Some(Ok(Message::Text(text))) => Box::pin(self.on_text(&text)).await,
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
        let deadline = Instant::now() + self.core.ws.hello_timeout;
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
                    // Boxed: planning a replay is a large state that the reader task
                    // need not keep for the connection's whole life.
                    Box::pin(self.hello(filters, resume, from.as_ref())).await
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
        match self.edge.auth.authenticate(token) {
            Ok(identity) => {
                self.expires = identity
                    .time_left(std::time::SystemTime::now())
                    .map(|left| Instant::now() + left);
                self.machine = machine(&self.core, self.edge.max_publish_bytes, identity.grant);
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

    /// Refuses `hello`: the error, then close 1008.
    fn refuse_hello(&self, refusal: &Refusal) -> bool {
        self.error(None, refusal.code, &refusal.message);
        self.outbox.close_after_pending(close::POLICY, "bad hello");
        false
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
                let refusal = Refusal {
                    code: ErrorCode::BadRequest,
                    message,
                };
                return self.refuse_hello(&refusal);
            }
        };
        let mut wanted = dedup(filters);
        if let Err(r) = self.machine.admission().filters(&wanted, wanted.len()) {
            return self.refuse_hello(&r);
        }
        let core = self.core.clone();
        let listed: Vec<String> = wanted.iter().cloned().collect();
        let claimant = Claimant {
            outbox: &self.outbox,
            epoch: &core.epoch,
            head: core.hub.dispatched(),
            filters: &listed,
        };
        let held = match core.sessions.take(resume, self.id, claimant).await {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "session store failed");
                self.error(None, ErrorCode::Internal, "the session could not be opened");
                self.outbox
                    .close_after_pending(close::INTERNAL, "internal error");
                return false;
            }
        };
        if held.resumed {
            // Stored filters are admitted again: the grant may have narrowed since.
            wanted.extend(held.state.filters.iter().cloned());
            if let Err(r) = self.machine.admission().filters(&wanted, wanted.len()) {
                core.sessions.release(&held, self.id, &held.state);
                return self.refuse_hello(&r);
            }
        }
        // A `from` overrides the session's cursor; a resumed session without one continues.
        let start = match asked {
            Some(s) => s,
            None if held.resumed => Start::After {
                epoch: held.state.epoch.clone(),
                seq: held.state.cursor(),
            },
            None => Start::Latest,
        };
        let filters_changed = held.resumed && wanted.len() != held.state.filters.len();
        self.machine.open(wanted);
        self.publish_filters();
        self.session = Some(held);
        if filters_changed {
            self.save_filters().await;
        }
        self.open(start).await
    }

    /// Subscribes the session's filters, queues `welcome` (after planning the replay, when one
    /// was asked for) and starts the catch-up task.
    async fn open(&mut self, start: Start) -> bool {
        let core = self.core.clone();
        let listed = self.machine.filters().clone();
        let Some(held) = self.session.as_mut() else {
            return false;
        };
        metrics::counter!("mqws_ws_sessions_total").increment(1);
        debug!(session = %held.id, resumed = held.resumed, filters = listed.len(), "session opened");
        let subscriber = subscription::Subscriber {
            id: self.id,
            filters: &listed,
            outbox: &self.outbox,
            start,
            watch: self.filters_tx.subscribe(),
            session: Some(WelcomeSession {
                session: &held.id,
                resume_token: &held.token,
                resumed: held.resumed,
            }),
        };
        let Some(opened) = subscription::open(&core.view(), subscriber).await else {
            return false;
        };
        // What `welcome` carried is not kept for the connection's life: the token is sent
        // once, and the filters live in the machine until the session is saved.
        held.token = String::new();
        held.state.filters = Vec::new();
        self.cut = opened.cut;
        self.follow = Some(opened.follow);
        true
    }

    /// Starts a catch-up when the outbox has fallen behind and none runs.
    fn start_catch_up(&mut self) {
        let Some(follow) = &self.follow else {
            return;
        };
        if self.outbox.claim_catch_up() {
            let task = follow::until_live(follow.clone()).instrument(tracing::Span::current());
            self.catching_up = Some(tokio::spawn(task));
        }
    }

    /// Tells the catch-up the machine's current filters.
    pub(super) fn publish_filters(&self) {
        self.filters_tx.send_replace(self.machine.filters().clone());
    }

    /// Saves the session with its new filters, durably: a crash must not bring back old ones.
    pub(super) async fn save_filters(&mut self) {
        let Some(held) = self.session.as_mut() else {
            return;
        };
        held.state.filters = self.machine.filters().to_vec();
        let (sessions, id, state) = (
            self.core.sessions.clone(),
            held.id.clone(),
            held.state.clone(),
        );
        match tokio::task::spawn_blocking(move || sessions.save(&id, &state, true)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not save the session's filters"),
            Err(e) => warn!(error = %e, "session save task failed"),
        }
    }

    /// Ends delivery: stops the catch-up, removes the connection from the hub, and queues a
    /// normal close behind whatever is already queued (the first close queued wins).
    fn stop(&mut self) {
        self.follow = None;
        if let Some(f) = self.catching_up.take() {
            f.abort();
        }
        self.core.hub.leave(self.id, self.machine.filters());
        self.outbox.close_after_pending(close::NORMAL, "");
    }

    /// Saves the session once the writer is done: its filters, how far delivery got (the most
    /// the client may ack) and its acks. The cursor moves only with acks.
    fn save_session(&mut self) {
        let filters = self.machine.filters().to_vec();
        if let Some(held) = self.session.take() {
            let mut state: Stored = held.state.clone();
            state.filters = filters;
            if held.state.epoch == self.core.epoch {
                state.acked = self.machine.acked().or(held.state.acked);
                state.delivered = held.state.delivered.max(self.outbox.delivered());
            } else {
                // The log was reset: seqs of the old epoch mean nothing in this one.
                state.epoch = self.core.epoch.clone();
                state.start = self.cut;
                state.acked = self.machine.acked();
                state.delivered = self.cut.max(self.outbox.delivered());
            }
            self.core.sessions.release(&held, self.id, &state);
        }
    }

    /// A read that failed: a frame over the size limit is 1009, broken framing 1002, invalid
    /// UTF-8 in a text frame 1007 (contract 2.6); anything else (the socket) just ends it.
    fn socket_error(&self, e: axum::Error) -> Next {
        let Ok(e) = e.into_inner().downcast::<tungstenite::Error>() else {
            debug!("socket read failed");
            return Next::Stop;
        };
        let (code, what) = match *e {
            tungstenite::Error::Capacity(_) => (close::TOO_LARGE, "too_large"),
            tungstenite::Error::Protocol(_) => (close::PROTOCOL, "protocol"),
            tungstenite::Error::Utf8(_) => (close::INVALID_DATA, "invalid_utf8"),
            _ => {
                debug!(error = %e, "socket read failed");
                return Next::Stop;
            }
        };
        info!(code, error = %e, "closing a WebSocket that broke the framing rules");
        metrics::counter!("mqws_errors_total", "code" => what).increment(1);
        self.outbox.abort(code);
        Next::Stop
    }

    pub(super) fn reply(&self, frame: &ServerFrame<'_>) {
        self.outbox.push(frame.to_frame());
    }

    pub(super) fn error(&self, id: Option<&RequestId>, code: ErrorCode, message: &str) {
        metrics::counter!("mqws_errors_total", "code" => code.as_str()).increment(1);
        debug!(code = code.as_str(), message, "client error");
        self.reply(&ServerFrame::Error { id, code, message });
    }
}

/// A fresh session core for a client with `grant`, who may publish payloads up to
/// `max_publish_bytes`.
fn machine(core: &CoreCtx, max_publish_bytes: usize, grant: Grant) -> Machine {
    let limits = Limits {
        max_publish_bytes,
        max_history: core.max_history,
    };
    Machine::new(grant, core.ws.clone(), limits)
}

fn dedup(filters: Vec<String>) -> BTreeSet<String> {
    filters.into_iter().collect()
}
