//! A raw MQTT client (blocking std sockets) for exact packet sequences: the packets a real
//! client library would never send, and answers checked byte for byte. MQTT 3.1.1 or 5.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One raw connection.
pub struct RawMqtt {
    /// The socket.
    pub stream: TcpStream,
    /// MQTT 5 when true, else 3.1.1.
    pub v5: bool,
}

/// Appends MQTT's variable-length integer.
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

/// A packet of type byte `first` around `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    put_varint(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A clean-session CONNECT with keep alive `keep_alive` seconds and a `login` (username,
/// password) when given.
pub fn connect_packet(id: &str, v5: bool, keep_alive: u16, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(if v5 { 5 } else { 4 });
    body.push(0x02 | if login.is_some() { 0xC0 } else { 0 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if v5 {
        body.push(0);
    }
    string(&mut body, id.as_bytes());
    if let Some((user, password)) = login {
        string(&mut body, user.as_bytes());
        string(&mut body, password.as_bytes());
    }
    packet(0x10, &body)
}

impl RawMqtt {
    /// Connects with a clean session and keep alive `keep_alive` seconds; asserts CONNACK
    /// success.
    pub fn connect(addr: SocketAddr, id: &str, v5: bool, keep_alive: u16) -> RawMqtt {
        RawMqtt::connect_from(addr, None, id, v5, keep_alive, None)
    }

    /// [`RawMqtt::connect`] from the source address `source` (any loopback address, so one
    /// test can be many hosts) and with a `login` (username, password) when given.
    pub fn connect_from(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        id: &str,
        v5: bool,
        keep_alive: u16,
        login: Option<(&str, &str)>,
    ) -> RawMqtt {
        let stream = match source {
            None => TcpStream::connect(addr).unwrap(),
            Some(ip) => {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                socket.bind(&SocketAddr::new(ip, 0).into()).unwrap();
                socket.connect(&addr.into()).unwrap();
                socket.into()
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = RawMqtt { stream, v5 };
        raw.send(&connect_packet(id, v5, keep_alive, login));
        let connack = raw.packet();
        assert_eq!(connack[0] >> 4, 2, "CONNACK, got {connack:?}");
        assert_eq!(connack[3], 0, "CONNACK success, got {connack:?}");
        raw
    }

    /// Connects as MQTT 3.1.1 with a persistent session (clean session 0) and keep alive
    /// 60 s; asserts CONNACK success and returns the connection and its session present flag.
    pub fn connect_persistent(addr: SocketAddr, id: &str) -> (RawMqtt, bool) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = RawMqtt { stream, v5: false };
        let mut connect = connect_packet(id, false, 60, None);
        // The connect flags byte: after the fixed header (2), "MQTT" (6) and the level (1).
        connect[9] &= !0x02;
        raw.send(&connect);
        let connack = raw.packet();
        assert_eq!((connack[0], connack[3]), (0x20, 0), "CONNACK {connack:?}");
        (raw, connack[2] & 1 == 1)
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next packet, fixed header included; panics on a timeout or a closed socket.
    pub fn packet(&mut self) -> Vec<u8> {
        self.try_packet().expect("a packet")
    }

    /// The next packet, or `None` when the socket closed or the read timed out.
    pub fn try_packet(&mut self) -> Option<Vec<u8>> {
        let mut p = vec![0u8; 1];
        self.stream.read_exact(&mut p).ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b).ok()?;
            p.push(b[0]);
            len |= usize::from(b[0] & 0x7f) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).ok()?;
        p.extend_from_slice(&body);
        Some(p)
    }

    /// Sends a SUBSCRIBE (QoS 1 for each filter) and returns the SUBACK's codes, in order.
    pub fn subscribe(&mut self, id: u16, filters: &[&[u8]]) -> Vec<u8> {
        self.subscribe_full(id, filters).0
    }

    /// [`RawMqtt::subscribe`], also returning the SUBACK's MQTT 5 Reason String, if any.
    pub fn subscribe_full(&mut self, id: u16, filters: &[&[u8]]) -> (Vec<u8>, Option<String>) {
        let mut body = id.to_be_bytes().to_vec();
        if self.v5 {
            body.push(0);
        }
        for f in filters {
            string(&mut body, f);
            body.push(1);
        }
        self.send(&packet(0x82, &body));
        let suback = self.packet();
        assert_eq!(suback[0], 0x90, "SUBACK, got {suback:?}");
        let header = 1 + suback[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
        let body = &suback[header..];
        assert_eq!(body[..2], id.to_be_bytes(), "SUBACK for the SUBSCRIBE's id");
        let codes_at = if self.v5 { 3 + usize::from(body[2]) } else { 2 };
        let mut reason = None;
        if self.v5 && body[2] > 3 && body[3] == 0x1F {
            let len = usize::from(u16::from_be_bytes([body[4], body[5]]));
            reason = String::from_utf8(body[6..6 + len].to_vec()).ok();
        }
        (body[codes_at..].to_vec(), reason)
    }

    /// Sends a PUBLISH at QoS `qos` (packet id 1 when above 0).
    pub fn publish(&mut self, topic: &str, qos: u8, payload: &[u8]) {
        let mut body = Vec::new();
        string(&mut body, topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&1u16.to_be_bytes());
        }
        if self.v5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        self.send(&packet(0x30 | (qos << 1), &body));
    }
}

/// An MQTT 5 CONNECT (session expiry 30 s, clean start or not) whose QoS 1 will on `topic`
/// has delay `delay` s and a user property `k`=`v`; returns the connection and whether the
/// CONNACK said session present.
pub fn connect_v5_with_will(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    topic: &str,
    delay: u8,
) -> (TcpStream, bool) {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5];
    body.push(0x04 | 0x08 | if clean { 0x02 } else { 0 });
    body.extend_from_slice(&[0, 60]);
    body.extend_from_slice(&[5, 0x11, 0, 0, 0, 30]);
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let will_props = [0x18, 0, 0, 0, delay, 0x26, 0, 1, b'k', 0, 1, b'v'];
    put_varint(&mut body, will_props.len());
    body.extend_from_slice(&will_props);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&[0, 4]);
    body.extend_from_slice(b"gone");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&packet(0x10, &body)).unwrap();
    let mut connack = [0u8; 2];
    s.read_exact(&mut connack).unwrap();
    let mut rest = vec![0u8; usize::from(connack[1])];
    s.read_exact(&mut rest).unwrap();
    assert_eq!((connack[0], rest[1]), (0x20, 0), "CONNACK success for {id}");
    (s, rest[0] & 1 == 1)
}

