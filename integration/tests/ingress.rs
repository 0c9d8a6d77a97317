//! Durable ingress on the real binary: what mqws acknowledges to an MQTT publisher is in the
//! log, whatever happens next (kill -9, SIGTERM), and a flood is slowed down instead of lost.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use mqws_integration::*;

const WAIT: Duration = Duration::from_secs(30);

/// The (publisher id, counter) of every logged message on `filter`.
async fn logged_counters(server: &Server, filter: &str, id_len: usize) -> BTreeSet<(String, u64)> {
    let (_, msgs) = replay_all(server, filter, Duration::from_secs(120)).await;
    msgs.iter()
        .filter_map(|m| parse_counted(m["payload"].as_str()?.as_bytes(), id_len))
        .collect()
}

/// Checks that every acknowledged message of `pubs` is in `logged`; returns how many were.
fn all_acked_logged(pubs: &[AckedPublisher], logged: &BTreeSet<(String, u64)>) -> usize {
    let mut n = 0;
    for p in pubs {
        let log = p.log.lock().unwrap();
        for i in &log.acked {
            assert!(
                logged.contains(&(p.id.clone(), *i)),
                "{}#{i} was acknowledged but is not in the log ({} acked by it, {} logged in all)",
                p.id,
                log.acked.len(),
                logged.len()
            );
            n += 1;
        }
    }
    n
}

async fn four_publishers(server: &Server, round: usize) -> Vec<AckedPublisher> {
    let mut pubs = Vec::new();
    for j in 0..4 {
        // Ids of one length, so payloads parse back.
        let id = format!("r{round}p{j}-");
        pubs.push(
            AckedPublisher::start(server.mqtt_addr, &id, "ingress/load", 200, 100, u64::MAX).await,
        );
    }
    pubs
}

