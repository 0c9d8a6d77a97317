//! Fan-out: 200 concurrent WebSocket clients on `load/#`, one MQTT publisher sending 500
//! QoS 1 messages; every client receives every message exactly once, in order, with strictly
//! increasing seqs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::json;

const CLIENTS: usize = 200;
const MESSAGES: u64 = 500;
const WAIT: Duration = Duration::from_secs(90);

/// Reads until the `{"end":true}` sentinel; returns the counters seen or what went wrong.
async fn read_all(mut ws: Ws) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut next_n = 0u64;
    let mut last_seq: Option<u64> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = match next_frame(&mut ws, left).await {
            Some(Frame::Json(v)) => v,
            None => return Err(format!("timed out after {next_n} messages")),
            Some(other) => return Err(format!("after {next_n} messages got {other:?}")),
        };
        if v["type"] != "message" {
            return Err(format!("unexpected frame {v}"));
        }
        let seq = v["seq"].as_u64().ok_or(format!("no seq in {v}"))?;
        if let Some(prev) = last_seq {
            if seq <= prev {
                return Err(format!("seq {seq} after {prev}"));
            }
        }
        last_seq = Some(seq);
        if v["payload"]["end"] == true {
            return Ok(next_n);
        }
        let n = v["payload"]["n"]
            .as_u64()
            .ok_or(format!("no counter in {v}"))?;
        if n != next_n {
            return Err(format!(
                "expected counter {next_n}, got {n} (duplicate or gap)"
            ));
        }
        next_n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_each_get_all_messages_in_order() {
    let server = Server::start();
    let addr = server.http_addr;

    // Connect and open every session first, 20 handshakes at a time.
    let mut sockets = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 20 {
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.push(tokio::spawn(async move {
                let (mut ws, _) = ws_connect_with(addr, Some(SUBPROTOCOL), None)
                    .await
                    .unwrap_or_else(|e| panic!("client {}: handshake: {e}", chunk * 20 + i));
                hello(&mut ws, &["load/#"]).await;
                ws
            }));
        }
        for h in batch {
            sockets.push(h.await.expect("connect task"));
        }
    }
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(read_all(ws)))
        .collect();

    let mut publisher = mqtt_client(&server, "fanout-pub").await;
    for n in 0..MESSAGES {
        publisher
            .publish(
                "load/t",
                QoS::AtLeastOnce,
                false,
                json!({"n": n}).to_string(),
            )
            .await;
    }
    publisher
        .publish(
            "load/t",
            QoS::AtLeastOnce,
            false,
            json!({"end": true}).to_string(),
        )
        .await;
    publisher.wait_pubacks(MESSAGES as usize + 1, WAIT).await;

    let mut failures = Vec::new();
    for (i, r) in readers.into_iter().enumerate() {
        match r.await.expect("reader task") {
            Ok(n) if n == MESSAGES => {}
            Ok(n) => failures.push(format!("client {i}: {n} of {MESSAGES} messages")),
            Err(e) => failures.push(format!("client {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed; first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}
