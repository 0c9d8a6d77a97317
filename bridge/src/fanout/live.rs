//! A logged message as the tail, the hub and the outboxes hold it: the record, and the
//! `message` frames protocol encodes for it on first use, counted in the tail's bytes from then
//! until the tail drops the message.
//!
//! Frames are made lazily because many messages never need one: MQTT subscribers take the
//! record, and encoding every message as JSON in the ingest thread cost about a tenth of the
//! server's CPU with only MQTT subscribers (benches/RESULTS.md). The tail still bounds what its
//! messages hold in bytes: a frame encoded while its message is in the tail adds to the tail's
//! [`FrameBytes`], and leaves it with the message.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::payload::Encodings;
use crate::protocol::{Frame, MessageFrames};
use crate::storage::Record;

/// The frames are not encoded, or were encoded after the message left the tail.
const NOT_COUNTED: u8 = 0;
/// The frames were encoded while the message was in the tail, and counted there.
const COUNTED: u8 = 1;
/// The message left the tail: nothing encoded from now on is counted.
const LEFT: u8 = 2;

/// Bytes the frames of the tail's messages hold (encoded after they were pushed).
#[derive(Debug, Default)]
pub(crate) struct FrameBytes(AtomicUsize);

impl FrameBytes {
    /// The bytes counted now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A logged message with its frames.
#[derive(Debug)]
pub(crate) struct Live {
    /// The logged message.
    pub(crate) record: Record,
    /// When it entered the tail (none for a record read from the log): where the time of the
    /// stages after the log is measured from.
    pub(crate) logged_at: Option<Instant>,
    /// None for a record read from the log for an outbox that carries records.
    frames: Option<Framed>,
}

/// The frames of a message and where their bytes are counted.
#[derive(Debug)]
struct Framed {
    forms: MessageFrames,
    /// The tail's count of frame bytes.
    meter: Arc<FrameBytes>,
    /// [`NOT_COUNTED`], [`COUNTED`] or [`LEFT`]: one word, so encoding and leaving the tail
    /// agree on whether the frame's bytes were added, whichever comes first.
    state: AtomicU8,
}

impl Live {
    /// A message logged at `logged_at` whose frames are encoded on first use, their bytes
    /// counted in `meter`.
    pub(crate) fn framed(
        record: Record,
        logged_at: Instant,
        encodings: Arc<Encodings>,
        meter: Arc<FrameBytes>,
    ) -> Live {
        let mut live = Live::with_frames(record, MessageFrames::new(encodings), meter);
        live.logged_at = Some(logged_at);
        live
    }

    /// A message with the given frames (tests encode their own).
    pub(crate) fn with_frames(
        record: Record,
        forms: MessageFrames,
        meter: Arc<FrameBytes>,
    ) -> Live {
        Live {
            record,
            logged_at: None,
            frames: Some(Framed {
                forms,
                meter,
                state: AtomicU8::new(NOT_COUNTED),
            }),
        }
    }

    /// A record without frames, for an outbox that carries records.
    pub(crate) fn bare(record: Record) -> Live {
        Live {
            record,
            logged_at: None,
            frames: None,
        }
    }

    /// Its live frame, encoded now if it is the first use (none for a [`Live::bare`] record).
    pub(crate) fn frame(&self) -> Option<&Frame> {
        let f = self.frames.as_ref()?;
        let frame = f.forms.live(&self.record);
        if f.state.load(Ordering::Acquire) == NOT_COUNTED {
            // Added before the state says so, so that leaving the tail never takes away bytes
            // not yet added; if the message left meanwhile, the bytes come off again.
            let n = Live::frames_len(frame);
            f.meter.0.fetch_add(n, Ordering::Relaxed);
            if f.state
                .compare_exchange(NOT_COUNTED, COUNTED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                f.meter.0.fetch_sub(n, Ordering::Relaxed);
            }
        }
        Some(frame)
    }

    /// Its replay frame (none for a [`Live::bare`] record).
    pub(crate) fn replay_frame(&self) -> Option<Frame> {
        self.frame()?;
        self.frames.as_ref().map(|f| f.forms.replay(&self.record))
    }

    /// What the message holds apart from its frames: counted by the tail at push.
    pub(crate) fn record_size(&self) -> usize {
        // Record fields and the Arcs, roughly; what matters is that payloads are counted.
        const OVERHEAD: usize = 128;
        let r = &self.record;
        let mqtt = r.mqtt.as_ref().map_or(0, |m| {
            m.properties.len() + m.origin.as_ref().map_or(0, |o| o.len())
        });
        r.topic.len() + r.payload.len() + mqtt + OVERHEAD
    }

    /// What its frames hold once encoded (0 before).
    pub(crate) fn frames_size(&self) -> usize {
        self.frames
            .as_ref()
            .and_then(|f| f.forms.live_if_encoded())
            .map_or(0, Live::frames_len)
    }

    /// The message left the tail: its frames' bytes, if counted, come off the tail's count.
    pub(crate) fn left_tail(&self) {
        let Some(f) = &self.frames else {
            return;
        };
        if f.state.swap(LEFT, Ordering::AcqRel) == COUNTED {
            let n = f.forms.live_if_encoded().map_or(0, Live::frames_len);
            f.meter.0.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The bytes of both forms of a live frame: the replay form is about as long.
    fn frames_len(live: &Frame) -> usize {
        2 * live.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record() -> Record {
        Record {
            seq: 1,
            ts_ms: 0,
            topic: "t".to_owned(),
            payload: Bytes::from_static(b"{\"a\":1}"),
            retain: false,
            mqtt: None,
        }
    }

    #[test]
    fn frames_are_counted_from_first_use_until_the_message_leaves() {
        let meter = Arc::new(FrameBytes::default());
        let live = Live::framed(record(), Instant::now(), Arc::default(), meter.clone());
        assert_eq!(meter.get(), 0, "nothing encoded at push");
        assert_eq!(live.frames_size(), 0);
        let len = live.frame().expect("framed").len();
        assert_eq!(meter.get(), 2 * len);
        live.replay_frame().expect("framed");
        live.frame().expect("framed");
        assert_eq!(meter.get(), 2 * len, "counted once");
        live.left_tail();
        assert_eq!(meter.get(), 0);
    }

    #[test]
    fn a_frame_encoded_after_the_message_left_is_not_counted() {
        let meter = Arc::new(FrameBytes::default());
        let live = Live::framed(record(), Instant::now(), Arc::default(), meter.clone());
        live.left_tail();
        assert!(live.frame().is_some());
        assert_eq!(meter.get(), 0);
        live.left_tail();
        assert_eq!(meter.get(), 0);
    }

    #[test]
    fn a_bare_record_has_no_frames() {
        let live = Live::bare(record());
        assert!(live.frame().is_none());
        assert!(live.replay_frame().is_none());
        live.left_tail();
    }
}
