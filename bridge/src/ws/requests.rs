//! Client frames after `hello`: decoded, handed to the session core
//! (`session::machine`), and its effects carried out against the hub, the session store, the
//! broker and the log. Nothing here decides; none of it ends the connection.

use tracing::warn;

use super::connection::{Connection, Next};
use crate::protocol::client::{self, RequestId};
use crate::protocol::server::{message_values, ServerFrame};
use crate::protocol::{ErrorCode, Start};
use crate::queries::{self, Page};
use crate::session::machine::Effect;
use crate::storage::Position;
use mqws_broker::PublishRequest;

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
        let delivered = self
            .outbox
            .delivered()
            .max(self.session.as_ref().map_or(0, |h| h.state.delivered));
        let effects = self
            .machine
            .on_frame(frame, delivered, std::time::Instant::now());
        for effect in effects {
            self.carry_out(effect).await;
        }
        Next::Continue
    }

    async fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Send(text) => {
                self.outbox.push(text.into());
            }
            Effect::Subscribe(filters) => {
                self.core
                    .hub
                    .subscribe(self.id, &filters, &self.outbox, |_| {});
                self.publish_filters();
            }
            Effect::Unsubscribe(filters) => {
                self.core.hub.unsubscribe(self.id, &filters);
                self.publish_filters();
            }
            Effect::SaveFilters => self.save_filters().await,
            Effect::Publish { id, request } => self.publish(&id, request).await,
            Effect::History {
                id,
                filter,
                start,
                limit,
            } => self.history(&id, &filter, start, limit).await,
            Effect::Last { id, filter } => self.last(&id, &filter).await,
        }
    }

    async fn publish(&self, id: &RequestId, request: PublishRequest) {
        let sent = tokio::time::timeout(
            self.core.ws.publish_timeout,
            self.edge.publisher.publish(request),
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

    async fn history(&self, id: &RequestId, filter: &str, start: Start, limit: usize) {
        match queries::history(&self.core.storage.log, filter, start, limit).await {
            Ok(Page::Messages { messages, next }) => {
                let values = message_values(&messages, &self.core.encodings);
                let next = next.map(|seq| Position {
                    epoch: self.core.epoch.clone(),
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
        match queries::last(&self.core.storage.log, filter, self.core.max_history).await {
            Ok(records) => {
                let values = message_values(&records, &self.core.encodings);
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
