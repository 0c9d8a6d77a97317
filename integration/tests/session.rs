//! Session basics: the `welcome` frame, `subscribe`/`unsubscribe` replies and their effect on
//! the live stream, application-level `ping`/`pong`, live-only delivery when `hello` has no
//! `from`, and subprotocol negotiation at the handshake.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// The strings of a JSON array, sorted (the contract does not fix the echo's order).
fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|f| {
            f.as_str()
                .unwrap_or_else(|| panic!("not a string: {f}"))
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_has_the_documented_fields() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["site/+/tags/#", "readers/#"]).await;
    assert!(
        w["session"].as_str().is_some_and(|s| !s.is_empty()),
        "welcome.session: {w}"
    );
    assert!(w["resume_token"].is_string(), "welcome.resume_token: {w}");
    assert!(
        w["server"].as_str().is_some_and(|s| s.starts_with("mqws/")),
        "welcome.server: {w}"
    );
    assert!(
        w["position"]["epoch"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "welcome.position.epoch: {w}"
    );
    assert!(w["position"]["seq"].is_u64(), "welcome.position.seq: {w}");
    assert_eq!(w["resumed"], false, "welcome.resumed: {w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_change_the_live_stream() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &[]).await;
    let mut publisher = mqtt_client(&server, "subunsub-pub").await;

    send_json(
        &mut ws,
        &json!({"type":"subscribe","id":1,"filters":["s/a/#","s/+/c"]}),
    )
    .await;
    let r = next_json(&mut ws, WAIT).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["id"], 1, "{r}");
    assert_eq!(sorted(&r["filters"]), ["s/+/c", "s/a/#"], "{r}");

    publisher
        .publish("s/a/1", QoS::AtLeastOnce, false, "one")
        .await;
    publisher.wait_pubacks(1, WAIT).await;
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("s/a/1"), Some("one"))
    );
    let first_seq = m["seq"].as_u64().unwrap();

    send_json(
        &mut ws,
        &json!({"type":"unsubscribe","id":2,"filters":["s/a/#"]}),
    )
    .await;
    let r = next_json(&mut ws, WAIT).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["id"], 2, "{r}");
    assert_eq!(sorted(&r["filters"]), ["s/a/#"], "{r}");

    // `s/a/2` is no longer subscribed; `s/b/c` still is (via `s/+/c`) and is the sentinel.
    publisher
        .publish("s/a/2", QoS::AtLeastOnce, false, "gone")
        .await;
    publisher
        .publish("s/b/c", QoS::AtLeastOnce, false, "sentinel")
        .await;
    publisher.wait_pubacks(2, WAIT).await;
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("s/b/c"), Some("sentinel")),
        "after unsubscribe the next message must be the sentinel: {m}"
    );
    assert!(m["seq"].as_u64().unwrap() > first_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_with_same_id() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &[]).await;
    send_text(&mut ws, r#"{"type":"ping","id":7}"#).await;
    let v = next_json(&mut ws, WAIT).await;
    assert_eq!(v["type"], "pong", "{v}");
    assert_eq!(v["id"], 7, "{v}");
    ping_pong(&mut ws, 123_456).await;
}

/// Without `from`, `hello` means live only: a message logged before the session opened is
/// not delivered (the later live message is the sentinel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_without_from_delivers_only_live_messages() {
    let server = Server::start();
    let mut early = ws_connect(&server).await;
    hello(&mut early, &["live/#"]).await;
    let mut publisher = mqtt_client(&server, "live-pub").await;
    publisher
        .publish("live/t", QoS::AtLeastOnce, false, "old")
        .await;
    publisher.wait_pubacks(1, WAIT).await;
    // Received by a client means logged.
    let old = next_message(&mut early, WAIT).await;
    assert_eq!(old["payload"], "old");

    let mut late = ws_connect(&server).await;
    let w = hello(&mut late, &["live/#"]).await;
    assert!(
        w["position"]["seq"].as_u64().unwrap() >= old["seq"].as_u64().unwrap(),
        "welcome.position must be at or after the logged message: {w} vs {old}"
    );
    publisher
        .publish("live/t", QoS::AtLeastOnce, false, "new")
        .await;
    publisher.wait_pubacks(1, WAIT).await;
    let m = next_message(&mut late, WAIT).await;
    assert_eq!(
        m["payload"], "new",
        "a live-only session got an old message: {m}"
    );
    assert!(
        m.get("replay").is_none_or(|r| *r == false),
        "live message marked replay: {m}"
    );
}

/// Offering `mqws.v1.json` among others selects it; offering nothing is accepted and the
/// session works; offering only unknown subprotocols is refused with HTTP 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_negotiation() {
    let server = Server::start();

    let (mut ws, resp) = ws_connect_with(server.http_addr, Some("foo.v2, mqws.v1.json"), None)
        .await
        .expect("handshake offering foo.v2 and mqws.v1.json");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some(SUBPROTOCOL)
    );
    hello(&mut ws, &[]).await;

    let (mut ws, _) = ws_connect_with(server.http_addr, None, None)
        .await
        .expect("handshake offering no subprotocol");
    hello(&mut ws, &[]).await;
    ping_pong(&mut ws, 3).await;

    match ws_connect_with(server.http_addr, Some("foo.v2"), None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(
                resp.status().as_u16(),
                400,
                "status for an unknown-only subprotocol"
            )
        }
        Err(e) => panic!("expected an HTTP 400 refusal, got error {e}"),
        Ok(_) => panic!("a handshake offering only foo.v2 was accepted"),
    }
}
