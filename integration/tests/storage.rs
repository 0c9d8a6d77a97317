//! Storage under real faults: a retained value acknowledged just before kill -9 survives, and a
//! full disk (a small tmpfs as the data dir) stops delivery, reports not-ready, and recovers by
//! itself once the disk has room again, with every delivered message still in the log after a
//! restart.
//!
//! The full-disk test mounts a tmpfs, which needs root (CI and the developer machines run as
//! root). Where mounting is refused the test fails with the reason; it does not skip.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn retained_values_acknowledged_before_kill9_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let mut publisher = mqtt_client(&server, "retain-pub").await;
    let n = 50;
    for i in 0..n {
        publisher
            .publish(
                &format!("readers/r{i}/status"),
                QoS::AtLeastOnce,
                true,
                format!("online {i}"),
            )
            .await;
    }
    publisher.wait_pubacks(n, WAIT).await;
    // No grace period: the last PUBACK has just arrived.
    server.kill9();
    drop(publisher);

    let server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let mut sub = mqtt_client(&server, "retain-sub").await;
    sub.subscribe("readers/+/status", QoS::AtLeastOnce).await;
    let mut got = BTreeMap::new();
    while got.len() < n {
        let Some(p) = sub.try_next_publish(WAIT).await else {
            break;
        };
        got.insert(
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        );
    }
    for i in 0..n {
        assert_eq!(
            got.get(&format!("readers/r{i}/status")).map(String::as_str),
            Some(format!("online {i}").as_str()),
            "retained value {i} was acknowledged but is gone after kill -9 (got {} of {n})",
            got.len()
        );
    }
}

/// A tmpfs mounted for the test and unmounted when it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        run_mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], at);
        Tmpfs(at.to_owned())
    }

    fn resize(&self, size: &str) {
        run_mount(&["-o", &format!("remount,size={size}")], &self.0);
    }
}

/// Runs `mount ARGS AT`; fails the test with mount's own message (it needs root).
fn run_mount(args: &[&str], at: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(at)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} for the full-disk test failed (it needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn readyz(server: &Server) -> u16 {
    http_get(server.http_addr, "/readyz").await.status
}

async fn wait_readyz(server: &Server, want: u16, within: Duration) {
    let start = Instant::now();
    while readyz(server).await != want {
        assert!(
            start.elapsed() < within,
            "/readyz did not become {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// Reads messages into `seen` until the connection ends.
fn record(mut ws: Ws, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match next_frame(&mut ws, Duration::from_secs(120)).await {
                Some(Frame::Json(m)) if m["type"] == "message" => {
                    let seq = m["seq"].as_u64().unwrap();
                    let payload = m["payload"].as_str().unwrap_or_default().to_owned();
                    seen.lock().unwrap().push((seq, payload));
                }
                Some(Frame::Json(_)) => {}
                _ => return,
            }
        }
    })
}

/// A publisher whose QoS 1 PUBLISH on `disk/left` waits for the log vanishes (its socket
/// reset), and then the proxy fails to write to it (a topic it subscribed to, outside
/// `bridge.filters` so not logged, reaches it at once). Its PUBLISH must still reach MQTT subscribers once the log has it.
async fn vanish_with_a_held_publish(addr: std::net::SocketAddr) {
    tokio::task::spawn_blocking(move || {
        let mut leaver = RawMqtt::connect(addr, "disk-leaver", false, 60);
        assert_eq!(leaver.subscribe(1, &[b"echo/#"]), vec![1]);
        leaver.publish("disk/left", 1, b"left behind");
        let mut echo = RawMqtt::connect(addr, "disk-echo", false, 60);
        echo.publish("echo/1", 0, b"unread");
        std::thread::sleep(Duration::from_millis(300));
        // Unread bytes in its receive buffer: closing resets the connection.
        drop(leaver);
        std::thread::sleep(Duration::from_millis(300));
        echo.publish("echo/2", 0, b"to a reset socket");
        std::thread::sleep(Duration::from_millis(300));
    })
    .await
    .unwrap();
}

/// A publisher whose QoS 1 PUBLISH waits for the log, pinging every second with keep alive
/// 3 s: every PINGREQ must be answered within 2 s (so it is not cut off) until its PUBACK
/// comes. Returns how many PINGRESPs it got before the PUBACK.
fn held_publisher(addr: std::net::SocketAddr) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut raw = RawMqtt::connect(addr, "disk-pinger", false, 3);
        raw.publish("disk/ping", 1, b"held");
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let start = Instant::now();
        let mut pongs = 0;
        while start.elapsed() < Duration::from_secs(120) {
            raw.send(&[0xc0, 0]);
            match raw.try_packet() {
                Some(p) if p == [0xd0, 0] => pongs += 1,
                Some(p) if p[..2] == [0x40, 2] => return pongs,
                other => panic!("PINGREQ {pongs} while a PUBLISH waits for the log: {other:?}"),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("no PUBACK within 120 s");
    })
}

