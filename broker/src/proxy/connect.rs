//! Reading a whole MQTT CONNECT packet (3.1, 3.1.1, 5.0) far enough to authenticate it: the
//! protocol level, client id, username and password. Never panics on any input.

use super::wire::{put_remaining_length, read_varint, varint, Short};

/// Largest CONNECT the proxy buffers.
pub(crate) const MAX_CONNECT: usize = 64 * 1024;

/// What the proxy needs from a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connect {
    /// 3, 4 or 5.
    pub(crate) level: u8,
    pub(crate) client_id: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Vec<u8>>,
    /// The last will, if the CONNECT has one.
    pub(crate) will: Option<Will>,
    /// Clean session (3.1.1) or clean start (5).
    pub(crate) clean: bool,
    /// The keep alive the client asked for, in seconds (0: none).
    pub(crate) keep_alive: u16,
    /// Where the keep alive field sits in the stream (MQTT 5: the properties follow it).
    pub(crate) keep_alive_at: usize,
    /// MQTT 5 Session Expiry Interval in seconds (0: the session ends with the connection).
    pub(crate) session_expiry: u32,
    /// MQTT 5 Receive Maximum (65,535 when absent).
    pub(crate) receive_max: u16,
    /// MQTT 5 Maximum Packet Size, when the client set one.
    pub(crate) max_packet: Option<u32>,
    /// Where the will (its properties, topic and payload) sits in the stream, when there is
    /// one: the proxy takes it out of the CONNECT rumqttd gets ([`strip_will`]).
    pub(crate) will_at: Option<std::ops::Range<usize>>,
}

impl Connect {
    /// True when the session outlives the connection: MQTT 3.1.1 clean session 0, or MQTT 5
    /// with a Session Expiry Interval.
    pub(crate) fn persistent(&self) -> bool {
        if self.level == 5 {
            self.session_expiry > 0
        } else {
            !self.clean
        }
    }

    /// Where the connect flags sit in `head` (the byte before the keep alive).
    pub(crate) fn flags_at(&self) -> usize {
        self.keep_alive_at - 1
    }
}

/// The outcome of reading the start of a stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A CONNECT occupying the first `len` bytes.
    Connect(Connect, usize),
    /// Not a CONNECT this proxy accepts.
    Reject(&'static str),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(b)
    }
    fn binary(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.bytes(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.binary()?.to_vec()).ok()
    }
    fn varint(&mut self) -> Option<usize> {
        let (v, used) = varint(self.buf.get(self.pos..)?)?;
        self.pos += used;
        Some(v)
    }
    /// Reads a property block; returns the numeric properties (one, two and four bytes) as
    /// (id, value).
    fn numbers(&mut self) -> Option<Vec<(u8, u32)>> {
        let n = self.varint()?;
        let mut p = Reader {
            buf: self.bytes(n)?,
            pos: 0,
        };
        let mut found = Vec::new();
        while let Some(prop) = p.u8() {
            match prop {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    let v = p.bytes(1)?;
                    found.push((prop, u32::from(v[0])));
                    v
                }
                0x13 | 0x21 | 0x22 | 0x23 => {
                    let v = p.bytes(2)?;
                    found.push((prop, u32::from(u16::from_be_bytes([v[0], v[1]]))));
                    v
                }
                0x02 | 0x11 | 0x18 | 0x27 => {
                    let v = p.bytes(4)?;
                    found.push((prop, u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
                    v
                }
                0x0B => {
                    p.varint()?;
                    &[]
                }
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => p.binary()?,
                0x26 => {
                    p.binary()?;
                    p.binary()?
                }
                _ => return None,
            };
        }
        Some(found)
    }
}

/// Reads a CONNECT from the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let mut r = Reader { buf, pos: 0 };
    let Some(first) = r.u8() else {
        return Parsed::Incomplete;
    };
    if first != 0x10 {
        return Parsed::Reject("first packet is not CONNECT");
    }
    let remaining = match read_varint(&buf[1..]) {
        Ok((remaining, used)) => {
            r.pos += used;
            remaining
        }
        Err(Short::Incomplete) => return Parsed::Incomplete,
        Err(Short::Malformed) => return Parsed::Reject("malformed remaining length"),
    };
    let total = r.pos + remaining;
    if total > MAX_CONNECT {
        return Parsed::Reject("CONNECT too large");
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let mut r = Reader {
        buf: &buf[..total],
        pos: r.pos,
    };
    match body(&mut r) {
        Ok(c) => Parsed::Connect(c, total),
        Err(why) => Parsed::Reject(why),
    }
}

/// A CONNECT's last will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Will {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    /// Seconds to wait before publishing it (MQTT 5: the smaller of the will delay interval and
    /// the session expiry interval, as rumqttd does; 0 before MQTT 5).
    pub(crate) delay: u32,
    /// MQTT 5: its will properties that a PUBLISH carries (all but the delay), as a logged
    /// message keeps them.
    pub(crate) properties: Vec<u8>,
}

