//! The subscriptions the proxy serves itself on one connection, as a state machine without
//! I/O: messages from the bridge's feed in, PUBLISH packets for the client out, acknowledgements
//! in, PUBRELs out.
//!
//! It applies what rumqttd does not: delivery at min(publish QoS, granted QoS); no-local; retain
//! as published; message expiry counted from when the message was logged; the client's Maximum
//! Packet Size (a larger packet is skipped and counted) and Receive Maximum (no more
//! unacknowledged QoS 1/2 PUBLISHes than it allows: the driver stops taking from the feed, which
//! then falls behind and catches up from the log). Overlapping subscriptions give one copy at
//! the highest granted QoS with every subscription identifier. Packet ids are above
//! [`FIRST_ID`]: rumqttd uses 1..=100 on the same connection, so acknowledgements are told
//! apart by id alone.
//!
//! For a persistent session it also keeps what the stored session needs: the seq of each
//! message in flight, so the position to resume from ([`Outflow::cursor`]) never passes an
//! unacknowledged one; which seqs were sent before (sent again with DUP, or not at all at QoS
//! 0); and each subscription's start, so a filter never gets messages logged before its
//! SUBSCRIBE.

use std::collections::HashMap;
use std::sync::Arc;

use crate::served::ServedMessage;

use super::wire::{put_remaining_length, varint};

/// The lowest packet id the proxy uses (rumqttd's are 1..=100).
pub(crate) const FIRST_ID: u16 = 101;
/// The in-flight window of an MQTT 3.1.1 client, which cannot state one (rumqttd's own).
const V4_WINDOW: usize = 100;

/// One served subscription.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sub {
    pub(crate) filter: String,
    /// The granted QoS.
    pub(crate) qos: u8,
    /// MQTT 5: the client's own messages are not delivered on it.
    pub(crate) no_local: bool,
    /// MQTT 5: keep the retain flag of live messages.
    pub(crate) retain_as_published: bool,
    /// MQTT 5: 0 send retained values at subscribe, 1 only for a new subscription, 2 never.
    pub(crate) retain_handling: u8,
    /// MQTT 5: the subscription identifier of the SUBSCRIBE.
    pub(crate) id: Option<u32>,
    /// The log head when it was made: older messages (a catch-up can bring them) are not
    /// delivered on it.
    #[serde(default)]
    pub(crate) since: u64,
}

/// What the client said in its CONNECT about what it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientLimits {
    /// Receive Maximum (MQTT 5; 65,535 when absent).
    pub(crate) receive_max: u16,
    /// Maximum Packet Size (MQTT 5), the whole packet.
    pub(crate) max_packet: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS 1, waiting for PUBACK.
    Ack,
    /// QoS 2, waiting for PUBREC.
    Rec,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP.
    Comp,
}

/// Counts for metrics and the connection's log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) sent: u64,
    pub(crate) too_large: u64,
    pub(crate) expired: u64,
}

/// What a resumed session had sent before ([`Outflow::resume`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Before {
    /// Every matching message at or below this seq was acknowledged (or sent at QoS 0).
    pub(crate) acked: u64,
    /// The highest seq sent: QoS 1/2 ones at or below go again with DUP, QoS 0 ones not again.
    pub(crate) sent: u64,
    /// The log head when the session came back: QoS 0 messages at or below it were logged
    /// while it was away (delivered only when `queue_qos0`).
    pub(crate) away_through: u64,
    /// QoS 2 exchanges past PUBREC: (packet id, seq). PUBREL goes again, not the PUBLISH.
    pub(crate) released: Vec<(u16, u64)>,
}

/// One connection's served subscriptions and the QoS 1/2 PUBLISHes in flight.
#[derive(Debug)]
pub(crate) struct Outflow {
    v5: bool,
    client_id: Arc<str>,
    limits: ClientLimits,
    subs: Vec<Sub>,
    /// Each packet id in flight: its stage and the message's seq (0: a retained value).
    inflight: HashMap<u16, (Stage, u64)>,
    next_id: u16,
    counts: Counts,
    /// The highest seq taken from the feed (delivered, or skipped as nobody's).
    taken: u64,
    /// The highest seq sent.
    sent: u64,
    before: Before,
    queue_qos0: bool,
    /// Seqs retention removed before they could be delivered, not yet told (MQTT 5: on the
    /// next PUBLISH, as the user property `mqws-gap: FROM-TO`).
    gap: Option<(u64, u64)>,
    /// Bumped by everything that may move what a stored session keeps, so the driver can tell
    /// whether a save is due without computing the position.
    changes: u64,
}

impl Outflow {
    pub(crate) fn new(v5: bool, client_id: Arc<str>, limits: ClientLimits) -> Outflow {
        Outflow {
            v5,
            client_id,
            limits,
            subs: Vec::new(),
            inflight: HashMap::new(),
            next_id: FIRST_ID,
            counts: Counts::default(),
            taken: 0,
            sent: 0,
            before: Before::default(),
            queue_qos0: false,
            gap: None,
            changes: 0,
        }
    }

