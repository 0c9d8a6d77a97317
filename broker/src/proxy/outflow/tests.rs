use bytes::Bytes;

use super::*;

fn sub(filter: &str, qos: u8) -> Sub {
    Sub {
        filter: filter.to_owned(),
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        id: None,
        since: 0,
    }
}

fn msg(topic: &str, qos: Option<u8>, origin: Option<&str>) -> ServedMessage {
    ServedMessage {
        seq: 1,
        ts_ms: 1_000,
        topic: topic.to_owned(),
        payload: Bytes::from_static(b"hi"),
        retain: true,
        qos,
        origin: origin.map(Arc::from),
        properties: Bytes::new(),
    }
}

fn outflow(v5: bool, receive_max: u16, max_packet: Option<u32>) -> Outflow {
    Outflow::new(
        v5,
        Arc::from("me"),
        ClientLimits {
            receive_max,
            max_packet,
        },
    )
}

/// The QoS bits and retain flag of an encoded PUBLISH.
fn flags(p: &[u8]) -> (u8, bool) {
    ((p[0] >> 1) & 3, p[0] & 1 == 1)
}

#[test]
fn delivers_at_the_lower_of_publish_and_granted_qos() {
    let mut o = outflow(true, 10, None);
    o.subscribe(vec![sub("a/#", 2)]);
    for (published, expect) in [(0, 0), (1, 1), (2, 2)] {
        let p = o
            .live(&msg("a/b", Some(published), None), 1_000)
            .expect("a PUBLISH");
        assert_eq!(flags(&p).0, expect);
    }
    let mut o = outflow(false, 10, None);
    o.subscribe(vec![sub("a/#", 1)]);
    let p = o
        .live(&msg("a/b", Some(2), None), 1_000)
        .expect("a PUBLISH");
    assert_eq!(flags(&p), (1, false), "QoS 1 granted; retain cleared live");
    assert!(o.live(&msg("x", Some(0), None), 1_000).is_none());
}

#[test]
fn no_local_and_retain_as_published_are_per_subscription() {
    let mut o = outflow(true, 10, None);
    let mut local = sub("a/b", 1);
    local.no_local = true;
    o.subscribe(vec![local]);
    assert!(o.live(&msg("a/b", Some(1), Some("me")), 0).is_none());
    assert!(o.live(&msg("a/b", Some(1), Some("other")), 0).is_some());
    let mut rap = sub("a/+", 0);
    rap.retain_as_published = true;
    o.subscribe(vec![rap]);
    let p = o
        .live(&msg("a/b", Some(1), Some("me")), 0)
        .expect("a PUBLISH");
    assert_eq!(flags(&p), (0, true), "only the a/+ subscription takes it");
}

#[test]
fn receive_maximum_bounds_the_window_and_acks_open_it() {
    let mut o = outflow(true, 2, None);
    o.subscribe(vec![sub("#", 2)]);
    let a = o.live(&msg("t", Some(1), None), 0).expect("a PUBLISH");
    let b = o.live(&msg("t", Some(2), None), 0).expect("a PUBLISH");
    assert!(!o.window_open());
    let id = |p: &[u8]| u16::from_be_bytes([p[5], p[6]]);
    assert_eq!(id(&a), FIRST_ID);
    assert_eq!(o.ack(4, id(&a), false), None);
    assert!(o.window_open());
    assert_eq!(o.ack(5, id(&b), false), Some(vec![0x62, 2, 0, 102]));
    let c = o.live(&msg("t", Some(1), None), 0).expect("a PUBLISH");
    assert!(!o.window_open(), "waiting for PUBCOMP still counts");
    assert_eq!(o.ack(4, id(&c), false), None);
    assert_eq!(o.ack(7, id(&b), false), None);
    assert!(o.window_open());
    assert_eq!(o.ack(4, 999, false), None, "unknown ids are ignored");
}

#[test]
fn too_large_packets_are_skipped_and_counted() {
    let mut o = outflow(true, 10, Some(12));
    o.subscribe(vec![sub("#", 1)]);
    assert!(o.live(&msg("a-long-topic", Some(1), None), 0).is_none());
    assert_eq!(o.counts().too_large, 1);
    assert!(o.window_open());
    assert!(o.live(&msg("t", Some(0), None), 0).is_some());
}

#[test]
fn expiry_counts_from_logging_and_subscription_ids_are_added() {
    let mut o = outflow(true, 10, None);
    let mut s = sub("t", 0);
    s.id = Some(5);
    o.subscribe(vec![s]);
    let mut m = msg("t", Some(0), None);
    m.properties = Bytes::from_static(&[0x02, 0, 0, 0, 10]);
    let p = o.live(&m, 4_500).expect("a PUBLISH");
    // header, length, topic (3), properties length 7: expiry 7 s, subscription id 5.
    assert_eq!(&p[5..13], &[7, 0x02, 0, 0, 0, 7, 0x0B, 5]);
    assert!(o.live(&m, 12_000).is_none());
    assert_eq!(o.counts().expired, 1);
}