/// The will properties a PUBLISH of the will carries: all but Will Delay Interval (0x18).
/// `block` is the properties without their length, already checked by [`Reader::numbers`].
fn will_publish_properties(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len());
    let mut at = 0;
    while let Some(&id) = block.get(at) {
        let string = |from: usize| -> Option<usize> {
            Some(
                2 + usize::from(u16::from_be_bytes([
                    *block.get(from)?,
                    *block.get(from + 1)?,
                ])),
            )
        };
        let len = match id {
            0x01 => Some(1),
            0x02 | 0x18 => Some(4),
            0x03 | 0x08 | 0x09 => string(at + 1),
            0x26 => string(at + 1).and_then(|k| Some(k + string(at + 1 + k)?)),
            _ => None,
        };
        let Some(len) = len.filter(|l| at + 1 + l <= block.len()) else {
            break;
        };
        if id != 0x18 {
            out.extend_from_slice(&block[at..at + 1 + len]);
        }
        at += 1 + len;
    }
    out
}

/// Why a CONNECT that ends early or holds a bad length is refused.
const BAD: &str = "malformed CONNECT";

fn body(r: &mut Reader<'_>) -> Result<Connect, &'static str> {
    let name = r.binary().ok_or(BAD)?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return Err("unknown protocol name");
    }
    let level = r.u8().ok_or(BAD)?;
    if !matches!(level, 3..=5) {
        return Err("unsupported protocol level");
    }
    let flags = r.u8().ok_or(BAD)?;
    let keep_alive_at = r.pos;
    let keep_alive = r.u16().ok_or(BAD)?;
    let props = if level == 5 {
        r.numbers().ok_or(BAD)?
    } else {
        Vec::new()
    };
    let prop = |id: u8| props.iter().find(|(p, _)| *p == id).map(|(_, v)| *v);
    let session_expiry = prop(0x11).unwrap_or(0);
    let client_id = r.string().ok_or(BAD)?;
    let (will, will_at) = if flags & 0x04 != 0 {
        let (will, at) = read_will(r, level, flags, session_expiry)?;
        (Some(will), Some(at))
    } else {
        (None, None)
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string().ok_or(BAD)?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(r.binary().ok_or(BAD)?.to_vec())
    } else {
        None
    };
    Ok(Connect {
        level,
        client_id,
        username,
        password,
        will,
        clean: flags & 0x02 != 0,
        keep_alive,
        keep_alive_at,
        session_expiry,
        receive_max: prop(0x21).map_or(u16::MAX, |v| u16::try_from(v).unwrap_or(u16::MAX)),
        max_packet: prop(0x27),
        will_at,
    })
}

/// The will of a CONNECT whose `flags` say it has one, read from its properties (MQTT 5) to
/// its payload, and where it sits in the stream: the proxy publishes it itself and strips it
/// from what rumqttd gets.
fn read_will(
    r: &mut Reader<'_>,
    level: u8,
    flags: u8,
    session_expiry: u32,
) -> Result<(Will, std::ops::Range<usize>), &'static str> {
    let will_start = r.pos;
    let (delay, properties) = if level == 5 {
        let start = r.pos;
        let will_props = r.numbers().ok_or(BAD)?;
        let delay = will_props
            .iter()
            .find(|(p, _)| *p == 0x18)
            .map_or(0, |(_, v)| *v);
        let mut block = Reader {
            buf: &r.buf[start..r.pos],
            pos: 0,
        };
        let n = block.varint().ok_or(BAD)?;
        let raw = block.bytes(n).ok_or(BAD)?;
        (delay, will_publish_properties(raw))
    } else {
        (0, Vec::new())
    };
    let topic = r.string().ok_or(BAD)?;
    // The proxy publishes the will itself (rumqttd never checks it): a name it could
    // not publish to is refused now, not logged later.
    if topic.is_empty() || mqws_topic::check_topic_name(&topic).is_err() {
        return Err("invalid will topic");
    }
    let payload = r.binary().ok_or(BAD)?.to_vec();
    let will = Will {
        topic,
        payload,
        qos: (flags >> 3) & 3,
        retain: flags & 0x20 != 0,
        delay: delay.min(session_expiry),
        properties,
    };
    Ok((will, will_start..r.pos))
}

