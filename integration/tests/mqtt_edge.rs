//! The MQTT edge on the real binary: SUBSCRIBE filters rumqttd would wrongly grant or could
//! never forget get SUBACK failure codes, the rest of the SUBSCRIBE still works, and filters
//! are bounded per connection and in total.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_filters_get_failure_codes_and_the_valid_ones_work() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        for v5 in [false, true] {
            let invalid = if v5 { 0x8F } else { 0x80 };
            let id = format!("edge-sub-{v5}");
            let mut sub = RawMqtt::connect(addr, &id, v5, 60);
            let topic = format!("edge/{v5}/t");
            let codes = sub.subscribe(
                3,
                &[b"edge/+/t", b"a/#/b", b"", b"x\0y", b"a/b+", b"$SYS/#"],
            );
            assert_eq!(
                codes,
                vec![1, invalid, invalid, invalid, invalid, invalid],
                "v5 {v5}: one code per filter, in order"
            );
            let codes = sub.subscribe(4, &[b"#/a"]);
            assert_eq!(codes, vec![invalid], "v5 {v5}: all refused");
            // The granted filter works.
            let mut publisher = RawMqtt::connect(addr, &format!("{id}-pub"), v5, 60);
            publisher.publish(&topic, 1, b"through");
            assert_eq!(publisher.packet()[0], 0x40, "PUBACK");
            let got = sub.packet();
            assert_eq!(got[0] >> 4, 3, "a PUBLISH, got {got:?}");
            assert!(
                got.windows(topic.len()).any(|w| w == topic.as_bytes()),
                "on {topic}"
            );
            assert!(got.ends_with(b"through"));
            // The connection is still in order: PINGREQ is answered once.
            sub.send(&[0xc0, 0]);
            assert_eq!(sub.packet(), vec![0xd0, 0]);
            sub.stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            assert_eq!(sub.try_packet(), None, "nothing more");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_are_bounded_per_connection_and_in_total() {
    // Outside bridge.filters, so rumqttd holds these filters and the total applies (the
    // filters the proxy serves cost rumqttd nothing: tests/mqtt_filter_quotas.rs).
    let env = [
        ("MQWS_BROKER__MAX_FILTERS", "4"),
        ("MQWS_BROKER__MAX_FILTERS_PER_CLIENT", "2"),
        ("MQWS_BRIDGE__FILTERS", "[\"site/#\"]"),
    ];
    let server = Server::start_with(&env, None);
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        let mut a = RawMqtt::connect(addr, "bound-a", true, 60);
        assert_eq!(
            a.subscribe(1, &[b"f/a", b"f/b", b"f/c"]),
            vec![1, 1, 0x97],
            "two per connection (MQTT 5: quota exceeded)"
        );
        assert_eq!(a.subscribe(2, &[b"f/a"]), vec![1], "again: not a new one");
        let mut b = RawMqtt::connect(addr, "bound-b", false, 60);
        assert_eq!(
            b.subscribe(1, &[b"f/a", b"f/d", b"f/e"]),
            vec![1, 1, 0x80],
            "a known filter is free; then the connection's bound"
        );
        let mut c = RawMqtt::connect(addr, "bound-c", false, 60);
        assert_eq!(
            c.subscribe(1, &[b"f/f", b"f/g"]),
            vec![1, 0x80],
            "four distinct filters in total"
        );
        // UNSUBSCRIBE frees a place on the connection, not in the total.
        let mut body = 9u16.to_be_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&3u16.to_be_bytes());
        body.extend_from_slice(b"f/b");
        a.send(&mqws_integration::raw::packet(0xa2, &body));
        assert_eq!(a.packet()[0], 0xb0, "UNSUBACK");
        assert_eq!(a.subscribe(3, &[b"f/d"]), vec![1]);
        assert_eq!(a.subscribe(4, &[b"f/h"]), vec![0x97]);
    })
    .await
    .unwrap();
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    assert!(metric_value(&metrics, "mqws_mqtt_filters_refused_total").unwrap_or(0.0) >= 4.0);
}

/// Connects an MQTT 5 client (session expiry 30 s) whose will on `topic` has delay `delay` s.
fn connect_v5_with_will(
    addr: std::net::SocketAddr,
    id: &str,
    clean: bool,
    topic: &str,
    delay: u8,
) -> std::net::TcpStream {
    mqws_integration::raw::connect_v5_with_will(addr, id, clean, topic, delay).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_delay_holds_the_will_back_from_the_log_too() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["wills/#"]).await;
    let addr = server.mqtt_addr;
    // Vanishes and comes back within the delay, resuming its session: no will anywhere.
    let (back, back_dropped) = tokio::task::spawn_blocking(move || {
        let s = connect_v5_with_will(addr, "will-back", false, "wills/back", 3);
        s.shutdown(std::net::Shutdown::Both).unwrap();
        let dropped = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let s = connect_v5_with_will(addr, "will-back", false, "wills/back", 3);
        (s, dropped)
    })
    .await
    .unwrap();
    // Vanishes for good: the will comes after its delay of 2 s, not before.
    let vanished = tokio::task::spawn_blocking(move || {
        let s = connect_v5_with_will(addr, "will-gone", true, "wills/gone", 2);
        s.shutdown(std::net::Shutdown::Both).unwrap();
        std::time::Instant::now()
    })
    .await
    .unwrap();
    let m = next_message(&mut ws, Duration::from_secs(15)).await;
    let waited = vanished.elapsed();
    assert_eq!(m["topic"], "wills/gone", "{m}");
    assert!(
        waited >= Duration::from_millis(1900),
        "the will came {waited:?} after the connection ended, before its delay"
    );
    // Past the resumed session's will delay.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(back_dropped.elapsed())).await;
    let (_, logged) = replay_all(&server, "wills/#", Duration::from_secs(30)).await;
    let topics: Vec<&str> = logged.iter().filter_map(|m| m["topic"].as_str()).collect();
    assert_eq!(
        topics,
        ["wills/gone"],
        "the resumed session's will is not logged"
    );
    drop(back);
}
