//! `mqws-catchup storm`: C clients open server-held sessions and disconnect; M messages per
//! client are published while they are away; then all C resume at once with `session` +
//! `resume_token`. Measures the time until every client has `caught_up` with all its M
//! messages (no loss, no duplicate, seq strictly increasing), and mqws's peak RSS. With
//! `--protocol mqtt` the clients are MQTT 3.1.1 persistent sessions ([`super::mqtt_client`]),
//! caught up when they have all M; `both` runs the two on fresh servers and prints the ratio.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::cli::{Common, Protocol, StormArgs, Topology};
use super::client::{self, Expect, Outcome};
use super::common::{self, CpuMark, CpuUse, DataDir, RssUse, RssWatch};
use super::fill::{self, FillConfig, FillReport, FillSpec};
use super::metrics;
use super::mqtt_client;
use super::replay::{describe_problems, settle};
use crate::server::StopInfo;

/// Distribution of one per-client time, ms since the storm started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Self {
        Self {
            p50: common::quantile(&mut v, 0.5),
            p90: common::quantile(&mut v, 0.9),
            p99: common::quantile(&mut v, 0.99),
            max: common::quantile(&mut v, 1.0),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// UTC start time.
    pub started: String,
    /// WebSocket or MQTT sessions.
    pub protocol: Protocol,
    /// Clients.
    pub clients: u32,
    /// Messages each client missed.
    pub missed: u64,
    /// Own topic per client or one shared topic.
    pub topology: Topology,
    /// Environment of every server (the benchmark's connection limits first).
    pub server_env: Vec<String>,
    /// Environment of the fill server only.
    pub fill_env: Vec<String>,
    /// Seconds to open (and close) the C sessions.
    pub subscribe_seconds: f64,
    /// The fill.
    pub fill: FillReport,
    /// Ready time of the restarted server, when restarted.
    pub restart_ready_ms: Option<u64>,
    /// Handshake done.
    pub connected_ms: Spread,
    /// `welcome` received.
    pub welcome_ms: Spread,
    /// `caught_up` received (with all M messages before it when complete).
    pub caught_up_ms: Spread,
    /// Start of the storm → the last client that caught up did, seconds.
    pub last_caught_up_s: Option<f64>,
    /// Whether every client received `caught_up`.
    pub all_caught_up: bool,
    /// Replayed messages received over all clients.
    pub delivered: u64,
    /// `delivered / last_caught_up_s`.
    pub delivered_per_s: Option<f64>,
    /// Clients that caught up completely and cleanly.
    pub complete_clients: u32,
    /// Clients whose `welcome` said `resumed: false`.
    pub not_resumed: u32,
    /// Clients whose `welcome` said `recovered` other than true.
    pub not_recovered: u32,
    /// Sums over clients.
    pub missing: u64,
    /// Duplicates summed over clients.
    pub duplicates: u64,
    /// Unexpected messages summed over clients.
    pub unexpected: u64,
    /// seq violations summed over clients.
    pub seq_violations: u64,
    /// Failures by reason.
    pub failures: std::collections::BTreeMap<String, u32>,
    /// Increase of `mqws_replay_messages_total`.
    pub server_replayed: u64,
    /// Increase of `mqws_slow_consumer_closes_total`.
    pub slow_consumer_closes: u64,
    /// Increase of `mqws_ws_pong_timeouts_total` (connections mqws dropped for a late pong).
    pub pong_timeouts: u64,
    /// Clients whose `welcome` came more than 30 s (ws.ping_interval + ws.pong_timeout by
    /// default) after their handshake.
    pub welcome_after_30s: u32,
    /// Every client's outcome (JSON only).
    pub outcomes: Vec<Outcome>,
    /// CPU during the storm.
    pub cpu: CpuUse,
    /// mqws memory during the storm.
    pub rss: RssUse,
    /// Shutdown of the server.
    pub server_stop: Option<StopInfo>,
    /// Anything odd.
    pub notes: Vec<String>,
}

