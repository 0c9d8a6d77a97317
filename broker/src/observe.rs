//! Watches the client→broker byte stream of one MQTT connection: retained PUBLISH packets, and
//! PUBLISH topics that break MQTT's rules (wildcards, NUL), which rumqttd does not check.
//!
//! rumqttd clears the retain flag on what it forwards to the bridge and forgets retained
//! messages on restart, so mqws learns them here, in the proxy every MQTT connection already
//! passes through. Only packet headers are parsed; only retained PUBLISH bodies (bounded by the
//! broker's packet limit) are buffered. For MQTT 5 the topic aliases a client sets are tracked
//! so an aliased retained publish still names its topic. Malformed input just stops the watch:
//! rumqttd is the one that rejects it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

/// A retained value seen on the wire. An empty payload clears the topic's retained value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedUpdate {
    /// Topic name.
    pub topic: String,
    /// The retained payload, or empty to clear it.
    pub payload: Bytes,
}

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A complete PUBLISH whose topic matches the bridge's filters: it goes to the log before
    /// the broker sees it. The packet id when it is QoS 2 (retransmissions are logged once).
    Publish(crate::InboundMessage, Option<u16>),
    /// A PUBREL for this packet id: the QoS 2 exchange it ends is over.
    Released(u16),
    /// A DISCONNECT: the client ends the connection normally (no will).
    Disconnect,
    /// A retained value was set or cleared.
    Retained(RetainedUpdate),
    /// The client broke the protocol; it must be disconnected before this reaches the broker.
    Violation(&'static str),
}

/// Bytes of a PUBLISH read to check its topic (and learn an MQTT 5 topic alias) when the body
/// is not wanted whole.
const PREFIX: usize = 1024;

#[derive(Debug)]
enum State {
    /// Reading the fixed header (type byte + up to 4 remaining-length bytes): bytes so far.
    Header([u8; 5], usize),
    /// Passing over `n` more body bytes.
    Skip(usize),
    /// Collecting `need` more body bytes of a PUBLISH (or PUBREL) with these flags, keeping
    /// the first `keep` (the whole body when logged or retained, else a prefix for the alias).
    Collect {
        kind: u8,
        flags: u8,
        need: usize,
        keep: usize,
        total: usize,
    },
    /// Gave up on malformed input.
    Stopped,
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
    /// The PUBLISH body being collected; reused from packet to packet.
    body: Vec<u8>,
}

impl Observer {
    /// A watcher for a connection of the given protocol version; bodies over `max_packet` are
    /// not buffered (the broker refuses them anyway).
    pub(crate) fn new(v5: bool, max_packet: usize, logged: Arc<[String]>) -> Observer {
        Observer {
            v5,
            max_packet,
            logged,
            state: State::Header([0; 5], 0),
            aliases: HashMap::new(),
            body: Vec::new(),
        }
    }

