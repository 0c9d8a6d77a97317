//! Server frames, serialized once each. A live `message` frame is encoded once per logged
//! message and shared by every connection that receives it.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::client::RequestId;
use super::payload::{self, Encodings};
use super::ErrorCode;
use crate::storage::{Position, Record};

/// A seq range a client cannot be given (`welcome.gaps`, the `gap` frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub(crate) enum Gap {
    /// The log is not the one the client's position belongs to (reset or lost).
    Epoch,
    /// Retention removed seqs `from..=to`.
    Evicted {
        /// First removed seq.
        from: u64,
        /// Last removed seq.
        to: u64,
    },
    /// The broker dropped messages that would have had seqs `from..=to`.
    Dropped {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
}

/// The session fields of a WebSocket `welcome`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct WelcomeSession<'a> {
    /// Session id.
    pub(crate) session: &'a str,
    /// Secret for resuming the session.
    pub(crate) resume_token: &'a str,
    /// Whether a server-held session was found.
    pub(crate) resumed: bool,
}

/// Frames other than `message`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerFrame<'a> {
    /// Reply to `hello`, and the first event of an SSE stream (contract 4: the same without
    /// the session fields, since an SSE client's position is its `Last-Event-ID`).
    Welcome {
        /// The server-held session (WebSocket only).
        #[serde(flatten)]
        session: Option<WelcomeSession<'a>>,
        /// `mqws/<version>`.
        server: &'a str,
        /// Where the live stream starts: every message after it that matches the filters is
        /// delivered.
        position: &'a Position,
        /// The session's filters after hello.
        filters: &'a [String],
        /// Only when a replay was asked for: whether everything asked for will be delivered.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// With `recovered`: every lost range intersecting the replay, oldest first.
        #[serde(skip_serializing_if = "Option::is_none")]
        gaps: Option<&'a [Gap]>,
        /// Set (true) when `gaps` was cut at its limit.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        gaps_truncated: bool,
    },
    /// A loss learned after `welcome`, in order with the messages.
    Gap(&'a Gap),
    /// End of a replay; live messages follow.
    CaughtUp {
        /// The last seq the replay covered.
        position: &'a Position,
    },
    /// Reply to `history`.
    History {
        /// Request id.
        id: &'a RequestId,
        /// `message` objects, oldest first.
        messages: &'a [Box<RawValue>],
        /// Pass as `from` to continue, or null when there is no more.
        next: Option<&'a Position>,
    },
    /// Reply to `last`.
    Last {
        /// Request id.
        id: &'a RequestId,
        /// `message` objects, one per topic, oldest first.
        messages: &'a [Box<RawValue>],
    },
    /// Reply to `subscribe`.
    Subscribed {
        /// Request id.
        id: &'a RequestId,
        /// The filters of the request (sorted, without repeats), all of them now held.
        filters: &'a [String],
    },
    /// Reply to `unsubscribe`.
    Unsubscribed {
        /// Request id.
        id: &'a RequestId,
        /// The filters removed.
        filters: &'a [String],
    },
    /// Reply to `publish` once the broker took it.
    Puback {
        /// Request id.
        id: &'a RequestId,
    },
    /// Reply to `ping`.
    Pong {
        /// Request id, if the ping had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    /// A refusal or failure.
    Error {
        /// Request id, when answering a request.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        /// Contract error code.
        code: ErrorCode,
        /// Human text without internals.
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    /// JSON text of the frame.
    pub(crate) fn to_text(&self) -> String {
        // Serializing these plain structs into a String cannot fail: every field is a string,
        // number, bool or an already-valid JSON value.
        serde_json::to_string(self).expect("server frames always serialize")
    }

    /// The frame, encoded for a connection's queue.
    pub(crate) fn to_frame(&self) -> super::Frame {
        super::Frame::from(self.to_text())
    }
}

#[derive(Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    topic: &'a str,
    payload: payload::Encoded<'a>,
    enc: &'static str,
    retain: bool,
    ts: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replay: bool,
}

/// `message` objects of `records` for `history` and `last`.
pub(crate) fn message_values(records: &[Record], encodings: &Encodings) -> Vec<Box<RawValue>> {
    records
        .iter()
        .filter_map(|r| RawValue::from_string(message_text(r, false, encodings)).ok())
        .collect()
}

/// The `message` frame of `record`; `replay` marks catch-up delivery.
pub(crate) fn message_text(record: &Record, replay: bool, encodings: &Encodings) -> String {
    let payload = payload::encode(&record.payload, encodings.of(&record.topic));
    let enc = payload.enc();
    let frame = MessageFrame {
        kind: "message",
        seq: record.seq,
        topic: &record.topic,
        payload,
        enc,
        retain: record.retain,
        ts: record.ts_ms,
        replay,
    };
    serde_json::to_string(&frame).expect("message frames always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn message_frame_matches_contract() {
        let r = Record {
            seq: 58,
            ts_ms: 1_732_270_000_123,
            topic: "site/a/tags/x".to_owned(),
            payload: Bytes::from_static(br#"{"epc":"3034"}"#),
            retain: false,
            mqtt: None,
        };
        let v: Value =
            serde_json::from_str(&message_text(&r, false, &Encodings::default())).expect("json");
        assert_eq!(
            v,
            json!({"type":"message","seq":58,"topic":"site/a/tags/x","payload":{"epc":"3034"},
                   "enc":"json","retain":false,"ts":1_732_270_000_123u64})
        );
        let v: Value =
            serde_json::from_str(&message_text(&r, true, &Encodings::default())).expect("json");
        assert_eq!(v["replay"], json!(true));
    }

    #[test]
    fn gap_frame_shape() {
        let g = Gap::Evicted { from: 3, to: 9 };
        assert_eq!(
            serde_json::from_str::<Value>(&ServerFrame::Gap(&g).to_text()).expect("json"),
            json!({"type":"gap","reason":"evicted","from":3,"to":9})
        );
    }

    #[test]
    fn error_frame_shape() {
        let id = json!(5);
        let t = ServerFrame::Error {
            id: Some(&id),
            code: ErrorCode::BadTopic,
            message: "no wildcards",
        }
        .to_text();
        assert_eq!(
            serde_json::from_str::<Value>(&t).expect("json"),
            json!({"type":"error","id":5,"code":"bad_topic","message":"no wildcards"})
        );
    }
}