#[tokio::test]
async fn a_full_disk_pauses_delivery_and_recovers_without_restart() {
    let mnt = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(mnt.path(), "96m");
    let data = mnt.path().join("data");
    // The backlog queued while the disk was full arrives in a burst after recovery; the
    // client's queue is sized for it so this test is about storage, not slow consumers.
    let env = [
        ("MQWS_LOG__CACHE_CAPACITY", "4MiB"),
        ("MQWS_LOG__MAX_BATCH_MESSAGES", "256"),
        ("MQWS_WS__MAX_PENDING_BYTES", "512MiB"),
        ("MQWS_BRIDGE__FILTERS", "[\"disk/#\"]"),
    ];
    let mut server = Server::start_with(&env, Some(data.clone()));

    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["disk/#"]).await;
    let mut left_watch = mqtt_client(&server, "left-watch").await;
    left_watch.subscribe("disk/left", QoS::AtLeastOnce).await;
    let seen: Seen = Arc::default();
    let reader = record(ws, seen.clone());

    // A QoS 1 publisher of 4 KiB payloads, each starting with its id and counter.
    let mut publisher = AckedPublisher::start(
        server.mqtt_addr,
        "disk-pub-1",
        "disk/fill",
        4096,
        100,
        u64::MAX,
    )
    .await;

    wait_readyz(&server, 503, Duration::from_secs(90)).await;
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    assert!(
        metric_value(&metrics, "mqws_log_errors_total").unwrap_or(0.0) >= 1.0,
        "a failing log is counted"
    );
    // Nothing is acknowledged or delivered while the log cannot be written.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (frozen, acked) = (seen.lock().unwrap().len(), publisher.acked());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        frozen,
        "messages delivered while the log fails"
    );
    assert_eq!(
        publisher.acked(),
        acked,
        "messages acknowledged while the log fails"
    );
    assert_eq!(
        publisher.log.lock().unwrap().error,
        None,
        "the publisher keeps its connection"
    );
    assert_eq!(readyz(&server).await, 503);
    vanish_with_a_held_publish(server.mqtt_addr).await;
    let pinger = held_publisher(server.mqtt_addr);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!pinger.is_finished(), "acknowledged while the log fails");

    tmpfs.resize("256m");
    wait_readyz(&server, 200, Duration::from_secs(60)).await;
    let start = Instant::now();
    while publisher.acked() < acked + 200 || seen.lock().unwrap().len() < frozen + 200 {
        assert!(
            start.elapsed() < WAIT,
            "acknowledgements and delivery did not resume after the disk had room"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.stop().await;
    publisher.finished().await;
    let left = left_watch.next_publish(WAIT).await;
    assert_eq!(
        &left.payload[..],
        b"left behind",
        "a PUBLISH made durable after its publisher vanished reaches MQTT subscribers"
    );
    let pongs = tokio::task::spawn_blocking(move || pinger.join().unwrap())
        .await
        .unwrap();
    assert!(pongs >= 4, "{pongs} PINGRESPs while the PUBLISH waited");
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.sigterm();
    assert!(
        server.wait(WAIT).await.success(),
        "clean exit after recovery"
    );
    reader.await.unwrap();
    let delivered = seen.lock().unwrap().clone();
    assert!(
        delivered.windows(2).all(|w| w[0].0 < w[1].0),
        "seqs strictly increase on the connection"
    );

    // After a restart every delivered message is in the log under its seq.
    let server = Server::start_with(&env, Some(data));
    let mut ws = ws_connect(&server).await;
    let w = hello_with(&mut ws, json!({"filters": ["disk/#"], "from": "earliest"})).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let mut logged = BTreeMap::new();
    loop {
        match next_frame(&mut ws, WAIT).await {
            Some(Frame::Json(m)) if m["type"] == "message" => {
                let payload = m["payload"].as_str().unwrap_or_default().to_owned();
                logged.insert(m["seq"].as_u64().unwrap(), payload);
            }
            Some(Frame::Json(m)) if m["type"] == "caught_up" => break,
            Some(Frame::Json(_)) => {}
            other => panic!("replay ended early: {other:?}"),
        }
    }
    for (seq, payload) in &delivered {
        assert_eq!(
            logged.get(seq),
            Some(payload),
            "seq {seq} was delivered before the restart but is not in the log"
        );
    }
    let counters: std::collections::BTreeSet<u64> = logged
        .values()
        .filter_map(|p| parse_counted(p.as_bytes(), 10).map(|(_, i)| i))
        .collect();
    for i in &publisher.log.lock().unwrap().acked {
        assert!(
            counters.contains(i),
            "message {i} was acknowledged but is not in the log"
        );
    }
    eprintln!(
        "full disk: {} acknowledged, {} delivered before the restart ({} before the disk filled), {} in the log after it",
        publisher.acked(),
        delivered.len(),
        frozen,
        logged.len()
    );
}
