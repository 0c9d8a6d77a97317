//! Wills on the real binary, which the proxy publishes itself (rumqttd never gets one): to the
//! MQTT subscribers rumqttd serves (a topic outside `bridge.filters`) at the will's QoS with
//! its MQTT 5 properties, once and only after its delay; to the log and the proxy's own
//! subscribers when the topic is logged; on an MQTT 5 DISCONNECT asking for it (0x04); never
//! after a normal DISCONNECT, nor when a persistent session resumes within the delay.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use mqws_integration::raw::connect_v5_with_will as connect_with_will;
use mqws_integration::{replay_all, RawMqtt, Server};

/// A PUBLISH as a v5 subscriber reads it: topic, QoS, packet id, properties, payload.
struct Got {
    topic: String,
    qos: u8,
    id: Option<u16>,
    properties: Vec<u8>,
    payload: Vec<u8>,
}

/// The next PUBLISH `sub` gets within its read timeout (other packets are skipped), acked.
fn next_publish(sub: &mut RawMqtt) -> Option<Got> {
    loop {
        let p = sub.try_packet()?;
        if p[0] >> 4 != 3 {
            continue;
        }
        let header = 1 + p[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
        let body = &p[header..];
        let qos = (p[0] >> 1) & 3;
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
        let mut at = 2 + topic_len;
        let id = (qos > 0).then(|| {
            at += 2;
            u16::from_be_bytes([body[at - 2], body[at - 1]])
        });
        let props_len = usize::from(body[at]);
        let properties = body[at + 1..at + 1 + props_len].to_vec();
        let payload = body[at + 1 + props_len..].to_vec();
        if let Some(id) = id {
            let [a, b] = id.to_be_bytes();
            let ack = if qos == 1 { 0x40 } else { 0x50 };
            sub.send(&[ack, 2, a, b]);
        }
        return Some(Got {
            topic,
            qos,
            id,
            properties,
            payload,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_come_from_the_proxy_once_after_their_delay_at_their_qos() {
    let server = Server::start_with(&[("MQWS_BRIDGE__FILTERS", "[\"logged/#\"]")], None);
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        let mut sub = RawMqtt::connect(addr, "will-watcher", true, 60);
        // rumqttd holds `free/#` (not logged); the proxy serves `logged/#`.
        assert_eq!(sub.subscribe(1, &[b"free/#", b"logged/#"]), vec![1, 1]);

        // A normal DISCONNECT: no will.
        let (mut c, _) = connect_with_will(addr, "will-c", true, "free/c", 0);
        c.write_all(&[0xe0, 0]).unwrap();
        drop(c);
        // DISCONNECT with will (0x04): the will, at once, through the log.
        let (mut b, _) = connect_with_will(addr, "will-b", true, "logged/b", 0);
        b.write_all(&[0xe0, 1, 0x04]).unwrap();
        let got = next_publish(&mut sub).expect("the will asked for by DISCONNECT 0x04");
        assert_eq!(
            got.topic, "logged/b",
            "not free/c's will: it said DISCONNECT"
        );
        assert_eq!((got.qos, got.payload.as_slice()), (1, &b"gone"[..]));
        drop(b);

        // Vanishes: the will after its 2 s delay, at QoS 1, with its user property, once.
        let (a, _) = connect_with_will(addr, "will-a", true, "free/a", 2);
        a.shutdown(std::net::Shutdown::Both).unwrap();
        let vanished = Instant::now();
        let got = next_publish(&mut sub).expect("the vanished client's will");
        let waited = vanished.elapsed();
        assert_eq!(got.topic, "free/a");
        assert!(
            waited >= Duration::from_millis(1900),
            "the will came {waited:?} after the connection ended, before its delay"
        );
        assert_eq!((got.qos, got.payload.as_slice()), (1, &b"gone"[..]));
        assert!(got.id.is_some());
        let user_property = [0x26, 0, 1, b'k', 0, 1, b'v'];
        assert!(
            got.properties.windows(7).any(|w| w == user_property),
            "the will's user property: {:?}",
            got.properties
        );

        // A persistent session that comes back within the delay: no will from anyone.
        let (p, _) = connect_with_will(addr, "will-p", false, "free/p", 3);
        p.shutdown(std::net::Shutdown::Both).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let (mut p, present) = connect_with_will(addr, "will-p", false, "free/p", 3);
        assert!(present, "the session resumed");
        sub.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if let Some(extra) = next_publish(&mut sub) {
            panic!(
                "nothing more is published, got {} {:?}",
                extra.topic,
                String::from_utf8_lossy(&extra.payload)
            );
        }
        p.write_all(&[0xe0, 0]).unwrap();
    })
    .await
    .unwrap();
    let (_, logged) = replay_all(&server, "logged/#", Duration::from_secs(30)).await;
    let topics: Vec<&str> = logged.iter().filter_map(|m| m["topic"].as_str()).collect();
    assert_eq!(topics, ["logged/b"], "the logged will, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_of_a_client_id_ends_the_older_which_leaves_its_will() {
    let server = Server::start_with(&[("MQWS_BRIDGE__FILTERS", "[\"logged/#\"]")], None);
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        let mut sub = RawMqtt::connect(addr, "takeover-watcher", true, 60);
        assert_eq!(sub.subscribe(1, &[b"free/#"]), vec![1]);
        let (mut older, _) = connect_with_will(addr, "twin", true, "free/twin", 0);
        let mut newer = RawMqtt::connect(addr, "twin", true, 60);
        let mut bye = [0u8; 4];
        older.read_exact(&mut bye).unwrap();
        assert_eq!(bye, [0xe0, 2, 0x8E, 0], "the older one is told: taken over");
        assert_eq!(older.read(&mut bye).unwrap(), 0, "and closed");
        let got = next_publish(&mut sub).expect("the older connection's will");
        assert_eq!(got.topic, "free/twin");
        // The newer one stays.
        std::thread::sleep(Duration::from_millis(300));
        newer.send(&[0xc0, 0]);
        assert_eq!(
            newer.packet(),
            vec![0xd0, 0],
            "the newer connection lives on"
        );
        // Empty client ids name no one: each such connection is its own client.
        let mut nameless = RawMqtt::connect(addr, "", false, 60);
        let mut another = RawMqtt::connect(addr, "", false, 60);
        std::thread::sleep(Duration::from_millis(300));
        for (i, c) in [&mut nameless, &mut another].into_iter().enumerate() {
            c.send(&[0xc0, 0]);
            assert_eq!(
                c.packet(),
                vec![0xd0, 0],
                "empty client id {i} still connected"
            );
        }
    })
    .await
    .unwrap();
}
