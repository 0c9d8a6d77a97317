//! Slow consumers: with a small `ws.max_pending_bytes`, a WebSocket client that never reads
//! while a flood is published is closed with 4001, and a normal client on the same filter
//! keeps receiving every message.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::json;

const MESSAGES: u64 = 50_000;
const WAIT: Duration = Duration::from_secs(120);

/// Reads the flood until the sentinel, checking counters and seqs; returns the count, or
/// what went wrong and after how many messages.
async fn read_flood(mut ws: Ws) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut next_n = 0u64;
    let mut last_seq = 0u64;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = match next_frame(&mut ws, left).await {
            Some(Frame::Json(v)) => v,
            None => return Err(format!("timed out after {next_n} messages")),
            Some(other) => return Err(format!("after {next_n} messages got {other:?}")),
        };
        if v["type"] != "message" {
            return Err(format!("after {next_n} messages got {v}"));
        }
        let seq = v["seq"].as_u64().unwrap_or(0);
        if seq <= last_seq {
            return Err(format!("seq {seq} after {last_seq}"));
        }
        last_seq = seq;
        if v["payload"]["end"] == true {
            return Ok(next_n);
        }
        if v["payload"]["n"].as_u64() != Some(next_n) {
            return Err(format!(
                "expected counter {next_n}, got {v} (gap or duplicate)"
            ));
        }
        next_n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_client_is_closed_4001_while_others_keep_up() {
    let server = Server::start_with(
        &[
            // Above one group commit's burst (up to 4096 frames of ~200 bytes reach every
            // matching queue at once), far below the 10 MB flood the slow client faces.
            ("MQWS_WS__MAX_PENDING_BYTES", "1MiB"),
            // Keep keep-alive pings out of the picture: the close must come from the queue.
            ("MQWS_WS__PING_INTERVAL", "120s"),
            // The slow client reads only after the flood: its close frame waits behind the
            // data already in the socket until then.
            ("MQWS_WS__CLOSE_TIMEOUT", "120s"),
            // Behind (or stalled) this long ⇒ 4001.
            ("MQWS_WS__SLOW_CONSUMER_TIMEOUT", "2s"),
        ],
        None,
    );

    // The slow client has a tiny receive buffer and never reads until the flood is over.
    let (mut slow, _) = ws_connect_with(server.http_addr, Some(SUBPROTOCOL), Some(4096))
        .await
        .expect("slow client handshake");
    hello(&mut slow, &["flood/#"]).await;

    let mut normal = ws_connect(&server).await;
    hello(&mut normal, &["flood/#"]).await;
    let reader = tokio::spawn(read_flood(normal));

    let mut publisher = mqtt_client(&server, "flood-pub").await;
    let pad = "p".repeat(100);
    for n in 0..MESSAGES {
        publisher
            .publish(
                "flood/t",
                QoS::AtLeastOnce,
                false,
                json!({"n": n, "pad": pad}).to_string(),
            )
            .await;
    }
    publisher
        .publish(
            "flood/t",
            QoS::AtLeastOnce,
            false,
            json!({"end": true}).to_string(),
        )
        .await;
    publisher.wait_pubacks(MESSAGES as usize + 1, WAIT).await;

    let normal = reader.await.expect("normal reader task");

    // Now read the slow client: buffered messages may come first, then the 4001 close.
    let closed = expect_close(&mut slow, Duration::from_secs(30)).await;
    assert_eq!(
        closed.code, 4001,
        "slow consumer close code (after {} buffered frames)",
        closed.frames_before
    );
    assert!(
        (closed.frames_before as u64) < MESSAGES,
        "the slow client got the whole flood ({} frames) before its close",
        closed.frames_before
    );
    assert_eq!(
        normal,
        Ok(MESSAGES),
        "the normal (reading) client must receive the whole flood"
    );
}