/// Runs the storm benchmark: once, or for both protocols with the ratio of their times.
pub async fn run(common: &Common, args: &StormArgs) -> anyhow::Result<()> {
    if args.protocol != Protocol::Both {
        return run_one(common, args, args.protocol).await.map(|_| ());
    }
    let ws = run_one(common, args, Protocol::Ws).await?;
    let mqtt = run_one(common, args, Protocol::Mqtt).await?;
    if let (Some(w), Some(m)) = (ws, mqtt) {
        println!(
            "MQTT storm ÷ WebSocket storm, time to the last client caught up: {m:.2} s ÷ {w:.2} s = {:.2}",
            m / w.max(1e-9)
        );
    }
    Ok(())
}

/// A session to resume.
enum Resume {
    Ws(String, String),
    Mqtt(String),
}

/// One storm; returns the seconds until the last client caught up.
async fn run_one(
    common: &Common,
    args: &StormArgs,
    protocol: Protocol,
) -> anyhow::Result<Option<f64>> {
    let started = common::utc_now();
    let dir = DataDir::new(common.data_dir.as_deref())?;
    let c = args.clients;
    let m = args.missed;
    // Connection limits high enough for the storm; the user's --server-env comes after and wins.
    let limit = (2 * u64::from(c)).max(10_000);
    let mut server_env = vec![
        format!("MQWS_WS__MAX_CONNECTIONS={limit}"),
        format!("MQWS_HTTP__MAX_CONNECTIONS={limit}"),
        format!("MQWS_BROKER__MAX_CONNECTIONS={limit}"),
        format!("MQWS_BROKER__MAX_PENDING_PER_SOURCE={limit}"),
        format!("MQWS_BROKER__MAX_PENDING_CONNECTS={limit}"),
        format!("MQWS_BROKER__MAX_SESSIONS={limit}"),
    ];
    server_env.extend(common.server_env.iter().cloned());
    let fill_env: Vec<String> = server_env.iter().chain(&args.fill_env).cloned().collect();
    let mut notes = Vec::new();
    let mut srv = common::start(
        common,
        &dir.path,
        &fill_env,
        common::log_file(common, 1).as_deref(),
    )
    .await?;

    let topic = |i: u32| match args.topology {
        Topology::Own => format!("storm/{i}"),
        Topology::Shared => "storm/all".to_owned(),
    };

    // 1. Open C sessions (bounded concurrency) and close them again.
    eprintln!("mqws-catchup: opening {c} sessions");
    let t_sub = Instant::now();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = Vec::new();
    let mqtt_id = |i: u32| format!("storm-{}-{i}", std::process::id());
    for i in 0..c {
        let (gate, http, filter) = (gate.clone(), srv.http, topic(i));
        let (mqtt, id) = (srv.mqtt, mqtt_id(i));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            tokio::time::timeout(Duration::from_secs(30), async {
                if protocol == Protocol::Mqtt {
                    mqtt_client::open_session(mqtt, &id, &filter).await?;
                    return Ok(Resume::Mqtt(id));
                }
                let mut ws = client::connect(http).await?;
                let w =
                    client::hello(&mut ws, &json!({"type": "hello", "filters": [filter]})).await?;
                client::close(ws).await;
                let s = w.get("session").and_then(Value::as_str);
                let t = w.get("resume_token").and_then(Value::as_str);
                match (s, t) {
                    (Some(s), Some(t)) => Ok(Resume::Ws(s.to_owned(), t.to_owned())),
                    _ => bail!("welcome without session/resume_token: {w}"),
                }
            })
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("opening a session timed out")))
        }));
    }
    let mut sessions = Vec::with_capacity(c as usize);
    for (i, t) in tasks.into_iter().enumerate() {
        let s = t
            .await
            .context("session task")?
            .with_context(|| format!("client {i}: opening its session"))?;
        sessions.push(s);
    }
    let subscribe_seconds = t_sub.elapsed().as_secs_f64();
    let (conns, closed) = metrics::wait_count(
        srv.http,
        "mqws_ws_connections",
        |v| v == 0,
        Duration::from_millis(50),
        Duration::from_secs(30),
        Duration::from_secs(60),
    )
    .await?;
    if !closed {
        bail!("mqws still reports {conns} WebSocket connections after the clients closed");
    }
    eprintln!("mqws-catchup: {c} sessions opened and closed in {subscribe_seconds:.1} s");

    // 2. Publish M messages per client while they are away.
    let (counts, spec) = match args.topology {
        Topology::Own => {
            // Publisher p serves clients p, p+P, …; its k-th message goes to client
            // p + P·(k mod mine) with counter k / mine; the stamp's `p` is the client.
            let pubs = common.publishers.min(c);
            let mine: Vec<u64> = (0..pubs)
                .map(|p| u64::from((c - p).div_ceil(pubs)))
                .collect();
            let counts: Vec<u64> = mine.iter().map(|k| k * m).collect();
            let mine2 = mine.clone();
            let spec = FillSpec {
                counts: counts.clone(),
                message: Arc::new(move |p, k| {
                    let per = mine2[p as usize];
                    let client = p as u64 + u64::from(pubs) * (k % per);
                    (format!("storm/{client}"), client as u32, k / per)
                }),
            };
            (counts, spec)
        }
        Topology::Shared => {
            let counts = fill::split(m, common.publishers);
            let spec = FillSpec {
                counts: counts.clone(),
                message: Arc::new(|p, n| ("storm/all".to_owned(), p, n)),
            };
            (counts, spec)
        }
    };
    let fill_cfg = FillConfig {
        http: srv.http,
        mqtt: srv.mqtt,
        pid: srv.pid,
        payload_bytes: common.payload_bytes,
        inflight: common.inflight,
        window: common.window,
        rate: common.rate,
        timeout: Duration::from_secs(args.fill_timeout),
        client_prefix: format!("mqws-catchup-{}-fill", std::process::id()),
        tag: 2,
    };
    eprintln!(
        "mqws-catchup: publishing {} messages ({m} per client, topology {:?})",
        spec.total(),
        args.topology
    );
    let fill_report = fill::fill(&fill_cfg, &spec).await?;
    if !fill_report.complete {
        notes.push(format!(
            "fill incomplete: {} of {} logged ({} dropped by the broker)",
            fill_report.logged, fill_report.target, fill_report.broker_dropped
        ));
    }
    let mut restart_ready_ms = None;
    if !args.fill_env.is_empty() {
        common::stop(srv)?;
        srv = common::start(
            common,
            &dir.path,
            &server_env,
            common::log_file(common, 2).as_deref(),
        )
        .await?;
        restart_ready_ms = Some(srv.ready_ms);
    }

    // 3. The storm: every client resumes at once.
    settle(srv.pid).await;
    let before = metrics::scrape(srv.http).await?;
    let rss = RssWatch::start(srv.pid);
    let cpu = CpuMark::now(srv.pid);
    eprintln!("mqws-catchup: {c} clients resume at once");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.timeout);
    let mut tasks = Vec::with_capacity(c as usize);
    for (i, resume) in sessions.into_iter().enumerate() {
        let expect = match args.topology {
            Topology::Own => {
                let mut v = vec![0; i + 1];
                v[i] = m;
                Expect::new(v, |_, _| true)
            }
            Topology::Shared => Expect::new(counts.clone(), |_, _| true),
        };
        let (http, mqtt) = (srv.http, srv.mqtt);
        tasks.push(tokio::spawn(async move {
            match resume {
                Resume::Ws(session, token) => {
                    let hello = json!({"type": "hello", "session": session, "resume_token": token});
                    client::catch_up(http, &hello, expect, t0, deadline).await
                }
                Resume::Mqtt(id) => mqtt_client::catch_up(mqtt, id, expect, t0, deadline).await,
            }
        }));
    }
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap_or_else(|e| Outcome {
            failed: Some(format!("task: {e}")),
            ..Outcome::default()
        }));
    }
    let cpu = cpu.since(srv.pid);
    let rss = rss.finish().await;
    let after = metrics::scrape(srv.http).await?;

    let clean = |o: &Outcome| {
        o.failed.is_none()
            && o.resumed == Some(true)
            && o.recovered == Some(true)
            && o.missing == 0
            && o.duplicates == 0
            && o.unexpected == 0
            && o.seq_violations == 0
            && o.replay_flag_missing == 0
            && o.replayed == m
            && o.after_caught_up == 0
    };
    let mut failures = std::collections::BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        if !clean(o) {
            let why = describe_problems(o);
            let why = if o.resumed != Some(true) {
                format!("resumed {:?}; {why}", o.resumed)
            } else {
                why
            };
            if failures.len() < 5 && !failures.contains_key(&why) {
                notes.push(format!("client {i}: {why}"));
            }
            *failures.entry(why).or_insert(0u32) += 1;
        }
    }
    let collect = |f: fn(&Outcome) -> Option<f64>| outcomes.iter().filter_map(f).collect();
    let caught: Vec<f64> = collect(|o| o.caught_up_ms);
    let all_caught_up = caught.len() == outcomes.len();
    let last_caught_up_s =
        (!caught.is_empty()).then(|| caught.iter().copied().fold(0.0, f64::max) / 1000.0);
    let delivered: u64 = outcomes.iter().map(|o| o.replayed).sum();
    let report = StormReport {
        started,
        protocol,
        clients: c,
        missed: m,
        topology: args.topology,
        server_env: server_env.clone(),
        fill_env: args.fill_env.clone(),
        subscribe_seconds,
        fill: fill_report,
        restart_ready_ms,
        connected_ms: Spread::of(collect(|o| o.connected_ms)),
        welcome_ms: Spread::of(collect(|o| o.welcome_ms)),
        caught_up_ms: Spread::of(caught),
        last_caught_up_s,
        all_caught_up,
        delivered,
        delivered_per_s: last_caught_up_s.map(|s| delivered as f64 / s.max(1e-9)),
        complete_clients: outcomes.iter().filter(|o| clean(o)).count() as u32,
        not_resumed: outcomes.iter().filter(|o| o.resumed != Some(true)).count() as u32,
        not_recovered: outcomes
            .iter()
            .filter(|o| o.recovered != Some(true))
            .count() as u32,
        missing: outcomes.iter().map(|o| o.missing).sum(),
        duplicates: outcomes.iter().map(|o| o.duplicates).sum(),
        unexpected: outcomes.iter().map(|o| o.unexpected).sum(),
        seq_violations: outcomes.iter().map(|o| o.seq_violations).sum(),
        failures,
        server_replayed: after
            .count("mqws_replay_messages_total")
            .saturating_sub(before.count("mqws_replay_messages_total")),
        slow_consumer_closes: after
            .count("mqws_slow_consumer_closes_total")
            .saturating_sub(before.count("mqws_slow_consumer_closes_total")),
        pong_timeouts: after
            .count("mqws_ws_pong_timeouts_total")
            .saturating_sub(before.count("mqws_ws_pong_timeouts_total")),
        welcome_after_30s: outcomes
            .iter()
            .filter(|o| match (o.connected_ms, o.welcome_ms) {
                (Some(c), Some(w)) => w - c > 30_000.0,
                _ => false,
            })
            .count() as u32,
        outcomes: outcomes.clone(),
        cpu,
        rss,
        server_stop: common::stop(srv)?,
        notes,
    };
    let mut report = report;
    if let Some(s) = &report.server_stop {
        if s.killed || s.exit_code != Some(0) {
            report.notes.push(format!(
                "mqws did not exit cleanly after SIGTERM: exit {:?}, killed {}",
                s.exit_code, s.killed
            ));
        }
        if s.warn_lines + s.error_lines > 0 {
            report.notes.push(format!(
                "mqws logged {} WARN and {} ERROR lines; first: {:?}",
                s.warn_lines,
                s.error_lines,
                s.first_warnings.first()
            ));
        }
    }
    if report.cpu.other_pct.is_some_and(|o| o >= 20.0) {
        report.notes.push(format!(
            "other processes used {:.0}% of a core during the storm; figures disturbed",
            report.cpu.other_pct.unwrap_or(0.0)
        ));
    }
    print(&report, common.markdown);
    common::write_json(common.json.as_deref(), &report)?;
    anyhow::ensure!(
        report.complete_clients == c,
        "{} of {c} clients did not catch up completely (see notes)",
        c - report.complete_clients
    );
    Ok(report.last_caught_up_s)
}

