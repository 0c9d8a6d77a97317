//! Client frames: decoding text into a [`ClientFrame`], or into the contract error to send back.
//!
//! Any input gives either a frame or a [`FrameError`]; nothing here panics (see the property
//! tests).

use serde::Deserialize;
use serde_json::Value;

use super::ErrorCode;

/// Where a client asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// Live only; no replay.
    Latest,
    /// Everything still retained.
    Earliest,
    /// After `seq` of log `epoch`.
    After {
        /// The epoch the client's seq belongs to.
        epoch: String,
        /// The last seq the client has.
        seq: u64,
    },
    /// Everything logged at or after this time (ms since the Unix epoch).
    Time(u64),
}

/// A request id as the client sent it (a number or a string), echoed back in replies.
pub(crate) type RequestId = Value;

/// Where a replay starts (`from` in `hello`). Parsed now; used by catch-up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum ReplayFrom {
    /// `"earliest"` or `"latest"`.
    Named(String),
    /// After a position of a given epoch.
    Position {
        /// The epoch the client saw.
        epoch: String,
        /// The last seq it has.
        seq: u64,
    },
    /// Everything logged at or after this time.
    Time {
        /// ms since the Unix epoch.
        time_ms: u64,
    },
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientFrame {
    /// Opens the session.
    Hello {
        /// Credential, when auth is on.
        #[serde(default)]
        token: Option<String>,
        /// A server-held session to resume.
        #[serde(default)]
        session: Option<String>,
        /// The secret that proves the session is the client's.
        #[serde(default)]
        resume_token: Option<String>,
        /// Initial subscriptions.
        #[serde(default)]
        filters: Vec<String>,
        /// Replay start.
        #[serde(default)]
        from: Option<ReplayFrom>,
    },
    /// Adds filters.
    Subscribe {
        /// Request id.
        id: RequestId,
        /// Filters to add.
        filters: Vec<String>,
    },
    /// Removes filters.
    Unsubscribe {
        /// Request id.
        id: RequestId,
        /// Filters to remove.
        filters: Vec<String>,
    },
    /// Publishes to MQTT.
    Publish {
        /// Request id.
        id: RequestId,
        /// MQTT topic name.
        topic: String,
        /// The payload (see [`super::payload::decode`]).
        payload: Value,
        /// `"base64"` when `payload` is base64 text.
        #[serde(default)]
        enc: Option<String>,
        /// 0, 1 or 2; default 0.
        #[serde(default)]
        qos: u8,
        /// MQTT retain flag; default false.
        #[serde(default)]
        retain: bool,
    },
    /// Application-level ping (browsers cannot send WebSocket pings).
    Ping {
        /// Request id, echoed in `pong`.
        #[serde(default)]
        id: Option<RequestId>,
    },
    /// Acknowledges delivery up to `seq` (used by server-held sessions).
    Ack {
        /// Last seq the client has processed.
        seq: u64,
    },
    /// Reads logged messages matching `filter`.
    History {
        /// Request id.
        id: RequestId,
        /// MQTT filter.
        filter: String,
        /// Where to start (default `"earliest"`); `next` of a previous answer continues.
        #[serde(default)]
        from: Option<ReplayFrom>,
        /// Most messages to return (default 100, capped by `session.max_history`).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// The latest logged message of each topic matching `filter`.
    Last {
        /// Request id.
        id: RequestId,
        /// MQTT filter.
        filter: String,
    },
}

impl ReplayFrom {
    /// The replay start this names, or the text of a `bad_request`.
    pub(crate) fn to_start(&self) -> Result<Start, String> {
        match self {
            ReplayFrom::Named(n) if n == "earliest" => Ok(Start::Earliest),
            ReplayFrom::Named(n) if n == "latest" => Ok(Start::Latest),
            ReplayFrom::Named(n) => Err(format!(
                "from must be \"earliest\", \"latest\", {{\"epoch\",\"seq\"}} or {{\"time_ms\"}}, not {n:?}"
            )),
            ReplayFrom::Position { epoch, seq } => Ok(Start::After {
                epoch: epoch.clone(),
                seq: *seq,
            }),
            ReplayFrom::Time { time_ms } => Ok(Start::Time(*time_ms)),
        }
    }
}

/// A frame that could not be decoded, with what to tell the client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FrameError {
    /// The request id, when one could be read.
    pub(crate) id: Option<RequestId>,
    /// Always [`ErrorCode::BadRequest`] for decoding failures.
    pub(crate) code: ErrorCode,
    /// Human text, free of internals.
    pub(crate) message: String,
}

const KNOWN: &[&str] = &[
    "hello",
    "subscribe",
    "unsubscribe",
    "publish",
    "ping",
    "ack",
    "history",
    "last",
];

/// Decodes one text frame.
/// Longest string request id, in bytes.
const MAX_ID_BYTES: usize = 256;

