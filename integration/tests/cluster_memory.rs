//! Cluster mode's memory under a 1 MB-payload flood published on another node: the measured
//! node follows the stream and has a WebSocket client that reads nothing (it falls behind and
//! is served from the stream by a catch-up reader). Its peak RSS (sampled from /proc) stays
//! within the one-node formula plus the stream readers' term, `(1 + cluster.nats.max_readers)
//! × 1.5 × cluster.nats.read_ahead`; afterwards the client reads every message, in order. Heavy:
//! one test in its own binary.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use mqws_integration::memory::{self, MIB};
use mqws_integration::*;

const STREAM: &str = "memory";
/// `cluster.nats.read_ahead`.
const READ_AHEAD: u64 = 2 * MIB;
/// `cluster.nats.max_readers`.
const MAX_READERS: u64 = 8;
/// Messages published, each `SIZE` bytes.
const N: u64 = 150;
const SIZE: usize = 1_000_000;

fn node(nats: &Nats, extra: &[(&'static str, String)]) -> Server {
    let mut env: Vec<(&str, String)> = vec![
        ("MQWS_LOG__BACKEND", "jetstream".to_owned()),
        ("MQWS_CLUSTER__NATS__URLS", format!("[\"{}\"]", nats.url())),
        ("MQWS_CLUSTER__NATS__STREAM", STREAM.to_owned()),
        (
            "MQWS_CLUSTER__NATS__READ_AHEAD",
            format!("{}MiB", READ_AHEAD / MIB),
        ),
        ("MQWS_CLUSTER__NATS__MAX_READERS", MAX_READERS.to_string()),
        ("MQWS_LOG__MAX_BYTES", "1GiB".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(&env, None)
}

/// Writes `N` QoS 1 publishes of `SIZE` bytes and waits for every PUBACK.
fn flood(addr: std::net::SocketAddr) {
    let mut raw = RawMqtt::connect(addr, "cm-pub", false, 60);
    let topic = "flood/t";
    for i in 0..N {
        let id = u16::try_from(i % 60_000 + 1).unwrap();
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        let mut payload = format!("{i}|").into_bytes();
        payload.resize(SIZE, b'x');
        body.extend_from_slice(&payload);
        raw.stream.write_all(&raw::packet(0x32, &body)).unwrap();
    }
    let mut acked = 0;
    while acked < N {
        let p = raw.packet();
        if p[0] >> 4 == 4 {
            acked += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_another_node_stays_within_the_readers_bytes() {
    let nats = Nats::start();
    let publisher_node = node(&nats, &[]);
    let measured = node(&nats, &memory::env());
    let pid = measured.pid();
    // The sleeping laptop on the measured node: a tiny receive buffer, reads nothing.
    let (mut laptop, _) = ws_connect_with(measured.http_addr, Some(SUBPROTOCOL), Some(4096))
        .await
        .unwrap();
    hello(&mut laptop, &["flood/#"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_kib = rss_kib(pid);
    let sampler = memory::PeakRss::start(pid);
    let started = Instant::now();
    let addr = publisher_node.mqtt_addr;
    tokio::task::spawn_blocking(move || flood(addr))
        .await
        .unwrap();
    eprintln!(
        "{N} × {SIZE} B acknowledged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The measured node follows and its catch-up reads on meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let peak_kib = sampler.stop();
    let grew = peak_kib.saturating_sub(start_kib) * 1024;
    let readers = (1 + MAX_READERS) * 3 * READ_AHEAD / 2;
    let bound = memory::bound(0) + readers;
    eprintln!(
        "measured node: RSS {start_kib} KiB at start, peak {peak_kib} KiB (+{} MiB, bound +{} \
         MiB of which readers {} MiB)",
        grew / MIB,
        bound / MIB,
        readers / MIB
    );
    // The laptop wakes up: every message, in order (from the stream, or told what is gone).
    let mut next = 0;
    while next < N {
        let f = next_json(&mut laptop, Duration::from_secs(60)).await;
        match f["type"].as_str() {
            Some("message") => {
                let payload = f["payload"].as_str().unwrap();
                let n: u64 = payload.split('|').next().unwrap().parse().unwrap();
                assert_eq!(n, next, "in order, none missing");
                next += 1;
            }
            Some("caught_up") => {}
            _ => panic!("unexpected {f}"),
        }
    }
    assert!(
        grew <= bound,
        "RSS grew by {} MiB under a flood from another node; the limits allow {} MiB",
        grew / MIB,
        bound / MIB
    );
}