    /// See the field: a save is due when this differs from its value at the last save.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// Seqs `from..=to` were removed by retention before they could be delivered: an MQTT 5
    /// client is told on the next PUBLISH (one range covering every gap since the last one).
    pub(crate) fn lost(&mut self, from: u64, to: u64) {
        self.gap = Some(match self.gap {
            Some((f, t)) => (f.min(from), t.max(to)),
            None => (from, to),
        });
    }

    /// Continues a stored session: its subscriptions and what it sent before. Returns the
    /// PUBRELs to send again.
    pub(crate) fn resume(&mut self, subs: Vec<Sub>, before: Before, queue_qos0: bool) -> Vec<u8> {
        self.subs = subs;
        self.taken = before.acked;
        self.sent = before.sent;
        self.queue_qos0 = queue_qos0;
        let mut out = Vec::new();
        for &(id, seq) in &before.released {
            self.inflight.insert(id, (Stage::Comp, seq));
            let [a, b] = id.to_be_bytes();
            out.extend_from_slice(&[0x62, 2, a, b]);
        }
        self.before = before;
        out
    }

    /// A feed opened fresh at `cut` (no earlier position): nothing before it is owed.
    pub(crate) fn started_at(&mut self, cut: u64) {
        self.changes += 1;
        self.taken = self.taken.max(cut);
    }

    /// The position a persistent session resumes after: every matching message at or below
    /// it is done; never past one still in flight.
    pub(crate) fn cursor(&self) -> u64 {
        self.inflight
            .values()
            .filter(|(_, seq)| *seq > 0)
            .map(|(_, seq)| seq - 1)
            .min()
            .map_or(self.taken, |c| c.min(self.taken))
    }

    /// The highest seq sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// QoS 2 exchanges past PUBREC, as (packet id, seq).
    pub(crate) fn released(&self) -> Vec<(u16, u64)> {
        let mut r: Vec<(u16, u64)> = self
            .inflight
            .iter()
            .filter(|(_, (stage, seq))| *stage == Stage::Comp && *seq > 0)
            .map(|(id, (_, seq))| (*id, *seq))
            .collect();
        r.sort_unstable();
        r
    }

    /// The subscriptions held.
    pub(crate) fn subs(&self) -> &[Sub] {
        &self.subs
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// Adds or replaces subscriptions; returns, per subscription, whether it is new (retain
    /// handling 1 needs it).
    pub(crate) fn subscribe(&mut self, subs: Vec<Sub>) -> Vec<(Sub, bool)> {
        self.changes += 1;
        subs.into_iter()
            .map(|sub| {
                let new = match self.subs.iter_mut().find(|s| s.filter == sub.filter) {
                    Some(old) => {
                        *old = sub.clone();
                        false
                    }
                    None => {
                        self.subs.push(sub.clone());
                        true
                    }
                };
                (sub, new)
            })
            .collect()
    }

    /// Removes subscriptions; returns the filters it held (the rest were not served).
    pub(crate) fn unsubscribe(&mut self, filters: &[String]) -> Vec<String> {
        self.changes += 1;
        let mut removed = Vec::new();
        self.subs.retain(|s| {
            let gone = filters.contains(&s.filter);
            if gone {
                removed.push(s.filter.clone());
            }
            !gone
        });
        removed
    }

    /// The QoS 1/2 PUBLISHes sent and not yet acknowledged (QoS 2: until PUBCOMP).
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// True while another QoS 1/2 PUBLISH may go out.
    pub(crate) fn window_open(&self) -> bool {
        let window = if self.v5 {
            usize::from(self.limits.receive_max)
        } else {
            V4_WINDOW
        };
        self.inflight.len() < window
    }

    /// The PUBLISH for a live message, or `None` when no subscription takes it (no-local),
    /// it expired or it is larger than the client accepts.
    pub(crate) fn live(&mut self, m: &ServedMessage, now_ms: u64) -> Option<Vec<u8>> {
        self.changes += 1;
        self.taken = self.taken.max(m.seq);
        let own = m.origin.as_deref() == Some(&*self.client_id);
        let matching: Vec<&Sub> = self
            .subs
            .iter()
            .filter(|s| {
                m.seq > s.since && mqws_topic::matches(&s.filter, &m.topic) && !(own && s.no_local)
            })
            .collect();
        let granted = matching.iter().map(|s| s.qos).max()?;
        let qos = m.qos.map_or(granted, |q| q.min(granted));
        let resent = m.seq <= self.before.sent;
        if qos == 0 && (resent || (m.seq <= self.before.away_through && !self.queue_qos0)) {
            return None;
        }
        if self.before.released.iter().any(|&(_, seq)| seq == m.seq) {
            return None;
        }
        let retain = m.retain && matching.iter().any(|s| s.retain_as_published);
        let ids: Vec<u32> = matching.iter().filter_map(|s| s.id).collect();
        let mut packet = self.publish(m, granted, retain, &ids, now_ms)?;
        if resent && qos > 0 {
            packet[0] |= 0x08;
        }
        Some(packet)
    }

    /// The PUBLISH of a retained value for a subscription just made (`new`: it did not exist).
    pub(crate) fn retained(
        &mut self,
        m: &ServedMessage,
        sub: &Sub,
        new: bool,
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        let own = m.origin.as_deref() == Some(&*self.client_id);
        let wanted = match sub.retain_handling {
            0 => true,
            1 => new,
            _ => false,
        };
        if !wanted || (own && sub.no_local) || !mqws_topic::matches(&sub.filter, &m.topic) {
            return None;
        }
        let ids: Vec<u32> = sub.id.into_iter().collect();
        self.publish(m, sub.qos, true, &ids, now_ms)
    }

    fn publish(
        &mut self,
        m: &ServedMessage,
        granted: u8,
        retain: bool,
        ids: &[u32],
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        let qos = m.qos.map_or(granted, |q| q.min(granted));
        let properties = if self.v5 {
            let Some(mut p) = properties(&m.properties, m.ts_ms, now_ms) else {
                self.counts.expired += 1;
                return None;
            };
            for id in ids {
                p.push(0x0B);
                put_varint(&mut p, *id as usize);
            }
            if m.seq > 0 {
                if let Some((from, to)) = self.gap.take() {
                    put_user_property(&mut p, GAP_PROPERTY, &format!("{from}-{to}"));
                }
            }
            Some(p)
        } else {
            None
        };
        let id = (qos > 0).then(|| self.take_id());
        let packet =
            super::wire::publish(&m.topic, &m.payload, qos, retain, id, properties.as_deref());
        if self
            .limits
            .max_packet
            .is_some_and(|max| packet.len() > max as usize)
        {
            self.counts.too_large += 1;
            return None;
        }
        if let Some(id) = id {
            let stage = if qos == 1 { Stage::Ack } else { Stage::Rec };
            self.inflight.insert(id, (stage, m.seq));
        }
        self.sent = self.sent.max(m.seq);
        self.counts.sent += 1;
        Some(packet)
    }

    fn take_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = if id == u16::MAX { FIRST_ID } else { id + 1 };
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }

