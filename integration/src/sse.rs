//! An SSE client for `GET /sse`: hyper's HTTP/1 client for the streaming body and
//! eventsource-stream to split it into events the way a browser's `EventSource` does. The test
//! plays `EventSource`'s reconnect itself by passing `Last-Event-ID`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// One event as `EventSource` dispatches it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `event:` (`message` when absent).
    pub event: String,
    /// `id:`, empty when the event set none.
    pub id: String,
    /// `data:` parsed as JSON.
    pub data: Value,
}

type Events = Pin<Box<dyn Stream<Item = Result<SseEvent, String>> + Send>>;

/// An open `GET /sse` response.
pub struct Sse {
    /// HTTP status.
    pub status: u16,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// For a non-200 answer: its JSON body.
    pub error: Value,
    events: Option<Events>,
    conn: tokio::task::JoinHandle<()>,
}

impl Sse {
    /// Reads `message` events until `n` arrived (each within [`crate::TIMEOUT`]); returns
    /// their seqs and the last event id, checking that each id is `<epoch>:<seq>`.
    pub async fn messages(&mut self, n: usize) -> (Vec<u64>, String) {
        let mut seqs = Vec::new();
        let mut last = String::new();
        while seqs.len() < n {
            let e = self
                .next(crate::TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("stream ended after {} of {n} messages", seqs.len()));
            if e.event == "message" {
                let seq = e.data["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no seq: {e:?}"));
                assert!(
                    e.id.ends_with(&format!(":{seq}")),
                    "the id is <epoch>:<seq>: {e:?}"
                );
                seqs.push(seq);
                last = e.id.clone();
            }
        }
        (seqs, last)
    }

    /// First value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next event; `None` when the stream ended. Panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let events = self.events.as_mut()?;
        match tokio::time::timeout(timeout, events.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            Ok(Some(Err(e))) => panic!("sse stream failed: {e}"),
            Ok(None) => None,
            Err(_) => panic!("no sse event within {timeout:?}"),
        }
    }

    /// The next event, or `None` when none comes within `wait` or the stream ended.
    pub async fn try_next(&mut self, wait: Duration) -> Option<SseEvent> {
        let events = self.events.as_mut()?;
        match tokio::time::timeout(wait, events.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            _ => None,
        }
    }

    /// The next event, which must have type `kind` (panics otherwise).
    pub async fn expect(&mut self, kind: &str) -> SseEvent {
        let e = self
            .next(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("stream ended; expected event {kind}"));
        assert_eq!(e.event, kind, "expected event {kind}: {e:?}");
        e
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// `GET path` on `addr` with extra headers, as an event stream. Panics on I/O errors.
pub async fn sse_connect(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Sse {
    tokio::time::timeout(TIMEOUT, open(addr, path, extra))
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn open(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> anyhow::Result<Sse> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .header("accept", "text/event-stream");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.into_body();
    if status != 200 {
        let bytes = body.collect().await?.to_bytes();
        let error = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Ok(Sse {
            status,
            headers,
            error,
            events: None,
            conn,
        });
    }
    let data = body.into_data_stream();
    let events = data.eventsource().map(|e| {
        let e = e.map_err(|e| e.to_string())?;
        let data = serde_json::from_str(&e.data)
            .map_err(|err| format!("event data is not JSON ({err}): {:?}", e.data))?;
        Ok(SseEvent {
            event: e.event,
            id: e.id,
            data,
        })
    });
    Ok(Sse {
        status,
        headers,
        error: Value::Null,
        events: Some(Box::pin(events)),
        conn,
    })
}
