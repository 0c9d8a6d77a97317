//! `GET /sse` on the real binary with a real HTTP client (hyper) and eventsource-stream as the
//! event parser: replay then live with ids, resume by `Last-Event-ID` across a SIGTERM restart
//! and a kill -9 with every seq exactly once, an honest `gaps` for another epoch, the permanent
//! refusals as HTTP errors, the temporary ones as a 200 stream with an `error` event, and a
//! peer that stops reading is ended and resumes exactly.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::Value;
use sha2::Digest;

const WAIT: Duration = Duration::from_secs(10);

fn seq_of(e: &SseEvent) -> u64 {
    e.data["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq: {e:?}"))
}

/// Publishes `topic/<i>` for each i at QoS 1 and waits for the acks.
async fn publish(mqtt: &mut Mqtt, topic: &str, range: std::ops::RangeInclusive<u64>) {
    let n = range.clone().count();
    for i in range {
        mqtt.publish(
            &format!("{topic}/{i}"),
            QoS::AtLeastOnce,
            false,
            format!("m{i}"),
        )
        .await;
    }
    mqtt.wait_pubacks(n, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_with_ids_and_last_event_id_resumes_exactly() {
    let server = Server::start();
    let mut mqtt = mqtt_client(&server, "sse-pub").await;
    publish(&mut mqtt, "s", 1..=5).await;
    // Dispatched, not only acknowledged: so the replay covers all five and `caught_up` comes
    // after them (else 4 and 5 could arrive live after it, which is as correct).
    wait_dispatched(&server, 5, WAIT).await;
    let path = "/sse?filter=s%2F%23&from=earliest";
    let mut sse = sse_connect(server.http_addr, path, &[]).await;
    assert_eq!(sse.status, 200);
    assert!(sse
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream")));
    let welcome = sse.expect("welcome").await;
    assert_eq!(welcome.data["recovered"], true, "{welcome:?}");
    assert!(
        welcome.data.get("session").is_none(),
        "no session fields: {welcome:?}"
    );
    assert!(welcome.data.get("resume_token").is_none());
    let epoch = welcome.data["position"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        welcome.id,
        format!("{epoch}:0"),
        "welcome's id is where delivery starts"
    );
    let (seqs, last) = sse.messages(5).await;
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(last, format!("{epoch}:5"));
    let caught = sse.expect("caught_up").await;
    assert_eq!(caught.id, format!("{epoch}:5"), "{caught:?}");
    publish(&mut mqtt, "s", 6..=8).await;
    let (seqs, last) = sse.messages(3).await;
    assert_eq!(seqs, [6, 7, 8], "live after the replay, no gap, no repeat");
    drop(sse);

    publish(&mut mqtt, "s", 9..=12).await;
    wait_dispatched(&server, 12, WAIT).await;
    let mut sse = sse_connect(server.http_addr, path, &[("Last-Event-ID", &last)]).await;
    let welcome = sse.expect("welcome").await;
    assert_eq!(welcome.data["recovered"], true, "{welcome:?}");
    let (seqs, _) = sse.messages(4).await;
    assert_eq!(
        seqs,
        [9, 10, 11, 12],
        "Last-Event-ID wins over from=earliest"
    );
    sse.expect("caught_up").await;
    assert!(sse.try_next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_across_sigterm_and_kill_9_with_every_seq_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut server = Server::start_with(&[], Some(data.clone()));
    let path = "/sse?filter=r%2F%23";
    let mut sse = sse_connect(server.http_addr, path, &[]).await;
    let mut last = sse.expect("welcome").await.id;
    let mut all = Vec::new();
    let mut mqtt = mqtt_client(&server, "sse-pub").await;
    publish(&mut mqtt, "r", 1..=20).await;
    let (seqs, id) = sse.messages(20).await;
    all.extend(seqs);
    last = if id.is_empty() { last } else { id };
    drop(mqtt);

    server.sigterm();
    let end = sse.next(WAIT).await.expect("an error event before the end");
    assert_eq!(
        (end.event.as_str(), end.data["code"].as_str()),
        ("error", Some("unavailable")),
        "{end:?}"
    );
    assert!(
        sse.next(WAIT).await.is_none(),
        "the stream ends at shutdown"
    );
    assert!(server.wait(WAIT).await.success());

    let mut server = Server::start_with(&[], Some(data.clone()));
    let mut mqtt = mqtt_client(&server, "sse-pub").await;
    publish(&mut mqtt, "r", 21..=40).await;
    wait_dispatched(&server, 20, WAIT).await;
    let mut sse = sse_connect(server.http_addr, path, &[("Last-Event-ID", &last)]).await;
    assert_eq!(sse.expect("welcome").await.data["recovered"], true);
    let (seqs, id) = sse.messages(20).await;
    all.extend(seqs);
    last = id;
    publish(&mut mqtt, "r", 41..=50).await;
    server.kill9();
    drop(mqtt);
    // What the stream delivered before the kill counts; the rest comes after the restart.
    while let Some(e) = sse.try_next(Duration::from_millis(500)).await {
        if e.event == "message" {
            all.push(seq_of(&e));
            last = e.id;
        }
    }

    let server = Server::start_with(&[], Some(data));
    let mut mqtt = mqtt_client(&server, "sse-pub").await;
    publish(&mut mqtt, "r", 51..=60).await;
    wait_dispatched(&server, 10, WAIT).await;
    let mut sse = sse_connect(server.http_addr, path, &[("Last-Event-ID", &last)]).await;
    assert_eq!(sse.expect("welcome").await.data["recovered"], true);
    let want = 60 - all.len();
    let (seqs, _) = sse.messages(want).await;
    all.extend(seqs);
    assert_eq!(
        all,
        (1..=60).collect::<Vec<u64>>(),
        "every seq exactly once, in order"
    );
    assert!(sse
        .try_next(Duration::from_millis(300))
        .await
        .is_some_and(|e| e.event == "caught_up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_epoch_is_an_honest_gap() {
    let server = Server::start();
    let mut mqtt = mqtt_client(&server, "sse-pub").await;
    publish(&mut mqtt, "e", 1..=3).await;
    let mut sse = sse_connect(
        server.http_addr,
        "/sse?filter=e%2F%23",
        &[("Last-Event-ID", "not-this-log:2")],
    )
    .await;
    let w = sse.expect("welcome").await;
    assert_eq!(w.data["recovered"], false, "{w:?}");
    assert_eq!(
        w.data["gaps"],
        serde_json::json!([{"reason":"epoch"}]),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_are_http_errors() {
    let hash = hex::encode(sha2::Sha256::digest(b"sse-token"));
    let config = format!(
        "[auth]\nmode = \"tokens\"\n[[auth.tokens]]\nsha256 = \"{hash}\"\nsub = [\"site/a/#\"]\npub = []\n"
    );
    let server = Server::start_configured(&config, &[], None);
    let addr = server.http_addr;
    let code = |s: &Sse| (s.status, s.error["code"].as_str().map(str::to_owned));
    let s = sse_connect(addr, "/sse?filter=site%2Fa%2F%23", &[]).await;
    assert_eq!(
        code(&s),
        (401, Some("unauthorized".into())),
        "{:?}",
        s.error
    );
    let bearer = ("Authorization", "Bearer sse-token");
    let s = sse_connect(addr, "/sse?filter=site%2F%23", &[bearer]).await;
    assert_eq!(code(&s), (403, Some("forbidden".into())), "{:?}", s.error);
    let s = sse_connect(addr, "/sse?filter=site%2Fa%2F%23%2Fx", &[bearer]).await;
    assert_eq!(code(&s), (400, Some("bad_filter".into())), "{:?}", s.error);
    let s = sse_connect(addr, "/sse", &[bearer]).await;
    assert_eq!(code(&s), (400, Some("bad_request".into())), "{:?}", s.error);
    let s = sse_connect(addr, "/sse?filter=site%2Fa%2F%23&from=yesterday", &[bearer]).await;
    assert_eq!(code(&s), (400, Some("bad_request".into())), "{:?}", s.error);
    let evil = ("Origin", "https://evil.example");
    let s = sse_connect(addr, "/sse?filter=site%2Fa%2F%23", &[bearer, evil]).await;
    assert_eq!(code(&s), (403, Some("forbidden".into())), "{:?}", s.error);
    assert!(s.header("access-control-allow-origin").is_none());

    // The token in the query (EventSource cannot set headers) works as the header does.
    let mut s = sse_connect(addr, "/sse?filter=site%2Fa%2F%23&token=sse-token", &[]).await;
    assert_eq!(s.status, 200, "{:?}", s.error);
    s.expect("welcome").await;
    let mut mqtt = mqtt_client(&server, "sse-pub").await;
    publish(&mut mqtt, "site/a", 1..=1).await;
    publish(&mut mqtt, "site/b", 2..=2).await;
    publish(&mut mqtt, "site/a", 3..=3).await;
    let (seqs, _) = s.messages(2).await;
    assert_eq!(seqs, [1, 3], "only what the grant and filter allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_the_stream_says_so_and_ends() {
    let server = Server::start_with(&[("MQWS_WS__MAX_CONNECTIONS", "1")], None);
    let mut first = sse_connect(server.http_addr, "/sse?filter=a", &[]).await;
    first.expect("welcome").await;
    let status: Value =
        serde_json::from_str(&http_get(server.http_addr, "/api/status").await.body).unwrap();
    assert_eq!(status["connections"]["sse"], 1, "{status}");
    assert_eq!(status["connections"]["websocket"], 0, "{status}");
    let mut second = sse_connect(server.http_addr, "/sse?filter=a", &[]).await;
    assert_eq!(
        second.status, 200,
        "EventSource must not give up: {:?}",
        second.error
    );
    let e = second.next(WAIT).await.expect("an error event");
    assert_eq!(
        (e.event.as_str(), e.data["code"].as_str()),
        ("error", Some("unavailable")),
        "{e:?}"
    );
    assert!(second.next(WAIT).await.is_none(), "and the stream ends");
    drop(first);
    // The slot is free again once the first stream's connection is gone.
    let mut third = None;
    for _ in 0..50 {
        let mut s = sse_connect(server.http_addr, "/sse?filter=a", &[]).await;
        if s.next(WAIT).await.is_some_and(|e| e.event == "welcome") {
            third = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(third.is_some(), "the first stream's slot was never freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_dropped_and_resumes_exactly() {
    let server = Server::start_with(
        &[
            ("MQWS_WS__SLOW_CONSUMER_TIMEOUT", "1s"),
            ("MQWS_WS__MAX_PENDING_BYTES", "64KiB"),
        ],
        None,
    );
    let path = "/sse?filter=big%2F%23";
    let mut sse = sse_connect(server.http_addr, path, &[]).await;
    let mut last = sse.expect("welcome").await.id;
    let n = 300;
    let mut mqtt = mqtt_client(&server, "sse-big").await;
    for i in 1..=n {
        mqtt.publish(
            &format!("big/{i}"),
            QoS::AtLeastOnce,
            false,
            vec![b'x'; 64 * 1024],
        )
        .await;
    }
    mqtt.wait_pubacks(n, Duration::from_secs(60)).await;
    // The client reads nothing: ~19 MiB cannot all sit in socket buffers, so the stream falls
    // behind, is ended after 1 s, and its connection is dropped although its last event was
    // never read.
    let mut open = f64::NAN;
    for _ in 0..100 {
        let text = http_get(server.http_addr, "/metrics").await.body;
        open = metric_value(&text, "mqws_sse_connections").unwrap_or(f64::NAN);
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, 0.0, "the unread stream still holds its place");
    let mut seqs = Vec::new();
    while let Some(e) = sse.try_next(Duration::from_secs(2)).await {
        if e.event == "message" {
            seqs.push(seq_of(&e));
            last = e.id;
        }
    }
    assert!(
        seqs.len() < n,
        "the stream was cut before the end ({} read)",
        seqs.len()
    );
    let mut sse = sse_connect(server.http_addr, path, &[("Last-Event-ID", &last)]).await;
    assert_eq!(sse.expect("welcome").await.data["recovered"], true);
    let want = n - seqs.len();
    let (rest, _) = sse.messages(want).await;
    seqs.extend(rest);
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<u64>>(),
        "every seq exactly once, in order"
    );
}