/// A raw CONNECT of `id` (MQTT 5 with the CONNECT properties `props`, else 3.1.1; a clean
/// session when `clean`; keep alive 60 s) over a new connection with TCP_NODELAY; asserts
/// CONNACK success and returns the connection and the CONNACK's session present flag.
pub fn handshake(
    addr: SocketAddr,
    id: &str,
    v5: bool,
    clean: bool,
    props: &[u8],
) -> (RawMqtt, bool) {
    let level = if v5 { 5 } else { 4 };
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        level,
        if clean { 0x02 } else { 0 },
        0,
        60,
    ];
    if v5 {
        put_varint(&mut body, props.len());
        body.extend_from_slice(props);
    }
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(crate::TIMEOUT)).unwrap();
    let mut raw = RawMqtt { stream, v5 };
    raw.send(&packet(0x10, &body));
    let connack = raw.packet();
    assert_eq!(
        (connack[0], connack[3]),
        (0x20, 0),
        "CONNACK success: {connack:?}"
    );
    let present = connack[2] & 1 == 1;
    (raw, present)
}

/// A raw MQTT 5 CONNECT (clean start, no session expiry) with the CONNECT properties `props`.
pub fn raw_v5(addr: SocketAddr, id: &str, props: &[u8]) -> RawMqtt {
    handshake(addr, id, true, true, props).0
}

/// A PUBLISH as the client sees it.
#[derive(Debug)]
pub struct Parsed {
    /// Its QoS.
    pub qos: u8,
    /// Its retain flag.
    pub retain: bool,
    /// Its topic.
    pub topic: String,
    /// Its packet id (QoS 1 and 2).
    pub id: Option<u16>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Reads a PUBLISH packet (fixed header included); panics on anything else.
pub fn parse_publish(p: &[u8], v5: bool) -> Parsed {
    assert_eq!(p[0] >> 4, 3, "a PUBLISH, got {p:?}");
    let qos = (p[0] >> 1) & 3;
    let mut at = 1 + p[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
    let len = usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
    let topic = String::from_utf8(p[at + 2..at + 2 + len].to_vec()).unwrap();
    at += 2 + len;
    let id = (qos > 0).then(|| {
        at += 2;
        u16::from_be_bytes([p[at - 2], p[at - 1]])
    });
    if v5 {
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let b = p[at];
            at += 1;
            n |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        at += n;
    }
    Parsed {
        qos,
        retain: p[0] & 1 != 0,
        topic,
        id,
        payload: p[at..].to_vec(),
    }
}

/// True when bytes are waiting on the raw client's socket (checked without blocking).
pub fn readable(raw: &RawMqtt) -> bool {
    raw.stream.set_nonblocking(true).unwrap();
    let got = raw.stream.peek(&mut [0u8; 1]);
    raw.stream.set_nonblocking(false).unwrap();
    match got {
        Ok(n) => n > 0,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("peek: {e}"),
    }
}

/// The PUBACK for packet id `id`.
pub fn puback(id: u16) -> Vec<u8> {
    ack(0x40, id)
}

/// A packet of first byte `first` carrying only packet id `id` (PUBACK, PUBREC, PUBREL,
/// PUBCOMP).
pub fn ack(first: u8, id: u16) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    vec![first, 2, a, b]
}
