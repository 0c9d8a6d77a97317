//! The client→broker byte stream of one MQTT connection: what it carries for the log, and what
//! of it reaches rumqttd.
//!
//! The watcher sees every packet's header and the bodies it needs: logged and retained PUBLISH
//! bodies whole (bounded by the broker's packet limit), a prefix of the others for the topic
//! and its MQTT 5 alias, PUBREL packet ids, and SUBSCRIBE and UNSUBSCRIBE bodies. It refuses
//! PUBLISH topics MQTT forbids and rumqttd does not check (wildcards, NUL, empty without an
//! alias, unknown alias). Bytes pass through unchanged with three exceptions: a SUBSCRIBE waits
//! until it is whole and loses the filters the proxy refuses ([`super::subscribe`]); a PINGREQ
//! behind PUBLISHes that wait for the log is answered by the proxy and not passed on (so a
//! publisher held back by the log keeps its keep alive); and a fixed header is passed once it
//! is whole. Malformed input stops the watch and passes as it is: rumqttd rejects it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::deliver::Command;
use super::downstream::Control;
use super::outflow::FIRST_ID;
use super::subscribe::{Outcome, Subscriptions};
use super::wire::{put_remaining_length, remaining_length};

/// A retained value seen on the wire. An empty payload clears the topic's retained value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedUpdate {
    /// Topic name.
    pub topic: String,
    /// The retained payload, or empty to clear it.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: u8,
    /// Its MQTT 5 PUBLISH properties, as a logged message keeps them.
    pub properties: Bytes,
}

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A complete PUBLISH whose topic matches the bridge's filters: it goes to the log before
    /// the broker sees it. The packet id when it is QoS 2 (retransmissions are logged once).
    Publish(crate::InboundMessage, Option<u16>),
    /// The logged QoS 1 PUBLISH just seen, packet id `id`, does not go to rumqttd (no filter of
    /// its could match): the proxy acknowledges it itself once durable, after the acks rumqttd
    /// owes for the `after` QoS 1/2 PUBLISHes passed to it before (MQTT keeps PUBACKs in order).
    Bypassed { id: u16, after: u64 },
    /// A PUBREL for this packet id: the QoS 2 exchange it ends is over.
    Released(u16),
    /// The client's acknowledgement of one of rumqttd's PUBLISHes starts at this offset of
    /// what goes to rumqttd (the proxy's own acks for PUBLISHes it kept from the client must
    /// keep rumqttd's order around it, see [`super::owed`]).
    BrokerAck(super::owed::ClientAck, usize),
    /// A DISCONNECT: the client ends the connection normally, without its will unless it asks
    /// for it (MQTT 5 reason 0x04). Never passed to rumqttd.
    Disconnect { with_will: bool },
    /// A retained value was set or cleared.
    Retained(RetainedUpdate),
    /// Something for the broker→client side: a packet the proxy answers itself, or a SUBACK
    /// to rewrite.
    Control(Control),
    /// Something for the subscriptions the proxy serves itself (after the SUBACK or UNSUBACK
    /// it answers with, which comes first).
    Serve(Command),
    /// The client broke the protocol; it must be disconnected before this reaches the broker.
    Violation(&'static str),
}

/// Bytes of a PUBLISH read to check its topic (and learn an MQTT 5 topic alias) when the body
/// is not wanted whole.
const PREFIX: usize = 1024;

/// Packet types the watcher reads bodies of.
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const UNSUBSCRIBE: u8 = 10;
const PINGREQ: u8 = 12;
const DISCONNECT: u8 = 14;

/// Why a PUBLISH over `broker.max_payload_size` ends its connection.
pub(crate) const TOO_LARGE: &str = "PUBLISH larger than broker.max_payload_size";

#[derive(Debug)]
enum State {
    /// Reading the fixed header (type byte + up to 4 remaining-length bytes): bytes so far,
    /// not passed on yet.
    Header([u8; 5], usize),
    /// Passing over `n` more body bytes.
    Skip(usize),
    /// Collecting `need` more body bytes of a packet with these flags, keeping the first
    /// `keep` (the whole body when needed, else a prefix for the topic and alias). A
    /// SUBSCRIBE's bytes are not passed on until it is decided.
    Collect {
        kind: u8,
        flags: u8,
        need: usize,
        keep: usize,
        total: usize,
        /// Its bytes wait until it is decided (see [`Observer::withheld`]).
        held: bool,
    },
    /// Gave up on malformed input: everything passes.
    Stopped,
    /// Refused a packet that ends the connection, or saw a DISCONNECT: nothing more passes.
    Refused,
}