fn print(r: &StormReport, markdown: bool) {
    let f = &r.fill;
    println!(
        "storm benchmark ({}): {:?} sessions, {} clients × {} missed messages, topology {:?}",
        r.started, r.protocol, r.clients, r.missed, r.topology
    );
    println!(
        "sessions opened and closed in {:.1} s; fill: {} logged in {:.1} s = {:.0} msgs/s, broker drops {}",
        r.subscribe_seconds, f.logged, f.seconds, f.logged_per_s, f.broker_dropped
    );
    if let Some(ms) = r.restart_ready_ms {
        println!("restarted before the storm: ready in {ms} ms");
    }
    let s = |x: &Spread| {
        format!(
            "p50 {} / p90 {} / p99 {} / max {}",
            common::opt(x.p50, 0),
            common::opt(x.p90, 0),
            common::opt(x.p99, 0),
            common::opt(x.max, 0)
        )
    };
    println!("connected ms: {}", s(&r.connected_ms));
    println!("welcome ms:   {}", s(&r.welcome_ms));
    println!("caught_up ms: {}", s(&r.caught_up_ms));
    println!(
        "{} {} caught up, the last after {} s; {} replayed messages received ({} msgs/s); complete clients {}/{}",
        if r.all_caught_up { "all" } else { "NOT all" },
        r.clients,
        common::opt(r.last_caught_up_s, 2),
        r.delivered,
        common::opt(r.delivered_per_s, 0),
        r.complete_clients,
        r.clients
    );
    println!(
        "missing {}, duplicates {}, unexpected {}, seq violations {}, not resumed {}, not recovered {}, \
         slow-consumer closes {}, pong-timeout drops {}, welcome > 30 s after handshake {}, server replayed {}",
        r.missing,
        r.duplicates,
        r.unexpected,
        r.seq_violations,
        r.not_resumed,
        r.not_recovered,
        r.slow_consumer_closes,
        r.pong_timeouts,
        r.welcome_after_30s,
        r.server_replayed
    );
    println!(
        "mqws RSS {} MiB at the start, peak {} MiB (sampled max {} MiB), CPU {}% of a core; bench {}%, other {}%",
        common::mib_kib(r.rss.start_kib),
        common::mib_kib(r.rss.peak_kib),
        common::mib_kib(Some(r.rss.max_sampled_kib)),
        common::opt(r.cpu.server_pct, 0),
        common::opt(r.cpu.bench_pct, 0),
        common::opt(r.cpu.other_pct, 0)
    );
    for n in &r.notes {
        println!("note: {n}");
    }
    if markdown {
        println!();
        println!("| protocol | clients × missed | topology | welcome p50 / p99 / max ms | caught_up p50 / p99 / max ms | last caught up s | replayed msgs/s | complete | missing / dup / seq viol. | mqws RSS at start → peak MiB | mqws CPU % | bench CPU % | other CPU % |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {:?} | {} × {} | {:?} | {} / {} / {} | {} / {} / {} | {} | {} | {}/{} | {} / {} / {} | {} → {} | {} | {} | {} |",
            r.protocol,
            r.clients,
            r.missed,
            r.topology,
            common::opt(r.welcome_ms.p50, 0),
            common::opt(r.welcome_ms.p99, 0),
            common::opt(r.welcome_ms.max, 0),
            common::opt(r.caught_up_ms.p50, 0),
            common::opt(r.caught_up_ms.p99, 0),
            common::opt(r.caught_up_ms.max, 0),
            common::opt(r.last_caught_up_s, 2),
            common::opt(r.delivered_per_s, 0),
            r.complete_clients,
            r.clients,
            r.missing,
            r.duplicates,
            r.seq_violations,
            common::mib_kib(r.rss.start_kib),
            common::mib_kib(r.rss.peak_kib),
            common::opt(r.cpu.server_pct, 0),
            common::opt(r.cpu.bench_pct, 0),
            common::opt(r.cpu.other_pct, 0),
        );
    }
}