    /// An acknowledgement from the client (`kind`: 4 PUBACK, 5 PUBREC, 7 PUBCOMP) for one of
    /// the proxy's packet ids; returns the PUBREL a PUBREC asks for. `failed`: an MQTT 5
    /// PUBREC with a failure reason code, which ends the exchange.
    pub(crate) fn ack(&mut self, kind: u8, id: u16, failed: bool) -> Option<Vec<u8>> {
        self.changes += 1;
        match (kind, self.inflight.get(&id).copied()) {
            (4, Some((Stage::Ack, _))) | (7, Some((Stage::Comp, _))) => {
                self.inflight.remove(&id);
                None
            }
            (5, Some((Stage::Rec, _))) if failed => {
                self.inflight.remove(&id);
                None
            }
            (5, Some((Stage::Rec | Stage::Comp, seq))) => {
                self.inflight.insert(id, (Stage::Comp, seq));
                let [a, b] = id.to_be_bytes();
                Some(vec![0x62, 2, a, b])
            }
            _ => None,
        }
    }
}

/// The user property that tells an MQTT 5 client which seqs it will never get.
pub(crate) const GAP_PROPERTY: &str = "mqws-gap";

/// Appends a User Property (0x26: two length-prefixed strings).
fn put_user_property(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(0x26);
    for s in [key, value] {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends MQTT's variable-length integer.
fn put_varint(out: &mut Vec<u8>, n: usize) {
    put_remaining_length(out, n);
}

/// A message's stored properties for delivery: the Message Expiry Interval lowered by the
/// time since it was logged; `None` when it has expired. Malformed properties are dropped.
fn properties(stored: &[u8], ts_ms: u64, now_ms: u64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(stored.len() + 8);
    let mut at = 0;
    while at < stored.len() {
        let id = stored[at];
        let Some(len) = property_len(id, &stored[at + 1..]) else {
            return Some(Vec::new());
        };
        let end = at + 1 + len;
        if end > stored.len() {
            return Some(Vec::new());
        }
        if id == 0x02 && len == 4 {
            let v = &stored[at + 1..end];
            let interval = u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            let elapsed = now_ms.saturating_sub(ts_ms) / 1000;
            if elapsed >= interval {
                return None;
            }
            out.push(0x02);
            out.extend_from_slice(&((interval - elapsed) as u32).to_be_bytes());
        } else {
            out.extend_from_slice(&stored[at..end]);
        }
        at = end;
    }
    Some(out)
}

/// The length of a PUBLISH property's value starting at `rest`.
fn property_len(id: u8, rest: &[u8]) -> Option<usize> {
    let two = |r: &[u8]| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([*r.first()?, *r.get(1)?])))
    };
    match id {
        0x01 => Some(1),
        0x02 => Some(4),
        0x23 => Some(2),
        0x0B => varint(rest).map(|(_, used)| used),
        0x03 | 0x08 | 0x09 => Some(2 + two(rest)?),
        0x26 => {
            let k = 2 + two(rest)?;
            Some(k + 2 + two(rest.get(k..)?)?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