/// One connection's watcher.
#[derive(Debug)]
pub(crate) struct Observer {
    v5: bool,
    max_packet: usize,
    /// Filters whose PUBLISHes are logged (`bridge.filters`); empty: none.
    logged: Arc<[String]>,
    state: State,
    aliases: HashMap<u16, String>,
    subscriptions: Subscriptions,
    /// QoS 1 and 2 PUBLISHes seen (each is owed a PUBACK or PUBREC by the broker).
    acks_owed: u64,
    /// PUBLISHes seen.
    publishes: u64,
    /// The body being collected; reused from packet to packet.
    body: Vec<u8>,
    /// rumqttd has heard nothing from this connection for long: send it a PINGREQ at the next
    /// acknowledgement the proxy takes (see [`Observer::ping_due`]).
    ping_due: bool,
    /// Logged PUBLISHes no rumqttd filter could match are kept from rumqttd (the subscriptions
    /// that want them are served by the proxy); on when the bridge's stream core runs.
    bypass: bool,
    /// The PUBLISH just parsed is kept from rumqttd.
    bypassed: bool,
    /// QoS 1/2 PUBLISHes passed to rumqttd, each owed an ack by it.
    forwarded_owed: u64,
}

impl Observer {
    /// A watcher for a connection of the given protocol version; a PUBLISH over `max_packet`
    /// ends the connection (the broker would), and no body over it is buffered.
    pub(crate) fn new(
        v5: bool,
        max_packet: usize,
        logged: Arc<[String]>,
        subscriptions: Subscriptions,
    ) -> Observer {
        Observer {
            v5,
            max_packet,
            logged,
            state: State::Header([0; 5], 0),
            aliases: HashMap::new(),
            subscriptions,
            acks_owed: 0,
            publishes: 0,
            body: Vec::new(),
            ping_due: false,
            bypass: false,
            bypassed: false,
            forwarded_owed: 0,
        }
    }

    /// Keeps logged PUBLISHes that no rumqttd filter could match from rumqttd (see
    /// [`Seen::Bypassed`]): its router then spends nothing on them.
    pub(crate) fn with_bypass(mut self) -> Observer {
        self.bypass = true;
        self
    }

    /// rumqttd has had no bytes from this connection for long. It drops a connection silent
    /// past its keep alive (the 65,535 s the handshake gives it), and a subscriber whose only
    /// traffic is acknowledgements of the proxy's own PUBLISHes (taken here) would be: the
    /// next such acknowledgement is replaced by a PINGREQ to rumqttd, whose PINGRESP the
    /// broker→client side drops.
    pub(crate) fn ping_due(&mut self) {
        self.ping_due = true;
    }

    /// True when what was passed on so far ends at a packet boundary (the proxy may put a
    /// packet of its own next).
    pub(crate) fn at_boundary(&self) -> bool {
        match &self.state {
            State::Header(..) | State::Refused => true,
            State::Collect { held, .. } => *held,
            State::Skip(_) | State::Stopped => false,
        }
    }

    /// QoS 1 and 2 PUBLISHes seen so far.
    pub(crate) fn acks_owed(&self) -> u64 {
        self.acks_owed
    }

    /// PUBLISHes seen so far.
    pub(crate) fn publishes(&self) -> u64 {
        self.publishes
    }

