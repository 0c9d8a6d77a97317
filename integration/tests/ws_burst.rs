//! A burst of WebSocket connects on the real binary: 3,000 clients connecting at once, three
//! times `http.max_connections`, are all welcomed (they queue in the listen backlog instead of
//! being reset). Thousands of sockets: one test in its own binary, so it never runs beside
//! another heavy test.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_simultaneous_connects_are_all_welcomed() {
    const CLIENTS: usize = 3000;
    let server = Server::start_with(&[("MQWS_HTTP__MAX_CONNECTIONS", "50")], None);
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let server_addr = server.http_addr;
            tokio::spawn(async move {
                let (mut ws, _) = tokio::time::timeout(
                    Duration::from_secs(60),
                    ws_connect_with(server_addr, Some(SUBPROTOCOL), None),
                )
                .await
                .map_err(|_| format!("client {i}: no handshake within 60 s"))?
                .map_err(|e| format!("client {i}: {e}"))?;
                let welcome =
                    hello_with(&mut ws, serde_json::json!({"filters": ["burst/#"]})).await;
                if welcome["type"] != "welcome" {
                    return Err(format!("client {i}: {welcome}"));
                }
                Ok::<_, String>(ws)
            })
        })
        .collect();
    let mut open = Vec::with_capacity(CLIENTS);
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(ws) => open.push(ws),
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "{} of {CLIENTS} welcomed in {:.2} s",
        open.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}
