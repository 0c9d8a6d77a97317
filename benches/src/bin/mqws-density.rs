//! `mqws-density`: opens N idle WebSocket connections all at once from one source address and
//! holds them, for the connection-density benchmark of issue 11 (`benches/density.sh`).
//!
//! `--mode mqws`: subprotocol `mqws.v1.json`, `{"type":"hello","filters":[F]}`, wait for
//! `welcome`. `--mode mosquitto`: MQTT over WebSocket (subprotocol `mqtt`), CONNECT, wait for
//! CONNACK, SUBSCRIBE to F (QoS 0), wait for SUBACK; the MQTT packets are rumqttc's
//! `mqttbytes` v4 codec. Every client socket is bound to `--source` (e.g. 127.0.0.2) so that
//! several processes on several loopback addresses can open more connections than one
//! address's ephemeral ports and one process's file limit allow.
//!
//! All connections start at `--start-at-ms` (Unix ms, shared by the processes of one burst);
//! the tool reports, as one JSON line on stdout (and in `--ready-file`), how many were ready and
//! when the last one was ready, counted from that instant. It then reads (answering pings) until
//! `--hold` seconds after the start and reports how many the server closed meanwhile.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _};
use mqws_benches::mqtt_ws;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// mqws's own protocol: hello → welcome.
    Mqws,
    /// MQTT over WebSocket: CONNECT → CONNACK, SUBSCRIBE → SUBACK.
    Mosquitto,
}

