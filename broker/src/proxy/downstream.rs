//! The broker→client byte stream of one MQTT connection, as a state machine without I/O: bytes
//! from rumqttd in, bytes for the client out. It finds packet boundaries so that packets the
//! proxy answers itself (PINGRESP while PUBLISHes wait for the log, SUBACK for refused
//! filters, an MQTT 5 DISCONNECT) go between rumqttd's packets, never inside one, and it
//! rewrites the SUBACK of a SUBSCRIBE whose refused filters the proxy removed, so the client
//! gets one code per filter it asked for, in its order. On a connection whose subscriptions
//! the proxy serves, it keeps from the client rumqttd's copies of logged messages that a
//! served filter already delivers, and rumqttd's PUBLISHes over the client's Maximum Packet
//! Size ([`Keep`]; their acknowledgements are the proxy's, see [`super::owed`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::window::Window;
use super::wire::{put_remaining_length, remaining_length, varint};

mod keep;
pub(crate) use keep::Keep;

/// Largest SUBACK body collected for a rewrite (a packet id, properties and one code per
/// filter); a larger one passes unchanged.
const MAX_SUBACK: usize = 64 * 1024;

/// Bytes of rumqttd's PUBLISHes held while the client's Receive Maximum is used up, past
/// which reading from rumqttd stops once the first held PUBLISH is whole (it must be, to go
/// when a slot frees): at most the first PUBLISH, this, and one read are held.
const HOLD_BYTES: usize = 16 * 1024;

/// One of rumqttd's PUBLISHes held for the client's window: its QoS, its bytes so far, and
/// whether they are all there.
#[derive(Debug)]
struct HeldPublish {
    qos: u8,
    bytes: Vec<u8>,
    complete: bool,
}

/// What the client→broker side asks of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// A whole packet the proxy sends itself.
    Packet(Vec<u8>),
    /// The SUBACK for this packet id covers only the filters passed on: put the proxy's code
    /// where the entry is `Some`, and rumqttd's codes, in order, where it is `None`.
    Rewrite(u16, Vec<Option<u8>>),
    /// Send this packet (an MQTT 5 DISCONNECT) and close the connection.
    Goodbye(Vec<u8>),
    /// The proxy sent rumqttd a PINGREQ of its own: drop the next PINGRESP.
    ExpectPong,
    /// A PUBACK the proxy owes for a PUBLISH kept from rumqttd: send it once rumqttd's acks
    /// for the first `n` QoS 1/2 PUBLISHes passed to it went out (MQTT keeps PUBACKs in
    /// the order of their PUBLISHes).
    AckAfter(u64, Vec<u8>),
    /// The filters the proxy serves on this connection from now (every one, after a
    /// SUBSCRIBE or UNSUBSCRIBE changed them): rumqttd's copies of what they deliver are kept.
    Serving(Arc<[String]>),
}

#[derive(Debug)]
enum State {
    /// Reading a fixed header: its bytes so far (not yet passed on).
    Header([u8; 5], usize),
    /// Passing `n` more body bytes.
    Skip(usize),
    /// Dropping `n` more body bytes (rumqttd's UNSUBACKs: the proxy answers every
    /// UNSUBSCRIBE itself).
    Drop(usize),
    /// Collecting a SUBACK body to rewrite.
    Suback { need: usize, body: Vec<u8> },
    /// The CONNACK's flags byte is next (its session present bit is the proxy's), then `n`
    /// more body bytes.
    ConnackFlags(usize),
    /// Reading the start of rumqttd's PUBLISH (or PUBREL) until it is known whether the
    /// client gets it: its fixed header, the body's length and the body so far.
    Deciding {
        header: [u8; 5],
        header_len: usize,
        total: usize,
        body: Vec<u8>,
    },
}

/// One connection's broker→client side.
#[derive(Debug)]
pub(crate) struct Downstream {
    v5: bool,
    state: State,
    rewrites: HashMap<u16, Vec<Option<u8>>>,
    /// Packets of the proxy's own, written at the next boundary.
    queued: Vec<u8>,
    /// A goodbye is queued: close once it is written.
    closing: bool,
    /// rumqttd's CONNACK went out: nothing of the proxy's own may precede it (a client
    /// that pipelines CONNECT and PUBLISH would otherwise get the proxy's PUBACK first).
    connected: bool,
    /// PINGRESPs to drop: answers to the proxy's own PINGREQs.
    pongs: u32,
    /// The proxy's own PUBACKs waiting for rumqttd's earlier ones ([`Control::AckAfter`]).
    own_acks: std::collections::VecDeque<(u64, Vec<u8>)>,
    /// The proxy's own PUBACKs sent.
    own_acks_sent: u64,
    /// The goodbye was written: nothing more goes out.
    done: bool,
    /// PUBACKs and PUBRECs passed to the client.
    acks: u64,
    /// PUBLISHes passed to the client.
    publishes: u64,
    /// The session present bit the CONNACK gets, when the proxy decides it.
    session_present: Option<bool>,
    /// On a connection the proxy serves: what of rumqttd's it keeps from the client.
    keep: Option<Keep>,
    /// The client's Receive Maximum, shared with the proxy's served subscriptions (MQTT 5).
    window: Option<Arc<Window>>,
    /// rumqttd's PUBLISHes waiting for the window, in order: once one waits, every later
    /// PUBLISH waits behind it (other packets go on).
    held: VecDeque<HeldPublish>,
    /// Their bytes.
    held_bytes: usize,
    /// The packet being read goes to the back of `held`.
    diverting: bool,
}

