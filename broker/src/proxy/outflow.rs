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

use std::collections::HashMap;
use std::sync::Arc;

use crate::served::ServedMessage;

use super::wire::{put_remaining_length, varint};

/// The lowest packet id the proxy uses (rumqttd's are 1..=100).
pub(crate) const FIRST_ID: u16 = 101;
/// The in-flight window of an MQTT 3.1.1 client, which cannot state one (rumqttd's own).
const V4_WINDOW: usize = 100;

/// One served subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// One connection's served subscriptions and the QoS 1/2 PUBLISHes in flight.
#[derive(Debug)]
pub(crate) struct Outflow {
    v5: bool,
    client_id: Arc<str>,
    limits: ClientLimits,
    subs: Vec<Sub>,
    inflight: HashMap<u16, Stage>,
    next_id: u16,
    counts: Counts,
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
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// Adds or replaces subscriptions; returns, per subscription, whether it is new (retain
    /// handling 1 needs it).
    pub(crate) fn subscribe(&mut self, subs: Vec<Sub>) -> Vec<(Sub, bool)> {
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
        let own = m.origin.as_deref() == Some(&*self.client_id);
        let matching: Vec<&Sub> = self
            .subs
            .iter()
            .filter(|s| mqws_topic::matches(&s.filter, &m.topic) && !(own && s.no_local))
            .collect();
        let granted = matching.iter().map(|s| s.qos).max()?;
        let retain = m.retain && matching.iter().any(|s| s.retain_as_published);
        let ids: Vec<u32> = matching.iter().filter_map(|s| s.id).collect();
        self.publish(m, granted, retain, &ids, now_ms)
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
            Some(p)
        } else {
            None
        };
        let id = (qos > 0).then(|| self.take_id());
        let packet = encode(&m.topic, &m.payload, qos, retain, id, properties.as_deref());
        if self
            .limits
            .max_packet
            .is_some_and(|max| packet.len() > max as usize)
        {
            self.counts.too_large += 1;
            return None;
        }
        if let Some(id) = id {
            self.inflight
                .insert(id, if qos == 1 { Stage::Ack } else { Stage::Rec });
        }
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
        match (kind, self.inflight.get(&id).copied()) {
            (4, Some(Stage::Ack)) | (7, Some(Stage::Comp)) => {
                self.inflight.remove(&id);
                None
            }
            (5, Some(Stage::Rec)) if failed => {
                self.inflight.remove(&id);
                None
            }
            (5, Some(Stage::Rec | Stage::Comp)) => {
                self.inflight.insert(id, Stage::Comp);
                let [a, b] = id.to_be_bytes();
                Some(vec![0x62, 2, a, b])
            }
            _ => None,
        }
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

/// Encodes a PUBLISH.
fn encode(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    id: Option<u16>,
    properties: Option<&[u8]>,
) -> Vec<u8> {
    let mut props_len = Vec::new();
    if let Some(p) = properties {
        put_varint(&mut props_len, p.len());
    }
    let len = 2
        + topic.len()
        + if id.is_some() { 2 } else { 0 }
        + props_len.len()
        + properties.map_or(0, <[u8]>::len)
        + payload.len();
    let mut out = Vec::with_capacity(len + 5);
    out.push(0x30 | (qos << 1) | u8::from(retain));
    put_remaining_length(&mut out, len);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if let Some(id) = id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(p) = properties {
        out.extend_from_slice(&props_len);
        out.extend_from_slice(p);
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests;
