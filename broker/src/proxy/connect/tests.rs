//! CONNECT parsing and rewriting against packets of every version.

use super::*;

fn connect_with_will(level: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', level]);
    // clean, will (QoS 1, retained), username
    body.push(0x02 | 0x04 | 0x08 | 0x20 | 0x80);
    body.extend_from_slice(&[0, 30]);
    if level == 5 {
        // session expiry 60 s, a user property
        body.extend_from_slice(&[12, 0x11, 0, 0, 0, 60, 0x26, 0, 1, b'k', 0, 1, b'v']);
    }
    body.extend_from_slice(&[0, 2, b'c', b'1']);
    if level == 5 {
        // payload format, will delay 7 s
        body.extend_from_slice(&[7, 0x01, 1, 0x18, 0, 0, 0, 7]);
    }
    body.extend_from_slice(&[0, 3, b'w', b'/', b't', 0, 3, b'b', b'y', b'e']);
    body.extend_from_slice(&[0, 1, b'u']);
    let mut p = vec![0x10];
    put_remaining_length(&mut p, body.len());
    p.extend_from_slice(&body);
    p
}

#[test]
fn the_will_is_read() {
    for level in [4u8, 5] {
        let packet = connect_with_will(level);
        let Parsed::Connect(c, len) = parse(&packet) else {
            panic!("not parsed");
        };
        assert_eq!(len, packet.len());
        assert_eq!(
            c.will,
            Some(Will {
                topic: "w/t".to_owned(),
                payload: b"bye".to_vec(),
                qos: 1,
                retain: true,
                delay: if level == 5 { 7 } else { 0 },
                // The payload format indicator goes with the will; its delay does not.
                properties: if level == 5 {
                    vec![0x01, 1]
                } else {
                    Vec::new()
                },
            })
        );
    }
}

#[test]
fn a_will_topic_that_cannot_be_published_to_is_refused() {
    for bad in ["w/#", "w/+/x", "", "w\0x"] {
        let good = connect_with_will(4);
        // The will topic "w/t" (3 bytes) sits before the payload "bye" and the username.
        let at = good
            .windows(5)
            .position(|w| w == b"\0\x03w/t")
            .expect("the will topic");
        let mut body = good[2..at].to_vec();
        body.extend_from_slice(&(bad.len() as u16).to_be_bytes());
        body.extend_from_slice(bad.as_bytes());
        body.extend_from_slice(&good[at + 5..]);
        let mut packet = vec![0x10];
        put_remaining_length(&mut packet, body.len());
        packet.extend_from_slice(&body);
        assert_eq!(
            parse(&packet),
            Parsed::Reject("invalid will topic"),
            "will topic {bad:?}"
        );
    }
}

#[test]
fn the_will_is_taken_out_of_what_rumqttd_gets() {
    for level in [4u8, 5] {
        let mut head = connect_with_will(level);
        head.extend_from_slice(&[0xc0, 0]);
        let Parsed::Connect(before, len) = parse(&head) else {
            panic!("not parsed");
        };
        let new_len = strip_will(&mut head, len, &before);
        assert_eq!(&head[new_len..], &[0xc0, 0], "what followed is kept");
        let Parsed::Connect(after, after_len) = parse(&head) else {
            panic!("not parsed after");
        };
        assert_eq!(after_len, new_len);
        assert_eq!(after.will, None);
        assert_eq!(
            head[after.flags_at()],
            0x02 | 0x80,
            "clean and username left"
        );
        assert_eq!(
            (after.client_id, after.username, after.session_expiry),
            (before.client_id, before.username, before.session_expiry)
        );
        let unchanged = build(level, "c", None, None, false);
        let Parsed::Connect(c, l) = parse(&unchanged) else {
            panic!("not parsed");
        };
        let mut copy = unchanged.clone();
        assert_eq!(strip_will(&mut copy, l, &c), l);
        assert_eq!(copy, unchanged);
    }
}

#[test]
fn reads_ids_and_logins_in_every_version() {
    for level in [3u8, 4, 5] {
        for will in [false, true] {
            let p = build(level, "reader-1", Some("u"), Some(b"secret"), will);
            for cut in 0..p.len() {
                assert_eq!(
                    parse(&p[..cut]),
                    Parsed::Incomplete,
                    "level {level} cut {cut}"
                );
            }
            let mut with_more = p.clone();
            with_more.extend_from_slice(&[0x30, 0x00]);
            match parse(&with_more) {
                Parsed::Connect(c, len) => {
                    assert_eq!(len, p.len());
                    assert_eq!(c.client_id, "reader-1");
                    assert_eq!(c.username.as_deref(), Some("u"));
                    assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
                    assert_eq!(c.level, level);
                }
                other => panic!("level {level}: {other:?}"),
            }
        }
    }
    match parse(&build(4, "anon", None, None, false)) {
        Parsed::Connect(c, _) => assert_eq!((c.username, c.password), (None, None)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_topic_alias_maximum_is_taken_out_of_the_connect() {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30];
    // Receive Maximum 10, Topic Alias Maximum 5, a user property.
    body.extend_from_slice(&[13, 0x21, 0, 10, 0x22, 0, 5, 0x26, 0, 1, b'k', 0, 1, b'v']);
    body.extend_from_slice(&[0, 2, b'c', b'1']);
    let mut head = vec![0x10];
    put_remaining_length(&mut head, body.len());
    head.extend_from_slice(&body);
    head.extend_from_slice(&[0xc0, 0]);
    let Parsed::Connect(before, len) = parse(&head) else {
        panic!("not parsed");
    };
    let new_len = strip_topic_alias_maximum(&mut head, len, before.keep_alive_at + 2);
    assert_eq!(new_len, len - 3);
    assert_eq!(&head[new_len..], &[0xc0, 0], "what followed is kept");
    let Parsed::Connect(after, again) = parse(&head) else {
        panic!("not parsed after");
    };
    assert_eq!(again, new_len);
    assert_eq!((after.client_id.as_str(), after.receive_max), ("c1", 10));
    assert_eq!(&head[12..22], &[10, 0x21, 0, 10, 0x26, 0, 1, b'k', 0, 1]);
    let mut plain = build(5, "x", None, None, false);
    let n = plain.len();
    assert_eq!(
        strip_topic_alias_maximum(&mut plain, n, 12),
        n,
        "nothing to take"
    );
}

#[test]
fn rejects_garbage_without_panicking() {
    assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Reject(_)));
    assert!(matches!(
        parse(&[0x10, 0xff, 0xff, 0xff, 0xff]),
        Parsed::Reject(_)
    ));
    let mut p = build(4, "x", None, None, false);
    p[4] = b'X';
    assert!(matches!(parse(&p), Parsed::Reject(_)));
    for seed in 0..500u32 {
        let mut junk: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 7919) >> 9) as u8)
            .collect();
        junk[0] = 0x10;
        junk[1] = 40;
        let _ = parse(&junk);
    }
}
