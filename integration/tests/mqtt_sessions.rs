//! Persistent MQTT sessions on the real binary, with rumqttc clients of both versions: a
//! session's subscriptions and position are stored with the log, so what was published while
//! its client was away arrives when it returns, also after kill -9 or a SIGTERM restart, in
//! order, once, with `session present`. Session and message expiry, Receive Maximum 1 over a
//! backlog, a filter added later, QoS 0 while away, the session limit, takeover and logins.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use mqws_integration::session_client::{payloads, persistent, publish, Client, Opts, Sub};
use mqws_integration::{hash_password, mqtt_client, Server, TIMEOUT};
use rumqttc::QoS;

/// Subscribes a 3.1.1 and a 5 client with persistent sessions to `cmd/#` and disconnects them.
async fn two_sessions(server: &Server) {
    for (v5, id) in [(false, "reader-v4"), (true, "reader-v5")] {
        let mut s = Sub::connect(server.mqtt_addr, id, persistent(v5)).await;
        assert_eq!((s.code, s.present), (0, false), "{id}: a new session");
        s.subscribe("cmd/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
    }
}

/// Both clients come back and get `range`, in order, once each, with session present.
async fn both_get(server: &Server, range: std::ops::Range<u64>) {
    for (v5, id) in [(false, "reader-v4"), (true, "reader-v5")] {
        let mut s = Sub::connect(server.mqtt_addr, id, persistent(v5)).await;
        assert_eq!((s.code, s.present), (0, true), "{id}: session present");
        let got = s.publishes(range.clone().count()).await;
        assert_eq!(payloads(&got), range.clone().collect::<Vec<_>>(), "{id}");
        assert!(
            got.iter().all(|m| m.qos == 1 && m.topic == "cmd/r1"),
            "{id}"
        );
        s.nothing_more(Duration::from_millis(500)).await;
        s.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_what_was_published_while_away_across_kill_9_and_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let dir: PathBuf = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    two_sessions(&server).await;
    publish(&server, "cmd/r1", 0..1000, QoS::AtLeastOnce).await;
    server.kill9();

    let mut server = Server::start_with(&[], Some(dir.clone()));
    both_get(&server, 0..1000).await;

    // Away again; this time the server stops with SIGTERM.
    publish(&server, "cmd/r1", 1000..1500, QoS::AtLeastOnce).await;
    server.sigterm();
    server.wait(Duration::from_secs(30)).await;
    let server = Server::start_with(&[], Some(dir));
    both_get(&server, 1000..1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_gone_and_an_expired_message_is_not_delivered() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    let short = Opts {
        expiry: Some(2),
        ..persistent(true)
    };
    let mut s = Sub::connect(addr, "short", short).await;
    s.subscribe("cmd/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let mut kept = Sub::connect(addr, "kept", persistent(true)).await;
    kept.subscribe("cmd/#", QoS::AtLeastOnce).await;
    kept.disconnect().await;

    // One message that expires after 1 s, one after 60 s, published while both are away.
    let mut p = Sub::connect(
        addr,
        "expiring-pub",
        Opts {
            clean: true,
            expiry: None,
            ..persistent(true)
        },
    )
    .await;
    let Client::V5(c) = &p.client else {
        unreachable!()
    };
    for (payload, expiry) in [("soon", 1), ("later", 60)] {
        let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
            message_expiry_interval: Some(expiry),
            ..Default::default()
        };
        c.publish_with_properties(
            "cmd/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            payload,
            props,
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    p.nothing_more(Duration::from_millis(10)).await;

    let mut s = Sub::connect(addr, "short", persistent(true)).await;
    assert!(!s.present, "expiry 2 s: gone after 3.5 s");
    s.nothing_more(Duration::from_secs(1)).await;

    let mut kept = Sub::connect(addr, "kept", persistent(true)).await;
    assert!(kept.present);
    let got = kept.publishes(1).await;
    assert_eq!(got[0].payload, "later");
    let left = got[0].expiry.expect("the remaining expiry interval");
    assert!((50..60).contains(&left), "remaining interval {left}");
    kept.nothing_more(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_1_gets_a_1000_message_backlog_in_order() {
    let server = Server::start();
    let one = Opts {
        receive_max: Some(1),
        ..persistent(true)
    };
    let mut s = Sub::connect(server.mqtt_addr, "narrow", one).await;
    s.subscribe("cmd/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    publish(&server, "cmd/r1", 0..1000, QoS::AtLeastOnce).await;
    let mut s = Sub::connect(server.mqtt_addr, "narrow", one).await;
    assert!(s.present);
    let got = s.publishes(1000).await;
    assert_eq!(payloads(&got), (0..1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_added_later_gets_nothing_from_before_it_and_qos0_waits_only_if_configured() {
    for (queue_qos0, want) in [("false", vec!["a1"]), ("true", vec!["a0", "a1"])] {
        let server = Server::start_with(&[("MQWS_BROKER__QUEUE_QOS0_MESSAGES", queue_qos0)], None);
        let addr = server.mqtt_addr;
        let mut s = Sub::connect(addr, "later", persistent(false)).await;
        s.subscribe("a/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
        publish(&server, "a/t", 0..1, QoS::AtMostOnce).await;
        publish(&server, "b/t", 0..1, QoS::AtLeastOnce).await;
        let mut p = mqtt_client(&server, "later-pub").await;
        p.publish("a/t", QoS::AtLeastOnce, false, "a1").await;
        p.wait_pubacks(1, TIMEOUT).await;
        // Payloads: "0" on a/t (QoS 0) is "a0", "a1" on a/t (QoS 1).
        let mut s = Sub::connect(addr, "later", persistent(false)).await;
        assert!(s.present);
        s.subscribe("b/#", QoS::AtLeastOnce).await;
        let got = s.publishes(want.len()).await;
        let got: Vec<String> = got
            .iter()
            .map(|m| match (m.topic.as_str(), m.payload.as_str()) {
                ("a/t", "0") => "a0".to_owned(),
                (_, p) => p.to_owned(),
            })
            .collect();
        assert_eq!(got, want, "queue_qos0_messages = {queue_qos0}");
        s.nothing_more(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_past_the_limit_is_refused_and_none_is_evicted() {
    let server = Server::start_with(&[("MQWS_BROKER__MAX_SESSIONS", "2")], None);
    let addr = server.mqtt_addr;
    for id in ["s1", "s2"] {
        let mut s = Sub::connect(addr, id, persistent(true)).await;
        s.subscribe("cmd/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
    }
    assert_eq!(Sub::connect(addr, "s3", persistent(true)).await.code, 0x97);
    let v4 = Sub::connect(addr, "s3", persistent(false)).await;
    assert_eq!(v4.code, 3, "3.1.1: server unavailable");
    // A clean session needs no room.
    let clean = Opts {
        clean: true,
        expiry: None,
        ..persistent(true)
    };
    assert_eq!(Sub::connect(addr, "s3", clean).await.code, 0);
    publish(&server, "cmd/r1", 0..1, QoS::AtLeastOnce).await;
    for id in ["s1", "s2"] {
        let mut s = Sub::connect(addr, id, persistent(true)).await;
        assert!(s.present, "{id} kept");
        assert_eq!(payloads(&s.publishes(1).await), vec![0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_takes_the_session_over() {
    let server = Server::start();
    let addr = server.mqtt_addr;
    let mut first = Sub::connect(addr, "twice", persistent(false)).await;
    first.subscribe("cmd/#", QoS::AtLeastOnce).await;
    publish(&server, "cmd/r1", 0..10, QoS::AtLeastOnce).await;
    assert_eq!(
        payloads(&first.publishes(10).await),
        (0..10).collect::<Vec<_>>()
    );
    let mut second = Sub::connect(addr, "twice", persistent(false)).await;
    assert!(second.present);
    publish(&server, "cmd/r1", 10..20, QoS::AtLeastOnce).await;
    // What the older connection had not yet acknowledged when it was taken over (its client's
    // last PUBACKs may still be on their way) comes again, marked DUP; then the rest, once.
    let mut again = Vec::new();
    loop {
        let m = second.publishes(1).await.remove(0);
        let n: u64 = m.payload.parse().unwrap();
        if n >= 10 {
            second.stash.push_front(m);
            break;
        }
        assert!(m.dup, "{n} sent again without DUP");
        again.push(n);
    }
    assert!(
        again.len() <= 10 && again.iter().all(|n| *n < 10),
        "{again:?}"
    );
    assert_eq!(
        payloads(&second.publishes(10).await),
        (10..20).collect::<Vec<_>>(),
        "the newer connection continues after what the older one acknowledged"
    );
    second.nothing_more(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_its_login_and_logins_have_their_own_limit() {
    let config = format!(
        "[[broker.users]]\nusername = \"alice\"\npassword_hash = \"{}\"\n\n[[broker.users]]\nusername = \"bob\"\npassword_hash = \"{}\"\n",
        hash_password("a-pass"),
        hash_password("b-pass")
    );
    let server = Server::start_configured(
        &config,
        &[("MQWS_BROKER__MAX_SESSIONS_PER_LOGIN", "2")],
        None,
    );
    let addr = server.mqtt_addr;
    let alice = Opts {
        login: Some(("alice", "a-pass")),
        ..persistent(true)
    };
    let bob = Opts {
        login: Some(("bob", "b-pass")),
        ..persistent(true)
    };
    let mut s = Sub::connect(addr, "reader", alice).await;
    s.subscribe("cmd/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    assert_eq!(Sub::connect(addr, "reader", bob).await.code, 0x87);
    let s = Sub::connect(addr, "reader", alice).await;
    assert_eq!((s.code, s.present), (0, true));
    drop(s);
    // Two sessions per login: alice's third is refused, bob still gets his.
    Sub::connect(addr, "reader-2", alice)
        .await
        .disconnect()
        .await;
    assert_eq!(Sub::connect(addr, "reader-3", alice).await.code, 0x97);
    let b = Sub::connect(addr, "bob-1", bob).await;
    assert_eq!(
        (b.code, b.present),
        (0, false),
        "another login is not locked out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_retention_removed_while_away_is_told_to_mqtt_5_and_counted() {
    let server = Server::start_with(
        &[
            ("MQWS_LOG__MAX_MESSAGES", "100"),
            ("MQWS_LOG__RETENTION_INTERVAL", "50ms"),
        ],
        None,
    );
    let addr = server.mqtt_addr;
    for v5 in [true, false] {
        let id = if v5 { "gap-v5" } else { "gap-v4" };
        let mut s = Sub::connect(addr, id, persistent(v5)).await;
        s.subscribe("cmd/#", QoS::AtLeastOnce).await;
        s.disconnect().await;
    }
    publish(&server, "cmd/r1", 0..300, QoS::AtLeastOnce).await;
    // Retention keeps the last 100 (the `mqws_log_messages` gauge can show 100 before the
    // last step ran: wait for the evictions themselves).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = mqws_integration::http_get(server.http_addr, "/metrics").await;
        if mqws_integration::metric_value(&m.body, "mqws_log_evicted_total") == Some(200.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for v5 in [true, false] {
        let id = if v5 { "gap-v5" } else { "gap-v4" };
        let mut s = Sub::connect(addr, id, persistent(v5)).await;
        let got = s.publishes(100).await;
        assert_eq!(
            payloads(&got),
            (200..300).collect::<Vec<_>>(),
            "{id}: the rest, in order"
        );
        if v5 {
            let gap = got[0]
                .gap
                .as_deref()
                .unwrap_or_else(|| panic!("mqws-gap on the first PUBLISH: {:?}", got[0]));
            let (from, to) = gap.split_once('-').expect("FROM-TO");
            let lost = to.parse::<u64>().unwrap() - from.parse::<u64>().unwrap() + 1;
            assert_eq!(lost, 200, "{gap}");
            assert!(got[1..].iter().all(|m| m.gap.is_none()), "told once");
        }
    }
    let m = mqws_integration::http_get(server.http_addr, "/metrics").await;
    assert_eq!(
        mqws_integration::metric_value(&m.body, "mqws_mqtt_served_lost_total"),
        Some(400.0),
        "200 for each session"
    );
}

/// A SUBSCRIBE mixing a logged filter with one rumqttd holds is answered by rumqttd's SUBACK
/// (the proxy completes it), which the proxy lets rumqttd send only once the logged part is
/// saved: mqws killed right after the SUBACK still has the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_subscribe_is_answered_once_its_logged_part_is_saved() {
    let data = tempfile::tempdir().unwrap();
    let dir: PathBuf = data.path().join("log");
    let env = [("MQWS_BRIDGE__FILTERS", "[\"cmd/#\"]")];
    let mut server = Server::start_with(&env, Some(dir.clone()));
    for round in 0..6u64 {
        let (id, v5) = (format!("mixed-{round}"), round % 2 == 1);
        let mut s = Sub::connect(server.mqtt_addr, &id, persistent(v5)).await;
        s.subscribe_all(&["cmd/#", "free/#"], QoS::AtLeastOnce)
            .await;
        server.kill9();
        drop(s);
        server = Server::start_with(&env, Some(dir.clone()));
        publish(&server, "cmd/r1", round..round + 1, QoS::AtLeastOnce).await;
        let mut s = Sub::connect(server.mqtt_addr, &id, persistent(v5)).await;
        assert!(s.present, "round {round}: session present");
        let got = s.publishes(1).await;
        assert_eq!(
            payloads(&got),
            [round],
            "round {round}: the logged filter was kept"
        );
        s.disconnect().await;
    }
}

/// A subscriber connected while mqws is killed with -9 under a QoS 1 flood: after the restart
/// its session brings every message the publisher had acknowledged (at least once; each
/// connection in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_connected_through_kill_9_under_a_flood_gets_every_acknowledged_message() {
    use mqws_integration::session_client::Got;
    use mqws_integration::{parse_counted, AckedPublisher};
    let data = tempfile::tempdir().unwrap();
    let dir: PathBuf = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    let mut sub = Sub::connect(server.mqtt_addr, "flooded", persistent(false)).await;
    sub.subscribe("flood/#", QoS::AtLeastOnce).await;
    let publisher =
        AckedPublisher::start(server.mqtt_addr, "floodpub", "flood/t", 256, 100, u64::MAX).await;
    let counter = |m: &mqws_integration::session_client::Msg| {
        parse_counted(m.payload.as_bytes(), "floodpub".len())
            .map(|(_, n)| n)
            .unwrap()
    };
    let mut first = Vec::new();
    while publisher.acked() < 3000 {
        if let Some(Got::Publish(m)) = sub.next(Duration::from_millis(100)).await {
            first.push(counter(&m));
        }
    }
    server.kill9();
    while let Some(got) = sub.next(Duration::from_millis(500)).await {
        match got {
            Got::Publish(m) => first.push(counter(&m)),
            Got::Closed(_) => break,
            _ => {}
        }
    }
    let acked = publisher.log.lock().unwrap().acked.clone();
    drop((publisher, sub));

    let server = Server::start_with(&[], Some(dir));
    let mut sub = Sub::connect(server.mqtt_addr, "flooded", persistent(false)).await;
    assert!(sub.present, "session present after kill -9");
    let mut second = Vec::new();
    while let Some(got) = sub.next(Duration::from_secs(3)).await {
        if let Got::Publish(m) = got {
            second.push(counter(&m));
        }
    }
    for (name, got) in [("before the kill", &first), ("after the restart", &second)] {
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{name}: in order, each once per connection"
        );
    }
    let missing: Vec<u64> = acked
        .iter()
        .filter(|n| !first.contains(n) && !second.contains(n))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages never delivered, first {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}
