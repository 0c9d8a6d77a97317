//! Opening a client's subscription, the entry to the stream core that the WebSocket and SSE
//! drivers share (and whose catch-up the MQTT subscribers the proxy serves share too): join
//! the hub with the client's filters, plan the replay a start position asks for, queue the
//! driver's `welcome` at the right place in the outbox, and hand the driver the connection's
//! catch-up (`catchup::follow`), which the driver runs: for its whole life (SSE) or whenever
//! the outbox falls behind (WebSocket).
//!
//! The order is what makes replay and live meet without a gap or a duplicate: the hub takes
//! the connection at a cut (the last seq dispatched); a live-only stream starts right after it,
//! a replay starts *behind* (nothing live is queued) until the plan says where the replay
//! begins, and the catch-up then brings it up to live.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::catchup::{follow, plan, Plan};
use crate::fanout::{Hub, Outbox, Tail};
use crate::protocol::payload::Encodings;
use crate::protocol::server::{ServerFrame, WelcomeSession};
use crate::protocol::{close, Start};
use crate::storage::{Log, Position};

/// The `server` field of `welcome`.
const SERVER: &str = concat!("mqws/", env!("CARGO_PKG_VERSION"));

/// What the stream core needs of the drivers' context, and nothing else: the drivers borrow it
/// from theirs (`state::CoreCtx::view`) for each subscription they open.
pub(crate) struct Core<'a> {
    /// Filter index and dispatch.
    pub(crate) hub: &'a Arc<Hub>,
    /// The most recent logged messages, for catch-up without the log.
    pub(crate) tail: &'a Arc<Tail>,
    /// The log, for replays.
    pub(crate) log: &'a Arc<dyn Log>,
    /// The log's epoch.
    pub(crate) epoch: &'a str,
    /// How payloads are carried in `message` frames.
    pub(crate) encodings: &'a Arc<Encodings>,
    /// `ws.slow_consumer_timeout`: how long a catch-up may wait on a full outbox.
    pub(crate) slow_consumer_timeout: Duration,
}

/// A subscription that is open: the hub holds it; its catch-up is the driver's to run.
pub(crate) struct Opened {
    /// The log head when the connection joined the hub.
    pub(crate) cut: u64,
    /// Every matching message after this seq will be delivered (the replay's start, or the
    /// cut when live only).
    pub(crate) after: u64,
    /// The connection's catch-up; a replay asked for at open is due at once (the outbox is
    /// behind and its `wait_behind` fires).
    pub(crate) follow: follow::Follow,
}

/// The connection that subscribes, and what it asks [`open`] for.
pub(crate) struct Subscriber<'a> {
    /// The connection's id in the hub.
    pub(crate) id: u64,
    /// Its filters, already admitted.
    pub(crate) filters: &'a [String],
    /// Its queue.
    pub(crate) outbox: &'a Arc<Outbox>,
    /// Where delivery starts.
    pub(crate) start: Start,
    /// The filters as the driver changes them later (the catch-up reads them).
    pub(crate) watch: watch::Receiver<Arc<Vec<String>>>,
    /// The session fields of `welcome` (a WebSocket's; an SSE stream has none).
    pub(crate) session: Option<WelcomeSession<'a>>,
}

/// Opens the subscription; `welcome` is queued before any message. `None` when the replay could not
/// be planned: the outbox is then aborted with 1011 and the driver ends the connection.
pub(crate) async fn open(core: &Core<'_>, subscriber: Subscriber<'_>) -> Option<Opened> {
    let Subscriber {
        id,
        filters,
        outbox,
        start,
        watch,
        session,
    } = subscriber;
    let welcome = |cut: u64, planned: Option<&Plan>| {
        let position = Position {
            epoch: core.epoch.to_owned(),
            seq: cut,
        };
        ServerFrame::Welcome {
            session,
            server: SERVER,
            position: &position,
            filters,
            recovered: planned.map(Plan::recovered),
            gaps: planned.map(|p| p.gaps.as_slice()),
            gaps_truncated: planned.is_some_and(|p| p.truncated),
        }
        .to_text()
    };
    let replaying = start != Start::Latest;
    let cut = core.hub.subscribe(id, filters, outbox, |cut| {
        if replaying {
            // Nothing live until the replay has been planned and sent.
            outbox.start_behind(0);
        } else {
            outbox.start_after(cut);
            outbox.push(welcome(cut, None).into());
        }
    });
    let mut after = cut;
    if replaying {
        let planned = {
            let log = core.log.clone();
            tokio::task::spawn_blocking(move || plan(&start, cut, log.as_ref())).await
        };
        let planned = match planned {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => Plan {
                after: cut,
                gaps: Vec::new(),
                truncated: false,
            },
            Ok(Err(e)) => {
                warn!(error = %e, "replay planning failed");
                outbox.abort(close::INTERNAL);
                return None;
            }
            Err(e) => {
                warn!(error = %e, "replay planning task failed");
                outbox.abort(close::INTERNAL);
                return None;
            }
        };
        if !planned.recovered() {
            metrics::counter!("mqws_replay_unrecovered_total").increment(1);
        }
        after = planned.after;
        outbox.start_after(planned.after);
        outbox.push(welcome(cut, Some(&planned)).into());
    }
    let follow = catch_up(core, outbox, watch);
    Some(Opened { cut, after, follow })
}

/// The catch-up of a connection whose queue is `outbox` and whose filters `watch` follows.
pub(crate) fn catch_up(
    core: &Core<'_>,
    outbox: &Arc<Outbox>,
    watch: watch::Receiver<Arc<Vec<String>>>,
) -> follow::Follow {
    follow::Follow {
        log: core.log.clone(),
        tail: core.tail.clone(),
        hub: core.hub.clone(),
        outbox: outbox.clone(),
        filters: watch,
        epoch: core.epoch.to_owned(),
        timeout: core.slow_consumer_timeout,
        avg_record: 256,
        replayed: metrics::counter!("mqws_replay_messages_total"),
        encodings: core.encodings.clone(),
    }
}
