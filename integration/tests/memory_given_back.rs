//! Memory a burst used is given back once the burst is over, on the real binary with default
//! settings: 1,000 WebSocket clients stop reading while 100 messages of 64 KiB flow to them
//! (about 8.7 MiB of frames each: their queues fill to the default bounds, 8 MiB each and
//! 64 MiB together), then every one of them goes away; within 60 s the server's RSS (from
//! /proc) is back within 2× of what it was before the load. Before it, one reading client got
//! as many messages of that size, so the caches that keep recent messages on purpose (the
//! tail, the log's page cache) hold as much before the burst as after it.
//! A thousand sockets and hundreds of MiB: one test in its own binary.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mqws_integration::memory::PeakRss;
use mqws_integration::*;

const CLIENTS: usize = 1000;
const MESSAGES: usize = 100;
const PAYLOAD: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_burst_of_stalled_clients_used_is_given_back() {
    let server = Server::start();
    let pid = server.pid();
    // What every connection shares (buffers, the hub) and what the caches keep of recent
    // messages is in the baseline: one client reads as many messages of the size to come.
    let mqtt = mqtt_client(&server, "burst-pub").await;
    let (mut first, _) = ws_connect_with(server.http_addr, Some(SUBPROTOCOL), None)
        .await
        .unwrap();
    hello(&mut first, &["burst/#"]).await;
    for _ in 0..MESSAGES {
        mqtt.publish(
            "burst/warm",
            rumqttc::QoS::AtLeastOnce,
            false,
            vec![1u8; PAYLOAD],
        )
        .await;
        next_message(&mut first, TIMEOUT).await;
    }
    close(&mut first, 1000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let peak = PeakRss::start(pid);
    // Clients that read nothing after hello, with small receive buffers.
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (mut ws, _) = ws_connect_with(server.http_addr, Some(SUBPROTOCOL), Some(4096))
            .await
            .unwrap();
        hello(&mut ws, &["burst/#"]).await;
        clients.push(ws);
    }
    let logged_before = logged(&server).await;
    for i in 0..MESSAGES {
        let mut payload = vec![0u8; PAYLOAD];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        mqtt.publish("burst/x", rumqttc::QoS::AtLeastOnce, false, payload)
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = logged(&server).await;
        if now >= logged_before + MESSAGES as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the burst was not logged in time: {} of {MESSAGES}\n{}",
            now - logged_before,
            server.tail_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Fan-out to the stalled clients' queues.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(pid);
    drop(clients);
    drop(mqtt);
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push(rss_kib(pid));
    }
    let after = rss_kib(pid);
    let peak = peak.stop();
    println!(
        "RSS before {before} KiB, loaded {loaded} KiB, peak {peak} KiB; every 10 s after the \
         clients left: {samples:?} KiB"
    );
    assert!(
        loaded > before + 32 * 1024,
        "the burst did not use memory ({before} → {loaded} KiB): the test measures nothing"
    );
    assert!(
        after <= 2 * before,
        "RSS {after} KiB 60 s after the burst, {before} KiB before (peak {peak} KiB)"
    );
}

/// `mqws_messages_logged_total`.
async fn logged(server: &Server) -> f64 {
    let body = http_get(server.http_addr, "/metrics").await.body;
    metric_value(&body, "mqws_messages_logged_total").unwrap_or(0.0)
}
