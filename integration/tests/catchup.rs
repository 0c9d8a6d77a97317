//! Catch-up on the real binary: resume after missed messages, resume cycles under load, gaps
//! (eviction, epoch), time-based starts, and kill -9 durability of what clients received.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

/// Reads frames until `caught_up`, returning the replayed messages and the caught_up frame.
async fn until_caught_up(ws: &mut Ws) -> (Vec<Value>, Value) {
    let mut replayed = Vec::new();
    loop {
        let f = next_json(ws, LONG).await;
        match f["type"].as_str() {
            Some("message") => {
                assert_eq!(
                    f["replay"], true,
                    "messages before caught_up are replays: {f}"
                );
                replayed.push(f);
            }
            Some("caught_up") => return (replayed, f),
            _ => panic!("unexpected frame during replay: {f}"),
        }
    }
}

/// Asserts `got` is exactly `want`, reporting the length and first difference only.
fn assert_sequence(got: &[u64], want: std::ops::Range<u64>, what: &str) {
    let want: Vec<u64> = want.collect();
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} values, want {}; first difference at index {:?} (got {:?}, want {:?})",
            got.len(),
            want.len(),
            at,
            at.map(|i| got[i]),
            at.map(|i| want[i]),
        );
    }
}

fn counter(m: &Value) -> u64 {
    m["payload"]["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter in {m}"))
}

fn seq(m: &Value) -> u64 {
    m["seq"].as_u64().unwrap()
}