impl Downstream {
    pub(crate) fn new(v5: bool) -> Downstream {
        Downstream {
            v5,
            state: State::Header([0; 5], 0),
            rewrites: HashMap::new(),
            queued: Vec::new(),
            closing: false,
            connected: false,
            pongs: 0,
            own_acks: std::collections::VecDeque::new(),
            own_acks_sent: 0,
            done: false,
            acks: 0,
            publishes: 0,
            session_present: None,
            keep: None,
            window: None,
            held: VecDeque::new(),
            held_bytes: 0,
            diverting: false,
        }
    }

    /// Counts rumqttd's QoS 1/2 PUBLISHes against the client's Receive Maximum (see
    /// [`Window`]), holding those that do not fit.
    pub(crate) fn with_window(mut self, window: Arc<Window>) -> Downstream {
        self.window = Some(window);
        self
    }

    /// The window, for the driver to wait on.
    pub(crate) fn window(&self) -> Option<Arc<Window>> {
        self.window.clone()
    }

    /// Whether rumqttd's PUBLISHes wait for the client's window.
    pub(crate) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether so much is held that reading from rumqttd waits (never while the first held
    /// PUBLISH is incomplete: it could not go when a slot frees).
    pub(crate) fn full(&self) -> bool {
        self.held_bytes >= HOLD_BYTES && self.held.front().is_some_and(|h| h.complete)
    }

    /// Keeps rumqttd's duplicates and oversized PUBLISHes from the client (see [`Keep`]).
    pub(crate) fn with_keep(mut self, keep: Keep) -> Downstream {
        self.keep = Some(keep);
        self
    }

    /// Whether the client speaks MQTT 5.
    pub(crate) fn v5(&self) -> bool {
        self.v5
    }

    /// The CONNACK says `present` (for a successful connection; a refusal says 0).
    pub(crate) fn session_present(&mut self, present: bool) {
        self.session_present = Some(present);
    }

    /// PUBLISHes passed to the client so far.
    pub(crate) fn publishes(&self) -> u64 {
        self.publishes
    }

    /// PUBACKs and PUBRECs sent to the client so far (answers to its QoS 1 and 2 PUBLISHes),
    /// rumqttd's and the proxy's.
    pub(crate) fn acks(&self) -> u64 {
        self.acks + self.own_acks_sent
    }

    /// True once the goodbye is in `out`: write it and close the client's socket.
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Takes a request from the other side; what can go out now is appended to `out`.
    pub(crate) fn control(&mut self, control: Control, out: &mut Vec<u8>) {
        match control {
            Control::Packet(p) if !self.closing => self.queued.extend_from_slice(&p),
            Control::Packet(_) => {}
            Control::Rewrite(id, plan) => {
                self.rewrites.insert(id, plan);
            }
            Control::Goodbye(p) => {
                if !self.closing {
                    self.queued.extend_from_slice(&p);
                    self.closing = true;
                }
            }
            Control::ExpectPong => self.pongs += 1,
            Control::AckAfter(n, p) => self.own_acks.push_back((n, p)),
            Control::Serving(filters) => {
                if let Some(keep) = &mut self.keep {
                    keep.serving = filters;
                }
            }
        }
        self.boundary(out);
    }

    /// Passes bytes from the broker; appends what goes to the client to `out`.
    pub(crate) fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() && !self.done {
            match &mut self.state {
                State::Header(buf, n) => {
                    buf[*n] = data[0];
                    *n += 1;
                    data = &data[1..];
                    if *n < 2 || (buf[*n - 1] & 0x80 != 0 && *n < 5) {
                        continue;
                    }
                    let (buf, n) = (*buf, *n);
                    self.header(&buf[..n], out);
                }
                State::Skip(n) => {
                    let take = (*n).min(data.len());
                    match self.held.back_mut().filter(|_| self.diverting) {
                        Some(h) => {
                            h.bytes.extend_from_slice(&data[..take]);
                            self.held_bytes += take;
                        }
                        None => out.extend_from_slice(&data[..take]),
                    }
                    *n -= take;
                    data = &data[take..];
                    if *n == 0 {
                        self.end_packet(out);
                    }
                }
                State::ConnackFlags(n) => {
                    // rumqttd's answer: the flags byte, then the reason code.
                    let present = self.session_present.take().unwrap_or(false);
                    out.push((data[0] & !1) | u8::from(present));
                    data = &data[1..];
                    let rest = *n - 1;
                    self.state = State::Skip(rest);
                    if rest == 0 {
                        self.state = State::Header([0; 5], 0);
                        self.boundary(out);
                    }
                }
                State::Drop(n) => {
                    let take = (*n).min(data.len());
                    *n -= take;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Header([0; 5], 0);
                        self.boundary(out);
                    }
                }
                State::Deciding {
                    header,
                    header_len,
                    total,
                    body,
                } => {
                    let want = Keep::want(header[0], *total, body);
                    let take = want.saturating_sub(body.len()).min(data.len());
                    body.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if body.len() >= Keep::want(header[0], *total, body) {
                        let (header, header_len, total) = (*header, *header_len, *total);
                        let body = std::mem::take(body);
                        self.decided(&header[..header_len], total, &body, out);
                    }
                }
                State::Suback { need, body } => {
                    let take = (*need).min(data.len());
                    body.extend_from_slice(&data[..take]);
                    *need -= take;
                    data = &data[take..];
                    if *need == 0 {
                        let body = std::mem::take(body);
                        self.state = State::Header([0; 5], 0);
                        self.suback(&body, out);
                        self.boundary(out);
                    }
                }
            }
        }
    }

    /// A whole fixed header from rumqttd: what to do with the packet it starts.
    fn header(&mut self, header: &[u8], out: &mut Vec<u8>) {
        let len = remaining_length(header);
        let kind = header[0] >> 4;
        self.connected |= kind == 2;
        let deciding = self.keep.is_some() && Keep::deciding(kind, len);
        if deciding {
            let mut whole = [0u8; 5];
            whole[..header.len()].copy_from_slice(header);
            self.state = State::Deciding {
                header: whole,
                header_len: header.len(),
                total: len,
                body: Vec::new(),
            };
            return;
        }
        match kind {
            3 => self.publishes += 1,
            4 | 5 => self.acks += 1,
            _ => {}
        }
        let pong = kind == 13 && len == 0 && self.pongs > 0;
        if pong {
            self.pongs -= 1;
        }
        if kind == 11 || pong {
            self.state = State::Drop(len);
            if len == 0 {
                self.state = State::Header([0; 5], 0);
                self.boundary(out);
            }
            return;
        }
        let suback = kind == 9;
        if suback && !self.rewrites.is_empty() && (2..=MAX_SUBACK).contains(&len) {
            self.state = State::Suback {
                need: len,
                body: Vec::with_capacity(len),
            };
            return;
        }
        self.state = State::Skip(len);
        if kind == 3 && self.must_hold((header[0] >> 1) & 3) {
            self.hold(header);
        } else {
            out.extend_from_slice(header);
        }
        if kind == 2 && len >= 2 && self.session_present.is_some() {
            self.state = State::ConnackFlags(len);
        }
        if len == 0 {
            self.end_packet(out);
        }
    }

    /// rumqttd's PUBLISH or PUBREL whose start (`header`, `body` of `total`) was read: passed
    /// to the client, or dropped with the rest of it.
    fn decided(&mut self, header: &[u8], total: usize, body: &[u8], out: &mut Vec<u8>) {
        let kind = header[0] >> 4;
        let pass = match &mut self.keep {
            Some(keep) if kind == 3 => keep.pass(header[0] & 0x0f, header.len() + total, body),
            Some(keep) => keep.pass_rel(u16::from_be_bytes([body[0], body[1]])),
            None => true,
        };
        let rest = total - body.len();
        if pass {
            self.state = State::Skip(rest);
            if kind == 3 {
                self.publishes += 1;
            }
            if kind == 3 && self.must_hold((header[0] >> 1) & 3) {
                self.hold(header);
                if let Some(h) = self.held.back_mut() {
                    h.bytes.extend_from_slice(body);
                    self.held_bytes += body.len();
                }
            } else {
                out.extend_from_slice(header);
                out.extend_from_slice(body);
            }
        } else {
            self.state = State::Drop(rest);
        }
        if rest == 0 {
            self.end_packet(out);
        }
    }

    /// Whether rumqttd's PUBLISH of `qos` waits: one waits already (order is kept), or it
    /// is QoS 1/2 and the client's window is full. A QoS 1/2 one that goes takes its slot.
    fn must_hold(&mut self, qos: u8) -> bool {
        !self.held.is_empty() || (qos > 0 && self.window.as_ref().is_some_and(|w| !w.take_broker()))
    }

    /// Starts holding rumqttd's PUBLISH (its fixed header `header`): it and the rest of it go
    /// to the back of `held` until the packet ends.
    fn hold(&mut self, header: &[u8]) {
        self.held_bytes += header.len();
        self.held.push_back(HeldPublish {
            qos: (header[0] >> 1) & 3,
            bytes: header.to_vec(),
            complete: false,
        });
        self.diverting = true;
    }

    /// The packet being read ended.
    fn end_packet(&mut self, out: &mut Vec<u8>) {
        if self.diverting {
            if let Some(h) = self.held.back_mut() {
                h.complete = true;
            }
            self.diverting = false;
        }
        self.state = State::Header([0; 5], 0);
        self.boundary(out);
    }

    /// Whether what went to the client so far ends at a packet boundary (the packet being
    /// read is not being passed on).
    fn out_at_boundary(&self) -> bool {
        match self.state {
            State::Skip(_) | State::ConnackFlags(_) => self.diverting,
            State::Header(..) | State::Drop(_) | State::Suback { .. } | State::Deciding { .. } => {
                true
            }
        }
    }

    /// Sends the held PUBLISHes the client's window takes now, in order.
    pub(crate) fn release(&mut self, out: &mut Vec<u8>) {
        if !self.out_at_boundary() || self.done {
            return;
        }
        while let Some(h) = self.held.front() {
            if !h.complete {
                return;
            }
            if h.qos > 0 && !self.window.as_ref().is_none_or(|w| w.take_broker()) {
                return;
            }
            if let Some(h) = self.held.pop_front() {
                self.held_bytes -= h.bytes.len();
                out.extend_from_slice(&h.bytes);
            }
        }
    }

    /// At a packet boundary: the proxy's own packets go out now.
    fn boundary(&mut self, out: &mut Vec<u8>) {
        // A goodbye goes out even before the CONNACK: the connection ends.
        if !matches!(self.state, State::Header(_, 0)) || !(self.connected || self.closing) {
            return;
        }
        if !self.closing {
            self.release(out);
        }
        while let Some((n, _)) = self.own_acks.front() {
            if *n > self.acks || self.closing {
                break;
            }
            if let Some((_, p)) = self.own_acks.pop_front() {
                self.queued.extend_from_slice(&p);
                self.own_acks_sent += 1;
            }
        }
        if !self.queued.is_empty() {
            out.append(&mut self.queued);
            self.done = self.closing;
        }
    }

    /// Writes a SUBACK, rewritten when the proxy removed filters from its SUBSCRIBE.
    fn suback(&mut self, body: &[u8], out: &mut Vec<u8>) {
        let id = u16::from_be_bytes([body[0], body[1]]);
        let props_end = if self.v5 {
            match varint(&body[2..]) {
                Some((len, used)) => 2 + used + len,
                None => usize::MAX,
            }
        } else {
            2
        };
        let rewritten = match (self.rewrites.remove(&id), body.get(props_end..)) {
            (Some(plan), Some(codes)) => merge(&plan, codes).map(|codes| {
                let mut b = body[..props_end].to_vec();
                b.extend_from_slice(&codes);
                b
            }),
            _ => None,
        };
        let body = rewritten.as_deref().unwrap_or(body);
        out.push(0x90);
        put_remaining_length(out, body.len());
        out.extend_from_slice(body);
    }
}

/// The client's codes: the proxy's where it refused, rumqttd's in order elsewhere. `None` when
/// rumqttd's count does not fit the plan (then its SUBACK passes unchanged).
fn merge(plan: &[Option<u8>], broker: &[u8]) -> Option<Vec<u8>> {
    let mut from_broker = broker.iter();
    let codes: Option<Vec<u8>> = plan
        .iter()
        .map(|p| p.or_else(|| from_broker.next().copied()))
        .collect();
    if from_broker.next().is_some() {
        return None;
    }
    codes
}

/// A SUBACK the proxy sends itself, every filter refused with its code; in MQTT 5 with
/// `reason` as its Reason String.
pub(crate) fn suback(v5: bool, id: u16, codes: &[u8], reason: Option<&str>) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if v5 {
        let mut properties = Vec::new();
        if let Some(text) = reason {
            properties.push(0x1F);
            properties.extend_from_slice(&(text.len() as u16).to_be_bytes());
            properties.extend_from_slice(text.as_bytes());
        }
        put_remaining_length(&mut body, properties.len());
        body.extend_from_slice(&properties);
    }
    body.extend_from_slice(codes);
    let mut p = vec![0x90];
    put_remaining_length(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

#[cfg(test)]
mod tests;
