//! A stand-in for `mqws` to self-test the `mqws-load` harness without the real server.
//!
//! It speaks just enough of the wire contract (`hello` → `welcome`, `message` frames with a
//! strictly increasing `seq`, `enc` json/text/base64 simplified to json/text) on top of an
//! external MQTT broker given in `FAKE_MQWS_BROKER` (e.g. a local mosquitto), and accepts the
//! real server's command line, so it can be started by `mqws-load --mqws-bin`:
//!
//! ```text
//! FAKE_MQWS_BROKER=127.0.0.1:1883 target/debug/mqws-load \
//!     --mqws-bin target/debug/examples/fake_mqws --duration 3
//! ```
//!
//! It is not a benchmark subject: it has no log, no limits and one broadcast channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use mqws_benches::phase::topic_matches;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Frame = (String, Arc<str>);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let broker: SocketAddr = std::env::var("FAKE_MQWS_BROKER")
        .unwrap_or_else(|_| "127.0.0.1:1883".into())
        .parse()?;
    let args: Vec<String> = std::env::args().collect();
    let http_arg = args
        .iter()
        .position(|a| a == "--http-listen")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&http_arg).await?;
    let http = listener.local_addr()?;

    let (tx, _) = broadcast::channel::<Frame>(1 << 16);
    let mut opts = MqttOptions::new(
        format!("fake-mqws-{}", std::process::id()),
        broker.ip().to_string(),
        broker.port(),
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    client.subscribe("#", QoS::AtMostOnce).await?;
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let tx2 = tx.clone();
    tokio::spawn(async move {
        let mut seq = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    seq += 1;
                    let valid_json =
                        serde_json::from_slice::<serde::de::IgnoredAny>(&p.payload).is_ok();
                    let (payload, enc) = match std::str::from_utf8(&p.payload) {
                        Ok(text) if valid_json => (text.trim().to_string(), "json"),
                        _ => (
                            serde_json::Value::String(String::from_utf8_lossy(&p.payload).into())
                                .to_string(),
                            "text",
                        ),
                    };
                    let topic = serde_json::Value::String(p.topic.clone()).to_string();
                    let frame = format!(
                        r#"{{"type":"message","seq":{seq},"topic":{topic},"payload":{payload},"enc":"{enc}","retain":{},"ts":{}}}"#,
                        p.retain,
                        mqws_benches::payload::now_us() / 1000
                    );
                    let _ = tx2.send((p.topic, frame.into()));
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("fake_mqws WARN broker: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });

    println!("mqws ready http={http} mqtt={broker}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            acc = listener.accept() => {
                let (stream, _) = acc?;
                let rx = tx.subscribe();
                tokio::spawn(async move {
                    if let Err(e) = session(stream, rx).await {
                        eprintln!("fake_mqws WARN session: {e:#}");
                    }
                });
            }
        }
    }
}

// tungstenite fixes the callback's error type (an HTTP response).
#[allow(clippy::result_large_err)]
async fn session(stream: TcpStream, mut rx: broadcast::Receiver<Frame>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut ws =
        tokio_tungstenite::accept_hdr_async(stream, |_req: &Request, mut resp: Response| {
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("mqws.v1.json"),
            );
            Ok(resp)
        })
        .await?;
    let hello = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                break serde_json::from_str::<serde_json::Value>(t.as_str())?
            }
            Some(Ok(_)) => continue,
            _ => return Ok(()),
        }
    };
    let filters: Vec<String> = hello
        .get("filters")
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .unwrap_or_default();
    let welcome = serde_json::json!({"type":"welcome","session":"s-fake","server":"fake-mqws/0","filters":filters,"resumed":false});
    ws.send(Message::text(welcome.to_string())).await?;
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                _ => {}
            },
            f = rx.recv() => match f {
                Ok((topic, frame)) => {
                    if filters.iter().any(|f| topic_matches(f, &topic)) {
                        ws.send(Message::text(frame.to_string())).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("fake_mqws WARN lagged {n}"),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}
