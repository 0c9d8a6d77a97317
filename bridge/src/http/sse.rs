//! `GET /sse` (contract section 4): the live stream and its catch-up for clients that cannot
//! hold a WebSocket (proxies that strip `Upgrade`, `EventSource`, `curl`). A driver beside the
//! WebSocket one on the same core: the same admission and grants, the same hub, outbox, replay
//! plan and catch-up task ([`crate::subscription`]), so the same guarantees: every matching message
//! after the start exactly once and in order, lost ranges reported, never skipped.
//!
//! The position is the event id (`<epoch>:<seq>`), which `EventSource` sends back as
//! `Last-Event-ID` when it reconnects; the `welcome` and `caught_up` events carry one too, so a
//! stream that drops before its first message still resumes where it started. There is no
//! server-held session and no ack. Permanent refusals are HTTP errors with the `error` JSON
//! (`EventSource` gives up on them); temporary ones (not ready, shutting down, at
//! `ws.max_connections`) are a 200 stream with `retry:` and one `error` event, so it retries.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{self, HeaderName};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::{Bytes, BytesMut};
use futures_util::stream as events;
use futures_util::StreamExt;
use mqws_config::WsConfig;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::accept::{Control, Peer};
use super::guard::{bearer, cors, origin_allowed, refuse, status_of};
use crate::admit::Admission;
use crate::catchup::follow;
use crate::fanout::Outbox;
use crate::protocol::{ErrorCode, Start};
use crate::state::{Edge, Shared};
use crate::subscription;
use feed::{End, Feed};

mod feed;

/// The stream's first line: `EventSource` reconnects a second after a stream ends.
const RETRY_LINE: &[u8] = b"retry: 1000\n\n";
/// How long a stream that was ended may take to send its last event before the connection is
/// dropped (a peer that stopped reading never takes it).
const END_GRACE: Duration = Duration::from_secs(2);

/// `GET /sse`.
pub(crate) async fn sse(
    State(shared): State<Shared>,
    Extension(Peer(peer)): Extension<Peer>,
    Extension(control): Extension<Control>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut response = match admit(&shared.edge, &shared.core.ws, &headers, query.as_deref()) {
        Ok(asked) => {
            let span = tracing::info_span!("sse", %peer, filters = asked.filters.len());
            open(&shared, &control, asked).instrument(span).await
        }
        Err(refused) => refused,
    };
    cors(&headers, &shared.edge.allowed_origins, &mut response);
    response
}

/// A request that passed every permanent check.
#[derive(Debug)]
struct Asked {
    filters: Vec<String>,
    start: Start,
    expires: Option<Instant>,
}

/// The permanent checks: Origin, query, token, filters and grant (by the limits of `ws`),
/// start position.
#[allow(clippy::result_large_err)]
fn admit(
    edge: &Edge,
    ws: &WsConfig,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Asked, Response> {
    if !origin_allowed(headers, &edge.allowed_origins) {
        metrics::counter!("mqws_sse_refused_total", "reason" => "origin").increment(1);
        warn!(origin = ?headers.get(header::ORIGIN), "GET /sse refused: origin not allowed; add it to http.allowed_origins to allow it");
        return Err(refuse(
            axum::http::StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "origin not allowed",
        ));
    }
    let bad = |message: String| {
        refuse(
            status_of(ErrorCode::BadRequest),
            ErrorCode::BadRequest,
            &message,
        )
    };
    let params = Params::parse(query.unwrap_or("")).map_err(bad)?;
    let token = bearer(headers).or(params.token.as_deref());
    let identity = edge.auth.authenticate(token).map_err(|e| {
        metrics::counter!("mqws_sse_refused_total", "reason" => "unauthorized").increment(1);
        let message = format!("a valid token is required ({})", e.reason());
        refuse(
            status_of(ErrorCode::Unauthorized),
            ErrorCode::Unauthorized,
            &message,
        )
    })?;
    let filters: BTreeSet<String> = params.filters.into_iter().collect();
    if filters.is_empty() {
        return Err(bad("give at least one filter: /sse?filter=a/%23".to_owned()));
    }
    let admission = Admission {
        grant: &identity.grant,
        ws,
    };
    admission
        .filters(&filters, filters.len())
        .map_err(|r| refuse(status_of(r.code), r.code, &r.message))?;
    // EventSource sends the last id it saw when it reconnects: that wins over `from`, which is
    // the same query string as the first time.
    let last_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| "Last-Event-ID is not text".to_owned())
        })
        .transpose()
        .map_err(bad)?
        .filter(|v| !v.is_empty());
    let start = match last_id.or(params.from.as_deref()) {
        Some(s) => parse_start(s).map_err(bad)?,
        None => Start::Latest,
    };
    let expires = identity
        .time_left(std::time::SystemTime::now())
        .map(|left| Instant::now() + left);
    Ok(Asked {
        filters: filters.into_iter().collect(),
        start,
        expires,
    })
}

/// The query string: `filter` (repeated), `from`, `token`; other keys are ignored (cache
/// busters).
#[derive(Debug, Default, PartialEq)]
struct Params {
    filters: Vec<String>,
    from: Option<String>,
    token: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Result<Params, String> {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "filter" => p.filters.push(v.into_owned()),
                "from" if p.from.is_none() => p.from = Some(v.into_owned()),
                "token" if p.token.is_none() => p.token = Some(v.into_owned()),
                "from" | "token" => return Err(format!("{k} is given twice")),
                _ => {}
            }
        }
        Ok(p)
    }
}

