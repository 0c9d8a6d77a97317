//! What of rumqttd's the broker→client side keeps from a served connection's client
//! ([`Keep`]): copies of logged messages a served filter already delivers, and PUBLISHes over
//! the client's Maximum Packet Size, recorded in [`Owed`] for the proxy to acknowledge.

use std::collections::HashSet;
use std::sync::Arc;

use super::super::owed::Owed;

/// What rumqttd sends a served connection that the client must not get: a copy of a logged
/// message that one of the proxy's served filters matches (the proxy delivers it, once, at
/// the right QoS), and a PUBLISH over the client's Maximum Packet Size.
#[derive(Debug)]
pub(crate) struct Keep {
    /// `bridge.filters`: the logged topics.
    logged: Arc<[String]>,
    /// The filters the proxy serves on the connection.
    pub(super) serving: Arc<[String]>,
    /// The client's Maximum Packet Size (MQTT 5).
    max_packet: Option<usize>,
    /// Where kept QoS 1/2 PUBLISHes are recorded, for the proxy to acknowledge.
    owed: Arc<Owed>,
    /// Packet ids of kept QoS 2 PUBLISHes whose PUBREL from rumqttd is dropped.
    own_rels: HashSet<u16>,
}

impl Keep {
    pub(crate) fn new(
        logged: Arc<[String]>,
        serving: Arc<[String]>,
        max_packet: Option<u32>,
        owed: Arc<Owed>,
    ) -> Keep {
        Keep {
            logged,
            serving,
            max_packet: max_packet.and_then(|m| usize::try_from(m).ok()),
            owed,
            own_rels: HashSet::new(),
        }
    }

    /// Whether rumqttd's PUBLISH (whole packet `size` bytes, flags `flags`, its body starting
    /// with `body`: the topic and packet id) goes to the client; a kept one is recorded.
    pub(super) fn pass(&mut self, flags: u8, size: usize, body: &[u8]) -> bool {
        let qos = (flags >> 1) & 3;
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = body
            .get(2..2 + len)
            .and_then(|t| std::str::from_utf8(t).ok());
        let id = body
            .get(2 + len..4 + len)
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        let too_large = self.max_packet.is_some_and(|m| size > m);
        let duplicate = topic.is_some_and(|t| {
            self.logged.iter().any(|f| mqws_topic::matches(f, t))
                && self.serving.iter().any(|f| mqws_topic::matches(f, t))
        });
        if !(too_large || duplicate) || (qos > 0 && id.is_none()) {
            // Passed (one with no packet id is malformed: rumqttd's own checks see it).
            if qos > 0 {
                self.owed.passed();
            }
            return true;
        }
        let why = if too_large { "too_large" } else { "duplicate" };
        metrics::counter!("mqws_mqtt_broker_copies_kept_total", "why" => why).increment(1);
        if let Some(id) = id.filter(|_| qos > 0) {
            self.owed.kept(id, qos.min(2));
            if qos == 2 {
                self.own_rels.insert(id);
            }
        }
        false
    }

    /// Whether rumqttd's PUBREL for packet id `id` goes to the client: not when it answers
    /// the proxy's own PUBREC; one that goes is recorded (see `Owed::rel_passed`).
    pub(super) fn pass_rel(&mut self, id: u16) -> bool {
        if self.own_rels.remove(&id) {
            return false;
        }
        self.owed.rel_passed();
        true
    }

    /// Whether rumqttd's packet of `kind` with a body of `len` bytes waits to be decided on
    /// (every PUBLISH and PUBREL).
    pub(super) fn deciding(kind: u8, len: usize) -> bool {
        len >= 2 && (kind == 3 || kind == 6)
    }

    /// Bytes of rumqttd's PUBLISH (first byte `first`, body `total` bytes, `body` read so
    /// far) needed to decide on it: the topic and the packet id; of a PUBREL, the packet id.
    pub(super) fn want(first: u8, total: usize, body: &[u8]) -> usize {
        match body {
            [a, b, ..] if first >> 4 == 3 => {
                let id = if (first >> 1) & 3 > 0 { 2 } else { 0 };
                (2 + usize::from(u16::from_be_bytes([*a, *b])) + id).min(total)
            }
            _ => total.min(2),
        }
    }
}
