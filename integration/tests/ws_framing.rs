//! WebSocket framing violations on the real binary (contract 2.6): each closes its connection
//! with 1002 (broken framing) or 1007 (invalid UTF-8 in a text frame), and the server keeps
//! serving other clients.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(10);

/// A client frame with the given first byte (FIN, RSV bits, opcode), masked.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![first];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Opens a session, writes `bytes` raw on its socket and returns the close code it gets.
async fn close_code_for(server: &Server, bytes: &[u8]) -> u16 {
    let mut ws = ws_connect(server).await;
    hello(&mut ws, &["framing/#"]).await;
    ws.get_mut().write_all(bytes).await.unwrap();
    expect_close(&mut ws, WAIT).await.code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_violations_get_1002_or_1007_and_others_are_served() {
    let server = Server::start();
    let cases: [(&str, Vec<u8>, u16); 7] = [
        ("a reserved bit", masked(0x81 | 0x40, b"{}"), 1002),
        ("a reserved data opcode", masked(0x83, b"x"), 1002),
        ("a reserved control opcode", masked(0x8B, b""), 1002),
        ("a fragmented ping", masked(0x09, b""), 1002),
        ("an oversize ping", masked(0x89, &[7; 200]), 1002),
        ("an unmasked frame", vec![0x81, 2, b'{', b'}'], 1002),
        (
            "invalid UTF-8 in a text frame",
            masked(0x81, &[b'"', 0xff, 0xfe, b'"']),
            1007,
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(close_code_for(&server, &bytes).await, want, "{what}");
    }
    // Another client, connected all along and after, is served.
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["framing/#"]).await;
    let mut publisher = mqtt_client(&server, "framing-pub").await;
    publisher
        .publish("framing/ok", QoS::AtLeastOnce, false, "served")
        .await;
    publisher.wait_pubacks(1, WAIT).await;
    let m = next_message(&mut ws, WAIT).await;
    assert_eq!(m["payload"], "served");
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    assert!(
        metric_value(&metrics, "mqws_errors_total{code=\"protocol\"}").unwrap_or(0.0) >= 6.0,
        "framing errors counted"
    );
}
