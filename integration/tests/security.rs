//! Who may connect, subscribe and publish, on the real binary: JWT and static tokens with
//! grants and expiry, the Origin policy, wss, limits (connections, publish rate), no
//! permessage-deflate, slowloris, and malformed MQTT packets.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "integration-test-secret-0123456789abcdef";

fn jwt(exp_in: Duration, sub: &[&str], publ: &[&str]) -> String {
    let exp = (now_ms() / 1000) + exp_in.as_secs();
    let claims = json!({"exp": exp, "mqws": {"sub": sub, "pub": publ}});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn hello_token(ws: &mut Ws, token: Option<&str>, filters: &[&str]) -> Value {
    let mut h = json!({"type": "hello", "filters": filters});
    if let Some(t) = token {
        h["token"] = json!(t);
    }
    send_json(ws, &h).await;
    next_json(ws, TIMEOUT).await
}

async fn request(ws: &mut Ws, frame: Value) -> Value {
    send_json(ws, &frame).await;
    next_json(ws, TIMEOUT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_grants_bound_what_a_client_may_do_and_expiry_closes_4003() {
    let config = format!("[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"{SECRET}\"\n");
    let server = Server::start_configured(&config, &[], None);

    let mut ws = ws_connect(&server).await;
    let e = hello_token(&mut ws, None, &[]).await;
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert_eq!(expect_close(&mut ws, TIMEOUT).await.code, 1008);

    let mut ws = ws_connect(&server).await;
    let e = hello_token(&mut ws, Some("not.a.jwt"), &[]).await;
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert_eq!(expect_close(&mut ws, TIMEOUT).await.code, 1008);

    let mut ws = ws_connect(&server).await;
    let e = hello_token(
        &mut ws,
        Some(&jwt(Duration::from_secs(60), &["site/a/#"], &[])),
        &["site/#"],
    )
    .await;
    assert_eq!(
        e["code"], "forbidden",
        "hello filter outside the grant: {e}"
    );

    let token = jwt(Duration::from_secs(3), &["site/a/#"], &["readers/+/cmd"]);
    let mut ws = ws_connect(&server).await;
    let w = hello_token(&mut ws, Some(&token), &["site/a/tags/+"]).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let r = request(
        &mut ws,
        json!({"type":"subscribe","id":1,"filters":["site/#"]}),
    )
    .await;
    assert_eq!(
        (r["code"].clone(), r["id"].clone()),
        (json!("forbidden"), json!(1)),
        "{r}"
    );
    let r = request(
        &mut ws,
        json!({"type":"subscribe","id":2,"filters":["site/a/x"]}),
    )
    .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let r = request(
        &mut ws,
        json!({"type":"publish","id":3,"topic":"other/x","payload":1}),
    )
    .await;
    assert_eq!(
        (r["code"].clone(), r["id"].clone()),
        (json!("forbidden"), json!(3)),
        "{r}"
    );
    let r = request(
        &mut ws,
        json!({"type":"publish","id":4,"topic":"readers/r1/cmd","payload":{"op":"start"}}),
    )
    .await;
    assert_eq!(r["type"], "puback", "{r}");
    let r = request(&mut ws, json!({"type":"history","id":5,"filter":"#"})).await;
    assert_eq!(r["code"], "forbidden", "history obeys the grant: {r}");
    let r = request(&mut ws, json!({"type":"last","id":6,"filter":"site/a/#"})).await;
    assert_eq!(r["type"], "last", "{r}");

    // Matching messages flow; then the token's exp passes and the server closes with 4003.
    let mqtt = mqtt_client(&server, "jwt-pub").await;
    mqtt.publish("site/a/tags/x", QoS::AtLeastOnce, false, "x")
        .await;
    assert_eq!(
        next_message(&mut ws, TIMEOUT).await["topic"],
        "site/a/tags/x"
    );
    let closed = expect_close(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(closed.code, 4003);

    let log = server.tail_text();
    assert!(!log.contains(SECRET), "the secret never reaches the log");
    assert!(!log.contains(&token), "tokens never reach the log");
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    assert!(
        metric_value(&metrics, "mqws_auth_expired_total") >= Some(1.0),
        "refusals are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_are_stored_as_hashes() {
    let hash = hex::encode(sha2::Sha256::digest(b"reader-token-1"));
    let config = format!(
        "[auth]\nmode = \"tokens\"\n[[auth.tokens]]\nsha256 = \"{hash}\"\nsub = [\"readers/#\"]\npub = []\n"
    );
    let server = Server::start_configured(&config, &[], None);
    let mut ws = ws_connect(&server).await;
    let w = hello_token(&mut ws, Some("reader-token-1"), &["readers/+/status"]).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let r = request(
        &mut ws,
        json!({"type":"publish","id":1,"topic":"readers/r1/cmd","payload":1}),
    )
    .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let mut ws = ws_connect(&server).await;
    let e = hello_token(&mut ws, Some("reader-token-2"), &[]).await;
    assert_eq!(e["code"], "unauthorized", "{e}");
    let out = run_mqws(&["check-config"], &[], &std::env::temp_dir(), TIMEOUT);
    assert!(out.status.success());
}

/// Opens `/ws` with extra request headers; returns the response status and headers.
async fn handshake(
    server: &Server,
    headers: &[(&'static str, String)],
) -> Result<tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>, u16> {
    let mut req = format!("ws://{}/ws", server.http_addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((_, resp)) => Ok(resp.map(|_| None)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_policy_and_no_compression() {
    let server = Server::start();
    let host = server.http_addr.to_string();
    assert_eq!(
        handshake(&server, &[("Origin", "http://evil.example".to_owned())])
            .await
            .err(),
        Some(403)
    );
    let same = handshake(&server, &[("Origin", format!("http://{host}"))]).await;
    assert!(same.is_ok(), "same origin is allowed: {:?}", same.err());
    let resp = handshake(
        &server,
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits".to_owned(),
        )],
    )
    .await
    .unwrap();
    assert!(
        resp.headers().get("sec-websocket-extensions").is_none(),
        "permessage-deflate is never negotiated"
    );

    let listed = Server::start_with(
        &[(
            "MQWS_HTTP__ALLOWED_ORIGINS",
            "[\"https://app.example.com\"]",
        )],
        None,
    );
    assert!(
        handshake(&listed, &[("Origin", "https://app.example.com".to_owned())])
            .await
            .is_ok()
    );
    let own = format!("http://{}", listed.http_addr);
    assert!(
        handshake(&listed, &[("Origin", own)]).await.is_ok(),
        "mqws's own pages (same origin) stay allowed beside a list"
    );
    assert_eq!(
        handshake(&listed, &[("Origin", "https://other.example".to_owned())])
            .await
            .err(),
        Some(403),
        "other origins only when listed"
    );
    // The server's stderr reaches the test through a reader thread: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !listed
        .tail_text()
        .contains("add it to http.allowed_origins")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        listed
            .tail_text()
            .contains("add it to http.allowed_origins"),
        "a refused origin is logged naming the key: {}",
        listed.tail_text()
    );

    let file_pages = Server::start_with(&[("MQWS_HTTP__ALLOWED_ORIGINS", "[\"null\"]")], None);
    assert!(handshake(&file_pages, &[("Origin", "null".to_owned())])
        .await
        .is_ok());
    assert_eq!(
        handshake(
            &file_pages,
            &[("Origin", "https://other.example".to_owned())]
        )
        .await
        .err(),
        Some(403)
    );
    let any = Server::start_with(&[("MQWS_HTTP__ALLOWED_ORIGINS", "[\"*\"]")], None);
    assert!(
        handshake(&any, &[("Origin", "https://other.example".to_owned())])
            .await
            .is_ok()
    );
    for (server, what) in [(&file_pages, "\"null\""), (&any, "\"*\"")] {
        let log = server.tail_text();
        assert!(
            log.contains("WARN") && log.contains(&format!("http.allowed_origins has {what}")),
            "start-up warning for {what}: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_filters_allowed_without_auth() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["$SYS/#", "site/#"]).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(w["filters"], json!(["$SYS/#", "site/#"]), "{w}");
    let r = request(
        &mut ws,
        json!({"type":"subscribe","id":1,"filters":["$bridge/+/x"]}),
    )
    .await;
    assert_eq!(r["type"], "subscribed", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_publish_rate() {
    let server = Server::start_with(
        &[
            ("MQWS_WS__MAX_CONNECTIONS", "2"),
            ("MQWS_WS__PUBLISH_RATE", "5"),
            ("MQWS_WS__PUBLISH_BURST", "5"),
        ],
        None,
    );
    let mut a = ws_connect(&server).await;
    let _b = ws_connect(&server).await;
    assert_eq!(
        handshake(&server, &[]).await.err(),
        Some(503),
        "third connection refused"
    );
    hello(&mut a, &[]).await;
    for id in 0..12 {
        send_json(
            &mut a,
            &json!({"type":"publish","id":id,"topic":"rate/x","payload":id}),
        )
        .await;
    }
    let mut limited = Vec::new();
    for _ in 0..12 {
        let r = next_json(&mut a, TIMEOUT).await;
        if r["code"] == "rate_limited" {
            limited.push(r["id"].as_u64().unwrap());
        } else {
            assert_eq!(r["type"], "puback", "{r}");
        }
    }
    assert!(
        limited.len() >= 5,
        "bursts above the limit are refused with the id: {limited:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = request(
        &mut a,
        json!({"type":"publish","id":99,"topic":"rate/x","payload":1}),
    )
    .await;
    assert_eq!(r["type"], "puback", "the bucket refills: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls_files = test_cert(dir.path());
    let server = Server::start_configured(&tls_files.config, &[], None);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls_files.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = format!("wss://localhost:{}/ws", server.http_addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"type":"hello"}).to_string(),
    ))
    .await
    .unwrap();
    let w = loop {
        match ws.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                break serde_json::from_str::<Value>(&t).unwrap()
            }
            _ => continue,
        }
    };
    assert_eq!(w["type"], "welcome");
    // Plain HTTP on the TLS port does not get through.
    let mut plain = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TIMEOUT, plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("200"),
        "no plaintext service on the TLS port"
    );
}

use futures_util::SinkExt;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_sockets_are_cut_off_and_never_block_real_clients() {
    let server = Server::start_with(&[("MQWS_HTTP__HANDSHAKE_TIMEOUT", "1s")], None);
    let baseline = open_fds(server.pid());
    let mut trickling = Vec::new();
    for _ in 0..500 {
        let mut s = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHo").await.unwrap();
        trickling.push(s);
    }
    // A real client gets through while 500 sockets are trickling.
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["s/#"]).await;
    ping_pong(&mut ws, 1).await;
    // Keep trickling a byte at a time; the server must close them at the handshake deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    for s in trickling.iter_mut() {
        let _ = s.write_all(b"s").await;
    }
    for s in trickling.iter_mut() {
        let mut buf = [0u8; 256];
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            // hyper may answer 408 before closing; then the close follows.
            Ok(Ok(_)) => {
                if matches!(
                    tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                ) {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
    }
    assert_eq!(
        closed, 500,
        "every trickling socket is closed by the handshake timeout"
    );
    drop(trickling);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while open_fds(server.pid()) > baseline + 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fds back to baseline: {} vs {baseline}",
            open_fds(server.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ping_pong(&mut ws, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mqtt_packets_disconnect_only_their_client() {
    let server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["ok/#"]).await;
    let connect = [
        0x10u8, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'b', b'x',
    ];
    let bad: [&[u8]; 3] = [
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f], // remaining length over 4 bytes
        &[0x36, 5, 0, 3, b'a', b'/', b'b'],    // PUBLISH with QoS 3
        &[0x30, 6, 0, 4, b'a', b'/', b'+', b'x'], // wildcard in a PUBLISH topic
    ];
    for (i, packet) in bad.iter().enumerate() {
        let mut s = tokio::net::TcpStream::connect(server.mqtt_addr)
            .await
            .unwrap();
        let mut c = connect;
        c[15] = b'0' + i as u8;
        s.write_all(&c).await.unwrap();
        let mut ack = [0u8; 4];
        tokio::time::timeout(TIMEOUT, s.read_exact(&mut ack))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack, [0x20, 2, 0, 0]);
        s.write_all(packet).await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("case {i}: not disconnected within {TIMEOUT:?}"));
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "case {i}: the broker must drop this client, got {r:?}"
        );
    }
    let mqtt = mqtt_client(&server, "good").await;
    mqtt.publish("ok/still", QoS::AtLeastOnce, false, "fine")
        .await;
    assert_eq!(next_message(&mut ws, TIMEOUT).await["topic"], "ok/still");
}
