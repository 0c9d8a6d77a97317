//! Honest resume on the real binary: a client that stops reading is dropped and resumes with
//! everything it missed; a session created just before kill -9 resumes after the restart; a
//! slow reader catches up in place without being closed; every lost range is in `gaps`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

fn resume(w: &Value) -> Value {
    json!({"session": w["session"], "resume_token": w["resume_token"]})
}

async fn publish_padded(mqtt: &mut Mqtt, topic: &str, range: std::ops::Range<u64>, pad: usize) {
    let count = range.end - range.start;
    let pad = "p".repeat(pad);
    for n in range {
        mqtt.publish(
            topic,
            QoS::AtLeastOnce,
            false,
            json!({"n": n, "pad": pad}).to_string(),
        )
        .await;
    }
    mqtt.wait_pubacks(count as usize, LONG).await;
}

/// Reads a replay up to `caught_up`; returns the counters, checking seqs only increase.
async fn replayed_counters(ws: &mut Ws) -> Vec<u64> {
    let mut out = Vec::new();
    let mut last = 0;
    loop {
        let f = next_json(ws, LONG).await;
        match f["type"].as_str() {
            Some("message") => {
                let seq = f["seq"].as_u64().unwrap();
                assert!(seq > last, "seq {seq} after {last}");
                last = seq;
                out.push(f["payload"]["n"].as_u64().unwrap());
            }
            Some("caught_up") => return out,
            _ => panic!("unexpected {f}"),
        }
    }
}