pub(crate) fn decode(text: &str) -> Result<ClientFrame, FrameError> {
    let bad = |id: Option<Value>, message: String| FrameError {
        id,
        code: ErrorCode::BadRequest,
        message,
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(None, format!("the frame is not valid JSON ({e})")))?;
    let Value::Object(map) = &value else {
        return Err(bad(None, "a frame must be a JSON object".to_owned()));
    };
    // Ids are echoed as they came, so only those that survive a round trip exactly: 64-bit
    // integers (JSON numbers beyond them, or with a fraction, would come back altered) and
    // strings up to MAX_ID_BYTES.
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(v) if v.is_i64() || v.is_u64() => Some(v.clone()),
        Some(Value::String(s)) if s.len() <= MAX_ID_BYTES => Some(Value::String(s.clone())),
        Some(_) => {
            return Err(bad(
                None,
                format!(
                    "the id must be a 64-bit integer or a string of at most {MAX_ID_BYTES} bytes"
                ),
            ))
        }
    };
    let kind = match map.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(bad(id, "the field `type` must be a string".to_owned())),
        None => return Err(bad(id, "the frame has no `type` field".to_owned())),
    };
    if !KNOWN.contains(&kind.as_str()) {
        return Err(bad(id, format!("there is no frame type {kind:?}")));
    }
    ClientFrame::deserialize(value)
        .map_err(|e| bad(id, format!("this {kind} frame is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn decodes_frames() {
        assert_eq!(
            decode(r#"{"type":"hello","filters":["site/+/tags/#"]}"#),
            Ok(ClientFrame::Hello {
                token: None,
                session: None,
                resume_token: None,
                filters: vec!["site/+/tags/#".to_owned()],
                from: None
            })
        );
        assert_eq!(
            decode(
                r#"{"type":"publish","id":5,"topic":"readers/r1/cmd","payload":{"op":"start"},"qos":1}"#
            ),
            Ok(ClientFrame::Publish {
                id: json!(5),
                topic: "readers/r1/cmd".to_owned(),
                payload: json!({"op":"start"}),
                enc: None,
                qos: 1,
                retain: false
            })
        );
        assert_eq!(
            decode(r#"{"type":"ping","id":"x"}"#),
            Ok(ClientFrame::Ping {
                id: Some(json!("x"))
            })
        );
        assert!(matches!(
            decode(r#"{"type":"hello","from":{"epoch":"e","seq":41}}"#),
            Ok(ClientFrame::Hello {
                from: Some(ReplayFrom::Position { seq: 41, .. }),
                ..
            })
        ));
    }

    #[test]
    fn decodes_queries() {
        assert_eq!(
            decode(
                r#"{"type":"history","id":3,"filter":"site/a/#","from":"earliest","limit":100}"#
            ),
            Ok(ClientFrame::History {
                id: json!(3),
                filter: "site/a/#".to_owned(),
                from: Some(ReplayFrom::Named("earliest".to_owned())),
                limit: Some(100)
            })
        );
        assert_eq!(
            decode(r#"{"type":"last","id":4,"filter":"readers/+/status"}"#),
            Ok(ClientFrame::Last {
                id: json!(4),
                filter: "readers/+/status".to_owned()
            })
        );
        assert!(matches!(
            decode(r#"{"type":"hello","from":{"time_ms":5}}"#),
            Ok(ClientFrame::Hello {
                from: Some(ReplayFrom::Time { time_ms: 5 }),
                ..
            })
        ));
        assert_eq!(
            decode(r#"{"type":"ack","seq":9}"#),
            Ok(ClientFrame::Ack { seq: 9 })
        );
    }

    #[test]
    fn ids_are_64_bit_integers_or_short_strings() {
        for ok in [
            r#"{"type":"ping","id":-9223372036854775808}"#,
            r#"{"type":"ping","id":18446744073709551615}"#,
            r#"{"type":"ping","id":"x"}"#,
        ] {
            assert!(decode(ok).is_ok(), "{ok}");
        }
        let long = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(257));
        for bad in [
            r#"{"type":"ping","id":18446744073709551616}"#,
            r#"{"type":"ping","id":303400000000000000001234}"#,
            r#"{"type":"ping","id":1.5}"#,
            r#"{"type":"ping","id":true}"#,
            long.as_str(),
        ] {
            let e = decode(bad).expect_err(bad);
            assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{bad}");
        }
    }

    #[test]
    fn errors_carry_the_id_when_readable() {
        let e = decode(r#"{"type":"subscribe","id":3}"#).expect_err("missing filters");
        assert_eq!(e.id, Some(json!(3)));
        assert!(e.message.contains("filters"), "{}", e.message);
        let e = decode(r#"{"type":"teleport","id":4}"#).expect_err("unknown");
        assert_eq!((e.id, e.code), (Some(json!(4)), ErrorCode::BadRequest));
        assert!(decode("not json").is_err());
        assert!(decode("[1,2]").is_err());
        assert!(decode(r#"{"id":1}"#).is_err());
        assert!(decode(r#"{"type":7}"#).is_err());
        assert!(decode(r#"{"type":"ping","id":{"a":1}}"#).is_err());
        assert!(decode(r#"{"type":"publish","id":1,"topic":"a","payload":1,"qos":"x"}"#).is_err());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z#+/]{0,8}".prop_map(Value::String),
            prop::sample::select(vec![
                "hello",
                "subscribe",
                "publish",
                "ping",
                "ack",
                "type",
                "id",
                "filters",
                "topic",
                "payload"
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "type", "id", "filters", "topic", "payload", "qos", "retain", "enc", "seq",
                        "from"
                    ]),
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = decode(&s);
        }

        #[test]
        fn arbitrary_json_gives_a_frame_or_bad_request(v in arb_json()) {
            match decode(&v.to_string()) {
                Ok(_) => {}
                Err(e) => prop_assert_eq!(e.code, ErrorCode::BadRequest),
            }
        }
    }
}
