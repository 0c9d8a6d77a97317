//! `POST /publish` on the real binary: a JSON publish reaches an MQTT subscriber and the log
//! (a WebSocket client replaying from earliest sees it), and every refusal has its status and
//! contract error code: 415 without `Content-Type: application/json`, 403 from another origin
//! (no CORS headers then), 400 bad topic, 413 too large, 401/403 with auth on, 429 above the
//! publish rate of one client address.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};
use sha2::Digest;

const WAIT: Duration = Duration::from_secs(10);
const JSON: (&str, &str) = ("Content-Type", "application/json");

async fn post(server: &Server, headers: &[(&str, &str)], body: &str) -> (u16, Value, HttpResponse) {
    let r = http_request(
        server.http_addr,
        "POST",
        "/publish",
        headers,
        body.as_bytes(),
    )
    .await;
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reaches_mqtt_and_the_log() {
    let server = Server::start();
    let mut sub = mqtt_client(&server, "http-pub-sub").await;
    sub.subscribe("cmd/#", QoS::AtLeastOnce).await;
    let (status, v, _) = post(
        &server,
        &[JSON],
        r#"{"topic":"cmd/r1","payload":{"op":"start"},"qos":1}"#,
    )
    .await;
    assert_eq!((status, v["type"].as_str()), (200, Some("puback")), "{v}");
    let p = sub.next_publish(WAIT).await;
    assert_eq!(p.topic, "cmd/r1");
    assert_eq!(&p.payload[..], br#"{"op":"start"}"#);

    let mut ws = ws_connect(&server).await;
    send_json(
        &mut ws,
        &json!({"type":"hello","filters":["cmd/#"],"from":"earliest"}),
    )
    .await;
    let w = next_json(&mut ws, WAIT).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let m = next_json(&mut ws, WAIT).await;
    assert_eq!(
        m["topic"], "cmd/r1",
        "the POSTed message is in the log: {m}"
    );
    assert_eq!(m["payload"], json!({"op":"start"}), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_their_status_and_code() {
    let server = Server::start_with(&[("MQWS_BROKER__MAX_PAYLOAD_SIZE", "1KiB")], None);
    let ok = r#"{"topic":"cmd/r1","payload":"x"}"#;
    let (s, v, _) = post(&server, &[("Content-Type", "text/plain")], ok).await;
    assert_eq!(s, 415, "{v}");
    let (s, v, r) = post(&server, &[JSON, ("Origin", "https://evil.example")], ok).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    assert!(r.header("access-control-allow-origin").is_none());
    let (s, v, _) = post(&server, &[JSON], r#"{"topic":"cmd/+","payload":1}"#).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_topic")), "{v}");
    let (s, v, _) = post(&server, &[JSON], "{not json").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    let big = format!(r#"{{"topic":"cmd/r1","payload":"{}"}}"#, "x".repeat(2000));
    let (s, v, _) = post(&server, &[JSON], &big).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("too_large")), "{v}");
    let own = format!("http://{}", server.http_addr);
    let (s, v, _) = post(&server, &[JSON, ("Origin", own.as_str())], ok).await;
    assert_eq!(s, 200, "same origin (mqws's own pages) may post: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_get_cors_and_auth_is_checked() {
    let hash = hex::encode(sha2::Sha256::digest(b"http-token"));
    let config = format!(
        "[http]\nallowed_origins = [\"https://app.example\"]\n[auth]\nmode = \"tokens\"\n[[auth.tokens]]\nsha256 = \"{hash}\"\nsub = []\npub = [\"cmd/#\"]\n"
    );
    let server = Server::start_configured(&config, &[], None);
    let app = ("Origin", "https://app.example");
    let pre = http_request(
        server.http_addr,
        "OPTIONS",
        "/publish",
        &[app, ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await;
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let ok = r#"{"topic":"cmd/r1","payload":"x"}"#;
    let (s, v, _) = post(&server, &[JSON, app], ok).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let bearer = ("Authorization", "Bearer http-token");
    let (s, v, r) = post(&server, &[JSON, app, bearer], ok).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let (s, v, _) = post(
        &server,
        &[JSON, app, bearer],
        r#"{"topic":"other/x","payload":"x"}"#,
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_address_is_held_to_the_publish_rate() {
    let server = Server::start_with(
        &[
            ("MQWS_WS__PUBLISH_RATE", "1"),
            ("MQWS_WS__PUBLISH_BURST", "2"),
        ],
        None,
    );
    let ok = r#"{"topic":"cmd/r1","payload":"x"}"#;
    for _ in 0..2 {
        let (s, v, _) = post(&server, &[JSON], ok).await;
        assert_eq!(s, 200, "within the burst: {v}");
    }
    let (s, v, r) = post(&server, &[JSON], ok).await;
    assert_eq!((s, v["code"].as_str()), (429, Some("rate_limited")), "{v}");
    assert_eq!(r.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, v, _) = post(&server, &[JSON], ok).await;
    assert_eq!(s, 200, "a token came back after a second: {v}");
}
