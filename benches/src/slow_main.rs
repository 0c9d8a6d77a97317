//! `mqws-slow-readers`: WebSocket subscribers that read slower than the stream, to run beside
//! `mqws-load` (attached to the same mqws) and measure what slow clients cost the others.
//!
//! Each reader subscribes, then reads at most `--rate` message frames per second for
//! `--duration` seconds, checking that seqs only increase. At the end it prints one line per
//! outcome: how many messages were read (live and `replay:true`), `caught_up` frames, and how
//! many readers were closed (with which code).
//!
//! ```text
//! target/release/mqws-slow-readers --http 127.0.0.1:18080 --readers 100 --rate 50 --duration 20
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Slow WebSocket readers for mqws.
#[derive(Debug, Parser)]
#[command(name = "mqws-slow-readers", version, about)]
struct Args {
    /// HTTP address of a running mqws.
    #[arg(long)]
    http: SocketAddr,
    /// Number of readers.
    #[arg(long, default_value_t = 100)]
    readers: usize,
    /// Most message frames each reader reads per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long each reader reads, in seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Subscription filter.
    #[arg(long, default_value = "bench/#")]
    filter: String,
    /// Receive buffer of each reader's socket, in bytes (small, so the kernel does not absorb
    /// the backlog).
    #[arg(long, default_value_t = 16384)]
    recv_buffer: u32,
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Outcome {
    live: u64,
    replayed: u64,
    caught_up: u64,
    gaps: u64,
    seq_violations: u64,
    closed: Option<String>,
}

async fn reader(args: &Args, until: Instant) -> anyhow::Result<Outcome> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(args.recv_buffer)?;
    let stream = socket.connect(args.http).await?;
    let mut req = format!("ws://{}/ws", args.http).into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("mqws.v1.json"),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .context("handshake")?;
    let hello = serde_json::json!({"type": "hello", "filters": [args.filter]});
    ws.send(Message::text(hello.to_string())).await?;
    let mut out = Outcome::default();
    let (mut last, mut read) = (0u64, 0u64);
    let started = Instant::now();
    while Instant::now() < until {
        let next = tokio::time::timeout_at(until, ws.next()).await;
        let msg = match next {
            Err(_) | Ok(None) => break,
            Ok(Some(m)) => m?,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(c) => {
                out.closed =
                    Some(c.map_or("no code".to_owned(), |c| u16::from(c.code).to_string()));
                break;
            }
            _ => continue,
        };
        let v: serde_json::Value = serde_json::from_str(text.as_str())?;
        match v["type"].as_str() {
            Some("message") => {
                let seq = v["seq"].as_u64().unwrap_or(0);
                if seq <= last {
                    out.seq_violations += 1;
                }
                last = seq;
                if v["replay"] == true {
                    out.replayed += 1;
                } else {
                    out.live += 1;
                }
                read += 1;
                let due = started + Duration::from_secs_f64(read as f64 / args.rate);
                tokio::time::sleep_until(due).await;
            }
            Some("caught_up") => out.caught_up += 1,
            Some("gap") => out.gaps += 1,
            Some("welcome") => {}
            other => bail!("unexpected frame {other:?}"),
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(Args::parse());
    let until = Instant::now() + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for _ in 0..args.readers {
        let args = args.clone();
        tasks.push(tokio::spawn(async move { reader(&args, until).await }));
    }
    let mut total = Outcome::default();
    let mut closes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Ok(o) => {
                total.live += o.live;
                total.replayed += o.replayed;
                total.caught_up += o.caught_up;
                total.gaps += o.gaps;
                total.seq_violations += o.seq_violations;
                if let Some(c) = o.closed {
                    *closes.entry(c).or_default() += 1;
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("reader failed: {e:#}");
            }
        }
    }
    println!(
        "slow readers: {} at {} msg/s for {} s: read {} live + {} replayed, {} caught_up, {} gaps, {} seq violations, closed {:?}, failed {}",
        args.readers,
        args.rate,
        args.duration,
        total.live,
        total.replayed,
        total.caught_up,
        total.gaps,
        total.seq_violations,
        closes,
        failed
    );
    Ok(())
}
