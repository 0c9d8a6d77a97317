//! Encoded server frames as the fan-out, the outboxes and the drivers carry them: opaque text
//! made here, so the layers below the drivers move frames without knowing JSON or the
//! WebSocket library.

use std::sync::OnceLock;

use axum::extract::ws::Utf8Bytes;

use super::payload::Encodings;
use super::server::message_text;
use crate::storage::Record;

/// One encoded server frame: UTF-8 text, cheap to clone (shared bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame(Utf8Bytes);

impl Frame {
    /// A frame of static text (tests and fixed notices).
    #[cfg(test)]
    pub(crate) const fn from_static(text: &'static str) -> Frame {
        Frame(Utf8Bytes::from_static(text))
    }

    /// Encoded length in bytes: what the frame costs in a queue.
    pub(crate) fn len(&self) -> usize {
        self.0.as_str().len()
    }

    /// The text, for drivers that write it themselves (SSE events).
    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The text as a WebSocket text message takes it, without copying.
    pub(crate) fn into_ws(self) -> Utf8Bytes {
        self.0
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Frame {
        Frame(Utf8Bytes::from(text))
    }
}

/// A logged message's `message` frame in its two forms: live, encoded once for every receiver
/// when the message is logged, and replay (`"replay":true`), encoded once on first use for
/// every connection that catches up from the tail.
#[derive(Debug)]
pub(crate) struct MessageFrames {
    live: Frame,
    replay: OnceLock<Frame>,
}

impl MessageFrames {
    /// Encodes `record`'s live frame with the payload encodings of `encodings`.
    pub(crate) fn new(record: &Record, encodings: &Encodings) -> MessageFrames {
        MessageFrames::from_live(Frame::from(message_text(record, false, encodings)))
    }

    /// The forms of an already encoded live frame.
    pub(crate) fn from_live(live: Frame) -> MessageFrames {
        MessageFrames {
            live,
            replay: OnceLock::new(),
        }
    }

    /// The live frame.
    pub(crate) fn live(&self) -> &Frame {
        &self.live
    }

    /// The replay frame: the live frame with `"replay":true` appended (`replay` is the last
    /// field of a `message` frame and absent when false, see [`message_text`]).
    pub(crate) fn replay(&self) -> Frame {
        self.replay
            .get_or_init(|| {
                let live = self.live.as_str();
                let body = live.strip_suffix('}').unwrap_or(live);
                Frame::from(format!("{body},\"replay\":true}}"))
            })
            .clone()
    }
}

/// The replay frame of a record read from the log (encoded for one connection).
pub(crate) fn replay_frame(record: &Record, encodings: &Encodings) -> Frame {
    Frame::from(message_text(record, true, encodings))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn the_replay_form_is_the_live_frame_with_replay_set() {
        let record = Record {
            seq: 7,
            ts_ms: 1,
            topic: "a".to_owned(),
            payload: Bytes::from_static(b"{\"x\":1}"),
            retain: false,
            mqtt: None,
        };
        let frames = MessageFrames::new(&record, &Encodings::default());
        assert_eq!(
            frames.replay(),
            replay_frame(&record, &Encodings::default()),
            "the edited live frame equals the one encoded with replay set"
        );
        assert_eq!(
            frames.live().as_str(),
            message_text(&record, false, &Encodings::default())
        );
    }
}