#[test]
fn retained_values_follow_retain_handling() {
    let mut o = outflow(true, 10, None);
    let mut s = sub("a/#", 1);
    s.retain_handling = 1;
    let made = o.subscribe(vec![s.clone()]);
    assert!(made[0].1);
    let m = msg("a/b", Some(0), None);
    assert_eq!(
        flags(&o.retained(&m, &s, true, 0).expect("a PUBLISH")),
        (0, true)
    );
    assert!(o.retained(&m, &s, false, 0).is_none());
    assert!(!o.subscribe(vec![s])[0].1, "a second SUBSCRIBE replaces it");
}

/// Message `seq` on `a/b` at `qos`.
fn at(seq: u64, qos: u8) -> ServedMessage {
    ServedMessage {
        seq,
        ..msg("a/b", Some(qos), None)
    }
}

/// The packet id of an encoded QoS 1/2 PUBLISH on `a/b` (MQTT 5, empty properties).
fn packet_id(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[7], p[8]])
}

#[test]
fn the_cursor_never_passes_a_message_in_flight() {
    let mut o = outflow(true, 10, None);
    o.subscribe(vec![sub("a/#", 1)]);
    o.started_at(4);
    assert_eq!(o.cursor(), 4, "nothing owed before the start");
    let first = o.live(&at(5, 1), 0).expect("PUBLISH 5");
    let second = o.live(&at(6, 1), 0).expect("PUBLISH 6");
    assert!(o
        .live(
            &ServedMessage {
                topic: "x".into(),
                ..at(7, 1)
            },
            0
        )
        .is_none());
    assert_eq!(o.cursor(), 4, "5 is unacknowledged");
    o.ack(4, packet_id(&second), false);
    assert_eq!(o.cursor(), 4, "acknowledged out of order: 5 still holds it");
    o.ack(4, packet_id(&first), false);
    assert_eq!(o.cursor(), 7, "everything taken is done, 7 matched nothing");
    assert_eq!(o.sent(), 6);
}

#[test]
fn a_resumed_session_resends_with_dup_skips_sent_qos0_and_repeats_pubrel() {
    let mut o = outflow(true, 10, None);
    let before = Before {
        acked: 10,
        sent: 13,
        away_through: 20,
        released: vec![(105, 12)],
    };
    let pubrel = o.resume(vec![sub("a/#", 2)], before, false);
    assert_eq!(
        pubrel,
        vec![0x62, 2, 0, 105],
        "PUBREL again, not the PUBLISH"
    );
    let p = o.live(&at(11, 1), 0).expect("11 again");
    assert_eq!(p[0] & 0x08, 0x08, "DUP");
    assert!(o.live(&at(12, 2), 0).is_none(), "12 is past PUBREC");
    assert!(
        o.live(&at(13, 0), 0).is_none(),
        "a QoS 0 message is never sent twice"
    );
    assert!(
        o.live(&at(14, 0), 0).is_none(),
        "QoS 0 logged while away is not queued"
    );
    let p = o.live(&at(15, 1), 0).expect("15");
    assert_eq!(p[0] & 0x08, 0, "never sent before: no DUP");
    assert!(
        o.live(&at(21, 0), 0).is_some(),
        "QoS 0 after the return is live"
    );
    assert_eq!(o.cursor(), 10, "11 is still in flight");
    let mut q = outflow(true, 10, None);
    let before = Before {
        away_through: 20,
        ..Before::default()
    };
    q.resume(vec![sub("a/#", 1)], before, true);
    assert!(q.live(&at(14, 0), 0).is_some(), "queue_qos0_messages");
}

#[test]
fn a_subscription_gets_nothing_logged_before_it() {
    let mut o = outflow(false, 10, None);
    o.subscribe(vec![Sub {
        since: 50,
        ..sub("a/#", 1)
    }]);
    assert!(o.live(&at(50, 1), 0).is_none());
    assert!(o.live(&at(51, 1), 0).is_some());
    assert_eq!(o.cursor(), 50, "50 is taken though nobody's");
}

#[test]
fn a_gap_is_told_to_an_mqtt_5_client_once_on_its_next_publish() {
    let mut o = outflow(true, 10, None);
    o.subscribe(vec![sub("a/#", 0)]);
    o.lost(3, 5);
    o.lost(7, 9);
    let p = o.live(&at(10, 0), 0).expect("PUBLISH");
    let gap = b"\x26\x00\x08mqws-gap\x00\x033-9";
    assert!(p.windows(gap.len()).any(|w| w == gap), "{p:?}");
    let p = o.live(&at(11, 0), 0).expect("PUBLISH");
    assert!(!p.windows(8).any(|w| w == b"mqws-gap"), "once");
    let mut v4 = outflow(false, 10, None);
    v4.subscribe(vec![sub("a/#", 0)]);
    v4.lost(3, 5);
    let p = v4.live(&at(10, 0), 0).expect("PUBLISH");
    assert!(
        !p.windows(8).any(|w| w == b"mqws-gap"),
        "3.1.1 has no properties"
    );
}
