//! Encoded server frames as the fan-out, the outboxes and the drivers carry them: opaque text
//! made here, so the layers below the drivers move frames without knowing JSON or the
//! WebSocket library.

use std::sync::{Arc, OnceLock};

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

/// A logged message's `message` frame in its two forms, each encoded on first use: live, for
/// every WebSocket and SSE receiver, and replay (`"replay":true`), for every connection that
/// catches up from the tail. A message that only MQTT subscribers receive (they take the
/// record) is never encoded.
#[derive(Debug)]
pub(crate) struct MessageFrames {
    encodings: Arc<Encodings>,
    live: OnceLock<Frame>,
    replay: OnceLock<Frame>,
}

impl MessageFrames {
    /// Forms not encoded yet, to be encoded with the payload encodings of `encodings`.
    pub(crate) fn new(encodings: Arc<Encodings>) -> MessageFrames {
        MessageFrames {
            encodings,
            live: OnceLock::new(),
            replay: OnceLock::new(),
        }
    }

    /// The forms of an already encoded live frame.
    #[cfg(test)]
    pub(crate) fn from_live(live: Frame) -> MessageFrames {
        let frames = MessageFrames::new(Arc::default());
        frames.live.get_or_init(|| live);
        frames
    }

    /// The live frame of `record` (the record these forms belong to).
    pub(crate) fn live(&self, record: &Record) -> &Frame {
        self.live
            .get_or_init(|| Frame::from(message_text(record, false, &self.encodings)))
    }

    /// The live frame if it was encoded.
    pub(crate) fn live_if_encoded(&self) -> Option<&Frame> {
        self.live.get()
    }

    /// The replay frame of `record`: the live frame with `"replay":true` appended (`replay` is
    /// the last field of a `message` frame and absent when false, see [`message_text`]).
    pub(crate) fn replay(&self, record: &Record) -> Frame {
        self.replay
            .get_or_init(|| {
                let live = self.live(record).as_str();
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
        let frames = MessageFrames::new(Arc::default());
        assert!(
            frames.live_if_encoded().is_none(),
            "nothing encoded before use"
        );
        assert_eq!(
            frames.replay(&record),
            replay_frame(&record, &Encodings::default()),
            "the edited live frame equals the one encoded with replay set"
        );
        assert_eq!(
            frames.live(&record).as_str(),
            message_text(&record, false, &Encodings::default())
        );
    }
}
