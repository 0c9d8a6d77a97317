//! Cluster mode on a real NATS JetStream server: two mqws nodes share one log. A browser's
//! command published on node B reaches an MQTT client of node A; a message published over MQTT
//! to node A reaches WebSocket clients on both nodes with the same seq and epoch; after node A is killed, a client resumes on a node started later by position and gets
//! what it missed from the stream; topics holding `.` and spaces round-trip through the
//! stream's subjects.

#![allow(clippy::unwrap_used)]

use rumqttc::QoS;
use serde_json::json;

use mqws_integration::*;

/// A node of the cluster on `nats`'s stream.
fn node(nats: &Nats) -> Server {
    node_with(nats, &[])
}

/// A node of the cluster on `nats`'s stream, with more settings.
fn node_with(nats: &Nats, extra: &[(&str, &str)]) -> Server {
    let urls = format!("[\"{}\"]", nats.url());
    let mut env = vec![
        ("MQWS_LOG__BACKEND", "jetstream"),
        ("MQWS_CLUSTER__NATS__URLS", urls.as_str()),
        ("MQWS_CLUSTER__NATS__STREAM", "itest"),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&env, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_log_and_a_client_resumes_on_the_other() {
    let nats = Nats::start();
    let mut a = node(&nats);
    let b = node(&nats);
    let mut on_a = ws_connect(&a).await;
    let mut on_b = ws_connect(&b).await;
    let welcome_a = hello(&mut on_a, &["site/#"]).await;
    let welcome_b = hello(&mut on_b, &["site/#"]).await;
    let epoch = welcome_a["position"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        welcome_b["position"]["epoch"], epoch,
        "one log, one epoch: {welcome_a} / {welcome_b}"
    );

    let mut reader = mqtt_client(&a, "reader-on-a").await;
    // A browser on node B sends a command; the reader, an MQTT client of node A, receives it.
    reader.subscribe("cmd/#", QoS::AtLeastOnce).await;
    send_json(
        &mut on_b,
        &json!({"type": "publish", "id": 1, "topic": "cmd/r1", "payload": "stop", "qos": 1}),
    )
    .await;
    let ack = next_json(&mut on_b, TIMEOUT).await;
    assert_eq!(ack["type"], "puback", "{ack}");
    let command = reader.next_publish(TIMEOUT).await;
    assert_eq!(
        (command.topic.as_str(), &command.payload[..]),
        ("cmd/r1", &b"stop"[..])
    );
    for (topic, payload) in [("site/r1/tags", "one"), ("site/a.b/c d", "two")] {
        reader
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await;
    }
    reader.wait_pubacks(2, TIMEOUT).await;
    let mut seqs = Vec::new();
    for (topic, payload) in [("site/r1/tags", "one"), ("site/a.b/c d", "two")] {
        let ma = next_message(&mut on_a, TIMEOUT).await;
        let mb = next_message(&mut on_b, TIMEOUT).await;
        assert_eq!(
            (ma["topic"].as_str(), mb["topic"].as_str()),
            (Some(topic), Some(topic))
        );
        assert_eq!(ma["payload"], payload, "{ma}");
        assert_eq!(
            ma["seq"], mb["seq"],
            "the same seq on both nodes: {ma} / {mb}"
        );
        seqs.push(ma["seq"].as_u64().unwrap());
    }
    assert!(seqs[1] > seqs[0], "{seqs:?}");

    // Node A dies; its client comes back on a node started after the messages (so nothing of
    // them is in that node's memory) from the position it had before them, and gets both
    // from the shared log.
    drop(on_a);
    a.kill9();
    let c = node(&nats);
    let mut again = ws_connect(&c).await;
    let w = hello_with(
        &mut again,
        json!({
            "filters": ["site/#"],
            "from": {"epoch": epoch, "seq": seqs[0] - 1},
        }),
    )
    .await;
    assert_eq!(w["recovered"], true, "{w}");
    for (i, topic) in ["site/r1/tags", "site/a.b/c d"].into_iter().enumerate() {
        let m = next_message(&mut again, TIMEOUT).await;
        assert_eq!(m["seq"].as_u64(), Some(seqs[i]), "{m}");
        assert_eq!(m["topic"], topic, "{m}");
        assert_eq!(m["replay"], true, "{m}");
    }

    // The session node A gave its client (never acknowledged anything) resumes on node C with
    // its resume token: the signing key is shared, and the replay starts where it began.
    let mut resumed = ws_connect(&c).await;
    let w = hello_with(
        &mut resumed,
        json!({
            "filters": ["site/#"],
            "session": welcome_a["session"],
            "resume_token": welcome_a["resume_token"],
        }),
    )
    .await;
    assert_eq!(w["resumed"], true, "{w}");
    assert_eq!(w["session"], welcome_a["session"], "{w}");
    let got = collect_messages(&mut resumed, 2, TIMEOUT).await;
    let got: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, seqs, "the session's replay on another node");

    // Node B keeps taking publishes with node A gone.
    let mut reader_b = mqtt_client(&b, "reader-on-b").await;
    reader_b
        .publish("site/r2/tags", QoS::AtLeastOnce, false, "three")
        .await;
    reader_b.wait_pubacks(1, TIMEOUT).await;
    let frames = collect_messages(&mut on_b, 1, TIMEOUT).await;
    assert_eq!(frames[0]["topic"], "site/r2/tags");
    assert!(frames[0]["seq"].as_u64().unwrap() > seqs[1]);
}

/// MQTT subscribers are served from their node's hub, fed from the shared log: node A's
/// messages reach node B's subscriber once (not also through B's embedded broker, which the
/// follower still feeds for the filters it holds) and at min(publish QoS, granted QoS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_subscriber_on_another_node_gets_each_message_once_at_its_publish_qos() {
    let nats = Nats::start();
    let a = node(&nats);
    let b = node(&nats);
    let mut sub = mqtt_client(&b, "served-on-b").await;
    sub.subscribe("served/#", QoS::ExactlyOnce).await;
    // A shared subscription stays with B's embedded broker, which the follower feeds with
    // what its filters want.
    let mut shared = mqtt_client(&b, "shared-on-b").await;
    shared.subscribe("$share/g/served/#", QoS::AtMostOnce).await;
    let publisher = mqtt_client(&a, "pub-on-a").await;
    for (qos, payload) in [(QoS::AtMostOnce, "zero"), (QoS::AtLeastOnce, "one")] {
        publisher.publish("served/t", qos, false, payload).await;
        let got = sub.next_publish(TIMEOUT).await;
        assert_eq!(
            (got.qos, &got.payload[..]),
            (qos, payload.as_bytes()),
            "delivered at the publish QoS"
        );
        let got = shared.next_publish(TIMEOUT).await;
        assert_eq!(&got.payload[..], payload.as_bytes(), "through B's broker");
    }
    assert!(
        sub.try_next_publish(std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "each message once"
    );
}

async fn readyz(server: &Server) -> u16 {
    http_get(server.http_addr, "/readyz").await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_gone_nothing_is_acknowledged_and_everything_resumes_when_it_is_back() {
    let mut nats = Nats::start();
    let node = node(&nats);
    let mut ws = ws_connect(&node).await;
    hello(&mut ws, &["site/#"]).await;
    let mut reader = mqtt_client(&node, "reader").await;
    reader
        .publish("site/r1/tags", QoS::AtLeastOnce, false, "before")
        .await;
    reader.wait_pubacks(1, TIMEOUT).await;
    let before = next_message(&mut ws, TIMEOUT).await;

    nats.kill();
    reader
        .publish("site/r1/tags", QoS::AtLeastOnce, false, "during")
        .await;
    // Not acknowledged while the log cannot take it, and the node says it is not ready.
    let early = reader
        .try_wait_for(std::time::Duration::from_secs(3), |p| {
            matches!(p, rumqttc::Packet::PubAck(_))
        })
        .await;
    assert!(early.is_none(), "a PUBACK with NATS gone: {early:?}");
    let mut not_ready = false;
    for _ in 0..50 {
        if readyz(&node).await == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(not_ready, "/readyz stayed 200 with NATS gone");

    nats.restart();
    reader
        .wait_pubacks(1, std::time::Duration::from_secs(30))
        .await;
    let during = next_message(&mut ws, std::time::Duration::from_secs(30)).await;
    assert_eq!(during["payload"], "during", "{during}");
    assert_eq!(
        during["seq"].as_u64(),
        Some(before["seq"].as_u64().unwrap() + 1),
        "the next seq, nothing lost or doubled: {during}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while readyz(&node).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz did not recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_retention_removed_is_reported_as_evicted_with_its_exact_range_on_every_node() {
    let nats = Nats::start();
    // The stream keeps the 5 newest messages (JetStream's own max_msgs, from log.max_messages).
    let keep = [("MQWS_LOG__MAX_MESSAGES", "5")];
    let a = node_with(&nats, &keep);
    let b = node_with(&nats, &keep);
    let mut ws = ws_connect(&a).await;
    let start = hello(&mut ws, &["site/#"]).await["position"].clone();
    assert_eq!(start["seq"], 0, "{start}");

    let mut reader = mqtt_client(&a, "reader").await;
    for i in 1..=8 {
        reader
            .publish("site/r1/tags", QoS::AtLeastOnce, false, format!("m{i}"))
            .await;
    }
    reader.wait_pubacks(8, TIMEOUT).await;

    for (name, server) in [("A", &a), ("B", &b)] {
        // Once the node's follower has passed them (a node that has not yet is the paused
        // node's case below: it may still deliver what it read before they were dropped).
        wait_dispatched(server, 8, TIMEOUT).await;
        let mut ws = ws_connect(server).await;
        let w = hello_with(
            &mut ws,
            json!({"filters": ["site/#"], "from": start.clone()}),
        )
        .await;
        // Reported in `welcome` (a `gap` frame would do too): together, exactly 1..=3.
        let mut evicted: Vec<(u64, u64)> = Vec::new();
        let mut note = |g: &serde_json::Value| {
            assert_eq!(g["reason"], "evicted", "node {name}: {g}");
            let range = (g["from"].as_u64().unwrap(), g["to"].as_u64().unwrap());
            match evicted.last_mut() {
                Some(last) if last.1 + 1 == range.0 => last.1 = range.1,
                _ => evicted.push(range),
            }
        };
        w["gaps"].as_array().unwrap().iter().for_each(&mut note);
        let mut got = Vec::new();
        while got.len() < 5 {
            match next_frame(&mut ws, TIMEOUT).await {
                Some(Frame::Json(v)) if v["type"] == "message" => got.push((
                    v["seq"].as_u64().unwrap(),
                    v["payload"].as_str().unwrap().to_owned(),
                )),
                Some(Frame::Json(v)) if v["type"] == "gap" => note(&v),
                Some(Frame::Json(_)) => {}
                other => panic!("node {name}: {other:?}"),
            }
        }
        assert_eq!(
            evicted,
            vec![(1, 3)],
            "node {name}: the evicted ranges; welcome {w}; messages {got:?}"
        );
        let want: Vec<(u64, String)> = (4..=8).map(|i| (i, format!("m{i}"))).collect();
        assert_eq!(got, want, "node {name}: what the stream kept");
        // The log's size is the stream's (5 small messages), not the node's local file.
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let body = http_get(server.http_addr, "/metrics").await.body;
            let bytes = metric_value(&body, "mqws_log_disk_bytes").unwrap_or(0.0);
            if bytes > 0.0 && bytes < 4096.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {name}: mqws_log_disk_bytes {bytes}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_the_retention_tells_its_live_clients_what_they_missed() {
    let nats = Nats::start();
    let keep = [("MQWS_LOG__MAX_MESSAGES", "5")];
    let a = node_with(&nats, &keep);
    let b = node_with(&nats, &keep);
    let mut live = ws_connect(&b).await;
    let start = hello(&mut live, &["site/#"]).await["position"]["seq"]
        .as_u64()
        .unwrap();

    // Node B sleeps (a paused VM, a laptop lid) while node A logs far more than the stream
    // keeps: B's reader of the stream comes back to a log whose front moved past it.
    signal(b.pid(), Signal::STOP);
    let mut publisher =
        AckedPublisher::start(a.mqtt_addr, "p-", "site/flood", 100, 100, 2000).await;
    publisher.finished().await;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while publisher.acked() < 2000 {
        assert!(std::time::Instant::now() < deadline, "2000 PUBACKs");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    signal(b.pid(), Signal::CONT);

    // Every seq from the client's start to the end arrives as a message or inside a gap.
    let last = start + 2000;
    let (mut covered, mut evicted, mut seen) = (start, 0, 0);
    while covered < last {
        match next_frame(&mut live, std::time::Duration::from_secs(20)).await {
            Some(Frame::Json(v)) if v["type"] == "message" => {
                let seq = v["seq"].as_u64().unwrap();
                assert_eq!(
                    seq,
                    covered + 1,
                    "a seq neither delivered nor reported: {v}"
                );
                covered = seq;
                seen += 1;
            }
            Some(Frame::Json(v)) if v["type"] == "gap" => {
                assert_eq!(v["reason"], "evicted", "{v}");
                assert_eq!(v["from"].as_u64(), Some(covered + 1), "{v}");
                covered = v["to"].as_u64().unwrap();
                evicted += covered + 1 - v["from"].as_u64().unwrap();
            }
            Some(Frame::Json(_)) => {}
            other => panic!("at seq {covered} of {last}: {other:?}"),
        }
    }
    println!("{seen} delivered, {evicted} reported evicted");
    assert!(
        evicted > 0,
        "the pause did not outlast the retention: {seen} delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_overlapping_filters_reads_each_matching_message_once_in_order() {
    let nats = Nats::start();
    let node = node(&nats);
    let mut ws = ws_connect(&node).await;
    let start = hello(&mut ws, &["#"]).await["position"].clone();
    let mut reader = mqtt_client(&node, "reader").await;
    let topics = ["a/b/c", "z/q", "a/x/c", "a/b/y", "a/b", "a/b/c/d", "a/b/c"];
    for (i, topic) in topics.iter().enumerate() {
        reader
            .publish(topic, QoS::AtLeastOnce, false, format!("m{i}"))
            .await;
    }
    reader.wait_pubacks(topics.len(), TIMEOUT).await;
    collect_messages(&mut ws, topics.len(), TIMEOUT).await;

    // `a/+/c` and `a/b/+` overlap (JetStream refuses them on one consumer), `a/b/#` covers
    // `a/b/+`: read through several consumers, merged by seq.
    for (filters, want) in [
        (json!(["a/+/c", "a/b/+"]), vec![0, 2, 3, 6]),
        (json!(["a/b/#", "a/+/c"]), vec![0, 2, 3, 4, 5, 6]),
        (json!(["#", "a/b/c"]), vec![0, 1, 2, 3, 4, 5, 6]),
    ] {
        let mut again = ws_connect(&node).await;
        let w = hello_with(
            &mut again,
            json!({"filters": filters.clone(), "from": start.clone()}),
        )
        .await;
        assert_eq!(w["recovered"], true, "{w}");
        let want: Vec<String> = want
            .into_iter()
            .map(|i: usize| format!("{}={i}", topics[i]))
            .collect();
        let got = collect_messages(&mut again, want.len(), TIMEOUT).await;
        let got: Vec<String> = got
            .iter()
            .map(|m| {
                let p = m["payload"].as_str().unwrap().trim_start_matches('m');
                format!("{}={p}", m["topic"].as_str().unwrap())
            })
            .collect();
        assert_eq!(got, want, "filters {filters}");
        let extra = next_frame(&mut again, std::time::Duration::from_millis(300)).await;
        assert!(
            !matches!(&extra, Some(Frame::Json(v)) if v["type"] == "message"),
            "filters {filters}: one more: {extra:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_sessions_are_held_to_session_max_forgetting_the_oldest_saved() {
    let nats = Nats::start();
    let max = [("MQWS_SESSION__MAX", "3")];
    let a = node_with(&nats, &max);
    let b = node_with(&nats, &max);
    // Filters too many for the resume token to carry: such a session is saved at once, and
    // once forgotten it cannot be restored from its token.
    let filters: Vec<String> = (0..100).map(|i| format!("site/{i:012}/tags/#")).collect();
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let mut ws = ws_connect(&a).await;
        let w = hello(
            &mut ws,
            &filters.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
        close(&mut ws, 1000).await;
        sessions.push((w["session"].clone(), w["resume_token"].clone()));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Newest first: a session that does not resume is a new one, saved as it closes, which
    // makes JetStream forget another.
    let mut resumed = Vec::new();
    for (session, token) in sessions.iter().rev() {
        let mut ws = ws_connect(&b).await;
        let w = hello_with(
            &mut ws,
            json!({"filters": [], "session": session, "resume_token": token}),
        )
        .await;
        resumed.push(w["resumed"].as_bool().unwrap());
        close(&mut ws, 1000).await;
    }
    assert_eq!(
        resumed,
        [true, true, true, false, false],
        "the 3 saved last are kept, newest first"
    );
}

/// A persistent MQTT session made on node A resumes on node B with what was published while
/// it was away (the session is in the shared bucket, the position in the shared log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_mqtt_session_made_on_one_node_resumes_on_another() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let nats = Nats::start();
    let a = node(&nats);
    let b = node(&nats);
    /// Connects a clean-session-0 client; returns it, its event loop and the CONNACK's
    /// session present.
    async fn persistent(server: &Server) -> (AsyncClient, rumqttc::EventLoop, bool) {
        let addr = server.mqtt_addr;
        let mut opts = MqttOptions::new("roaming", addr.ip().to_string(), addr.port());
        opts.set_clean_session(false);
        let (client, mut el) = AsyncClient::new(opts, 256);
        loop {
            match tokio::time::timeout(TIMEOUT, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(c)))) => {
                    return (client, el, c.session_present)
                }
                Ok(Ok(_)) => {}
                other => panic!("no CONNACK: {other:?}"),
            }
        }
    }
    let (client, mut el, present) = persistent(&a).await;
    assert!(!present);
    client.subscribe("roam/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    client.disconnect().await.unwrap();
    while let Ok(Ok(_)) = tokio::time::timeout(TIMEOUT, el.poll()).await {}

    let mut publisher = mqtt_client(&b, "roam-pub").await;
    for i in 0..100 {
        publisher
            .publish("roam/t", QoS::AtLeastOnce, false, i.to_string())
            .await;
    }
    publisher.wait_pubacks(100, TIMEOUT).await;

    let (_client, mut el, present) = persistent(&b).await;
    assert!(present, "the session made on A is present on B");
    let mut got = Vec::new();
    while got.len() < 100 {
        match tokio::time::timeout(TIMEOUT, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.push(String::from_utf8_lossy(&p.payload).parse::<u32>().unwrap());
            }
            Ok(Ok(_)) => {}
            other => panic!("{} of 100, then {other:?}", got.len()),
        }
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

/// One client id connected to two nodes at once: the later connection takes the session (a
/// revision check in the shared bucket), and the earlier one is told at its next save
/// (DISCONNECT 0x8E) and stops, while the later one gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_of_two_connections_of_one_client_id_on_two_nodes_keeps_the_session() {
    use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
    let nats = Nats::start();
    let a = node(&nats);
    let b = node(&nats);
    async fn twin(server: &Server) -> (AsyncClient, EventLoop) {
        let addr = server.mqtt_addr;
        let mut opts = MqttOptions::new("twin", addr.ip().to_string(), addr.port());
        opts.set_clean_start(false);
        opts.set_session_expiry_interval(Some(600));
        let (client, mut el) = AsyncClient::new(opts, 256);
        loop {
            match tokio::time::timeout(TIMEOUT, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return (client, el),
                Ok(Ok(_)) => {}
                other => panic!("no CONNACK: {other:?}"),
            }
        }
    }
    let (first, mut first_el) = twin(&a).await;
    first.subscribe("twin/#", QoS5::AtLeastOnce).await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, first_el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    let (_second, mut second_el) = twin(&b).await;
    let mut publisher = mqtt_client(&b, "twin-pub").await;
    for i in 0..20 {
        publisher
            .publish("twin/t", QoS::AtLeastOnce, false, i.to_string())
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    publisher.wait_pubacks(20, TIMEOUT).await;
    // The first connection is told once it saves after the second took the session.
    let told = loop {
        match tokio::time::timeout(TIMEOUT, first_el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Disconnect(d)))) => break d.reason_code,
            // rumqttc reports a server's DISCONNECT as the end of its event loop.
            Ok(Err(rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
            ))) => break reason_code,
            Ok(Ok(_)) => {}
            other => panic!("the first connection was not told: {other:?}"),
        }
    };
    assert_eq!(told, DisconnectReasonCode::SessionTakenOver);
    let mut got = Vec::new();
    while got.len() < 20 {
        match tokio::time::timeout(TIMEOUT, second_el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let n = String::from_utf8_lossy(&p.payload).parse::<u32>().unwrap();
                if !got.contains(&n) {
                    got.push(n);
                }
            }
            Ok(Ok(_)) => {}
            other => panic!("{} of 20, then {other:?}", got.len()),
        }
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..20).collect::<Vec<_>>(),
        "the second gets every one"
    );
}
