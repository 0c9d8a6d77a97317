//! MQTT → WebSocket delivery: filter matching (`+`, `#`, exact, `$`-topics), absence of
//! non-matching topics (proven with sentinels), the `enc` payload encodings and the fields of
//! a `message` frame.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// A client's name, its one filter, and the `(topic, payload)`s it must receive in order.
type Spec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Each client gets exactly the messages its filter matches, in publish order, and nothing
/// else before its final sentinel: a non-matching message that had been delivered would show
/// up before the sentinel and break the exact list comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_match_exactly_and_exclude_dollar_topics() {
    let server = Server::start();
    let specs: [Spec; 5] = [
        (
            "plus",
            "f/+/x",
            &[("f/a/x", "m1"), ("f/b/x", "m2"), ("f/a/x", "end1")],
        ),
        (
            "hash",
            "f/#",
            &[
                ("f/a/x", "m1"),
                ("f/b/x", "m2"),
                ("f/a/y", "m3"),
                ("f/a/x/z", "m4"),
                ("f", "m5"), // `f/#` also matches the parent level `f`
                ("f/a/x", "end1"),
            ],
        ),
        ("exact", "f/a/x", &[("f/a/x", "m1"), ("f/a/x", "end1")]),
        (
            "all",
            "#",
            &[
                ("f/a/x", "m1"),
                ("f/b/x", "m2"),
                ("f/a/y", "m3"),
                ("f/a/x/z", "m4"),
                ("f", "m5"),
                ("g/x", "m7"),
                ("h/a/x", "m8"),
                ("f/a/x", "end1"),
                ("g/x", "end2"),
            ],
        ),
        ("plus-x", "+/x", &[("g/x", "m7"), ("g/x", "end2")]),
    ];
    let mut clients = Vec::new();
    for (name, filter, expected) in specs {
        let mut ws = ws_connect(&server).await;
        hello(&mut ws, &[filter]).await;
        clients.push((name, ws, expected));
    }

    let mut publisher = mqtt_client(&server, "filters-pub").await;
    let publishes = [
        ("f/a/x", "m1"),
        ("f/b/x", "m2"),
        ("f/a/y", "m3"),
        ("f/a/x/z", "m4"),
        ("f", "m5"),
        ("$SYS/x", "m6"), // `$`-topic: matched by neither `#` nor `+/x`
        ("g/x", "m7"),
        ("h/a/x", "m8"),
        ("f/a/x", "end1"),
        ("g/x", "end2"),
    ];
    for (topic, payload) in publishes {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await;
    }
    publisher.wait_pubacks(publishes.len(), WAIT).await;

    // The same log entry must carry the same seq on every connection.
    let mut seq_of: HashMap<(String, String), u64> = HashMap::new();
    for (name, mut ws, expected) in clients {
        let got = collect_messages(&mut ws, expected.len(), WAIT).await;
        let got_pairs: Vec<(String, String)> = got
            .iter()
            .map(|m| {
                assert_eq!(m["enc"], "text", "{name}: {m}");
                (
                    m["topic"].as_str().unwrap().to_owned(),
                    m["payload"].as_str().unwrap_or("<not a string>").to_owned(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(got_pairs, want, "client {name} received the wrong messages");
        for (m, key) in got.iter().zip(want) {
            let seq = m["seq"].as_u64().unwrap();
            if let Some(prev) = seq_of.insert(key.clone(), seq) {
                assert_eq!(
                    prev, seq,
                    "{key:?} has different seqs on different connections"
                );
            }
        }
    }
}

/// A topic that matches none of the client's filters is never delivered, even when it shares
/// a prefix with the filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_matching_topic_is_not_delivered() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["site/a/tags/+"]).await;
    let mut publisher = mqtt_client(&server, "nomatch-pub").await;
    for (topic, payload) in [
        ("site/b/tags/x", "wrong site"),
        ("site/a/tags/x/deeper", "too deep"),
        ("site/a/tags", "too short"),
        ("site/a/tags/x", "sentinel"),
    ] {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await;
    }
    publisher.wait_pubacks(4, WAIT).await;
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("site/a/tags/x"), Some("sentinel")),
        "first delivered message must be the sentinel: {m}"
    );
}