    /// Feeds bytes as they come from the client; appends what they complete to `out` and what
    /// goes on to the broker to `fwd`. `busy`: earlier bytes still wait for the log (a PINGREQ
    /// is then answered here instead of waiting behind them).
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        busy: bool,
        out: &mut Vec<Seen>,
        fwd: &mut Vec<u8>,
    ) {
        while !data.is_empty() {
            match &mut self.state {
                State::Stopped => {
                    fwd.extend_from_slice(data);
                    return;
                }
                State::Refused => return,
                State::Header(buf, n) => {
                    buf[*n] = data[0];
                    *n += 1;
                    data = &data[1..];
                    if *n < 2 {
                        continue;
                    }
                    if buf[*n - 1] & 0x80 != 0 {
                        if *n == 5 {
                            fwd.extend_from_slice(&buf[..]);
                            self.state = State::Stopped;
                        }
                        continue;
                    }
                    let header = *buf;
                    let n = *n;
                    self.header(&header[..n], busy, out, fwd);
                }
                State::Skip(n) => {
                    let take = (*n).min(data.len());
                    fwd.extend_from_slice(&data[..take]);
                    *n -= take;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Header([0; 5], 0);
                    }
                }
                State::Collect {
                    kind,
                    flags,
                    need,
                    keep,
                    total,
                    held,
                } => {
                    let take = (*need).min(data.len());
                    let room = keep.saturating_sub(self.body.len()).min(take);
                    self.body.extend_from_slice(&data[..room]);
                    if !*held {
                        fwd.extend_from_slice(&data[..take]);
                    }
                    *need -= take;
                    data = &data[take..];
                    if *need == 0 {
                        let (kind, flags, held) = (*kind, *flags, *held);
                        let complete = self.body.len() == *total;
                        self.state = State::Header([0; 5], 0);
                        let body = std::mem::take(&mut self.body);
                        self.complete(kind, flags, &body, complete, out, fwd);
                        if held && kind == PUBLISH {
                            self.pass_publish(flags, &body, fwd);
                        }
                        self.body = body;
                    }
                }
            }
        }
    }

    /// A whole fixed header: what to do with the packet it starts.
    fn header(&mut self, header: &[u8], busy: bool, out: &mut Vec<Seen>, fwd: &mut Vec<u8>) {
        let len = remaining_length(header);
        let (kind, flags) = (header[0] >> 4, header[0] & 0x0f);
        if kind == PINGREQ && len == 0 {
            let waiting = out
                .iter()
                .any(|s| matches!(s, Seen::Publish(..) | Seen::Retained(_)));
            if busy || waiting {
                out.push(Seen::Control(Control::Packet(vec![0xd0, 0])));
                self.state = State::Header([0; 5], 0);
                return;
            }
        }
        if kind == DISCONNECT {
            self.disconnect(flags, len, out);
            return;
        }
        if kind == PUBLISH && len > self.max_packet {
            // rumqttd would reset the connection (its limit counts the whole packet after the
            // fixed header); refused here first, with a reason an MQTT 5 client can read.
            out.push(Seen::Violation(TOO_LARGE));
            self.state = State::Refused;
            return;
        }
        if kind == PUBLISH {
            self.publishes += 1;
            if (flags >> 1) & 3 > 0 {
                self.acks_owed += 1;
            }
        }
        // A SUBSCRIBE over the packet limit passes as it is: rumqttd refuses it. A logged
        // PUBLISH (read whole) waits until it is known whether rumqttd gets it.
        let publish_held = kind == PUBLISH && self.bypass && !self.logged.is_empty();
        let withheld = (self.withheld(kind) || publish_held) && len <= self.max_packet;
        let wanted = withheld || matches!(kind, PUBLISH | PUBREL | UNSUBSCRIBE);
        if !(withheld && len > 0) {
            fwd.extend_from_slice(header);
            if kind == PUBLISH && (flags >> 1) & 3 > 0 {
                self.forwarded_owed += 1;
            }
        }
        self.state = if wanted && len > 0 {
            let whole = flags & 1 == 1 || !self.logged.is_empty() || kind != PUBLISH;
            let keep = match kind {
                PUBREL => len.min(2),
                _ if whole && len <= self.max_packet => len,
                _ => len.min(PREFIX),
            };
            self.body.clear();
            State::Collect {
                kind,
                flags,
                need: len,
                keep,
                total: len,
                held: withheld,
            }
        } else if len == 0 {
            State::Header([0; 5], 0)
        } else {
            State::Skip(len)
        };
    }

    /// A collected body (a prefix when not `complete`) of a packet of `kind`.
    fn complete(
        &mut self,
        kind: u8,
        flags: u8,
        body: &[u8],
        complete: bool,
        out: &mut Vec<Seen>,
        fwd: &mut Vec<u8>,
    ) {
        match kind {
            PUBLISH => self.publish(flags, body, complete, out),
            PUBREL => {
                if let [a, b] = body[..] {
                    out.push(Seen::Released(u16::from_be_bytes([a, b])));
                }
            }
            DISCONNECT => {
                // Nothing after a DISCONNECT counts.
                self.state = State::Refused;
                out.push(Seen::Disconnect {
                    with_will: self.v5 && body.first() == Some(&0x04),
                });
                if let Some(expiry) = props::disconnect_session_expiry(body).filter(|_| complete) {
                    out.push(Seen::Serve(Command::Expiry(expiry)));
                }
            }
            SUBSCRIBE => self.subscribe(flags, body, out, fwd),
            UNSUBSCRIBE if complete => match self.subscriptions.unsubscribe(body) {
                Some(u) => {
                    out.push(Seen::Control(Control::Packet(u.unsuback)));
                    if !u.served.is_empty() {
                        out.push(Seen::Control(Control::Serving(
                            self.subscriptions.serving(),
                        )));
                        out.push(Seen::Serve(Command::Unsubscribe(u.served)));
                    }
                    if let Some(p) = u.packet {
                        fwd.extend_from_slice(&p);
                    }
                }
                // Malformed: passed as it is, and rumqttd refuses it.
                None => {
                    fwd.push((UNSUBSCRIBE << 4) | flags);
                    put_remaining_length(fwd, body.len());
                    fwd.extend_from_slice(body);
                }
            },
            PUBACK | PUBREC | PUBCOMP => {
                let id = match body {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 0,
                };
                if id >= FIRST_ID {
                    let failed = kind == PUBREC && body.get(2).is_some_and(|&r| r >= 0x80);
                    out.push(Seen::Serve(Command::Ack(kind, id, failed)));
                    if std::mem::take(&mut self.ping_due) {
                        out.push(Seen::Control(Control::ExpectPong));
                        fwd.extend_from_slice(&[0xc0, 0]);
                    }
                } else {
                    if let Some(ack) = super::owed::ClientAck::of(kind) {
                        out.push(Seen::BrokerAck(ack, fwd.len()));
                    }
                    fwd.push((kind << 4) | flags);
                    put_remaining_length(fwd, body.len());
                    fwd.extend_from_slice(body);
                }
            }
            _ => {}
        }
    }

    /// A held PUBLISH, now parsed: passed on to rumqttd unless it was kept from it.
    fn pass_publish(&mut self, flags: u8, body: &[u8], fwd: &mut Vec<u8>) {
        if std::mem::take(&mut self.bypassed) {
            return;
        }
        fwd.push((PUBLISH << 4) | flags);
        put_remaining_length(fwd, body.len());
        fwd.extend_from_slice(body);
        if (flags >> 1) & 3 > 0 {
            self.forwarded_owed += 1;
        }
    }

    /// Packets whose bytes wait until the whole packet is read: SUBSCRIBE and UNSUBSCRIBE
    /// (rewritten or answered here) and, on a connection the proxy serves subscriptions on,
    /// acknowledgements (those of the proxy's own packet ids stay here).
    /// A DISCONNECT's fixed header. It is not passed to rumqttd: the proxy ends the connection
    /// to rumqttd without one, as rumqttd frees a connection id on DISCONNECT and again when
    /// the link ends, which can drop a client given the id in between. Its body (reason code,
    /// session expiry) is read.
    fn disconnect(&mut self, flags: u8, len: usize, out: &mut Vec<Seen>) {
        if len == 0 {
            out.push(Seen::Disconnect { with_will: false });
            self.state = State::Refused;
            return;
        }
        self.body.clear();
        self.state = State::Collect {
            kind: DISCONNECT,
            flags,
            need: len,
            keep: len.min(PREFIX),
            total: len,
            held: true,
        };
    }

    fn withheld(&self, kind: u8) -> bool {
        matches!(kind, SUBSCRIBE | UNSUBSCRIBE)
            || (matches!(kind, PUBACK | PUBREC | PUBCOMP) && self.subscriptions.serves())
    }

    /// A complete SUBSCRIBE: passed, rewritten or answered, and what the proxy serves.
    fn subscribe(&mut self, flags: u8, body: &[u8], out: &mut Vec<Seen>, fwd: &mut Vec<u8>) {
        let served = match self.subscriptions.subscribe(body) {
            Outcome::Pass => {
                fwd.push(0x80 | flags);
                put_remaining_length(fwd, body.len());
                fwd.extend_from_slice(body);
                return;
            }
            Outcome::Answer {
                id,
                codes,
                quota,
                served,
            } => {
                let reason = quota.map(super::subscribe::Quota::reason);
                let suback = super::downstream::suback(self.v5, id, &codes, reason);
                if served.is_empty() {
                    out.push(Seen::Control(Control::Packet(suback)));
                } else {
                    out.push(Seen::Control(Control::Serving(
                        self.subscriptions.serving(),
                    )));
                    // Sent once the served filters are in the hub.
                    out.push(Seen::Serve(Command::Subscribe(served, Some(suback))));
                }
                return;
            }
            Outcome::Rewrite {
                id,
                packet,
                plan,
                served,
            } => {
                out.push(Seen::Control(Control::Rewrite(id, plan)));
                fwd.extend_from_slice(&packet);
                served
            }
            Outcome::Malformed => {
                out.push(Seen::Violation("malformed SUBSCRIBE"));
                return;
            }
        };
        if !served.is_empty() {
            out.push(Seen::Control(Control::Serving(
                self.subscriptions.serving(),
            )));
            out.push(Seen::Serve(Command::Subscribe(served, None)));
        }
    }
}

mod props;
mod publish;
#[cfg(test)]
mod tests;
