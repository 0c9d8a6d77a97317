//! The broker→client side: packets of the proxy's own between rumqttd's, SUBACK rewrites.

use super::*;
use crate::proxy::owed::Owed;

fn publish(topic: &str, payload_len: usize) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend(std::iter::repeat_n(7u8, payload_len));
    let mut p = vec![0x30];
    put_remaining_length(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

/// A downstream that has passed rumqttd's CONNACK (the proxy's own packets wait for it).
fn connected(v5: bool) -> Downstream {
    let mut d = Downstream::new(v5);
    let mut out = Vec::new();
    d.feed(&[0x20, 2, 0, 0], &mut out);
    d
}

fn feed_all(d: &mut Downstream, stream: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in stream.chunks(chunk) {
        d.feed(c, &mut out);
    }
    out
}

#[test]
fn passes_rumqttds_bytes_unchanged_at_any_chunking() {
    let mut stream = publish("a/b", 300);
    stream.extend(publish("c", 200_000));
    stream.extend([0xd0, 0]);
    stream.extend(suback(true, 3, &[1, 2], None));
    for chunk in [1, 2, 5, 64, 1 << 20] {
        let mut d = Downstream::new(true);
        assert_eq!(feed_all(&mut d, &stream, chunk), stream, "chunk {chunk}");
    }
}

#[test]
fn own_packets_wait_for_a_packet_boundary() {
    let big = publish("t", 1000);
    let mut d = connected(false);
    let mut out = Vec::new();
    d.feed(&big[..10], &mut out);
    d.control(Control::Packet(vec![0xd0, 0]), &mut out);
    assert_eq!(out, big[..10], "not inside rumqttd's packet");
    d.feed(&big[10..], &mut out);
    let mut want = big.clone();
    want.extend([0xd0, 0]);
    assert_eq!(out, want, "right after it");
    out.clear();
    d.control(Control::Packet(vec![0xd0, 0]), &mut out);
    assert_eq!(out, [0xd0, 0], "at once between packets");
    // A header split across reads is a boundary only once its packet ends.
    out.clear();
    d.feed(&big[..1], &mut out);
    d.control(Control::Packet(vec![0xd0, 0]), &mut out);
    assert!(out.is_empty());
    d.feed(&big[1..], &mut out);
    assert_eq!(out[..big.len()], big[..]);
    assert_eq!(out[big.len()..], [0xd0, 0]);
}

#[test]
fn a_goodbye_ends_the_stream() {
    let mut d = Downstream::new(true);
    let mut out = Vec::new();
    let p = publish("t", 50);
    d.feed(&p[..20], &mut out);
    d.control(Control::Goodbye(vec![0xe0, 2, 0x90, 0]), &mut out);
    assert!(!d.done());
    d.feed(&p[20..], &mut out);
    d.feed(&p, &mut out);
    assert!(d.done());
    let mut want = p.clone();
    want.extend([0xe0, 2, 0x90, 0]);
    assert_eq!(out, want, "nothing after the goodbye");
}

#[test]
fn subacks_get_the_proxys_codes_in_place() {
    for v5 in [false, true] {
        let mut d = Downstream::new(v5);
        let mut out = Vec::new();
        d.control(
            Control::Rewrite(9, vec![Some(0x80), None, Some(0x80), None]),
            &mut out,
        );
        assert!(out.is_empty());
        let mut stream = suback(v5, 8, &[1], None);
        stream.extend(suback(v5, 9, &[0, 2], None));
        stream.extend(suback(v5, 9, &[1, 1], None));
        let got = feed_all(&mut d, &stream, 3);
        let mut want = suback(v5, 8, &[1], None);
        want.extend(suback(v5, 9, &[0x80, 0, 0x80, 2], None));
        want.extend(suback(v5, 9, &[1, 1], None));
        assert_eq!(
            got, want,
            "v5 {v5}: only the first SUBACK for the id is rewritten"
        );
    }
}

#[test]
fn a_suback_that_does_not_fit_the_plan_passes_unchanged() {
    let mut d = Downstream::new(false);
    let mut out = Vec::new();
    d.control(Control::Rewrite(4, vec![Some(0x80), None]), &mut out);
    let stream = suback(false, 4, &[0, 1, 2], None);
    assert_eq!(feed_all(&mut d, &stream, 1), stream);
}

#[test]
fn rumqttds_unsubacks_and_the_answers_to_the_proxys_pings_are_dropped() {
    let mut d = Downstream::new(true);
    let mut out = Vec::new();
    d.control(Control::ExpectPong, &mut out);
    let stream = [0xb0, 3, 0, 1, 0, 0xd0, 0, 0xd0, 0];
    for chunk in [1, 2, 9] {
        let mut d = Downstream::new(true);
        d.control(Control::ExpectPong, &mut out);
        assert_eq!(
            feed_all(&mut d, &stream, chunk),
            vec![0xd0, 0],
            "chunk {chunk}: no UNSUBACK, one PINGRESP dropped"
        );
    }
    assert!(out.is_empty());
}

#[test]
fn the_proxys_own_pubacks_keep_the_order_of_their_publishes() {
    let mut d = connected(false);
    let mut out = Vec::new();
    // Its PUBLISH came after one passed to rumqttd: wait for rumqttd's ack of that one.
    d.control(Control::AckAfter(1, vec![0x40, 2, 0, 9]), &mut out);
    assert!(out.is_empty());
    out.extend(feed_all(&mut d, &[0x40, 2, 0, 7], 1));
    d.control(Control::AckAfter(1, vec![0x40, 2, 0, 10]), &mut out);
    assert_eq!(out, vec![0x40, 2, 0, 7, 0x40, 2, 0, 9, 0x40, 2, 0, 10]);
    assert_eq!(d.acks(), 3, "rumqttd's and the proxy's");
}

#[test]
fn nothing_of_the_proxys_own_goes_before_rumqttds_connack() {
    // A client that pipelines CONNECT and a QoS 1 PUBLISH kept from rumqttd: the proxy's PUBACK
    // (and any packet of its own) waits for the CONNACK.
    for chunk in [1, 4] {
        let mut d = Downstream::new(true);
        let mut out = Vec::new();
        d.control(Control::AckAfter(0, vec![0x40, 2, 0, 1]), &mut out);
        d.control(Control::Packet(vec![0xd0, 0]), &mut out);
        assert!(out.is_empty(), "before the CONNACK");
        out.extend(feed_all(&mut d, &[0x20, 3, 0, 0, 0], chunk));
        // (The proxy's own packets keep no order among themselves but that of its PUBACKs.)
        assert_eq!(out, vec![0x20, 3, 0, 0, 0, 0xd0, 0, 0x40, 2, 0, 1]);
    }
}

#[test]
fn the_connack_says_whether_the_proxys_session_was_present() {
    let mut tail = publish("a", 10);
    tail.extend([0xd0, 0]);
    for (present, rumqttd_flags, want) in [(true, 0u8, 1u8), (false, 1, 0), (true, 1, 1)] {
        for chunk in [1, 2, 64] {
            let mut stream = vec![0x20, 3, rumqttd_flags, 0, 0];
            stream.extend(&tail);
            let mut d = Downstream::new(true);
            d.session_present(present);
            let out = feed_all(&mut d, &stream, chunk);
            let mut expect = vec![0x20, 3, want, 0, 0];
            expect.extend(&tail);
            assert_eq!(out, expect, "present {present}, chunk {chunk}");
        }
    }
}

/// A PUBLISH of rumqttd's at `qos` with packet id `id` (MQTT 3.1.1 layout).
fn publish_qos(topic: &str, qos: u8, id: u16, payload_len: usize) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend(std::iter::repeat_n(7u8, payload_len));
    let mut p = vec![0x30 | (qos << 1)];
    put_remaining_length(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

/// A served connection logging `site/#`, serving `site/a/#`, with a 1,000-byte packet limit.
fn keeping() -> (Downstream, Arc<Owed>) {
    let owed = Arc::new(Owed::default());
    let keep = Keep::new(
        Arc::from(["site/#".to_owned()]),
        Arc::from(["site/a/#".to_owned()]),
        Some(1000),
        owed.clone(),
    );
    (connected(false).with_keep(keep), owed)
}

#[test]
fn rumqttds_copies_of_served_logged_messages_and_oversized_ones_are_kept() {
    let passed = [
        publish_qos("site/b/x", 1, 1, 10),
        publish_qos("other/a/x", 0, 0, 10),
    ];
    let kept = [
        publish_qos("site/a/x", 1, 2, 10),
        publish_qos("site/a/y", 0, 0, 10),
        publish_qos("other/x", 1, 3, 2000),
    ];
    let stream: Vec<u8> = [&passed[0][..], &kept[0], &passed[1], &kept[1], &kept[2]].concat();
    for chunk in [1, 2, 3, 7, 64, 1 << 20] {
        let (mut d, owed) = keeping();
        let out = feed_all(&mut d, &stream, chunk);
        assert_eq!(out, [&passed[0][..], &passed[1]].concat(), "chunk {chunk}");
        assert_eq!(d.publishes(), 2);
        // rumqttd's order: the client acknowledges the first, then the proxy ids 2 and 3.
        let mut acks = Vec::new();
        owed.due(&mut acks);
        assert!(acks.is_empty(), "chunk {chunk}");
        owed.client(crate::proxy::owed::ClientAck::Puback);
        owed.due(&mut acks);
        assert_eq!(acks, vec![0x40, 2, 0, 2, 0x40, 2, 0, 3], "chunk {chunk}");
    }
}

#[test]
fn the_pubrel_answering_the_proxys_pubrec_is_dropped() {
    use crate::proxy::owed::ClientAck;
    let (mut d, owed) = keeping();
    // The client's exchange 8 passes and the client answers PUBREC.
    let passed = publish_qos("other/x", 2, 8, 4);
    assert_eq!(feed_all(&mut d, &passed, 1), passed);
    owed.client(ClientAck::Pubrec);
    // A copy kept (9), rumqttd's PUBREL for the client's 8 and the one for the proxy's 9.
    let mut stream = publish_qos("site/a/x", 2, 9, 4);
    stream.extend_from_slice(&[0x62, 2, 0, 8, 0x62, 2, 0, 9]);
    let out = feed_all(&mut d, &stream, 1);
    assert_eq!(out, vec![0x62, 2, 0, 8]);
    let mut acks = Vec::new();
    owed.due(&mut acks);
    assert_eq!(
        acks,
        vec![0x50, 2, 0, 9],
        "PUBCOMP 9 waits for the client's 8"
    );
    owed.client(ClientAck::Pubcomp);
    acks.clear();
    owed.due(&mut acks);
    assert_eq!(acks, vec![0x70, 2, 0, 9]);
}

#[test]
fn a_pubrel_sent_again_after_a_reconnect_holds_back_the_proxys_pubcomp() {
    use crate::proxy::owed::ClientAck;
    let (mut d, owed) = keeping();
    // Right after the CONNACK: rumqttd's PUBREL 4 of the session, then a copy kept (9).
    let mut stream = vec![0x62, 2, 0, 4];
    stream.extend_from_slice(&publish_qos("site/a/x", 2, 9, 4));
    for chunk in [1, 3, 64] {
        let (mut d, owed) = keeping();
        assert_eq!(feed_all(&mut d, &stream, chunk), vec![0x62, 2, 0, 4]);
        let mut acks = Vec::new();
        owed.due(&mut acks);
        assert_eq!(acks, vec![0x50, 2, 0, 9], "chunk {chunk}");
        owed.client(ClientAck::Pubcomp);
        acks.clear();
        owed.due(&mut acks);
        assert_eq!(acks, vec![0x70, 2, 0, 9], "chunk {chunk}");
    }
    // Without the client's PUBCOMP for 4, rumqttd would end the connection on the proxy's 9.
    feed_all(&mut d, &stream, 64);
    let mut acks = Vec::new();
    owed.due(&mut acks);
    assert!(!acks.ends_with(&[0x70, 2, 0, 9]));
}

#[test]
fn a_changed_serving_set_is_used_for_the_next_publish() {
    let (mut d, _) = keeping();
    let mut out = Vec::new();
    d.control(Control::Serving(Arc::from([])), &mut out);
    let p = publish_qos("site/a/x", 0, 0, 3);
    assert_eq!(feed_all(&mut d, &p, 64), p);
}

/// A served connection whose client's Receive Maximum is `max`, serving nothing.
fn windowed(max: u16) -> (Downstream, Arc<Owed>, Arc<Window>) {
    let window = Arc::new(Window::new(max));
    let owed = Arc::new(Owed::new(Some(window.clone())));
    let keep = Keep::new(
        Arc::from(["site/#".to_owned()]),
        Arc::from([]),
        None,
        owed.clone(),
    );
    let d = connected(true).with_keep(keep).with_window(window.clone());
    (d, owed, window)
}

#[test]
fn rumqttds_publishes_past_the_receive_maximum_wait_and_other_packets_go_on() {
    let first = publish_qos("other/1", 1, 1, 20);
    let second = publish_qos("other/2", 1, 2, 300);
    let after = publish_qos("other/3", 0, 0, 5);
    let puback = [0x40, 2, 0, 7];
    let stream: Vec<u8> = [&first[..], &second, &puback, &after].concat();
    for chunk in [1, 3, 64, 1 << 20] {
        let (mut d, owed, _) = windowed(1);
        let out = feed_all(&mut d, &stream, chunk);
        // The second waits for the first's PUBACK, the QoS 0 one behind it; the PUBACK goes.
        assert_eq!(out, [&first[..], &puback].concat(), "chunk {chunk}");
        assert!(d.holding());
        let mut out = Vec::new();
        d.release(&mut out);
        assert!(out.is_empty(), "still full, chunk {chunk}");
        owed.client(crate::proxy::owed::ClientAck::Puback);
        d.release(&mut out);
        assert_eq!(out, [&second[..], &after].concat(), "chunk {chunk}");
        assert!(!d.holding());
    }
}

#[test]
fn the_proxys_own_publishes_in_flight_count_against_rumqttds() {
    let (mut d, _, window) = windowed(2);
    assert!(window.reserve_served(0));
    window.served(1);
    let p1 = publish_qos("other/1", 2, 1, 4);
    let p2 = publish_qos("other/2", 1, 2, 4);
    let out = feed_all(&mut d, &[&p1[..], &p2].concat(), 64);
    assert_eq!(out, p1);
    // The client acknowledges the proxy's: rumqttd's second goes.
    window.served(0);
    let mut out = Vec::new();
    d.release(&mut out);
    assert_eq!(out, p2);
}

#[test]
fn a_held_publish_is_released_only_at_a_packet_boundary_of_the_client_stream() {
    let (mut d, owed, _) = windowed(1);
    let p1 = publish_qos("other/1", 1, 1, 4);
    let p2 = publish_qos("other/2", 1, 2, 4);
    let big = {
        let mut s = suback(true, 3, &[1], None);
        s.truncate(s.len() - 1);
        s
    };
    let mut out = feed_all(&mut d, &[&p1[..], &p2, &big].concat(), 64);
    assert_eq!(out, [&p1[..], &big].concat());
    // The SUBACK is half written: the released PUBLISH waits for its end.
    owed.client(crate::proxy::owed::ClientAck::Puback);
    d.release(&mut out);
    assert_eq!(out, [&p1[..], &big].concat());
    d.feed(&[1], &mut out);
    assert_eq!(out, [&p1[..], &big, &[1], &p2].concat());
}

#[test]
fn reading_stops_once_enough_is_held() {
    let (mut d, _, _) = windowed(1);
    let mut out = Vec::new();
    d.feed(&publish_qos("other/1", 1, 1, 4), &mut out);
    assert!(!d.full());
    d.feed(&publish_qos("other/2", 1, 2, HOLD_BYTES), &mut out);
    assert!(d.full());
}

#[test]
fn a_held_publish_larger_than_the_hold_is_read_whole_before_reading_stops() {
    let (mut d, owed, _) = windowed(1);
    let mut out = Vec::new();
    d.feed(&publish_qos("other/1", 1, 1, 4), &mut out);
    let big = publish_qos("other/2", 1, 2, 4 * HOLD_BYTES);
    let (start, rest) = big.split_at(2 * HOLD_BYTES);
    d.feed(start, &mut out);
    assert!(
        !d.full(),
        "an incomplete first held PUBLISH keeps reading on"
    );
    d.feed(rest, &mut out);
    assert!(d.full());
    owed.client(crate::proxy::owed::ClientAck::Puback);
    let mut released = Vec::new();
    d.release(&mut released);
    assert_eq!(released, big);
    assert!(!d.full() && !d.holding());
}