/// `enc` follows the payload bytes: a JSON object or array → `json` (same value), other UTF-8
/// (bare JSON scalars included) → `text`,
/// anything else → `base64` of the exact bytes. `retain`, `ts` and `topic` are right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_encodings_and_message_fields() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["enc/#"]).await;
    let mut publisher = mqtt_client(&server, "enc-pub").await;

    let binary: Vec<u8> = vec![0xff, 0x00, 0xfe, 0x80, 0x01, 0x7f];
    let almost_json: Vec<u8> = vec![b'{', b'"', b'a', 0xff];
    let cases: Vec<(&str, Vec<u8>, &str, Value)> = vec![
        (
            "enc/json",
            br#"{"epc":"3034","n":[1,2.5,null,true],"o":{"k":"v"}}"#.to_vec(),
            "json",
            json!({"epc":"3034","n":[1,2.5,null,true],"o":{"k":"v"}}),
        ),
        ("enc/json-array", b"[1,2]".to_vec(), "json", json!([1, 2])),
        // Bare JSON scalars go as text (contract 2.2 `auto`): a JavaScript number would lose
        // the EPC's digits.
        (
            "enc/json-string",
            br#""quoted""#.to_vec(),
            "text",
            json!("\"quoted\""),
        ),
        ("enc/json-number", b"42".to_vec(), "text", json!("42")),
        (
            "enc/epc",
            b"303400000000000000001234".to_vec(),
            "text",
            json!("303400000000000000001234"),
        ),
        (
            "enc/text",
            b"hello world".to_vec(),
            "text",
            json!("hello world"),
        ),
        (
            "enc/utf8",
            "grüße ✓ 温度".as_bytes().to_vec(),
            "text",
            json!("grüße ✓ 温度"),
        ),
        ("enc/empty", Vec::new(), "text", json!("")),
        ("enc/binary", binary.clone(), "base64", Value::Null),
        (
            "enc/broken-utf8",
            almost_json.clone(),
            "base64",
            Value::Null,
        ),
    ];
    let before = now_ms();
    for (topic, payload, _, _) in &cases {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await;
    }
    publisher.wait_pubacks(cases.len(), WAIT).await;
    let got = collect_messages(&mut ws, cases.len(), WAIT).await;
    let after = now_ms();

    for ((topic, bytes, enc, value), m) in cases.iter().zip(&got) {
        assert_eq!(m["topic"], *topic, "{m}");
        assert_eq!(m["enc"], *enc, "enc of {topic}: {m}");
        assert_eq!(m["retain"], false, "retain of {topic}: {m}");
        if *enc == "base64" {
            let text = m["payload"].as_str().expect("base64 payload is a string");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_else(|e| panic!("payload of {topic} is not standard base64: {e}"));
            assert_eq!(&decoded, bytes, "decoded payload of {topic}");
        } else {
            assert_eq!(m["payload"], *value, "payload of {topic}: {m}");
        }
        let ts = m["ts"].as_u64().expect("ts");
        // Logged between our first publish and our last read (1 s of clock slack).
        assert!(
            ts + 1000 >= before && ts <= after + 1000,
            "ts {ts} of {topic} is not within [{before}, {after}] (ms since epoch)"
        );
    }
}

/// `bridge.encodings` overrides `auto` per topic, first match wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_encodings_override_auto_per_topic() {
    let server = Server::start_configured(
        "[[bridge.encodings]]\nfilter = \"raw/#\"\nenc = \"base64\"\n\n[[bridge.encodings]]\nfilter = \"txt/#\"\nenc = \"text\"\n",
        &[],
        None,
    );
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["raw/#", "txt/#", "auto/#"]).await;
    let mut publisher = mqtt_client(&server, "enc-rules").await;
    for topic in ["raw/a", "txt/a", "auto/a"] {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, r#"{"k":1}"#)
            .await;
    }
    publisher.wait_pubacks(3, TIMEOUT).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next_message(&mut ws, TIMEOUT).await;
        got.push((m["topic"].clone(), m["enc"].clone(), m["payload"].clone()));
    }
    assert_eq!(
        got,
        vec![
            (json!("raw/a"), json!("base64"), json!("eyJrIjoxfQ==")),
            (json!("txt/a"), json!("text"), json!(r#"{"k":1}"#)),
            (json!("auto/a"), json!("json"), json!({"k": 1})),
        ]
    );
}
