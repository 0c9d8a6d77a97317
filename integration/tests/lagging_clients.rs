//! Two thousand WebSocket clients that never read, under a steady publisher: the log
//! keeps every message, a reading client receives everything, and the server's memory stays
//! bounded (the old behaviour held 2.3 GB and lost 46% of the stream).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::json;

const CLIENTS: usize = 2000;
/// Publish rate: `LAGGING_RATE` or 5,000 msg/s. The figure is 20k msg/s; the suite runs
/// a debug build on a shared 2-core machine, where that starves the publisher's own client, so
/// the 20k run is made against the release binary (`MQWS_BIN`, see benches/RESULTS.md).
fn rate() -> u64 {
    std::env::var("LAGGING_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}
const SECONDS: u64 = 3;
const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_stalled_clients_cost_bounded_memory_and_lose_nothing() {
    let (rate, total) = (rate(), rate() * SECONDS);
    let mut server = Server::start_with(
        &[
            ("MQWS_WS__MAX_TOTAL_PENDING_BYTES", "32MiB"),
            ("MQWS_WS__TAIL_BYTES", "16MiB"),
            // Keep them connected through the run: the point is memory while they stall.
            ("MQWS_WS__PING_INTERVAL", "300s"),
            ("MQWS_WS__SLOW_CONSUMER_TIMEOUT", "300s"),
        ],
        None,
    );
    let mut stalled = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (mut ws, _) = ws_connect_with(server.http_addr, Some(SUBPROTOCOL), Some(4096))
            .await
            .unwrap();
        hello(&mut ws, &["load/#"]).await;
        stalled.push(ws);
    }
    let baseline = rss_kib(server.pid());
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (peak, pid) = (peak.clone(), server.pid());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut reader = ws_connect(&server).await;
    hello(&mut reader, &["load/#"]).await;
    let reading = tokio::spawn(async move {
        let mut next = 0u64;
        let mut last_seq = 0;
        while next < total {
            let m = next_json(&mut reader, LONG).await;
            if m["type"] == "caught_up" {
                // It fell behind (this machine has 2 cores) and caught up in place.
                continue;
            }
            assert_eq!(m["type"], "message", "{m}");
            let seq = m["seq"].as_u64().unwrap();
            assert!(seq > last_seq, "seq {seq} after {last_seq}");
            last_seq = seq;
            assert_eq!(m["payload"]["n"].as_u64(), Some(next), "{m}");
            next += 1;
        }
    });

    let mqtt = mqtt_client(&server, "load-pub").await;
    let pad = "p".repeat(100);
    let started = tokio::time::Instant::now();
    for n in 0..total {
        mqtt.publish(
            "load/t",
            QoS::AtMostOnce,
            false,
            json!({"n": n, "pad": pad}).to_string(),
        )
        .await;
        if n % 5000 == 0 {
            if let Some(st) = server.try_wait_for(Duration::ZERO).await {
                panic!("server exited with {st:?} at {n}");
            }
        }
        if n % 200 == 199 {
            let due = started + Duration::from_secs_f64((n + 1) as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    let took = started.elapsed();
    wait_dispatched(&server, total, LONG).await;
    tokio::time::timeout(LONG, reading)
        .await
        .expect("the reading client got everything in time")
        .unwrap();
    sampler.abort();
    let peak_kib = peak.load(Ordering::Relaxed);
    eprintln!(
        "published {total} at {rate}/s in {took:?}; server RSS baseline {} MiB, peak {} MiB with {CLIENTS} stalled clients",
        baseline / 1024,
        peak_kib / 1024
    );
    // The log kept every message.
    let (_, logged) = replay_all(&server, "load/#", LONG).await;
    assert_eq!(logged.len() as u64, total, "every message is in the log");
    // Queues are bounded by 2 × 32 MiB in total and the tail by 16 MiB (counted with both
    // frames); what is left is per-connection write buffers (16 KiB each) and allocator slack.
    // Measured: +97 MiB with the release binary at 20k msg/s asked, +172 MiB with the debug
    // binary at 5k msg/s (not explained yet), so the bound here only catches gross regressions:
    // the old fan-out held 2.3 GB.
    let grown_mib = peak_kib.saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 400,
        "RSS grew by {grown_mib} MiB under {CLIENTS} stalled clients"
    );
    drop(stalled);
}
