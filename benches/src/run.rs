//! The whole run: start or attach to mqws (and start Mosquitto with `--mosquitto-bin`), probe
//! the storage, run the phases in order, stop the servers, report.

use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{Args, Order};
use crate::mosquitto::Mosquitto;
use crate::phase::{self, Kind, Target};
use crate::report::{Report, Scenario};
use crate::server::{self, Server, SpawnOptions};

/// Runs the benchmark described by `args` and prints/writes its reports.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut server = match args.attach() {
        Some((http, mqtt)) => Server::attach(http, mqtt, args.server_pid),
        None => tokio::task::block_in_place(|| {
            Server::spawn(&SpawnOptions {
                bin: &args.mqws_bin,
                data_dir: args.data_dir.as_deref(),
                env: &args.server_env,
                log_file: args.server_log.as_deref(),
            })
        })?,
    };
    let mut early_notes = Vec::new();
    if server.http.is_some() {
        if let Some(n) = wait_ready(&server).await {
            early_notes.push(n);
        }
    }
    // Started before any phase and killed on drop, so no error path leaves it running.
    let mut mosquitto = match &args.mosquitto_bin {
        Some(bin) => Some(tokio::task::block_in_place(|| {
            Mosquitto::spawn(bin, &args.mosquitto_conf)
        })?),
        None => None,
    };
    let storage = match args.fsync_samples {
        0 => None,
        n => {
            let dir = probe_dir(&args);
            match tokio::task::block_in_place(|| crate::storage::probe(&dir, n)) {
                Ok(s) => {
                    eprintln!("mqws-load: {}", s.line());
                    if s.in_memory() {
                        early_notes.push(format!(
                            "the data dir is on {} ({}): in memory, so fsync costs nothing and the \
                             figures say nothing about a disk",
                            s.fstype, s.mount_point
                        ));
                    }
                    Some(s)
                }
                Err(e) => {
                    early_notes.push(format!("fsync probe in {} failed: {e:#}", dir.display()));
                    None
                }
            }
        }
    };

    let started_unix_s = crate::payload::now_us() / 1_000_000;
    let run_id = format!("mqws-load-{}-{}", std::process::id(), started_unix_s);
    let target = Target {
        http: server.http,
        mqtt: server.mqtt,
        mqtt_ws: None,
        pid: server.pid,
    };
    let mosquitto_target = mosquitto.as_ref().map(|m| Target {
        http: None,
        mqtt: m.mqtt,
        mqtt_ws: Some(m.ws),
        pid: Some(m.pid),
    });
    let mut order: Vec<Kind> = match (args.run_baseline(), args.baseline_order) {
        (false, _) => vec![Kind::Ws],
        (true, Order::Before) => vec![Kind::Baseline, Kind::Ws],
        (true, Order::After) => vec![Kind::Ws, Kind::Baseline],
    };
    if args.sse_subscribers > 0 {
        // Right after the ws phase, so the two are measured back to back.
        let at = order
            .iter()
            .position(|k| *k == Kind::Ws)
            .map_or(0, |i| i + 1);
        order.insert(at, Kind::Sse);
    }
    if args.no_ws {
        order.retain(|k| *k != Kind::Ws);
    }
    if args.mqtt_ws {
        // MQTT over WebSocket end to end: one phase per server, nothing else.
        order = vec![Kind::MqttWs];
        if mosquitto.is_some() {
            order.push(Kind::MosquittoMqttWs);
        }
    } else if mosquitto.is_some() {
        // The same pair on Mosquitto, after mqws's phases (Mosquitto has no SSE).
        let extra: Vec<Kind> = order
            .iter()
            .filter_map(|k| match k {
                Kind::Baseline => Some(Kind::MosquittoMqtt),
                Kind::Ws => Some(Kind::MosquittoWs),
                _ => None,
            })
            .collect();
        order.extend(extra);
    }
    // Publishers get their own thread and runtime, so 1,000 busy subscriber tasks cannot delay
    // the pacing (or the rumqttc event loops) of the publishers.
    let publishers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("publishers")
        .enable_all()
        .build()
        .context("starting the publishers' runtime")?;
    let mut phases = Vec::new();
    let mut failure = None;
    for (i, kind) in order.into_iter().enumerate() {
        if i > 0 {
            // Let the server finish the previous phase's backlog (it keeps logging and
            // delivering after the publishers stop) before measuring the next one.
            if let Some(n) = settle("mqws", server.pid).await {
                early_notes.push(n);
            }
            if let Some(pid) = mosquitto.as_ref().map(|m| m.pid) {
                if let Some(n) = settle("mosquitto", Some(pid)).await {
                    early_notes.push(n);
                }
            }
        }
        let phase_target = match (kind.is_mosquitto(), mosquitto_target) {
            (true, Some(t)) => t,
            _ => target,
        };
        let result = phase::run(kind, &args, phase_target, &run_id, publishers_rt.handle()).await;
        if let Some(m) = mosquitto.as_mut().filter(|_| kind.is_mosquitto()) {
            if !m.alive() {
                failure = Some(anyhow::anyhow!(
                    "mosquitto died during the {} phase; last lines:\n{}",
                    kind.name(),
                    m.tail()
                ));
                break;
            }
        }
        if !server.alive() {
            failure = Some(anyhow::anyhow!(
                "mqws died during the {} phase; last stderr lines:\n{}",
                kind.name(),
                server.stderr_tail()
            ));
            break;
        }
        match result {
            Ok(p) => phases.push(p),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }

    publishers_rt.shutdown_background();
    let mosquitto_info = mosquitto
        .as_mut()
        .map(|m| tokio::task::block_in_place(|| m.stop()));
    let server_stop = tokio::task::block_in_place(|| server.stop())?;
    let mut report = Report {
        started_unix_s,
        scenario: Scenario::from_args(&args),
        spawned_server: server.spawned() || server_stop.is_some(),
        phases,
        ratios: None,
        sse_vs_ws: None,
        server_stop,
        storage,
        mosquitto: mosquitto_info,
        vs_mosquitto: Vec::new(),
        notes: Vec::new(),
    };
    report.finish();
    report.notes.splice(0..0, early_notes);

    println!("{}", report.table());
    if args.markdown {
        println!("{}", report.markdown());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The directory whose disk holds mqws's data dir: the parent of `--data-dir`, else the
/// temporary directory (where a started mqws gets its fresh data dir).
fn probe_dir(args: &Args) -> std::path::PathBuf {
    args.data_dir
        .as_deref()
        .and_then(|d| d.parent())
        .filter(|p| p.is_dir())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(std::env::temp_dir)
}

/// Waits until a server's CPU use falls below 10% of a core over 0.5 s (at most 30 s; 1 s
/// when its pid is unknown). Returns a note when it never did.
async fn settle(who: &str, pid: Option<u32>) -> Option<String> {
    let Some(pid) = pid else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return None;
    };
    let t0 = tokio::time::Instant::now();
    let step = Duration::from_millis(500);
    let mut last = crate::procstat::cpu_seconds(pid)?;
    loop {
        tokio::time::sleep(step).await;
        let now = crate::procstat::cpu_seconds(pid)?;
        let busy = (now - last) / step.as_secs_f64();
        last = now;
        if busy < 0.10 {
            eprintln!(
                "mqws-load: {who} idle after {} ms between phases",
                t0.elapsed().as_millis()
            );
            return None;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let note = format!(
                "{who} was still busy ({:.0}% CPU) 30 s after the previous phase; measured anyway",
                busy * 100.0
            );
            eprintln!("mqws-load: {note}");
            return Some(note);
        }
    }
}

/// Waits (bounded) for `GET /readyz` to answer 200; returns a note when it never did.
async fn wait_ready(server: &Server) -> Option<String> {
    let http = server.http?;
    let t0 = tokio::time::Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(10) {
        match tokio::task::spawn_blocking(move || server::http_get(http, "/readyz")).await {
            Ok(Ok((200, _))) => return None,
            Ok(Ok((code, _))) => last = format!("HTTP {code}"),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let note = format!("GET /readyz never answered 200 within 10 s (last: {last}); ran anyway");
    eprintln!("mqws-load: {note}");
    Some(note)
}
