//! The forms a logged message takes in an outbox: encoded frames for WebSocket and SSE
//! connections, records for the MQTT subscribers the proxy serves (which encode PUBLISH packets
//! themselves), and what each costs in a queue.

use std::sync::Arc;

use super::Outgoing;
use crate::fanout::Live;
use crate::protocol::Frame;

/// How an outbox carries logged messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// As encoded `message` frames (WebSocket, SSE).
    Frames,
    /// As records (MQTT subscribers served by the proxy, which encodes PUBLISH packets).
    Records,
}

/// A logged message in the form its outbox carries.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    Frame(Frame),
    Record(Arc<Live>),
}

impl Message {
    /// What it costs in a queue: the frame's length, or the record's topic, payload and
    /// properties.
    pub(crate) fn len(&self) -> usize {
        match self {
            Message::Frame(f) => f.len(),
            Message::Record(live) => record_len(&live.record),
        }
    }

    pub(super) fn outgoing(self, seq: u64) -> Outgoing {
        match self {
            Message::Frame(f) => Outgoing::Frame(f, seq),
            Message::Record(live) => Outgoing::Record(live),
        }
    }
}

/// The queue cost of a record carried as such.
pub(crate) fn record_len(record: &crate::storage::Record) -> usize {
    let properties = record.mqtt.as_ref().map_or(0, |m| m.properties.len());
    record.topic.len() + record.payload.len() + properties + 32
}

/// What a catch-up queues: a message, or (records form) a lost range.
#[derive(Debug, Clone)]
pub(crate) enum Caught {
    Message(Message),
    Lost(u64, u64),
}

impl Caught {
    pub(super) fn len(&self) -> usize {
        match self {
            Caught::Message(m) => m.len(),
            Caught::Lost(..) => 16,
        }
    }

    pub(super) fn outgoing(self, seq: u64) -> Outgoing {
        match self {
            Caught::Message(m) => m.outgoing(seq),
            Caught::Lost(from, to) => Outgoing::Lost(from, to),
        }
    }
}