/// Opens N idle WebSocket connections at once from one source address and holds them.
#[derive(Debug, Parser)]
#[command(name = "mqws-density")]
struct Args {
    /// Protocol spoken after the WebSocket handshake.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Server address (host:port).
    #[arg(long)]
    server: SocketAddr,
    /// Request path: `/ws` for mqws, `/mqtt` (any) for Mosquitto.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Connections to open.
    #[arg(long)]
    connections: usize,
    /// Local address every client socket binds to (port 0).
    #[arg(long, default_value = "127.0.0.1")]
    source: IpAddr,
    /// The one filter (mqws) / topic (Mosquitto) each connection subscribes to.
    #[arg(long, default_value = "idle/nobody")]
    filter: String,
    /// Start instant, Unix ms (default: now).
    #[arg(long)]
    start_at_ms: Option<u64>,
    /// Seconds after the start until the connections are closed.
    #[arg(long, default_value_t = 30)]
    hold: u64,
    /// Seconds a connection may take to be ready.
    #[arg(long, default_value_t = 60)]
    open_timeout: u64,
    /// Client id prefix (Mosquitto mode; must be unique over processes).
    #[arg(long, default_value = "density")]
    id_prefix: String,
    /// MQTT keep-alive seconds sent in CONNECT (Mosquitto mode).
    #[arg(long, default_value_t = 600)]
    keep_alive: u16,
    /// Where to write the ready summary (JSON) once every connection is ready or failed.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

type Ws = WebSocketStream<TcpStream>;

async fn open(args: &Args, i: usize) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(args.source, 0))
        .context("bind source address")?;
    let stream = socket.connect(args.server).await.context("TCP connect")?;
    let _ = stream.set_nodelay(true);
    let proto = match args.mode {
        Mode::Mqws => "mqws.v1.json",
        Mode::Mosquitto => "mqtt",
    };
    let mut req = format!("ws://{}{}", args.server, args.path).into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(proto));
    // A small read buffer: the generator's memory is not what is measured, but 15,000
    // connections with tungstenite's 128 KiB default would take ~2 GB.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    let got = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if got != proto {
        bail!("server answered subprotocol {got:?}, expected {proto:?}");
    }
    match args.mode {
        Mode::Mqws => {
            let hello = serde_json::json!({"type": "hello", "filters": [args.filter]});
            ws.send(Message::text(hello.to_string())).await?;
            loop {
                match ws.next().await.context("closed before welcome")?? {
                    Message::Text(t) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                        if v.get("type").and_then(|t| t.as_str()) == Some("welcome") {
                            return Ok(ws);
                        }
                        bail!("expected welcome, got {}", t.as_str());
                    }
                    Message::Close(c) => bail!("closed before welcome: {c:?}"),
                    _ => {}
                }
            }
        }
        Mode::Mosquitto => {
            let id = format!("{}-{}-{i}", args.id_prefix, args.source);
            mqtt_ws::connect_and_subscribe(&mut ws, id, args.keep_alive, &args.filter).await?;
            Ok(ws)
        }
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    done: AtomicU64,
    last_ok_us: AtomicU64,
    closed_by_server: AtomicU64,
    frames_after_ready: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    // One thread: the generator shares the 2 cores with the server under test.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Arc<Args>) -> anyhow::Result<()> {
    let start_us = args.start_at_ms.map(|m| m * 1000).unwrap_or_else(now_us);
    let wait = start_us.saturating_sub(now_us());
    tokio::time::sleep(Duration::from_micros(wait)).await;
    let late_start_us = now_us().saturating_sub(start_us);
    let hold_until = tokio::time::Instant::now() + Duration::from_secs(args.hold);
    let counts = Arc::new(Counts::default());
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ready_at = Arc::new(std::sync::Mutex::new(Vec::<u64>::with_capacity(
        args.connections,
    )));
    let (all_done_tx, mut all_done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let args = args.clone();
        let counts = counts.clone();
        let errors = errors.clone();
        let ready_at = ready_at.clone();
        let all_done = all_done_tx.clone();
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(args.open_timeout), open(&args, i))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("open timed out")));
            let n = args.connections as u64;
            let ws = match r {
                Ok(ws) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                    let t = now_us();
                    counts.last_ok_us.fetch_max(t, Ordering::Relaxed);
                    if let Ok(mut v) = ready_at.lock() {
                        v.push(t.saturating_sub(start_us));
                    }
                    Some(ws)
                }
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut v) = errors.lock() {
                        if v.len() < 5 {
                            v.push(format!("{e:#}"));
                        }
                    }
                    None
                }
            };
            if counts.done.fetch_add(1, Ordering::Relaxed) + 1 == n {
                let _ = all_done.try_send(());
            }
            drop(all_done);
            let Some(mut ws) = ws else { return };
            // Idle: read (tungstenite answers pings) until the hold ends.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(hold_until) => break,
                    m = ws.next() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(_)) => {
                            counts.frames_after_ready.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        }));
    }
    drop(all_done_tx);
    if args.connections > 0 {
        let _ = all_done_rx.recv().await;
    }
    let ok = counts.ok.load(Ordering::Relaxed);
    let last = counts.last_ok_us.load(Ordering::Relaxed);
    let mut times = ready_at.lock().map(|v| v.clone()).unwrap_or_default();
    times.sort_unstable();
    let pct = |q: f64| -> f64 {
        if times.is_empty() {
            return -1.0;
        }
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[i] as f64 / 1000.0
    };
    // Ready within 1 s / 3 s: a SYN dropped by a full listen queue is retransmitted after 1 s,
    // then 3 s after the first.
    let within = |ms: u64| times.iter().filter(|&&t| t <= ms * 1000).count();
    let summary = serde_json::json!({
        "ready_p50_ms": pct(0.5),
        "ready_p90_ms": pct(0.9),
        "ready_p99_ms": pct(0.99),
        "ready_within_1s": within(1000),
        "ready_within_3s": within(3000),
        "source": args.source.to_string(),
        "mode": format!("{:?}", args.mode),
        "connections": args.connections,
        "ready": ok,
        "failed": counts.failed.load(Ordering::Relaxed),
        "start_at_us": start_us,
        "late_start_ms": late_start_us as f64 / 1000.0,
        "last_ready_ms": if ok > 0 { last.saturating_sub(start_us) as f64 / 1000.0 } else { -1.0 },
        "errors": errors.lock().map(|v| v.clone()).unwrap_or_default(),
    });
    println!("{summary}");
    if let Some(p) = &args.ready_file {
        std::fs::write(p, summary.to_string() + "\n").context("writing the ready file")?;
    }
    for t in tasks {
        let _ = t.await;
    }
    let end = serde_json::json!({
        "source": args.source.to_string(),
        "closed_by_server": counts.closed_by_server.load(Ordering::Relaxed),
        "frames_after_ready": counts.frames_after_ready.load(Ordering::Relaxed),
    });
    println!("{end}");
    Ok(())
}
