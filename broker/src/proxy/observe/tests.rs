//! The watcher against streams cut into reads of every size.

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
    crate::proxy::wire::put_remaining_length(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

fn run(o: &mut Observer, stream: &[u8], chunk: usize) -> Vec<RetainedUpdate> {
    seen(o, stream, chunk)
        .into_iter()
        .filter(|s| !matches!(s, Seen::Control(Control::Packet(p)) if p == &[0xd0, 0]))
        .map(|s| match s {
            Seen::Retained(u) => u,
            Seen::Violation(v) => panic!("unexpected violation {v}"),
            Seen::Publish(m, _) => panic!("unexpected logged publish {m:?}"),
            Seen::Released(id) => panic!("unexpected PUBREL {id}"),
            Seen::Disconnect { .. } => panic!("unexpected DISCONNECT"),
            Seen::Control(c) => panic!("unexpected control {c:?}"),
            Seen::Serve(c) => panic!("unexpected served request {c:?}"),
            Seen::Bypassed { id, .. } => panic!("unexpected bypass of {id}"),
            Seen::BrokerAck(ack, _) => panic!("unexpected ack {ack:?}"),
        })
        .collect()
}

fn seen(o: &mut Observer, stream: &[u8], chunk: usize) -> Vec<Seen> {
    passed(o, stream, chunk, false).0
}

/// What the watcher saw and what it passed on, fed in reads of `chunk` bytes.
fn passed(o: &mut Observer, stream: &[u8], chunk: usize, busy: bool) -> (Vec<Seen>, Vec<u8>) {
    let (mut out, mut fwd) = (Vec::new(), Vec::new());
    for c in stream.chunks(chunk) {
        o.feed(c, busy, &mut out, &mut fwd);
    }
    (out, fwd)
}

fn observer(v5: bool, max_packet: usize, logged: Arc<[String]>) -> Observer {
    let limits = crate::proxy::subscribe::FilterLimits {
        registry: crate::proxy::subscribe::FilterRegistry::new(100, 100, 100),
        per_client: 10,
        max_length: 64,
    };
    Observer::new(
        v5,
        max_packet,
        logged,
        Subscriptions::new(
            v5,
            limits,
            crate::proxy::subscribe::Owner::Source([127, 0, 0, 1].into()),
            None,
        ),
    )
}

#[test]
fn publishes_matching_the_bridge_filters_are_seen_whole() {
    for v5 in [false, true] {
        // The first sets a topic alias: a property of this connection, which the log loses.
        let mut stream = publish(v5, false, 1, "a/x", Some(3), b"one");
        stream.extend(publish(v5, false, 0, "b/y", None, b"not logged"));
        stream.extend(publish(v5, true, 2, "a/r", None, b"kept"));
        let mut o = observer(v5, 1 << 20, Arc::from(["a/#".to_owned()]));
        let got = seen(&mut o, &stream, 4);
        // Payload format indicator 1 and a user property k=v, as `publish` writes them.
        let kept: &'static [u8] = if v5 {
            &[0x01, 1, 0x26, 0, 1, b'k', 0, 1, b'v']
        } else {
            &[]
        };
        let m = |t: &str, p: &'static [u8], retain, qos, pkid| {
            Seen::Publish(
                crate::InboundMessage {
                    topic: t.to_owned(),
                    payload: Bytes::from_static(p),
                    retain,
                    qos,
                    origin: None,
                    properties: Bytes::from_static(kept),
                },
                pkid,
            )
        };
        let r = Seen::Retained(RetainedUpdate {
            topic: "a/r".to_owned(),
            payload: Bytes::from_static(b"kept"),
            qos: 2,
            properties: Bytes::from_static(kept),
        });
        assert_eq!(
            got,
            vec![
                m("a/x", b"one", false, 1, None),
                m("a/r", b"kept", true, 2, Some(7)),
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
        let got = seen(&mut observer(v5, 1 << 20, Arc::from([])), &stream, 2);
        assert_eq!(got, vec![Seen::Violation(why)], "{topic:?} {alias:?}");
    }
}

#[test]
fn wildcard_topics_are_violations() {
    for v5 in [false, true] {
        let mut stream = publish(v5, false, 0, "ok/t", None, b"x");
        stream.extend(publish(v5, false, 1, "a/+/b", None, b"x"));
        let got = seen(&mut observer(v5, 1 << 20, Arc::from([])), &stream, 3);
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
        let got = run(&mut observer(false, 1 << 20, Arc::from([])), &stream, chunk);
        assert_eq!(got.len(), 3, "chunk {chunk}");
        assert_eq!(
            got[0],
            RetainedUpdate {
                topic: "a/kept".into(),
                payload: Bytes::from_static(b"value"),
                qos: 1,
                properties: Bytes::new(),
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
    let got = run(&mut observer(true, 1 << 20, Arc::from([])), &stream, 5);
    assert_eq!(
        got,
        vec![
            RetainedUpdate {
                topic: "site/a".into(),
                payload: Bytes::from_static(b"aliased"),
                qos: 1,
                properties: Bytes::from_static(b"\x01\x01&\0\x01k\0\x01v"),
            },
            RetainedUpdate {
                topic: "site/b".into(),
                payload: Bytes::from_static(b"direct"),
                qos: 0,
                properties: Bytes::from_static(b"\x01\x01&\0\x01k\0\x01v"),
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
        let whole = passed(&mut observer(v5, 1 << 20, logged.clone()), &stream, stream.len().max(1), true);
        let cut_up = passed(&mut observer(v5, 1 << 20, logged), &stream, cut, true);
        proptest::prop_assert_eq!(whole, cut_up);
    }
}

#[test]
fn oversize_and_garbage_do_not_panic() {
    let big = publish(false, true, 0, "t", None, &vec![1u8; 2000]);
    assert_eq!(
        seen(&mut observer(false, 100, Arc::from([])), &big, 50),
        vec![Seen::Violation(TOO_LARGE)]
    );
    let big5 = publish(true, true, 0, "t", None, &vec![1u8; 2000]);
    assert_eq!(
        seen(&mut observer(true, 100, Arc::from([])), &big5, 50),
        vec![Seen::Violation(TOO_LARGE)],
        "never a truncated value"
    );
    for seed in 0..200u32 {
        let junk: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8)
            .collect();
        let _ = seen(&mut observer(seed % 2 == 0, 64, Arc::from([])), &junk, 13);
    }
}

fn subscribe_packet(v5: bool, id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for f in filters {
        body.extend_from_slice(&(f.len() as u16).to_be_bytes());
        body.extend_from_slice(f.as_bytes());
        body.push(1);
    }
    let mut p = vec![0x82];
    crate::proxy::wire::put_remaining_length(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

#[test]
fn valid_streams_pass_unchanged() {
    for v5 in [false, true] {
        let mut stream = publish(v5, false, 1, "a/x", None, &[1; 3000]);
        stream.extend(subscribe_packet(v5, 2, &["a/+", "b/#"]));
        stream.extend([0xc0, 0]);
        stream.extend(publish(v5, true, 2, "b", None, b"r"));
        stream.extend([0xa2, 5, 0, 3, 0, 1, b'b']);
        for chunk in [1, 2, 3, 100, 1 << 16] {
            let logged: Arc<[String]> = Arc::from(["nothing/#".to_owned()]);
            let (_, fwd) = passed(&mut observer(v5, 1 << 20, logged), &stream, chunk, false);
            assert_eq!(fwd, stream, "v5 {v5} chunk {chunk}");
        }
    }
}

#[test]
fn a_disconnect_is_read_and_kept_from_the_broker_with_what_follows() {
    let before = [0xc0u8, 0];
    // 3.1.1; MQTT 5 normal; MQTT 5 "with will" and a session expiry of 9 s.
    let goodbyes: [(bool, Vec<u8>, bool); 3] = [
        (false, vec![0xe0, 0], false),
        (true, vec![0xe0, 2, 0, 0], false),
        (true, vec![0xe0, 7, 0x04, 5, 0x11, 0, 0, 0, 9], true),
    ];
    for (v5, bye, with_will) in goodbyes {
        let mut stream = before.to_vec();
        stream.extend_from_slice(&bye);
        stream.extend(publish(v5, false, 0, "a/x", None, b"after"));
        for chunk in [1, 2, 3, 100] {
            let logged: Arc<[String]> = Arc::from(["a/#".to_owned()]);
            let mut o = observer(v5, 1 << 20, logged);
            let (seen, fwd) = passed(&mut o, &stream, chunk, false);
            assert_eq!(fwd, before, "v5 {v5} chunk {chunk}: only what came before");
            assert!(
                seen.contains(&Seen::Disconnect { with_will }),
                "v5 {v5} chunk {chunk}: {seen:?}"
            );
            assert!(
                !seen.iter().any(|s| matches!(s, Seen::Publish(..))),
                "nothing after a DISCONNECT counts"
            );
        }
    }
}

#[test]
fn pingreq_behind_waiting_publishes_is_answered_here() {
    let ping = [0xc0, 0];
    let pong = Seen::Control(Control::Packet(vec![0xd0, 0]));
    let (seen, fwd) = passed(&mut observer(false, 1 << 20, Arc::from([])), &ping, 1, true);
    assert_eq!(
        (seen, fwd),
        (vec![pong.clone()], vec![]),
        "earlier reads wait"
    );
    let mut stream = publish(false, false, 1, "a/x", None, b"logged");
    stream.extend(ping);
    let logged: Arc<[String]> = Arc::from(["a/#".to_owned()]);
    let (seen, fwd) = passed(
        &mut observer(false, 1 << 20, logged),
        &stream,
        1 << 10,
        false,
    );
    assert_eq!(seen.last(), Some(&pong), "a PUBLISH in the same read waits");
    assert_eq!(fwd, stream[..stream.len() - 2]);
    let (seen, fwd) = passed(
        &mut observer(false, 1 << 20, Arc::from([])),
        &ping,
        1,
        false,
    );
    assert_eq!(
        (seen, fwd),
        (vec![], ping.to_vec()),
        "nothing waits: rumqttd answers"
    );
}

#[test]
fn refused_filters_never_reach_the_broker() {
    for v5 in [false, true] {
        let code = if v5 { 0x8F } else { 0x80 };
        let mixed = subscribe_packet(v5, 7, &["ok/#", "bad/#/x"]);
        let (seen, fwd) = passed(&mut observer(v5, 1 << 20, Arc::from([])), &mixed, 3, false);
        assert_eq!(
            seen,
            vec![Seen::Control(Control::Rewrite(7, vec![None, Some(code)]))]
        );
        assert_eq!(fwd, subscribe_packet(v5, 7, &["ok/#"]));
        let bad = subscribe_packet(v5, 8, &["", "x/+y"]);
        let (seen, fwd) = passed(&mut observer(v5, 1 << 20, Arc::from([])), &bad, 2, false);
        let answer = crate::proxy::downstream::suback(v5, 8, &[code, code], None);
        assert_eq!(seen, vec![Seen::Control(Control::Packet(answer))]);
        assert!(fwd.is_empty());
        let empty = [0x82, 2, 0, 1];
        let (seen, _) = passed(&mut observer(v5, 1 << 20, Arc::from([])), &empty, 1, false);
        assert_eq!(seen, vec![Seen::Violation("malformed SUBSCRIBE")]);
    }
}

#[test]
fn a_publish_over_the_packet_limit_is_refused_before_anything_of_it_passes() {
    for v5 in [false, true] {
        let mut o = observer(v5, 64, Arc::from(["#".to_owned()]));
        let small = publish(v5, false, 1, "a/x", None, b"fits");
        let (got, fwd) = passed(&mut o, &small, 7, false);
        assert!(matches!(got[..], [Seen::Publish(..)]), "{got:?}");
        assert_eq!(fwd, small);
        let big = publish(v5, false, 1, "a/x", None, &[b'x'; 64]);
        let (got, fwd) = passed(&mut o, &big, 3, false);
        assert_eq!(got, vec![Seen::Violation(TOO_LARGE)], "v5 {v5}");
        assert!(fwd.is_empty(), "none of it reaches rumqttd: {fwd:?}");
    }
}

use crate::proxy::test_topics::Logged;

fn serving_observer() -> Observer {
    let limits = crate::proxy::subscribe::FilterLimits {
        registry: crate::proxy::subscribe::FilterRegistry::new(100, 100, 100),
        per_client: 10,
        max_length: 64,
    };
    Observer::new(
        true,
        1 << 20,
        Arc::from([]),
        Subscriptions::new(
            true,
            limits,
            crate::proxy::subscribe::Owner::Source([127, 0, 0, 1].into()),
            Some(Arc::new(Logged("#"))),
        ),
    )
}

#[test]
fn served_subscriptions_are_answered_here_and_their_acks_kept_from_the_broker() {
    let mut o = serving_observer();
    // SUBSCRIBE id 1, no properties, "a/#" at QoS 1; PUBACK for the proxy's id 101 and for
    // rumqttd's id 7; UNSUBSCRIBE id 2 of "a/#".
    let mut stream = vec![0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'#', 1];
    stream.extend_from_slice(&[0x40, 2, 0, 101, 0x40, 2, 0, 7]);
    stream.extend_from_slice(&[0xa2, 8, 0, 2, 0, 0, 3, b'a', b'/', b'#']);
    for chunk in [1, 3, 64] {
        let (seen, fwd) = passed(&mut serving_observer(), &stream, chunk, false);
        assert_eq!(
            fwd,
            vec![0x40, 2, 0, 7],
            "only rumqttd's ack reaches it (chunk {chunk})"
        );
        let serving: Arc<[String]> = Arc::from(["a/#".to_owned()]);
        assert_eq!(seen[0], Seen::Control(Control::Serving(serving)));
        assert!(
            matches!(&seen[1], Seen::Serve(Command::Subscribe(subs, Some(suback)))
                if subs[0].filter == "a/#" && subs[0].qos == 1 && suback == &[0x90, 4, 0, 1, 0, 1]),
            "{seen:?}"
        );
        assert_eq!(seen[2], Seen::Serve(Command::Ack(4, 101, false)));
        // rumqttd's ack is marked where it starts in what goes to rumqttd.
        assert_eq!(
            seen[3],
            Seen::BrokerAck(crate::proxy::owed::ClientAck::Puback, 0)
        );
        assert_eq!(
            seen[4],
            Seen::Control(Control::Packet(vec![0xb0, 4, 0, 2, 0, 0]))
        );
        assert_eq!(seen[5], Seen::Control(Control::Serving(Arc::from([]))));
        assert_eq!(
            seen[6],
            Seen::Serve(Command::Unsubscribe(vec!["a/#".to_owned()]))
        );
    }
    // rumqttd, silent for long, gets a PINGREQ in place of the next ack the proxy takes.
    o.ping_due();
    let (seen, fwd) = passed(&mut o, &[0x40, 2, 0, 102], 64, false);
    assert_eq!(fwd, vec![0xc0, 0]);
    assert_eq!(seen[1], Seen::Control(Control::ExpectPong));
}

#[test]
fn logged_publishes_no_rumqttd_filter_wants_are_kept_from_it() {
    for chunk in [1, 4, 4096] {
        let mut o = observer(false, 1 << 20, Arc::from(["#".to_owned()])).with_bypass();
        // A QoS 1 PUBLISH no filter wants; a SUBSCRIBE that gives rumqttd `b/#`; a QoS 1
        // PUBLISH on it; a retained one; another QoS 1 nobody on rumqttd wants.
        let mut stream = publish(false, false, 1, "a/x", None, b"one");
        stream.extend([0x82, 8, 0, 9, 0, 3, b'b', b'/', b'#', 1]);
        stream.extend(publish(false, false, 1, "b/1", None, b"two"));
        stream.extend(publish(false, true, 0, "a/r", None, b"kept"));
        stream.extend(publish(false, false, 1, "a/y", None, b"three"));
        let (seen, fwd) = passed(&mut o, &stream, chunk, false);
        let mut expect = vec![0x82, 8, 0, 9, 0, 3, b'b', b'/', b'#', 1];
        expect.extend(publish(false, false, 1, "b/1", None, b"two"));
        expect.extend(publish(false, true, 0, "a/r", None, b"kept"));
        assert_eq!(
            fwd, expect,
            "chunk {chunk}: only what rumqttd needs reaches it"
        );
        let bypassed: Vec<(u16, u64)> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Bypassed { id, after } => Some((*id, *after)),
                _ => None,
            })
            .collect();
        // Each is acknowledged by the proxy after rumqttd's acks for the ones passed before.
        assert_eq!(bypassed, vec![(7, 0), (7, 1)], "chunk {chunk}");
        let logged = seen
            .iter()
            .filter(|s| matches!(s, Seen::Publish(..)))
            .count();
        assert_eq!(logged, 4, "every one is logged");
    }
}
