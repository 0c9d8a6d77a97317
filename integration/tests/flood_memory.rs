//! Memory under large-payload floods on the real binary: two raw MQTT publishers write 64 KiB
//! and then 1 MB QoS 0 payloads as fast as mqws reads them, while a WebSocket subscriber takes
//! every message. The server's peak RSS (sampled from /proc) must stay within what the
//! configured byte limits allow (the formula in docs/guarantees.md), and the subscriber must get every
//! message written, with no gap. Heavy: one test in its own binary.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqws_integration::*;

use mqws_integration::memory::{self, MIB};

/// Two publishing connections, each may hold one packet of `broker.max_payload_size` (1 MiB)
/// being read and one being forwarded.
const PER_PUBLISHER: u64 = 2 * MIB;

/// The bound on RSS growth: [`memory::bound`] with the publishers' buffers.
fn bound() -> u64 {
    memory::bound(2 * PER_PUBLISHER)
}

/// Writes `n` QoS 0 publishes of `size` bytes to `topic` flat out (blocking writes: the socket
/// pushes back when mqws stops reading), then DISCONNECT, and waits for the close.
fn flood(
    addr: std::net::SocketAddr,
    id: String,
    size: usize,
    n: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut raw = RawMqtt::connect(addr, &id, false, 60);
        let topic = format!("flood/{id}");
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend(std::iter::repeat_n(b'x', size));
        let publish = raw::packet(0x30, &body);
        for _ in 0..n {
            raw.stream.write_all(&publish).unwrap();
        }
        raw.send(&[0xe0, 0]);
        while raw.try_packet().is_some() {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_floods_stay_within_the_configured_bytes() {
    let mut env = memory::env();
    env.push(("MQWS_LOG__MAX_BYTES", "2GiB".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(&env, None);
    let pid = server.pid();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["flood/#"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_kib = rss_kib(pid);

    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                match next_frame(&mut ws, Duration::from_secs(60)).await {
                    Some(Frame::Json(v)) if v["type"] == "message" => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Frame::Json(v)) if v["type"] == "caught_up" => {}
                    other => return other,
                }
            }
        })
    };
    let sampler = memory::PeakRss::start(pid);

    let mut written = 0;
    for (size, n) in [(64 * 1024, 1500u64), (1_000_000, 150)] {
        let started = Instant::now();
        let pubs = [
            flood(server.mqtt_addr, format!("a{size}"), size, n),
            flood(server.mqtt_addr, format!("b{size}"), size, n),
        ];
        tokio::task::spawn_blocking(move || pubs.map(|p| p.join().unwrap()))
            .await
            .unwrap();
        written += 2 * n;
        eprintln!(
            "{} × {size} B written in {:.1} s",
            2 * n,
            started.elapsed().as_secs_f64()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < written && Instant::now() < deadline {
        assert!(!reader.is_finished(), "the subscriber's stream ended early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak_kib = sampler.stop();
    let got = received.load(Ordering::Relaxed);
    reader.abort();
    let grew = peak_kib.saturating_sub(start_kib) * 1024;
    eprintln!(
        "RSS {start_kib} KiB at start, peak {peak_kib} KiB (+{} MiB, bound +{} MiB); {got} of \
         {written} messages received",
        grew / MIB,
        bound() / MIB
    );
    assert_eq!(got, written, "every message written reaches the subscriber");
    assert!(
        grew <= bound(),
        "RSS grew by {} MiB under the floods; the configured limits allow {} MiB",
        grew / MIB,
        bound() / MIB
    );
}