/// Takes the will out of the CONNECT at the start of `head` (`len` bytes long, as [`parse`]
/// found it, which read `connect` from it): the will flag, QoS and retain bits, and its
/// properties, topic and payload. The proxy publishes wills itself, so rumqttd never has one
/// to publish: not at once for a session the proxy keeps (rumqttd is given a clean one), and
/// not when a connection ends without the DISCONNECT the proxy no longer passes on. Returns
/// the CONNECT's new length.
pub(crate) fn strip_will(head: &mut Vec<u8>, len: usize, connect: &Connect) -> usize {
    let Some(span) = connect.will_at.clone().filter(|s| s.end <= len) else {
        return len;
    };
    let Some((_, rl_used)) = head.get(1..).and_then(varint) else {
        return len;
    };
    head[connect.flags_at()] &= !(0x04 | 0x18 | 0x20);
    let mut body = head[1 + rl_used..span.start].to_vec();
    body.extend_from_slice(&head[span.end..len]);
    let mut stripped = vec![head[0]];
    put_remaining_length(&mut stripped, body.len());
    stripped.extend_from_slice(&body);
    let new_len = stripped.len();
    head.splice(..len, stripped);
    new_len
}

/// Removes the Topic Alias Maximum (0x22) from the MQTT 5 CONNECT at the start of `head`
/// (`len` bytes long, as [`parse`] found it; `props_at` where its properties start): rumqttd
/// keys the topic aliases it sends by subscription filter, not by topic, so a wildcard
/// subscriber could be given the wrong topic. Without the property rumqttd sends none.
/// Returns the CONNECT's new length.
pub(crate) fn strip_topic_alias_maximum(head: &mut Vec<u8>, len: usize, props_at: usize) -> usize {
    let Some((props_len, used)) = head.get(props_at..len).and_then(varint) else {
        return len;
    };
    let start = props_at + used;
    let end = start + props_len;
    let mut kept = Vec::with_capacity(props_len);
    let mut at = start;
    while at < end {
        let id = head[at];
        let Some(n) = connect_property_len(id, &head[at + 1..end]) else {
            return len;
        };
        if id != 0x22 {
            kept.extend_from_slice(&head[at..at + 1 + n]);
        }
        at += 1 + n;
    }
    if kept.len() == props_len {
        return len;
    }
    // Fixed header's remaining length: from byte 1 to where the variable header starts.
    let Some((_, rl_used)) = head.get(1..).and_then(varint) else {
        return len;
    };
    let mut body = head[1 + rl_used..props_at].to_vec();
    put_remaining_length(&mut body, kept.len());
    body.extend_from_slice(&kept);
    body.extend_from_slice(&head[end..len]);
    let mut connect = vec![head[0]];
    put_remaining_length(&mut connect, body.len());
    connect.extend_from_slice(&body);
    let new_len = connect.len();
    head.splice(..len, connect);
    new_len
}

/// The length of a CONNECT property's value at the start of `rest`.
fn connect_property_len(id: u8, rest: &[u8]) -> Option<usize> {
    let two = |r: &[u8]| Some(usize::from(u16::from_be_bytes([*r.first()?, *r.get(1)?])));
    let n = match id {
        0x17 | 0x19 => 1,
        0x21 | 0x22 => 2,
        0x11 | 0x27 => 4,
        0x15 | 0x16 => 2 + two(rest)?,
        0x26 => {
            let k = 2 + two(rest)?;
            k + 2 + two(rest.get(k..)?)?
        }
        _ => return None,
    };
    (n <= rest.len()).then_some(n)
}

/// The CONNACK refusing a connection: `not_authorized` (bad login) or a rejected client id.
pub(crate) fn refusal(level: u8, not_authorized: bool) -> &'static [u8] {
    match (level, not_authorized) {
        (5, true) => &[0x20, 0x03, 0x00, 0x87, 0x00],
        (5, false) => &[0x20, 0x03, 0x00, 0x85, 0x00],
        (_, true) => &[0x20, 0x02, 0x00, 0x05],
        (_, false) => &[0x20, 0x02, 0x00, 0x02],
    }
}

/// Encodes a CONNECT (clean session, keep-alive 30 s; MQTT 5 with one property): the
/// readiness probe's packet, and test input.
pub(crate) fn build(
    level: u8,
    id: &str,
    user: Option<&str>,
    pass: Option<&[u8]>,
    will: bool,
) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level];
    let flags = 0x02
        | if will { 0x04 } else { 0 }
        | if user.is_some() { 0x80 } else { 0 }
        | if pass.is_some() { 0x40 } else { 0 };
    body.push(flags);
    body.extend_from_slice(&[0, 30]);
    if level == 5 {
        body.extend_from_slice(&[3, 0x21, 0, 10]); // receive maximum
    }
    let s = |b: &mut Vec<u8>, v: &[u8]| {
        b.extend_from_slice(&(v.len() as u16).to_be_bytes());
        b.extend_from_slice(v);
    };
    s(&mut body, id.as_bytes());
    if will {
        if level == 5 {
            body.push(0);
        }
        s(&mut body, b"will/t");
        s(&mut body, b"bye");
    }
    if let Some(u) = user {
        s(&mut body, u.as_bytes());
    }
    if let Some(p) = pass {
        s(&mut body, p);
    }
    let mut out = vec![0x10];
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests;