async fn publish_counted(mqtt: &mut Mqtt, topic: &str, from: u64, count: u64) {
    for n in from..from + count {
        mqtt.publish(topic, QoS::AtLeastOnce, false, json!({"n": n}).to_string())
            .await;
    }
    mqtt.wait_pubacks(count as usize, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_ten_thousand_missed_messages() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    let welcome = hello(&mut ws, &["c/#"]).await;
    close(&mut ws, 1000).await;

    let mut mqtt = mqtt_client(&server, "pub-10k").await;
    publish_counted(&mut mqtt, "c/x", 0, 10_000).await;
    publish_counted(&mut mqtt, "other/x", 0, 100).await;
    // rumqttd acknowledges before the bridge logs: wait so this is a pure replay.
    wait_dispatched(&server, 10_100, LONG).await;

    let mut ws = ws_connect(&server).await;
    let w = hello_with(
        &mut ws,
        json!({"session": welcome["session"], "resume_token": welcome["resume_token"]}),
    )
    .await;
    assert_eq!(w["resumed"], true, "{w}");
    assert_eq!(w["recovered"], true, "{w}");
    assert_eq!(w["gaps"], json!([]), "{w}");
    let (replayed, caught_up) = until_caught_up(&mut ws).await;
    assert!(replayed.windows(2).all(|p| seq(&p[0]) < seq(&p[1])));
    assert!(caught_up["position"]["seq"].as_u64() >= w["position"]["seq"].as_u64());
    assert!(replayed
        .iter()
        .all(|m| seq(m) <= w["position"]["seq"].as_u64().unwrap()));
    // What was logged but not yet dispatched when the session started arrives live, right after.
    let mut counters: Vec<u64> = replayed.iter().map(counter).collect();
    let mut last = seq(replayed.last().unwrap());
    while counters.len() < 10_000 {
        let m = next_message(&mut ws, TIMEOUT).await;
        assert!(m.get("replay").is_none(), "live after caught_up: {m}");
        assert!(seq(&m) > last);
        last = seq(&m);
        counters.push(counter(&m));
    }
    assert_sequence(&counters, 0..10_000, "all missed, once, in order");
    assert!(
        replayed.iter().all(|m| m["topic"] == "c/x"),
        "filter applies to replay"
    );

    // Live continues after the replay.
    mqtt.publish(
        "c/live",
        QoS::AtLeastOnce,
        false,
        json!({"n": 10_000}).to_string(),
    )
    .await;
    let live = next_message(&mut ws, TIMEOUT).await;
    assert_eq!(counter(&live), 10_000);
    assert!(
        live.get("replay").is_none() || live["replay"] == false,
        "{live}"
    );
    assert!(seq(&live) > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_resume_cycles_under_flat_out_publishing_lose_and_repeat_nothing() {
    let server = Server::start();
    const TOTAL: u64 = 20_000;
    let mut mqtt = mqtt_client(&server, "flat-out").await;
    // Subscribe first: a hello without `from` starts at the head, so anything published before
    // it is (correctly) not part of this session.
    let mut first_ws = ws_connect(&server).await;
    let w = hello(&mut first_ws, &["load/#"]).await;
    let publisher = tokio::spawn(async move {
        publish_counted(&mut mqtt, "load/a", 0, TOTAL).await;
        mqtt
    });
    let epoch = w["position"]["epoch"].clone();
    let mut last_seq = w["position"]["seq"].as_u64().unwrap();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new(); // counter -> seq
    let mut first = Some(first_ws);
    for cycle in 0..50 {
        let mut ws = match first.take() {
            Some(ws) => ws,
            None => ws_connect(&server).await,
        };
        if cycle > 0 {
            let w = hello_with(
                &mut ws,
                json!({"filters": ["load/#"], "from": {"epoch": epoch, "seq": last_seq}}),
            )
            .await;
            assert_eq!(w["recovered"], true, "cycle {cycle}: {w}");
        }
        // Read a varying number of frames, then drop the connection mid-stream.
        let want = 20 + (cycle * 37) % 200;
        let mut got = 0;
        while got < want {
            let f = match next_frame(&mut ws, Duration::from_secs(2)).await {
                Some(Frame::Json(f)) => f,
                None => break, // publisher finished and nothing more is coming
                Some(other) => panic!("cycle {cycle}: {other:?}"),
            };
            if f["type"] == "caught_up" {
                continue;
            }
            assert_eq!(f["type"], "message", "{f}");
            let (n, s) = (counter(&f), seq(&f));
            assert!(s > last_seq, "cycle {cycle}: seq {s} after {last_seq}");
            assert!(
                seen.insert(n, s).is_none(),
                "cycle {cycle}: counter {n} twice"
            );
            last_seq = s;
            got += 1;
        }
        drop(ws);
    }
    publisher.await.unwrap();
    wait_dispatched(&server, TOTAL, LONG).await;
    // Drain the rest with one more resume.
    let mut ws = ws_connect(&server).await;
    let w = hello_with(
        &mut ws,
        json!({"filters": ["load/#"], "from": {"epoch": epoch, "seq": last_seq}}),
    )
    .await;
    assert_eq!(w["recovered"], true, "{w}");
    let (replayed, _) = until_caught_up(&mut ws).await;
    for f in replayed {
        let (n, s) = (counter(&f), seq(&f));
        assert!(s > last_seq);
        assert!(seen.insert(n, s).is_none(), "counter {n} twice");
        last_seq = s;
    }
    let counters: Vec<u64> = seen.keys().copied().collect();
    assert_sequence(&counters, 0..TOTAL, "zero loss");
    let seqs: Vec<u64> = seen.values().copied().collect();
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "seq order matches publish order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_reports_the_exact_range_and_replays_the_rest() {
    let server = Server::start_with(
        &[
            ("MQWS_LOG__MAX_MESSAGES", "100"),
            ("MQWS_LOG__RETENTION_INTERVAL", "50ms"),
        ],
        None,
    );
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["e/#"]).await;
    let start = w["position"]["seq"].as_u64().unwrap();
    close(&mut ws, 1000).await;
    // A live subscriber proves every message was dispatched (not only logged) before the
    // resume below, so the resumed session's start is past the evicted range.
    let mut live = ws_connect(&server).await;
    hello(&mut live, &["e/#"]).await;
    let mut mqtt = mqtt_client(&server, "evict").await;
    publish_counted(&mut mqtt, "e/x", 0, 300).await;
    collect_messages(&mut live, 300, LONG).await;
    // Wait for retention to remove the 200 oldest. (The `mqws_log_messages` gauge is only
    // refreshed once per retention tick, so it can show 100 before the last step ran.)
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let body = http_get(server.http_addr, "/metrics").await.body;
        if metric_value(&body, "mqws_log_evicted_total") == Some(200.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = ws_connect(&server).await;
    let w = hello_with(
        &mut ws,
        json!({"filters": ["e/#"], "from": {"epoch": w["position"]["epoch"], "seq": start}}),
    )
    .await;
    assert_eq!(w["recovered"], false, "{w}");
    assert_eq!(
        w["gaps"],
        json!([{"reason": "evicted", "from": start + 1, "to": start + 200}]),
        "{w}"
    );
    let (replayed, _) = until_caught_up(&mut ws).await;
    let counters: Vec<u64> = replayed.iter().map(counter).collect();
    assert_sequence(&counters, 200..300, "the retained rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_log_is_reported_as_an_epoch_gap() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    let mut mqtt = mqtt_client(&server, "epoch").await;
    publish_counted(&mut mqtt, "p/x", 0, 5).await;
    wait_dispatched(&server, 5, LONG).await;
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["p/#"]).await;
    let old = w["position"].clone();
    server.sigterm();
    assert!(server.wait(TIMEOUT).await.success());
    std::fs::remove_dir_all(&dir).unwrap();

    let server = Server::start_with(&[], Some(dir));
    let mut ws = ws_connect(&server).await;
    let w = hello_with(&mut ws, json!({"filters": ["p/#"], "from": old})).await;
    assert_ne!(w["position"]["epoch"], old["epoch"]);
    assert_eq!(w["recovered"], false);
    assert_eq!(w["gaps"], json!([{"reason": "epoch"}]));
    let (replayed, _) = until_caught_up(&mut ws).await;
    assert!(replayed.is_empty(), "no replay across epochs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_based_start_replays_from_that_moment() {
    let server = Server::start();
    let mut mqtt = mqtt_client(&server, "time").await;
    publish_counted(&mut mqtt, "t/x", 0, 5).await;
    wait_dispatched(&server, 5, LONG).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = now_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    publish_counted(&mut mqtt, "t/x", 5, 5).await;
    wait_dispatched(&server, 10, LONG).await;
    let mut ws = ws_connect(&server).await;
    let w = hello_with(&mut ws, json!({"filters": ["t/#"], "from": {"time_ms": t}})).await;
    assert_eq!(w["recovered"], true, "{w}");
    let (replayed, _) = until_caught_up(&mut ws).await;
    let counters: Vec<u64> = replayed.iter().map(counter).collect();
    assert_eq!(counters, vec![5, 6, 7, 8, 9]);
    assert!(replayed.iter().all(|m| m["ts"].as_u64().unwrap() >= t));

    // "earliest" gives everything; "latest" gives nothing and still says caught_up.
    let mut ws = ws_connect(&server).await;
    hello_with(&mut ws, json!({"filters": ["t/#"], "from": "earliest"})).await;
    let (replayed, _) = until_caught_up(&mut ws).await;
    assert_eq!(replayed.len(), 10);
    let mut ws = ws_connect(&server).await;
    let w = hello_with(&mut ws, json!({"filters": ["t/#"], "from": "latest"})).await;
    assert!(w.get("recovered").is_none(), "no replay asked: {w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_received_message_with_its_seq() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["k/#"]).await;
    let mqtt = mqtt_client(&server, "kill").await;
    let publisher = tokio::spawn(async move {
        for n in 0..1_000_000u64 {
            mqtt.publish("k/x", QoS::AtMostOnce, false, json!({"n": n}).to_string())
                .await;
        }
    });
    let mut received: BTreeMap<u64, u64> = BTreeMap::new(); // seq -> counter
    while received.len() < 2_000 {
        let m = next_message(&mut ws, TIMEOUT).await;
        received.insert(seq(&m), counter(&m));
    }
    server.kill9();
    publisher.abort();
    // Whatever else was already queued to the socket before the kill was also delivered.
    while let Some(Frame::Json(m)) = next_frame(&mut ws, Duration::from_millis(200)).await {
        if m["type"] == "message" {
            received.insert(seq(&m), counter(&m));
        }
    }
    let max_seen = *received.keys().last().unwrap();

    let server = Server::start_with(&[], Some(dir));
    let mut ws = ws_connect(&server).await;
    let w = hello_with(&mut ws, json!({"filters": ["k/#"], "from": "earliest"})).await;
    assert!(w["position"]["seq"].as_u64().unwrap() >= max_seen, "{w}");
    let (replayed, _) = until_caught_up(&mut ws).await;
    let after: BTreeMap<u64, u64> = replayed.iter().map(|m| (seq(m), counter(m))).collect();
    for (s, n) in &received {
        assert_eq!(
            after.get(s),
            Some(n),
            "seq {s} (counter {n}) survived kill -9"
        );
    }
    // New messages never reuse a seq.
    let mqtt = mqtt_client(&server, "after").await;
    mqtt.publish(
        "k/new",
        QoS::AtLeastOnce,
        false,
        json!({"n": 0}).to_string(),
    )
    .await;
    let live = next_message(&mut ws, TIMEOUT).await;
    assert!(seq(&live) > *after.keys().last().unwrap_or(&0));
    assert!(seq(&live) > max_seen);
}
