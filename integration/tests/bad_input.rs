//! Bad client input: frames that get `bad_request` / `bad_filter` and keep the connection
//! open, and the policy failures that close it (`hello_required` → 1008, oversize → 1009,
//! hello timeout → 4004). A server that went through all of them still serves a fresh client.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use mqws_integration::*;
use rumqttc::QoS;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// Small limits so the closing cases are quick and cheap.
const ENV: &[(&str, &str)] = &[
    ("MQWS_WS__HELLO_TIMEOUT", "1s"),
    ("MQWS_WS__MAX_MESSAGE_SIZE", "1KiB"),
    ("MQWS_WS__MAX_FRAME_SIZE", "1KiB"),
];

fn assert_error(v: &serde_json::Value, code: &str, what: &str) {
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert_eq!(v["code"], code, "{what}: {v}");
    assert!(
        v["message"].is_string(),
        "{what}: error.message missing: {v}"
    );
}

/// Binary frame, invalid JSON, non-object JSON, missing/unknown `type`, missing required
/// field → `bad_request`; invalid filter → `bad_filter` with the id. After each one the
/// connection still answers a ping.
async fn case_errors_keep_connection_open(server: &Server) {
    let mut ws = ws_connect(server).await;
    hello(&mut ws, &[]).await;

    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_error(
        &next_json(&mut ws, WAIT).await,
        "bad_request",
        "binary frame",
    );
    ping_pong(&mut ws, 1).await;

    let texts = [
        ("invalid JSON", "{not json"),
        ("JSON array", "[1,2,3]"),
        ("no type", r#"{"id":4}"#),
        ("unknown type", r#"{"type":"frobnicate","id":5}"#),
        (
            "subscribe without filters",
            r#"{"type":"subscribe","id":6}"#,
        ),
        (
            "publish without topic",
            r#"{"type":"publish","id":7,"payload":"x"}"#,
        ),
    ];
    for (i, (what, text)) in texts.iter().enumerate() {
        send_text(&mut ws, text).await;
        assert_error(&next_json(&mut ws, WAIT).await, "bad_request", what);
        ping_pong(&mut ws, 100 + i as u64).await;
    }

    send_json(
        &mut ws,
        &json!({"type":"subscribe","id":8,"filters":["a/#/b"]}),
    )
    .await;
    let e = next_json(&mut ws, WAIT).await;
    assert_error(&e, "bad_filter", "filter a/#/b");
    assert_eq!(e["id"], 8, "bad_filter must carry the request id: {e}");
    ping_pong(&mut ws, 9).await;
}

/// A first frame other than `hello` → `error` `hello_required`, then close 1008.
async fn case_hello_required(server: &Server) {
    let mut ws = ws_connect(server).await;
    send_json(&mut ws, &json!({"type":"ping","id":1})).await;
    assert_error(
        &next_json(&mut ws, WAIT).await,
        "hello_required",
        "ping before hello",
    );
    let closed = expect_close(&mut ws, WAIT).await;
    assert_eq!(closed.code, 1008, "close code after hello_required");
}

/// A message above `ws.max_message_size` (1 KiB here) → close 1009.
async fn case_oversize_message(server: &Server) {
    let mut ws = ws_connect(server).await;
    hello(&mut ws, &[]).await;
    let big = format!(
        r#"{{"type":"publish","id":1,"topic":"big","payload":"{}"}}"#,
        "x".repeat(4096)
    );
    // The server may close before reading all of it; a failed send is fine.
    let _ = ws.send(Message::text(big)).await;
    let closed = expect_close(&mut ws, WAIT).await;
    assert_eq!(closed.code, 1009, "close code for an oversize message");
}

/// No `hello` within `ws.hello_timeout` (1 s here) → close 4004, not before the timeout.
async fn case_hello_timeout(server: &Server) {
    let started = Instant::now();
    let mut ws = ws_connect(server).await;
    let closed = expect_close(&mut ws, Duration::from_secs(6)).await;
    assert_eq!(closed.code, 4004, "close code for a hello timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the 1 s hello timeout",
        started.elapsed()
    );
}

/// End to end: a fresh client gets an MQTT publish.
async fn case_fresh_client_works(server: &Server, tag: &str) {
    let mut ws = ws_connect(server).await;
    let filter = format!("after/{tag}/#");
    hello(&mut ws, &[filter.as_str()]).await;
    let mut publisher = mqtt_client(server, &format!("after-{tag}")).await;
    let topic = format!("after/{tag}/x");
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, "still alive")
        .await;
    publisher.wait_pubacks(1, WAIT).await;
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(m["topic"], topic.as_str());
    assert_eq!(m["payload"], "still alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_connection_open() {
    let server = Server::start_with(ENV, None);
    case_errors_keep_connection_open(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_hello_first_frame_is_hello_required_then_1008() {
    let server = Server::start_with(ENV, None);
    case_hello_required(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_closes_1009() {
    let server = Server::start_with(ENV, None);
    case_oversize_message(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_timeout_closes_4004() {
    let server = Server::start_with(ENV, None);
    case_hello_timeout(&server).await;
}

/// The whole table on one server (and one connection of each kind at once), then a fresh
/// client still works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_all_bad_inputs() {
    let server = Server::start_with(ENV, None);
    tokio::join!(
        case_errors_keep_connection_open(&server),
        case_hello_required(&server),
        case_oversize_message(&server),
        case_hello_timeout(&server),
    );
    case_fresh_client_works(&server, "all").await;
}