async fn metric(server: &Server, name: &str) -> f64 {
    let text = http_get(server.http_addr, "/metrics").await.body;
    metric_value(&text, name).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_then_resumes_with_everything_it_missed() {
    let server = Server::start_with(
        &[
            ("MQWS_WS__SLOW_CONSUMER_TIMEOUT", "2s"),
            ("MQWS_WS__MAX_PENDING_BYTES", "256KiB"),
            ("MQWS_WS__PING_INTERVAL", "1s"),
            ("MQWS_WS__PONG_TIMEOUT", "1s"),
        ],
        None,
    );
    // The sleeping laptop: a tiny receive buffer, and it reads nothing after `welcome` (so it
    // answers no ping either).
    let (laptop, _) = ws_connect_with(server.http_addr, Some(SUBPROTOCOL), Some(4096))
        .await
        .unwrap();
    let mut laptop = laptop;
    let w = hello(&mut laptop, &["lap/#"]).await;
    let mut mqtt = mqtt_client(&server, "lap-pub").await;
    // About 2 MB. Much of it fits in the kernel's socket buffers, "written" as far as the
    // server can tell: exactly what a sleeping laptop loses when its connection dies.
    publish_padded(&mut mqtt, "lap/t", 0..2000, 1000).await;
    // The server drops it: late pong, or a socket that takes nothing (4001).
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let dropped = metric(&server, "mqws_ws_pong_timeouts_total").await
            + metric(&server, "mqws_slow_consumer_closes_total").await;
        if dropped >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(laptop);

    // Wakes up: resumes with its session only, no `from`, no acks ever sent.
    let mut ws = ws_connect(&server).await;
    let back = hello_with(&mut ws, resume(&w)).await;
    assert_eq!(
        (back["resumed"].clone(), back["recovered"].clone()),
        (json!(true), json!(true)),
        "{back}"
    );
    let counters = replayed_counters(&mut ws).await;
    assert_eq!(
        counters,
        (0..2000).collect::<Vec<_>>(),
        "every message, by seq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_created_just_before_kill_9_resumes_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["k9/#", "other/+"]).await;
    let mut mqtt = mqtt_client(&server, "k9-pub").await;
    publish_padded(&mut mqtt, "k9/t", 0..50, 10).await;
    // Acknowledged means logged; the session itself was never written.
    server.kill9();

    let server = Server::start_with(&[], Some(dir));
    let mut ws = ws_connect(&server).await;
    let back = hello_with(&mut ws, resume(&w)).await;
    assert_eq!(back["resumed"], true, "{back}");
    assert_eq!(back["filters"], json!(["k9/#", "other/+"]));
    assert_eq!(back["recovered"], true, "{back}");
    assert_eq!(
        replayed_counters(&mut ws).await,
        (0..50).collect::<Vec<_>>()
    );
    assert_eq!(
        metric(&server, "mqws_sessions_restored_from_token_total").await,
        1.0
    );
    // A tampered token restores nothing.
    let mut other = ws_connect(&server).await;
    let token = w["resume_token"].as_str().unwrap();
    // Change a character well inside the signature: the last one carries padding bits, so
    // swapping it can decode to the same bytes (CI once drew a token already ending in 'A').
    let at = token.len() - 10;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    assert_ne!(forged, token);
    let fresh = hello_with(
        &mut other,
        json!({"session": w["session"], "resume_token": forged}),
    )
    .await;
    assert_eq!(fresh["resumed"], false, "{fresh}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_32_kib_per_s_catches_up_in_place_and_stays_connected() {
    const TOTAL: u64 = 500;
    let server = Server::start_with(&[("MQWS_WS__MAX_PENDING_BYTES", "16KiB")], None);
    let (mut slow, _) = ws_connect_with(server.http_addr, Some(SUBPROTOCOL), Some(4096))
        .await
        .unwrap();
    hello(&mut slow, &["th/#"]).await;
    let reader = tokio::spawn(async move {
        const RATE: f64 = 32.0 * 1024.0;
        let started = tokio::time::Instant::now();
        let (mut bytes, mut counters, mut replayed, mut last) = (0usize, Vec::new(), 0, 0);
        while counters.len() < TOTAL as usize {
            let f = match next_frame(&mut slow, LONG).await {
                Some(Frame::Json(f)) => f,
                other => return Err(format!("after {} messages: {other:?}", counters.len())),
            };
            bytes += f.to_string().len();
            if f["type"] == "message" {
                let seq = f["seq"].as_u64().unwrap();
                if seq <= last {
                    return Err(format!("seq {seq} after {last}"));
                }
                last = seq;
                replayed += usize::from(f["replay"] == true);
                counters.push(f["payload"]["n"].as_u64().unwrap());
            }
            // Hold the read rate at 32 KiB/s.
            let due = started + Duration::from_secs_f64(bytes as f64 / RATE);
            tokio::time::sleep_until(due).await;
        }
        Ok((counters, replayed))
    });
    // Bursts of ~40 KB (more than the 16 KiB queue) every 2 s: about 20 KB/s on average,
    // below the reader's rate, so it falls behind in each burst and catches up between them.
    let mut mqtt = mqtt_client(&server, "th-pub").await;
    for burst in 0..5 {
        publish_padded(&mut mqtt, "th/t", burst * 100..(burst + 1) * 100, 380).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (counters, replayed) = reader.await.unwrap().unwrap();
    assert_eq!(
        counters,
        (0..TOTAL).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(
        replayed > 0,
        "it fell behind and caught up from the tail or the log"
    );
    assert!(metric(&server, "mqws_ws_fell_behind_total").await >= 1.0);
    assert_eq!(
        metric(&server, "mqws_slow_consumer_closes_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lost_range_is_listed_in_gaps() {
    use mqws::testkit::{seed_log, Seed};
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("log");
    let msg = |n: u64| Seed::Message {
        topic: "g/t".to_owned(),
        payload: json!({"n": n}).to_string().into_bytes(),
    };
    // Seqs 1-3, lost 4-7, 8-10, lost 11-12, 13-15: a data dir of an earlier release.
    let seeds = [
        msg(0),
        msg(1),
        msg(2),
        Seed::Lost(4),
        msg(3),
        msg(4),
        msg(5),
        Seed::Lost(2),
        msg(6),
        msg(7),
        msg(8),
    ];
    let epoch = seed_log(&dir, &seeds).unwrap();
    // The seeding process has exited, so the data dir is free; a moment for the file lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = Server::start_with(&[], Some(dir));
    let mut ws = ws_connect(&server).await;
    let w = hello_with(
        &mut ws,
        json!({"filters": ["g/#"], "from": {"epoch": epoch, "seq": 1}}),
    )
    .await;
    assert_eq!(w["recovered"], false, "{w}");
    assert_eq!(
        w["gaps"],
        json!([
            {"reason": "dropped", "from": 4, "to": 7},
            {"reason": "dropped", "from": 11, "to": 12}
        ]),
        "{w}"
    );
    assert!(w.get("gaps_truncated").is_none(), "{w}");
    assert_eq!(replayed_counters(&mut ws).await, (1..9).collect::<Vec<_>>());
}
