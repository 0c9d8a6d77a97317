//! One WebSocket connection: the hello handshake, then client frames until either side ends.
//!
//! The task owns the session's state (its filters); the writer task owns the socket's sending
//! half. Errors end here, logged in the connection's span; they never reach the accept loop.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use mqws_broker::{PublishRequest, QoS};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::writer::{self, Keepalive};
use crate::fanout::{check_filter, check_topic, Outbox};
use crate::log::Position;
use crate::protocol::client::{self, ClientFrame, RequestId};
use crate::protocol::server::ServerFrame;
use crate::protocol::{close, payload, ErrorCode};
use crate::state::{Shared, Slot};

/// The `server` field of `welcome`.
const SERVER: &str = concat!("mqws/", env!("CARGO_PKG_VERSION"));

/// Serves one upgraded socket until it ends. Holds `slot` for the connection's lifetime.
pub async fn serve(socket: WebSocket, slot: Slot) {
    let shared = slot.shared().clone();
    let (sink, stream) = socket.split();
    let (outbox, rx) = Outbox::new(
        shared.ws.max_pending_messages,
        usize::try_from(shared.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX),
    );
    let outbox = Arc::new(outbox);
    let pongs = Arc::new(AtomicU64::new(0));
    let keepalive = Keepalive {
        interval: shared.ws.ping_interval,
        timeout: shared.ws.pong_timeout,
    };
    let writer = tokio::spawn(writer::run(
        sink,
        rx,
        outbox.clone(),
        pongs.clone(),
        keepalive,
        shared.shutdown.clone(),
    ));
    let mut conn = Connection {
        id: slot.id,
        shared,
        outbox,
        filters: BTreeSet::new(),
    };
    conn.read(stream, &pongs).await;
    let held: Vec<String> = std::mem::take(&mut conn.filters).into_iter().collect();
    conn.shared.hub.unsubscribe(conn.id, &held);
    conn.outbox.abort(close::NORMAL);
    if let Err(e) = writer.await {
        warn!(error = %e, "writer task failed");
    }
    debug!("connection ended");
}

struct Connection {
    id: u64,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    filters: BTreeSet<String>,
}

/// What the reader does after a frame.
enum Next {
    Continue,
    Stop,
}

impl Connection {
    async fn read(&mut self, mut stream: SplitStream<WebSocket>, pongs: &AtomicU64) {
        if !self.handshake(&mut stream).await {
            return;
        }
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = self.outbox.aborted() => return,
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
                    pongs.fetch_add(1, Ordering::Relaxed);
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
    async fn handshake(&mut self, stream: &mut SplitStream<WebSocket>) -> bool {
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
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return false,
                Message::Text(t) => t,
                Message::Binary(_) => Utf8Bytes::from_static(""),
            };
            return match client::decode(&text) {
                Ok(ClientFrame::Hello { filters, .. }) => self.hello(filters),
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

    fn hello(&mut self, filters: Vec<String>) -> bool {
        let filters = dedup(filters);
        if let Err(message) = self.check_filters(&filters) {
            self.error(None, ErrorCode::BadFilter, &message);
            self.outbox
                .close_after_pending(close::POLICY, "bad filter in hello");
            return false;
        }
        let session = format!("s-{:032x}", rand::random::<u128>());
        let resume_token = format!("{:032x}", rand::random::<u128>());
        let outbox = self.outbox.clone();
        let epoch = self.shared.epoch.clone();
        let listed: Vec<String> = filters.iter().cloned().collect();
        self.shared
            .hub
            .subscribe(self.id, &listed, &self.outbox, |cut| {
                outbox.start_after(cut);
                let position = Position { epoch, seq: cut };
                let welcome = ServerFrame::Welcome {
                    session: &session,
                    resume_token: &resume_token,
                    server: SERVER,
                    position: &position,
                    filters: &listed,
                    resumed: false,
                };
                outbox.push(Utf8Bytes::from(welcome.to_text()));
            });
        self.filters = filters;
        metrics::counter!("mqws_ws_sessions_total").increment(1);
        info!(%session, filters = self.filters.len(), "session opened");
        true
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
            // Acks matter to server-held sessions; on a plain session there is nothing to do.
            ClientFrame::Ack { .. } => {}
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

    fn check_filters(&self, filters: &BTreeSet<String>) -> Result<(), String> {
        for f in filters {
            if let Err(e) = check_filter(f) {
                return Err(format!("filter {f:?}: {e}"));
            }
        }
        Ok(())
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