    /// Feeds bytes as they pass; appends what they complete to `out`.
    pub(crate) fn feed(&mut self, mut data: &[u8], out: &mut Vec<Seen>) {
        while !data.is_empty() {
            match &mut self.state {
                State::Stopped => return,
                State::Header(buf, n) => {
                    buf[*n] = data[0];
                    *n += 1;
                    data = &data[1..];
                    if *n < 2 {
                        continue;
                    }
                    if buf[*n - 1] & 0x80 != 0 {
                        if *n == 5 {
                            self.state = State::Stopped;
                        }
                        continue;
                    }
                    let h = &buf[..*n];
                    let mut len = 0usize;
                    for (i, b) in h[1..].iter().enumerate() {
                        len |= usize::from(b & 0x7f) << (7 * i);
                    }
                    let (kind, flags) = (h[0] >> 4, h[0] & 0x0f);
                    let retain = flags & 1 == 1;
                    if kind == 14 {
                        out.push(Seen::Disconnect);
                    }
                    self.state = if (kind == 3 || kind == 6) && len > 0 {
                        let whole = retain || !self.logged.is_empty();
                        let keep = if kind == 6 {
                            len.min(2)
                        } else if whole && len <= self.max_packet {
                            len
                        } else {
                            len.min(PREFIX)
                        };
                        self.body.clear();
                        State::Collect {
                            kind,
                            flags,
                            need: len,
                            keep,
                            total: len,
                        }
                    } else if len == 0 {
                        State::Header([0; 5], 0)
                    } else {
                        State::Skip(len)
                    };
                }
                State::Skip(n) => {
                    let take = (*n).min(data.len());
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
                } => {
                    let take = (*need).min(data.len());
                    let room = keep.saturating_sub(self.body.len()).min(take);
                    self.body.extend_from_slice(&data[..room]);
                    *need -= take;
                    data = &data[take..];
                    if *need == 0 {
                        let (kind, flags) = (*kind, *flags);
                        let complete = self.body.len() == *total;
                        self.state = State::Header([0; 5], 0);
                        let body = std::mem::take(&mut self.body);
                        if kind == 3 {
                            self.publish(flags, &body, complete, out);
                        } else if let [a, b] = body[..] {
                            out.push(Seen::Released(u16::from_be_bytes([a, b])));
                        }
                        self.body = body;
                    }
                }
            }
        }
    }

    /// Parses a PUBLISH body (a prefix when not `complete`, enough for the topic and alias);
    /// reports a bad topic, else the message when it is complete and logged, and the retained
    /// update when it is retained and complete.
    fn publish(&mut self, flags: u8, body: &[u8], complete: bool, out: &mut Vec<Seen>) {
        if let Some(violation) = self.parse(flags, body, complete, out) {
            out.push(violation);
        }
    }

    fn parse(
        &mut self,
        flags: u8,
        body: &[u8],
        complete: bool,
        out: &mut Vec<Seen>,
    ) -> Option<Seen> {
        let retain = flags & 1 == 1;
        let qos = (flags >> 1) & 3;
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let topic = std::str::from_utf8(body.get(2..2 + topic_len)?)
            .ok()?
            .to_owned();
        match mqws_topic::check_topic_name(&topic) {
            Ok(()) => {}
            Err(mqws_topic::TopicError::Nul) => {
                return Some(Seen::Violation("NUL in a PUBLISH topic"));
            }
            Err(_) => return Some(Seen::Violation("wildcard in a PUBLISH topic")),
        }
        let pkid_at = 2 + topic_len;
        let pkid = match qos {
            2 => Some(u16::from_be_bytes([
                *body.get(pkid_at)?,
                *body.get(pkid_at + 1)?,
            ])),
            _ => None,
        };
        let mut pos = pkid_at + if qos > 0 { 2 } else { 0 };
        let mut alias = None;
        if self.v5 {
            let (props_len, used) = varint(body.get(pos..)?)?;
            pos += used;
            let props = body.get(pos..pos + props_len)?;
            alias = topic_alias(props);
            if alias == Some(0) {
                return Some(Seen::Violation("topic alias 0"));
            }
            pos += props_len;
        }
        let topic = match (topic.is_empty(), alias) {
            (false, Some(a)) => {
                self.aliases.insert(a, topic.clone());
                topic
            }
            (false, None) => topic,
            (true, Some(a)) => match self.aliases.get(&a) {
                Some(t) => t.clone(),
                None => return Some(Seen::Violation("unknown topic alias")),
            },
            (true, None) => return Some(Seen::Violation("empty topic without a topic alias")),
        };
        if !complete {
            return None;
        }
        let payload = Bytes::copy_from_slice(body.get(pos..)?);
        if self.logged.iter().any(|f| mqws_topic::matches(f, &topic)) {
            out.push(Seen::Publish(
                crate::InboundMessage {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    retain,
                },
                pkid,
            ));
        }
        if retain {
            out.push(Seen::Retained(RetainedUpdate { topic, payload }));
        }
        None
    }
}

fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The Topic Alias property (0x23) among PUBLISH properties, if present.
fn topic_alias(mut p: &[u8]) -> Option<u16> {
    while let Some((&id, rest)) = p.split_first() {
        p = rest;
        let skip = match id {
            0x01 => 1,
            0x02 => 4,
            0x23 => return Some(u16::from_be_bytes([*p.first()?, *p.get(1)?])),
            0x03 | 0x08 | 0x09 => 2 + usize::from(u16::from_be_bytes([*p.first()?, *p.get(1)?])),
            0x0B => varint(p)?.1,
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([*p.first()?, *p.get(1)?]));
                let v = p.get(k..)?;
                k + 2 + usize::from(u16::from_be_bytes([*v.first()?, *v.get(1)?]))
            }
            _ => return None,
        };
        p = p.get(skip..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(
        v5: bool,
        retain: bool,
        qos: u8,
        topic: &str,
        alias: Option<u16>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&[0, 7]);
        }
        if v5 {
            let mut props = vec![0x01, 1];
            if let Some(a) = alias {
                props.push(0x23);
                props.extend_from_slice(&a.to_be_bytes());
            }
            props.extend_from_slice(&[0x26, 0, 1, b'k', 0, 1, b'v']);
            body.push(props.len() as u8);
            body.extend_from_slice(&props);
        }
        body.extend_from_slice(payload);
        let mut p = vec![0x30 | (qos << 1) | u8::from(retain)];
        crate::connect::put_remaining_length(&mut p, body.len());
        p.extend_from_slice(&body);
        p
    }

    fn run(o: &mut Observer, stream: &[u8], chunk: usize) -> Vec<RetainedUpdate> {
        seen(o, stream, chunk)
            .into_iter()
            .map(|s| match s {
                Seen::Retained(u) => u,
                Seen::Violation(v) => panic!("unexpected violation {v}"),
                Seen::Publish(m, _) => panic!("unexpected logged publish {m:?}"),
                Seen::Released(id) => panic!("unexpected PUBREL {id}"),
                Seen::Disconnect => panic!("unexpected DISCONNECT"),
            })
            .collect()
    }

    fn seen(o: &mut Observer, stream: &[u8], chunk: usize) -> Vec<Seen> {
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            o.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn publishes_matching_the_bridge_filters_are_seen_whole() {
        for v5 in [false, true] {
            let mut stream = publish(v5, false, 1, "a/x", None, b"one");
            stream.extend(publish(v5, false, 0, "b/y", None, b"not logged"));
            stream.extend(publish(v5, true, 2, "a/r", None, b"kept"));
            let mut o = Observer::new(v5, 1 << 20, Arc::from(["a/#".to_owned()]));
            let got = seen(&mut o, &stream, 4);
            let m = |t: &str, p: &'static [u8], retain, pkid| {
                Seen::Publish(
                    crate::InboundMessage {
                        topic: t.to_owned(),
                        payload: Bytes::from_static(p),
                        retain,
                    },
                    pkid,
                )
            };
            let r = Seen::Retained(RetainedUpdate {
                topic: "a/r".to_owned(),
                payload: Bytes::from_static(b"kept"),
            });
            assert_eq!(
                got,
                vec![
                    m("a/x", b"one", false, None),
                    m("a/r", b"kept", true, Some(7)),
                    r
                ],
                "v5 {v5}"
            );
            let mut pubrel = seen(&mut o, &[0x62, 2, 0, 7], 1);
            assert_eq!(pubrel.pop(), Some(Seen::Released(7)));
        }
    }

    #[test]
    fn empty_topics_and_bad_aliases_are_violations() {
        let cases: [(bool, &str, Option<u16>, &str); 3] = [
            (false, "", None, "empty topic without a topic alias"),
            (true, "", Some(9), "unknown topic alias"),
            (true, "a", Some(0), "topic alias 0"),
        ];
        for (v5, topic, alias, why) in cases {
            let stream = publish(v5, false, 1, topic, alias, b"x");
            let got = seen(&mut Observer::new(v5, 1 << 20, Arc::from([])), &stream, 2);
            assert_eq!(got, vec![Seen::Violation(why)], "{topic:?} {alias:?}");
        }
    }

    #[test]
    fn wildcard_topics_are_violations() {
        for v5 in [false, true] {
            let mut stream = publish(v5, false, 0, "ok/t", None, b"x");
            stream.extend(publish(v5, false, 1, "a/+/b", None, b"x"));
            let got = seen(&mut Observer::new(v5, 1 << 20, Arc::from([])), &stream, 3);
            assert_eq!(
                got,
                vec![Seen::Violation("wildcard in a PUBLISH topic")],
                "v5 {v5}"
            );
        }
    }

    #[test]
    fn finds_retained_publishes_at_any_chunking() {
        let mut stream = vec![0x10, 0x02, 0, 0]; // a CONNECT-shaped packet to skip
        stream.extend(publish(false, false, 1, "a/plain", None, b"x"));
        stream.extend(publish(false, true, 1, "a/kept", None, b"value"));
        stream.extend(vec![0xc0, 0x00]); // PINGREQ
        stream.extend(publish(false, true, 0, "a/kept", None, b""));
        stream.extend(publish(false, true, 0, "big", None, &vec![7u8; 300]));
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let got = run(
                &mut Observer::new(false, 1 << 20, Arc::from([])),
                &stream,
                chunk,
            );
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(
                got[0],
                RetainedUpdate {
                    topic: "a/kept".into(),
                    payload: Bytes::from_static(b"value")
                }
            );
            assert!(got[1].payload.is_empty(), "empty payload clears");
            assert_eq!(got[2].payload.len(), 300);
        }
    }

    #[test]
    fn v5_properties_and_aliases() {
        let mut stream = publish(true, false, 1, "site/a", Some(3), b"first");
        stream.extend(publish(true, true, 1, "", Some(3), b"aliased"));
        stream.extend(publish(true, true, 0, "site/b", None, b"direct"));
        let got = run(&mut Observer::new(true, 1 << 20, Arc::from([])), &stream, 5);
        assert_eq!(
            got,
            vec![
                RetainedUpdate {
                    topic: "site/a".into(),
                    payload: Bytes::from_static(b"aliased")
                },
                RetainedUpdate {
                    topic: "site/b".into(),
                    payload: Bytes::from_static(b"direct")
                },
            ]
        );
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: the watcher never panics, and what it sees does not depend
        /// on how the stream was cut into reads.
        #[test]
        fn any_stream_any_chunking(
            v5: bool,
            valid in proptest::collection::vec(
                (proptest::bool::ANY, 0u8..3, "[a-c/+#]{0,6}", proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                0..6,
            ),
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            cut in 1usize..50,
        ) {
            let mut stream = Vec::new();
            for (retain, qos, topic, payload) in &valid {
                stream.extend(publish(v5, *retain, *qos, topic, None, payload));
            }
            stream.extend(junk);
            let logged: Arc<[String]> = Arc::from(["#".to_owned()]);
            let whole = seen(&mut Observer::new(v5, 1 << 20, logged.clone()), &stream, stream.len().max(1));
            let cut_up = seen(&mut Observer::new(v5, 1 << 20, logged), &stream, cut);
            proptest::prop_assert_eq!(whole, cut_up);
        }
    }

    #[test]
    fn oversize_and_garbage_do_not_panic() {
        let big = publish(false, true, 0, "t", None, &vec![1u8; 2000]);
        assert!(run(&mut Observer::new(false, 100, Arc::from([])), &big, 50).is_empty());
        let big5 = publish(true, true, 0, "t", None, &vec![1u8; 2000]);
        assert!(
            run(&mut Observer::new(true, 100, Arc::from([])), &big5, 50).is_empty(),
            "never a truncated value"
        );
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..300u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8)
                .collect();
            let _ = run(
                &mut Observer::new(seed % 2 == 0, 64, Arc::from([])),
                &junk,
                13,
            );
        }
    }
}