/// `earliest`, `latest`, `time:<ms>` or `<epoch>:<seq>` (an event id).
fn parse_start(s: &str) -> Result<Start, String> {
    let wrong = || {
        format!("from must be earliest, latest, time:<ms since the Unix epoch> or <epoch>:<seq>, not {s:?}")
    };
    match s {
        "earliest" => return Ok(Start::Earliest),
        "latest" => return Ok(Start::Latest),
        _ => {}
    }
    if let Some(t) = s.strip_prefix("time:") {
        return t.parse().map(Start::Time).map_err(|_| wrong());
    }
    let (epoch, seq) = s.rsplit_once(':').ok_or_else(wrong)?;
    if epoch.is_empty() {
        return Err(wrong());
    }
    let seq = seq.parse().map_err(|_| wrong())?;
    Ok(Start::After {
        epoch: epoch.to_owned(),
        seq,
    })
}

/// A 200 stream that says why it cannot serve now and ends; `EventSource` retries after
/// `retry:`.
fn unavailable(message: &'static str) -> Response {
    let mut buf = BytesMut::from(RETRY_LINE);
    feed::error_event(&mut buf, ErrorCode::Unavailable, message);
    event_stream(Body::from(buf.freeze()))
}

/// A `text/event-stream` answer. The stream holds the connection to its end: it is not reused
/// (its place in http.max_connections was given back), and proxies pass events on at once.
fn event_stream(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONNECTION, "close"),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

/// Takes a connection slot, joins the hub and answers with the event stream.
async fn open(shared: &Shared, control: &Control, asked: Asked) -> Response {
    let Shared { core, edge } = shared;
    if !edge.ready() {
        return unavailable("the server is not ready; retrying");
    }
    let Some(slot) = shared.try_connect() else {
        metrics::counter!("mqws_sse_refused_total", "reason" => "max_connections").increment(1);
        info!(
            limit = core.ws.max_connections,
            "sse refused: connection limit (ws.max_connections)"
        );
        return unavailable("too many connections; retrying");
    };
    // From here the stream counts against ws.max_connections, like a WebSocket.
    control.release_permit();
    let (outbox, rx) = Outbox::new(
        core.ws.max_pending_messages,
        usize::try_from(core.ws.max_pending_bytes.as_u64()).unwrap_or(usize::MAX),
        core.budget.clone(),
    );
    let outbox = Arc::new(outbox);
    let (_filters_tx, watch) = watch::channel(Arc::new(asked.filters.clone()));
    // From the hub subscription on, dropping `end` (this handler cancelled, or the stream
    // dropped) takes the connection out of the hub again.
    let mut end = End {
        hub: core.hub.clone(),
        filters: asked.filters.clone(),
        follow: None,
        outbox: outbox.clone(),
        done: CancellationToken::new(),
        started: Instant::now(),
        counted: false,
        slot,
    };
    let subscriber = subscription::Subscriber {
        id: end.slot.id,
        filters: &asked.filters,
        outbox: &outbox,
        start: asked.start,
        watch,
        session: None,
    };
    let Some(opened) = subscription::open(&core.view(), subscriber).await else {
        return unavailable("the stream could not be opened; retrying");
    };
    end.follow = Some(tokio::spawn(
        follow::run(opened.follow).instrument(tracing::Span::current()),
    ));
    end.counted = true;
    metrics::counter!("mqws_sse_streams_total").increment(1);
    metrics::gauge!("mqws_sse_connections").increment(1.0);
    end.slot.slots().sse_opened();
    debug!(after = opened.after, "sse stream opened");
    watchdog(&outbox, &end.done, control.kill(), edge.shutdown.clone());
    let feed = Feed {
        rx,
        epoch: core.epoch.clone(),
        after: opened.after,
        shutdown: edge.shutdown.clone(),
        expires: asked.expires,
        ended: false,
        end,
    };
    let first = events::iter([Ok(Bytes::from_static(RETRY_LINE))]);
    let chunks = events::unfold(feed, Feed::next);
    event_stream(Body::from_stream(first.chain(chunks)))
}

/// Drops the connection when the stream was ended (a slow consumer, shutdown) but the peer
/// does not read its last event: hyper polls the stream only when the socket takes data, so
/// such a stream could not end itself.
fn watchdog(
    outbox: &Arc<Outbox>,
    done: &CancellationToken,
    kill: CancellationToken,
    shutdown: CancellationToken,
) {
    let (outbox, done) = (outbox.clone(), done.clone());
    tokio::spawn(async move {
        let ended = async {
            tokio::select! {
                _ = outbox.aborted() => {}
                _ = shutdown.cancelled() => {}
            }
            tokio::time::sleep(END_GRACE).await;
        };
        tokio::select! {
            _ = done.cancelled() => {}
            _ = ended => {
                debug!("sse peer does not read; dropping the connection");
                kill.cancel();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{parse_start, Params, Start};

    #[test]
    fn query_takes_repeated_filters_and_ignores_unknown_keys() {
        let p = Params::parse("filter=site%2F%2B%2Ftags%2F%23&filter=a/b&from=earliest&_=17")
            .expect("valid");
        assert_eq!(p.filters, ["site/+/tags/#", "a/b"]);
        assert_eq!(p.from.as_deref(), Some("earliest"));
        assert!(Params::parse("from=earliest&from=latest").is_err());
    }

    #[test]
    fn start_positions() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(
            parse_start("time:1732270000123"),
            Ok(Start::Time(1732270000123))
        );
        assert_eq!(
            parse_start("e-1:41"),
            Ok(Start::After {
                epoch: "e-1".to_owned(),
                seq: 41
            })
        );
        for bad in ["", ":4", "e", "e:x", "time:soon", "e:-1"] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }
}
