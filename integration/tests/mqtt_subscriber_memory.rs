//! Memory under MQTT subscribers on the real binary: a raw MQTT publisher writes QoS 0
//! messages as fast as mqws reads them while MQTT subscribers on a logged filter take them
//! (served by the proxy from the log's fan-out, not by rumqttd, whose segment logs pinned each
//! connection's read buffers: rumqtt #1001). Peak RSS must stay within what the configured byte
//! limits allow (the formula of docs/guarantees.md), and every subscriber must get every
//! message, in order. Bounded by message count, not time. Heavy: one test in its own binary.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use mqws_integration::*;

use mqws_integration::memory::{self, MIB};

/// The publishing connection's read and forward buffers.
const PER_PUBLISHER: u64 = 2 * MIB;
/// Messages published.
const N: u32 = 100_000;
/// Payload bytes of each.
const SIZE: usize = 256;
/// Subscribers.
const SUBSCRIBERS: usize = 3;

fn bound() -> u64 {
    memory::bound(PER_PUBLISHER)
}

/// A subscriber on `mem/#` that counts the PUBLISHes it reads and checks their order (each
/// payload starts with its number).
fn subscriber(addr: std::net::SocketAddr, i: usize) -> std::thread::JoinHandle<u32> {
    let mut raw = RawMqtt::connect(addr, &format!("mem-sub-{i}"), false, 60);
    assert_eq!(raw.subscribe(1, &[b"mem/#"]), vec![1]);
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    std::thread::spawn(move || {
        let mut next = 0u32;
        while next < N {
            let Some(p) = raw.try_packet() else { break };
            if p[0] >> 4 != 3 {
                continue;
            }
            // QoS 0 (published so), topic "mem/t": the payload follows the 2 + 5 topic bytes.
            let at = 1 + p[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1 + 7;
            let n = u32::from_be_bytes(p[at..at + 4].try_into().unwrap());
            assert_eq!(n, next, "subscriber {i}: in order, none lost");
            next += 1;
        }
        next
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_subscribers_under_a_flat_out_publisher_stay_within_the_configured_bytes() {
    let env = memory::env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(&env, None);
    let pid = server.pid();
    let addr = server.mqtt_addr;
    let subs: Vec<_> = (0..SUBSCRIBERS).map(|i| subscriber(addr, i)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_kib = rss_kib(pid);
    let sampler = memory::PeakRss::start(pid);
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        let mut raw = RawMqtt::connect(addr, "mem-pub", false, 60);
        let mut out = Vec::with_capacity(64 * 1024);
        for i in 0..N {
            let mut body = 5u16.to_be_bytes().to_vec();
            body.extend_from_slice(b"mem/t");
            body.extend_from_slice(&i.to_be_bytes());
            body.resize(2 + 5 + SIZE, b'.');
            out.extend_from_slice(&raw::packet(0x30, &body));
            if out.len() >= 60 * 1024 {
                raw.stream.write_all(&out).unwrap();
                out.clear();
            }
        }
        raw.stream.write_all(&out).unwrap();
        raw.send(&[0xe0, 0]);
        while raw.try_packet().is_some() {}
    })
    .await
    .unwrap();
    let written = started.elapsed();
    let got: Vec<u32> =
        tokio::task::spawn_blocking(move || subs.into_iter().map(|s| s.join().unwrap()).collect())
            .await
            .unwrap();
    let peak_kib = sampler.stop();
    let grew = peak_kib.saturating_sub(start_kib) * 1024;
    eprintln!(
        "{N} × {SIZE} B written in {:.1} s, all read in {:.1} s; RSS {start_kib} KiB at start, \
         peak {peak_kib} KiB (+{} MiB, bound +{} MiB); received {got:?}",
        written.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        grew / MIB,
        bound() / MIB
    );
    assert_eq!(
        got,
        vec![N; SUBSCRIBERS],
        "every subscriber got every message"
    );
    assert!(
        grew <= bound(),
        "RSS grew by {} MiB under MQTT subscribers; the configured limits allow {} MiB",
        grew / MIB,
        bound() / MIB
    );
}