async fn wait_acks(pubs: &[AckedPublisher], at_least: usize) {
    let start = Instant::now();
    while pubs.iter().map(AckedPublisher::acked).sum::<usize>() < at_least {
        assert!(
            start.elapsed() < WAIT,
            "publishers got fewer than {at_least} acks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for round in 0..3 {
        let mut server = Server::start_with(&[], Some(dir.path().to_path_buf()));
        let pubs = four_publishers(&server, round).await;
        wait_acks(&pubs, 2000).await;
        // Killed mid-flood, with 4 × 100 messages in flight.
        server.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        all.extend(pubs);
    }
    let server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let logged = logged_counters(&server, "ingress/#", 5).await;
    let acked = all_acked_logged(&all, &logged);
    eprintln!(
        "kill -9: {acked} acknowledged over 3 rounds, all of them among {} logged",
        logged.len()
    );
    assert!(acked >= 6000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigterm_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let pubs = four_publishers(&server, 0).await;
    let addr = server.mqtt_addr;
    let watcher = tokio::task::spawn_blocking(move || RawMqtt::connect(addr, "v5-idle", true, 60))
        .await
        .unwrap();
    wait_acks(&pubs, 2000).await;
    server.sigterm();
    assert!(
        server.wait(WAIT).await.success(),
        "exit 0 on SIGTERM under load"
    );
    let goodbye = tokio::task::spawn_blocking(move || {
        let mut watcher = watcher;
        (watcher.try_packet(), watcher.try_packet())
    })
    .await
    .unwrap();
    assert_eq!(
        goodbye,
        (Some(vec![0xe0, 2, 0x8B, 0]), None),
        "an MQTT 5 client is told the server is shutting down, then the connection closes"
    );
    let server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let logged = logged_counters(&server, "ingress/#", 5).await;
    let acked = all_acked_logged(&pubs, &logged);
    // Logged but never acknowledged: the publisher would send these again. At shutdown the
    // proxy stops reading and lets rumqttd's acknowledgements of what was logged go out, so
    // only messages of a read that was partly logged when ingest stopped may be left.
    let unacked = logged.len() - acked;
    eprintln!(
        "SIGTERM: {acked} acknowledged, all among {} logged; {unacked} logged but not acknowledged",
        logged.len()
    );
    assert!(
        unacked <= 4 * 100,
        "{unacked} logged messages were not acknowledged (more than were in flight)"
    );
}

/// An MQTT 3.1.1 QoS 0 PUBLISH frame.
fn qos0_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    mqws_integration::raw::packet(0x30, &body)
}

/// Connects a raw 3.1.1 client and writes `n` QoS 0 publishes flat out (blocking writes: the
/// socket pushes back when mqws stops reading), then DISCONNECT.
fn raw_qos0_flood(addr: std::net::SocketAddr, id: &str, n: u64) -> std::thread::JoinHandle<()> {
    let id = id.to_owned();
    std::thread::spawn(move || {
        let Raw(mut s) = Raw::connect(addr, &id, true);
        s.set_nodelay(true).unwrap();
        let mut buf = Vec::with_capacity(64 * 1024);
        for i in 0..n {
            buf.extend(qos0_publish("ingress/flood", &counted_payload(&id, i, 64)));
            if buf.len() > 60 * 1024 {
                s.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        buf.extend_from_slice(&[0xe0, 0]);
        s.write_all(&buf).unwrap();
        // Wait for the server to close after DISCONNECT (past the CONNACK).
        let mut sink = [0u8; 64];
        while matches!(std::io::Read::read(&mut s, &mut sink), Ok(n) if n > 0) {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_qos0_publishers_flat_out_lose_nothing() {
    let server = Server::start();
    let n = 50_000;
    let a = raw_qos0_flood(server.mqtt_addr, "qa-", n);
    let b = raw_qos0_flood(server.mqtt_addr, "qb-", n);
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        a.join().unwrap();
        b.join().unwrap();
    })
    .await
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let (_, msgs) = replay_all(&server, "ingress/flood", Duration::from_secs(120)).await;
    let logged: BTreeSet<(String, u64)> = msgs
        .iter()
        .filter_map(|m| parse_counted(m["payload"].as_str()?.as_bytes(), 3))
        .collect();
    for id in ["qa-", "qb-"] {
        let missing: Vec<u64> = (0..n)
            .filter(|i| !logged.contains(&(id.to_owned(), *i)))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "{id}: written to the socket but not logged, e.g. {missing:?}"
        );
    }
    assert_eq!(msgs.len() as u64, 2 * n, "nothing logged twice");
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps in the seqs"
    );
    eprintln!(
        "two QoS 0 floods: {} messages written in {secs:.1} s, all logged",
        2 * n
    );
}

/// A raw MQTT 3.1.1 connection for exact packet sequences.
struct Raw(std::net::TcpStream);

impl Raw {
    fn connect(addr: std::net::SocketAddr, id: &str, clean: bool) -> Raw {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let flags = if clean { 0x02 } else { 0x00 };
        let mut connect = vec![
            0x10,
            (12 + id.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            flags,
            0,
            60,
        ];
        connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
        connect.extend_from_slice(id.as_bytes());
        s.write_all(&connect).unwrap();
        let mut raw = Raw(s);
        assert_eq!(raw.packet()[0] >> 4, 2, "CONNACK");
        raw
    }

    /// The next packet (fixed header and body; bodies here are short).
    fn packet(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut head = [0u8; 2];
        self.0.read_exact(&mut head).unwrap();
        let mut body = vec![0u8; usize::from(head[1])];
        self.0.read_exact(&mut body).unwrap();
        [head.to_vec(), body].concat()
    }

    fn qos2_publish(&mut self, topic: &str, pkid: u16, payload: &[u8], dup: bool) {
        let mut p = vec![
            0x34 | if dup { 0x08 } else { 0 },
            (4 + topic.len() + payload.len()) as u8,
        ];
        p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        p.extend_from_slice(topic.as_bytes());
        p.extend_from_slice(&pkid.to_be_bytes());
        p.extend_from_slice(payload);
        self.0.write_all(&p).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_retransmission_after_a_reconnect_is_logged_once() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        let mut first = Raw::connect(addr, "q2-client", false);
        first.qos2_publish("ingress/q2", 5, b"exactly once", false);
        assert_eq!(first.packet(), vec![0x50, 2, 0, 5], "PUBREC");
        // The connection breaks before PUBREL; the client sends the PUBLISH again.
        drop(first);
        std::thread::sleep(Duration::from_millis(300));
        let mut again = Raw::connect(addr, "q2-client", false);
        again.qos2_publish("ingress/q2", 5, b"exactly once", true);
        assert_eq!(again.packet(), vec![0x50, 2, 0, 5], "PUBREC again");
        again.0.write_all(&[0x62, 2, 0, 5]).unwrap();
        assert_eq!(again.packet(), vec![0x70, 2, 0, 5], "PUBCOMP");
        // A new exchange with the same packet id is a new message.
        again.qos2_publish("ingress/q2", 5, b"second", false);
        assert_eq!(again.packet(), vec![0x50, 2, 0, 5], "PUBREC");
        again.0.write_all(&[0x62, 2, 0, 5]).unwrap();
        assert_eq!(again.packet(), vec![0x70, 2, 0, 5], "PUBCOMP");
    })
    .await
    .unwrap();
    // Durable before PUBREC, but a replay covers what the fan-out has dispatched.
    wait_dispatched(&server, 2, WAIT).await;
    let (_, msgs) = replay_all(&server, "ingress/q2", WAIT).await;
    let payloads: Vec<&str> = msgs
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, vec!["exactly once", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_from_one_source_does_not_lock_out_others() {
    // A small connection limit: without the per-source bound the flood would take every slot.
    let server = Server::start_with(&[("MQWS_BROKER__MAX_CONNECTIONS", "1000")], None);
    let addr = server.mqtt_addr;
    let flood = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..5000 {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(
                &"127.0.0.2:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
            if s.connect(&addr.into()).is_ok() {
                held.push(s);
            }
        }
        held
    })
    .await
    .unwrap();
    let started = Instant::now();
    let _client = Mqtt::connect(addr, "real-client").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "CONNACK took {took:?} during the flood"
    );
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    assert!(
        metric_value(
            &metrics,
            "mqws_mqtt_refused_total{reason=\"max_pending_per_source\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "the flood was cut at its source"
    );
    drop(flood);
}

/// A raw 3.1.1 CONNECT with a retained QoS 1 will on `will_topic`.
fn connect_with_will(addr: std::net::SocketAddr, id: &str, will_topic: &str, will: &[u8]) -> Raw {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02 | 0x04 | 0x08 | 0x20,
        0,
        60,
    ];
    for field in [id.as_bytes(), will_topic.as_bytes(), will] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field);
    }
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    s.write_all(&p).unwrap();
    let mut raw = Raw(s);
    assert_eq!(raw.packet()[0] >> 4, 2, "CONNACK");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_goes_through_the_log_to_both_sides_and_not_after_disconnect() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["readers/+/status"]).await;
    let mut sub = mqtt_client(&server, "status-watch").await;
    sub.subscribe("readers/+/status", rumqttc::QoS::AtLeastOnce)
        .await;
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        // Ends cleanly: no will.
        let mut polite = connect_with_will(addr, "reader-2", "readers/r2/status", b"offline");
        polite.0.write_all(&[0xe0, 0]).unwrap();
        drop(polite);
        // Vanishes: its will is published.
        let vanished = connect_with_will(addr, "reader-1", "readers/r1/status", b"offline");
        std::thread::sleep(Duration::from_millis(200));
        vanished.0.shutdown(std::net::Shutdown::Both).unwrap();
    })
    .await
    .unwrap();
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("readers/r1/status"), Some("offline"))
    );
    assert_eq!(m["retain"], true, "{m}");
    let p = sub.next_publish(WAIT).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("readers/r1/status", &b"offline"[..])
    );
    assert!(
        sub.try_next_publish(Duration::from_secs(1)).await.is_none(),
        "a clean DISCONNECT sends no will"
    );
    let (_, logged) = replay_all(&server, "readers/#", WAIT).await;
    assert_eq!(
        logged.len(),
        1,
        "only the vanished reader's will is in the log: {logged:?}"
    );
    // Presence survives: a later subscriber gets the retained will.
    let mut late = mqtt_client(&server, "late-watch").await;
    late.subscribe("readers/+/status", rumqttc::QoS::AtLeastOnce)
        .await;
    let p = late.next_publish(WAIT).await;
    assert!(p.retain && p.topic == "readers/r1/status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_disconnect_v5_clients_with_a_reason_code() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        for (topic, alias, reason) in [("a/+/b", None, 0x90u8), ("", Some(7u16), 0x94)] {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let id = b"v5-bad";
            let mut connect = vec![
                0x10,
                (13 + id.len()) as u8,
                0,
                4,
                b'M',
                b'Q',
                b'T',
                b'T',
                5,
                2,
                0,
                60,
                0,
            ];
            connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
            connect.extend_from_slice(id);
            s.write_all(&connect).unwrap();
            let mut connack = [0u8; 2];
            s.read_exact(&mut connack).unwrap();
            let mut rest = vec![0u8; usize::from(connack[1])];
            s.read_exact(&mut rest).unwrap();
            let mut props = Vec::new();
            if let Some(a) = alias {
                props.push(0x23);
                props.extend_from_slice(&a.to_be_bytes());
            }
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic.as_bytes());
            body.push(props.len() as u8);
            body.extend_from_slice(&props);
            body.extend_from_slice(b"x");
            let mut publish = vec![0x30, body.len() as u8];
            publish.extend_from_slice(&body);
            s.write_all(&publish).unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            assert_eq!(
                got,
                vec![0xe0, 2, reason, 0],
                "DISCONNECT for {topic:?} {alias:?}"
            );
        }
    })
    .await
    .unwrap();
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    assert!(
        metric_value(&metrics, "mqws_mqtt_refused_total{reason=\"protocol\"}").unwrap_or(0.0)
            >= 2.0
    );
}

/// Writes 64 KiB QoS 0 publishes flat out until `stop`; returns how many it wrote.
fn big_flood(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let Raw(mut s) = Raw::connect(addr, "big-flood", true);
        let packet = qos0_publish("ingress/big", &vec![b'x'; 64 * 1024]);
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            s.write_all(&packet).unwrap();
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_publisher_does_not_starve_another() {
    // A small ingress budget, so the flood keeps it full.
    let env = [("MQWS_BRIDGE__INBOUND_BYTES", "1MiB")];
    let server = Server::start_with(&env, None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = big_flood(server.mqtt_addr, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // One message in flight at a time: each waits its turn for the budget behind the flood.
    let mut small =
        AckedPublisher::start(server.mqtt_addr, "fair-", "ingress/fair", 100, 1, 200).await;
    let start = Instant::now();
    while small.acked() < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the small publisher got {} of 200 acks beside the flood",
            small.acked()
        );
        assert!(!flood.is_finished(), "the flood stopped early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    small.finished().await;
    let written = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    eprintln!(
        "beside a 64 KiB flood ({written} written): 200 sequential QoS 1 acks in {:.2} s",
        took.as_secs_f64()
    );
}
