//! Server-held sessions (acks, wrong token, expiry, takeover), history paging, `last`, and
//! retained values across a restart — on the real binary.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};

async fn replay_counters(ws: &mut Ws) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let f = next_json(ws, TIMEOUT).await;
        match f["type"].as_str() {
            Some("message") => out.push(f["payload"]["n"].as_u64().unwrap()),
            Some("caught_up") => return out,
            _ => panic!("unexpected {f}"),
        }
    }
}

async fn publish_n(mqtt: &mut Mqtt, topic: &str, range: std::ops::Range<u64>) {
    let count = range.end - range.start;
    for n in range {
        mqtt.publish(topic, QoS::AtLeastOnce, false, json!({"n": n}).to_string())
            .await;
    }
    mqtt.wait_pubacks(count as usize, TIMEOUT).await;
}

fn resume(w: &Value) -> Value {
    json!({"session": w["session"], "resume_token": w["resume_token"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_after_the_last_ack_never_after_mere_delivery() {
    let server = Server::start();
    let mut mqtt = mqtt_client(&server, "s-pub").await;

    // Without acks: writing to a socket is no proof of receipt, so a resume replays everything
    // since the session opened (at-least-once), never only what came after the last write.
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["s/#"]).await;
    publish_n(&mut mqtt, "s/x", 0..3).await;
    collect_messages(&mut ws, 3, TIMEOUT).await;
    close(&mut ws, 1000).await;
    publish_n(&mut mqtt, "s/x", 3..6).await;
    wait_dispatched(&server, 6, TIMEOUT).await;
    let mut ws = ws_connect(&server).await;
    let w2 = hello_with(&mut ws, resume(&w)).await;
    assert_eq!(
        (w2["resumed"].clone(), w2["session"].clone()),
        (json!(true), w["session"].clone())
    );
    assert_eq!(w2["filters"], json!(["s/#"]), "filters restored");
    assert_eq!(
        (w2["recovered"].clone(), w2["gaps"].clone()),
        (json!(true), json!([]))
    );
    assert_eq!(replay_counters(&mut ws).await, vec![0, 1, 2, 3, 4, 5]);
    close(&mut ws, 1000).await;

    // With acks: continues after the last acknowledged message even if more were delivered.
    let mut ws = ws_connect(&server).await;
    let w3 = hello_with(&mut ws, resume(&w)).await;
    assert_eq!(replay_counters(&mut ws).await, vec![0, 1, 2, 3, 4, 5]);
    publish_n(&mut mqtt, "s/x", 6..10).await;
    let msgs = collect_messages(&mut ws, 4, TIMEOUT).await;
    send_json(&mut ws, &json!({"type": "ack", "seq": msgs[1]["seq"]})).await;
    ping_pong(&mut ws, 1).await; // the ack was read before the connection ends
    close(&mut ws, 1000).await;
    let mut ws = ws_connect(&server).await;
    hello_with(&mut ws, resume(&w3)).await;
    assert_eq!(replay_counters(&mut ws).await, vec![8, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_beyond_what_was_delivered_is_refused_and_changes_nothing() {
    let server = Server::start();
    let mut mqtt = mqtt_client(&server, "ack-pub").await;
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["k/#"]).await;
    publish_n(&mut mqtt, "k/x", 0..2).await;
    let msgs = collect_messages(&mut ws, 2, TIMEOUT).await;
    let last = msgs[1]["seq"].as_u64().unwrap();
    send_json(&mut ws, &json!({"type": "ack", "seq": last + 100})).await;
    let e = next_json(&mut ws, TIMEOUT).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{e}"
    );
    close(&mut ws, 1000).await;
    publish_n(&mut mqtt, "k/x", 2..4).await;
    wait_dispatched(&server, 4, TIMEOUT).await;
    // The refused ack moved nothing: the resume replays everything since the session opened.
    let mut ws = ws_connect(&server).await;
    hello_with(&mut ws, resume(&w)).await;
    assert_eq!(replay_counters(&mut ws).await, vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_expired_sessions_start_fresh() {
    let server = Server::start_with(&[("MQWS_SESSION__TTL", "1s")], None);
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["x/#"]).await;
    close(&mut ws, 1000).await;

    let mut ws = ws_connect(&server).await;
    let bad = hello_with(
        &mut ws,
        json!({"session": w["session"], "resume_token": "0".repeat(64)}),
    )
    .await;
    assert_eq!(bad["resumed"], false);
    assert_ne!(bad["session"], w["session"]);
    assert_ne!(bad["resume_token"], w["resume_token"]);
    close(&mut ws, 1000).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = ws_connect(&server).await;
    let late = hello_with(&mut ws, resume(&w)).await;
    assert_eq!(late["resumed"], false, "expired after session.ttl: {late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_takes_the_session_over_with_4002() {
    let server = Server::start();
    let mut first = ws_connect(&server).await;
    let w = hello(&mut first, &["o/#"]).await;
    let mut second = ws_connect(&server).await;
    let w2 = hello_with(&mut second, resume(&w)).await;
    assert_eq!(w2["resumed"], true);
    assert!(replay_counters(&mut second).await.is_empty());
    let closed = expect_close(&mut first, TIMEOUT).await;
    assert_eq!(closed.code, 4002);
    ping_pong(&mut second, 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_and_last_per_topic() {
    let server = Server::start();
    let mut mqtt = mqtt_client(&server, "h-pub").await;
    publish_n(&mut mqtt, "h/a", 0..25).await;
    publish_n(&mut mqtt, "other/a", 100..105).await;
    publish_n(&mut mqtt, "readers/1/status", 200..203).await;
    publish_n(&mut mqtt, "readers/2/status", 300..302).await;
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &[]).await;
    // Everything published is logged before the queries below read it.
    wait_dispatched(&server, 35, TIMEOUT).await;

    let mut from = json!("earliest");
    let mut pages = Vec::new();
    for id in 1..10 {
        send_json(
            &mut ws,
            &json!({"type": "history", "id": id, "filter": "h/#", "from": from, "limit": 10}),
        )
        .await;
        let r = next_json(&mut ws, TIMEOUT).await;
        assert_eq!(
            (r["type"].clone(), r["id"].clone()),
            (json!("history"), json!(id)),
            "{r}"
        );
        let counters: Vec<u64> = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["payload"]["n"].as_u64().unwrap())
            .collect();
        pages.push(counters);
        if r["next"].is_null() {
            break;
        }
        from = r["next"].clone();
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    assert_eq!(pages.concat(), (0..25).collect::<Vec<_>>());

    send_json(
        &mut ws,
        &json!({"type": "last", "id": "l", "filter": "readers/+/status"}),
    )
    .await;
    let r = next_json(&mut ws, TIMEOUT).await;
    assert_eq!(r["type"], "last", "{r}");
    let got: Vec<(String, u64)> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["payload"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("readers/1/status".to_owned(), 202),
            ("readers/2/status".to_owned(), 301)
        ]
    );

    send_json(
        &mut ws,
        &json!({"type": "history", "id": 50, "filter": "a/#/b"}),
    )
    .await;
    let r = next_json(&mut ws, TIMEOUT).await;
    assert_eq!(
        (r["code"].clone(), r["id"].clone()),
        (json!("bad_filter"), json!(50)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_values_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    let mut mqtt = mqtt_client(&server, "r-pub").await;
    mqtt.publish("readers/r1/status", QoS::AtLeastOnce, true, "online")
        .await;
    mqtt.publish("readers/r2/status", QoS::AtLeastOnce, true, "was here")
        .await;
    mqtt.publish("readers/r2/status", QoS::AtLeastOnce, true, "")
        .await; // clears it
    mqtt.wait_pubacks(3, TIMEOUT).await;
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &[]).await;
    send_json(
        &mut ws,
        &json!({"type":"publish","id":1,"topic":"readers/r3/cmd","payload":"go","retain":true}),
    )
    .await;
    assert_eq!(next_json(&mut ws, TIMEOUT).await["type"], "puback");
    // Let the retained store write before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.sigterm();
    assert!(server.wait(TIMEOUT).await.success());

    let server = Server::start_with(&[], Some(dir));
    let mut sub = mqtt_client(&server, "r-sub").await;
    sub.subscribe("readers/#", QoS::AtMostOnce).await;
    let mut got = Vec::new();
    while let Some(p) = sub.try_next_publish(Duration::from_millis(700)).await {
        assert!(p.retain, "{p:?}");
        got.push((
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("readers/r1/status".to_owned(), "online".to_owned()),
            ("readers/r3/cmd".to_owned(), "go".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_held_session_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("log");
    let mut server = Server::start_with(&[], Some(dir.clone()));
    let mut mqtt = mqtt_client(&server, "rs-pub").await;
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["rs/#"]).await;
    publish_n(&mut mqtt, "rs/x", 0..3).await;
    collect_messages(&mut ws, 3, TIMEOUT).await;
    close(&mut ws, 1000).await;
    publish_n(&mut mqtt, "rs/x", 3..5).await;
    wait_dispatched(&server, 5, TIMEOUT).await;
    server.sigterm();
    assert!(server.wait(TIMEOUT).await.success());

    let server = Server::start_with(&[], Some(dir));
    let mut ws = ws_connect(&server).await;
    let back = hello_with(&mut ws, resume(&w)).await;
    assert_eq!(back["resumed"], true, "{back}");
    assert_eq!(back["filters"], json!(["rs/#"]));
    assert_eq!(replay_counters(&mut ws).await, vec![0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_size_and_filter_count_limits() {
    let server = Server::start_with(
        &[
            ("MQWS_WS__MAX_TOPIC_LENGTH", "16"),
            ("MQWS_WS__MAX_TOPIC_LEVELS", "3"),
            ("MQWS_WS__MAX_FILTERS", "2"),
        ],
        None,
    );
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &[]).await;
    for (frame, code) in [
        (
            json!({"type":"subscribe","id":1,"filters":["a/b/c/d"]}),
            "bad_filter",
        ),
        (
            json!({"type":"subscribe","id":2,"filters":["abcdefghijklmnopq"]}),
            "bad_filter",
        ),
        (
            json!({"type":"publish","id":3,"topic":"a/b/c/d","payload":1}),
            "bad_topic",
        ),
        (
            json!({"type":"history","id":4,"filter":"abcdefghijklmnopq/#"}),
            "bad_filter",
        ),
        (
            json!({"type":"subscribe","id":5,"filters":["x","y","z"]}),
            "bad_request",
        ),
    ] {
        send_json(&mut ws, &frame).await;
        let r = next_json(&mut ws, TIMEOUT).await;
        assert_eq!(
            (r["code"].clone(), r["id"].clone()),
            (json!(code), frame["id"].clone()),
            "{frame} → {r}"
        );
    }
    send_json(
        &mut ws,
        &json!({"type":"subscribe","id":6,"filters":["a/b/c","x"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws, TIMEOUT).await["type"], "subscribed");
    send_json(&mut ws, &json!({"type":"subscribe","id":7,"filters":["y"]})).await;
    let r = next_json(&mut ws, TIMEOUT).await;
    assert_eq!(
        r["code"], "bad_request",
        "a third filter is over ws.max_filters: {r}"
    );
}
