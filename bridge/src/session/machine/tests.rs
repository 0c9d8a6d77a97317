use super::*;
use serde_json::json;

fn machine(grant: Grant) -> Machine {
    let ws = WsConfig {
        max_filters: 3,
        publish_rate: 1,
        publish_burst: 1,
        ..WsConfig::default()
    };
    let limits = Limits {
        max_publish_bytes: 8,
        max_history: 10,
    };
    Machine::new(grant, std::sync::Arc::new(ws), limits)
}

fn frame(v: serde_json::Value) -> ClientFrame {
    crate::protocol::client::decode(&v.to_string()).expect("frame")
}

fn sent(e: &Effect) -> serde_json::Value {
    match e {
        Effect::Send(t) => serde_json::from_str(t).expect("json"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn subscribe_admits_adds_saves_and_answers() {
    let mut m = machine(Grant::all());
    let now = Instant::now();
    let fx = m.on_frame(
        frame(json!({"type":"subscribe","id":1,"filters":["a/#","b/+"]})),
        0,
        now,
    );
    assert!(matches!(&fx[0], Effect::Subscribe(f) if f == &["a/#", "b/+"]));
    assert!(matches!(fx[1], Effect::SaveFilters));
    assert_eq!(
        sent(&fx[2]),
        json!({"type":"subscribed","id":1,"filters":["a/#","b/+"]})
    );
    // Again: nothing new, nothing to save.
    let fx = m.on_frame(
        frame(json!({"type":"subscribe","id":2,"filters":["a/#"]})),
        0,
        now,
    );
    assert_eq!(fx.len(), 1);
    // Over the count, invalid, outside the grant: refused with the request id, unchanged.
    let fx = m.on_frame(
        frame(json!({"type":"subscribe","id":3,"filters":["c","d"]})),
        0,
        now,
    );
    assert_eq!(
        (sent(&fx[0])["code"].clone(), sent(&fx[0])["id"].clone()),
        (json!("bad_request"), json!(3))
    );
    let fx = m.on_frame(
        frame(json!({"type":"subscribe","id":4,"filters":["a/#/b"]})),
        0,
        now,
    );
    assert_eq!(sent(&fx[0])["code"], "bad_filter");
    assert_eq!(m.filters().len(), 2);
    let mut closed = machine(Grant::none());
    let fx = closed.on_frame(
        frame(json!({"type":"subscribe","id":5,"filters":["a"]})),
        0,
        now,
    );
    assert_eq!(sent(&fx[0])["code"], "forbidden");
    assert!(closed.filters().is_empty());
}

#[test]
fn unsubscribe_removes_only_what_is_held() {
    let mut m = machine(Grant::all());
    let now = Instant::now();
    m.open(["a/#".to_owned()].into());
    let fx = m.on_frame(
        frame(json!({"type":"unsubscribe","id":1,"filters":["a/#","x"]})),
        0,
        now,
    );
    assert!(matches!(&fx[0], Effect::Unsubscribe(f) if f == &["a/#"]));
    assert!(matches!(fx[1], Effect::SaveFilters));
    assert_eq!(sent(&fx[2])["type"], "unsubscribed");
    assert!(m.filters().is_empty());
}

#[test]
fn an_ack_beyond_delivered_is_refused_and_changes_nothing() {
    let mut m = machine(Grant::all());
    let now = Instant::now();
    assert!(m
        .on_frame(frame(json!({"type":"ack","seq":5})), 7, now)
        .is_empty());
    assert_eq!(m.acked(), Some(5));
    let fx = m.on_frame(frame(json!({"type":"ack","seq":8})), 7, now);
    assert_eq!(sent(&fx[0])["code"], "bad_request");
    assert_eq!(m.acked(), Some(5));
    assert!(m
        .on_frame(frame(json!({"type":"ack","seq":3})), 7, now)
        .is_empty());
    assert_eq!(m.acked(), Some(5), "acks never move back");
}

#[test]
fn publish_checks_topic_rate_qos_and_size() {
    let mut m = machine(Grant::all());
    let now = Instant::now();
    let fx = m.on_frame(
        frame(json!({"type":"publish","id":1,"topic":"a/+","payload":"x"})),
        0,
        now,
    );
    assert_eq!(sent(&fx[0])["code"], "bad_topic");
    let fx = m.on_frame(
        frame(json!({"type":"publish","id":2,"topic":"a","payload":"x","qos":1})),
        0,
        now,
    );
    assert!(
        matches!(&fx[0], Effect::Publish { request, .. } if request.topic == "a" && request.payload.as_ref() == b"x")
    );
    let fx = m.on_frame(
        frame(json!({"type":"publish","id":3,"topic":"a","payload":"x"})),
        0,
        now,
    );
    assert_eq!(sent(&fx[0])["code"], "rate_limited", "burst of 1 spent");
    let later = now + std::time::Duration::from_secs(2);
    let fx = m.on_frame(
        frame(json!({"type":"publish","id":4,"topic":"a","payload":"123456789"})),
        0,
        later,
    );
    assert_eq!(sent(&fx[0])["code"], "too_large");
}

#[test]
fn queries_are_admitted_and_bounded() {
    let mut m = machine(Grant::all());
    let now = Instant::now();
    let fx = m.on_frame(
        frame(json!({"type":"history","id":1,"filter":"a/#","limit":11})),
        0,
        now,
    );
    assert_eq!(sent(&fx[0])["code"], "bad_request");
    let fx = m.on_frame(
        frame(json!({"type":"history","id":2,"filter":"a/#"})),
        0,
        now,
    );
    assert!(
        matches!(
            &fx[0],
            Effect::History {
                start: Start::Earliest,
                limit: 10,
                ..
            }
        ),
        "default: from earliest, at most the configured page: {fx:?}"
    );
    let fx = m.on_frame(frame(json!({"type":"last","id":3,"filter":"a/#"})), 0, now);
    assert!(matches!(&fx[0], Effect::Last { filter, .. } if filter == "a/#"));
    let fx = m.on_frame(frame(json!({"type":"hello"})), 0, now);
    assert_eq!(sent(&fx[0])["code"], "bad_request");
}
