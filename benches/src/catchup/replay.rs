//! `mqws-catchup replay`: fill a log with N messages over T topics, then time a full replay
//! (`from:"earliest"` on `bench/#`) and a selective one (`bench/t/K`, 1/T of the traffic).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::cli::{Common, ReplayArgs};
use super::client::{self, Expect, Outcome};
use super::common::{self, CpuMark, CpuUse, DataDir, RssUse, RssWatch};
use super::fill::{self, FillConfig, FillReport, FillSpec};
use super::metrics;
use crate::server::StopInfo;

/// The replay target rate of the product goal.
pub const GOAL_MSGS_PER_S: f64 = 300_000.0;

/// The log as the replays found it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogState {
    /// `mqws_log_messages`.
    pub messages: u64,
    /// `mqws_log_bytes` (topics + payloads).
    pub bytes: u64,
    /// `mqws_log_disk_bytes` (the database file's size, as of the last retention tick).
    pub disk_bytes: u64,
    /// `du -sb` of the data dir.
    pub du_bytes: Option<u64>,
    /// `mqws_log_evicted_total` (must be 0 for complete replays).
    pub evicted: u64,
}

/// One measured replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayPhase {
    /// `full` or `selective`.
    pub name: String,
    /// The filter.
    pub filter: String,
    /// What the client saw.
    pub outcome: Outcome,
    /// `hello` sent → `caught_up` received, seconds (the WebSocket handshake before it is
    /// not included).
    pub seconds: Option<f64>,
    /// Replayed messages per second over `seconds`.
    pub msgs_per_s: Option<f64>,
    /// Replayed frame bytes per second, MiB/s.
    pub mib_per_s: Option<f64>,
    /// Increase of `mqws_replay_messages_total`.
    pub server_replayed: u64,
    /// Whether the replay was complete and clean.
    pub complete: bool,
    /// CPU during the replay.
    pub cpu: CpuUse,
    /// mqws memory during the replay.
    pub rss: RssUse,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// UTC start time.
    pub started: String,
    /// Messages asked for.
    pub messages: u64,
    /// Topics.
    pub topics: u64,
    /// Payload size.
    pub payload_bytes: usize,
    /// Publishers and in-flight window of the fill.
    pub publishers: u32,
    /// Environment of every server.
    pub server_env: Vec<String>,
    /// Environment of the fill server only.
    pub fill_env: Vec<String>,
    /// The fill.
    pub fill: FillReport,
    /// Ready time of the restarted server (index rebuilt from the log), when restarted.
    pub restart_ready_ms: Option<u64>,
    /// Shutdown of the fill server, when restarted.
    pub fill_server_stop: Option<StopInfo>,
    /// The log before the replays.
    pub log: LogState,
    /// Full replay.
    pub full: ReplayPhase,
    /// Selective replay.
    pub selective: ReplayPhase,
    /// full seconds ÷ selective seconds.
    pub full_over_selective: Option<f64>,
    /// Shutdown of the measured server.
    pub server_stop: Option<StopInfo>,
    /// Anything odd.
    pub notes: Vec<String>,
}

/// Runs the replay benchmark.
pub async fn run(common: &Common, args: &ReplayArgs) -> anyhow::Result<()> {
    let started = common::utc_now();
    let dir = DataDir::new(common.data_dir.as_deref())?;
    let restart = !args.fill_env.is_empty();
    let fill_env: Vec<String> = common
        .server_env
        .iter()
        .chain(&args.fill_env)
        .cloned()
        .collect();
    let mut notes = Vec::new();
    let mut srv = common::start(
        common,
        &dir.path,
        &fill_env,
        common::log_file(common, 1).as_deref(),
    )
    .await?;

    // Fill: publisher p's n-th message goes to bench/t/{n % T}, payload stamp (p, n).
    let topics = args.topics;
    let counts = fill::split(args.messages, common.publishers);
    let spec = FillSpec {
        counts: counts.clone(),
        message: std::sync::Arc::new(move |p, n| (format!("bench/t/{}", n % topics), p, n)),
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
        tag: 1,
    };
    eprintln!(
        "mqws-catchup: filling {} messages over {} topics with {} publishers",
        args.messages, topics, common.publishers
    );
    let fill_report = fill::fill(&fill_cfg, &spec).await?;
    if !fill_report.complete {
        notes.push(format!(
            "fill incomplete: {} of {} logged ({} dropped by the broker); the replays are \
             checked against what was published, so they will show missing messages",
            fill_report.logged, fill_report.target, fill_report.broker_dropped
        ));
    }

    let (mut restart_ready_ms, mut fill_server_stop) = (None, None);
    if restart {
        eprintln!("mqws-catchup: restarting mqws without the fill-only settings");
        fill_server_stop = common::stop(srv)?;
        srv = common::start(
            common,
            &dir.path,
            &common.server_env,
            common::log_file(common, 2).as_deref(),
        )
        .await?;
        restart_ready_ms = Some(srv.ready_ms);
    }
    // Let one retention tick publish the log gauges (they are updated once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = metrics::scrape(srv.http).await?;
    let log = LogState {
        messages: m.count("mqws_log_messages"),
        bytes: m.count("mqws_log_bytes"),
        disk_bytes: m.count("mqws_log_disk_bytes"),
        du_bytes: common::du_sb(&dir.path),
        evicted: m.count("mqws_log_evicted_total"),
    };
    if log.evicted > 0 {
        notes.push(format!(
            "retention evicted {} messages before the replays (log.max_bytes / max_messages \
             too small for this run)",
            log.evicted
        ));
    }

    let timeout = Duration::from_secs(args.timeout);
    let full = measure(
        &srv,
        "full",
        "bench/#",
        Expect::new(counts.clone(), |_, _| true),
        timeout,
    )
    .await?;
    let k = args.selective_topic;
    let selective = measure(
        &srv,
        "selective",
        &format!("bench/t/{k}"),
        Expect::new(counts, move |_, n| n % topics == k),
        timeout,
    )
    .await?;
    for ph in [&full, &selective] {
        if !ph.complete {
            notes.push(format!(
                "{} replay NOT complete: {}",
                ph.name,
                describe_problems(&ph.outcome)
            ));
        }
        if ph.server_replayed != ph.outcome.replayed {
            notes.push(format!(
                "{} replay: mqws_replay_messages_total rose by {} but the client got {} frames",
                ph.name, ph.server_replayed, ph.outcome.replayed
            ));
        }
        if ph.cpu.other_pct.is_some_and(|o| o >= 20.0) {
            notes.push(format!(
                "{} replay: other processes used {:.0}% of a core meanwhile; figures disturbed",
                ph.name,
                ph.cpu.other_pct.unwrap_or(0.0)
            ));
        }
    }
    let full_over_selective = match (full.seconds, selective.seconds) {
        (Some(f), Some(s)) if s > 0.0 => Some(f / s),
        _ => None,
    };
    let server_stop = common::stop(srv)?;
    if let Some(s) = &server_stop {
        if s.killed || s.exit_code != Some(0) {
            notes.push(format!(
                "mqws did not exit cleanly after SIGTERM: exit {:?}, killed {}, {} ms",
                s.exit_code, s.killed, s.shutdown_ms
            ));
        }
        if s.warn_lines + s.error_lines > 0 {
            notes.push(format!(
                "mqws logged {} WARN and {} ERROR lines; first: {:?}",
                s.warn_lines,
                s.error_lines,
                s.first_warnings.first()
            ));
        }
    }
    let report = ReplayReport {
        started,
        messages: args.messages,
        topics,
        payload_bytes: common.payload_bytes,
        publishers: common.publishers,
        server_env: common.server_env.clone(),
        fill_env: args.fill_env.clone(),
        fill: fill_report,
        restart_ready_ms,
        fill_server_stop,
        log,
        full,
        selective,
        full_over_selective,
        server_stop,
        notes,
    };
    print(&report, common.markdown);
    common::write_json(common.json.as_deref(), &report)?;
    let ok = report.full.complete && report.selective.complete;
    anyhow::ensure!(ok, "a replay was incomplete (see notes)");
    Ok(())
}

async fn measure(
    srv: &common::Running,
    name: &str,
    filter: &str,
    expect: Expect,
    timeout: Duration,
) -> anyhow::Result<ReplayPhase> {
    // Nothing else runs: wait until mqws is idle so the phase measures the replay alone.
    settle(srv.pid).await;
    let before = metrics::scrape(srv.http).await?;
    let rss = RssWatch::start(srv.pid);
    let cpu = CpuMark::now(srv.pid);
    let hello = json!({"type": "hello", "filters": [filter], "from": "earliest"});
    eprintln!("mqws-catchup: {name} replay of {filter} ...");
    let t0 = Instant::now();
    // `t0` is taken before the connection opens; the figures count from `hello` (`hello_ms`).
    let outcome = client::catch_up(srv.http, &hello, expect, t0, t0 + timeout).await;
    let cpu = cpu.since(srv.pid);
    let rss = rss.finish().await;
    let after = metrics::scrape(srv.http).await?;
    // hello sent → caught_up received.
    let seconds = match (outcome.hello_ms, outcome.caught_up_ms) {
        (Some(h), Some(c)) => Some((c - h) / 1000.0),
        _ => None,
    };
    let msgs_per_s = seconds.map(|s| outcome.replayed as f64 / s.max(1e-9));
    let mib_per_s = seconds.map(|s| common::mib(outcome.bytes) / s.max(1e-9));
    let complete = outcome.failed.is_none()
        && outcome.recovered == Some(true)
        && outcome.missing == 0
        && outcome.duplicates == 0
        && outcome.unexpected == 0
        && outcome.seq_violations == 0
        && outcome.replay_flag_missing == 0
        && outcome.caught_up_ms.is_some();
    eprintln!(
        "mqws-catchup: {name}: {} messages in {} s ({} msgs/s){}",
        outcome.replayed,
        common::opt(seconds, 3),
        common::opt(msgs_per_s, 0),
        if complete { "" } else { " — INCOMPLETE" }
    );
    Ok(ReplayPhase {
        name: name.to_owned(),
        filter: filter.to_owned(),
        server_replayed: after
            .count("mqws_replay_messages_total")
            .saturating_sub(before.count("mqws_replay_messages_total")),
        outcome,
        seconds,
        msgs_per_s,
        mib_per_s,
        complete,
        cpu,
        rss,
    })
}

/// Waits (at most 30 s) until mqws uses under 10% of a core over 0.5 s.
pub async fn settle(pid: u32) {
    let t0 = Instant::now();
    let step = Duration::from_millis(500);
    let Some(mut last) = crate::procstat::cpu_seconds(pid) else {
        return;
    };
    while t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(step).await;
        let Some(now) = crate::procstat::cpu_seconds(pid) else {
            return;
        };
        if (now - last) / step.as_secs_f64() < 0.10 {
            return;
        }
        last = now;
    }
    eprintln!("mqws-catchup: mqws still busy after 30 s; measuring anyway");
}

/// A one-line account of what went wrong in a catch-up.
pub fn describe_problems(o: &Outcome) -> String {
    let mut parts = Vec::new();
    if let Some(f) = &o.failed {
        parts.push(f.clone());
    }
    if o.recovered != Some(true) {
        parts.push(format!("recovered {:?}, gap {:?}", o.recovered, o.gap));
    }
    for (what, n) in [
        ("missing", o.missing),
        ("duplicates", o.duplicates),
        ("unexpected", o.unexpected),
        ("seq violations", o.seq_violations),
        ("frames without replay:true", o.replay_flag_missing),
        ("messages after caught_up", o.after_caught_up),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if !o.other_frames.is_empty() {
        parts.push(format!("other frames {:?}", o.other_frames));
    }
    if parts.is_empty() {
        "ok".into()
    } else {
        parts.join("; ")
    }
}

/// Milliseconds from `hello` to `at`.
fn since_hello(o: &Outcome, at: Option<f64>) -> Option<f64> {
    Some(at? - o.hello_ms?)
}

fn print(r: &ReplayReport, markdown: bool) {
    let f = &r.fill;
    println!(
        "replay benchmark ({}): {} messages × {} B over {} topics",
        r.started, r.messages, r.payload_bytes, r.topics
    );
    println!(
        "fill: {} logged of {} in {:.1} s = {:.0} msgs/s ({} publishers, QoS 1), broker drops {}, \
         mqws CPU {}%{}",
        f.logged,
        f.target,
        f.seconds,
        f.logged_per_s,
        r.publishers,
        f.broker_dropped,
        common::opt(f.cpu.server_pct, 0),
        if r.fill_env.is_empty() {
            String::new()
        } else {
            format!(", fill-only env {:?}", r.fill_env)
        }
    );
    if let Some(ms) = r.restart_ready_ms {
        println!(
            "restart (index rebuilt from {} messages): ready in {ms} ms",
            r.log.messages
        );
    }
    println!(
        "log: {} messages, {:.1} MiB of topics+payloads, engine on disk {:.1} MiB (du -sb {} MiB)",
        r.log.messages,
        common::mib(r.log.bytes),
        common::mib(r.log.disk_bytes),
        common::opt(r.log.du_bytes.map(common::mib), 1)
    );
    println!(
        "{:<10} {:<11} {:>9} {:>16} {:>10} {:>11} {:>8} {:>7} {:>5} {:>5} {:>5} {:>9} {:>8} {:>7} {:>6} {:>6} {:>6}",
        "replay", "filter", "messages", "hello→welcome ms", "caught s", "msgs/s", "MiB/s", "missing",
        "dup", "seqv", "unexp", "recovered", "RSS0 MiB", "RSS MiB", "srv%", "bench%", "other%"
    );
    for p in [&r.full, &r.selective] {
        let o = &p.outcome;
        println!(
            "{:<10} {:<11} {:>9} {:>16} {:>10} {:>11} {:>8} {:>7} {:>5} {:>5} {:>5} {:>9} {:>8} {:>7} {:>6} {:>6} {:>6}",
            p.name,
            p.filter,
            o.replayed,
            common::opt(since_hello(o, o.welcome_ms), 1),
            common::opt(p.seconds, 3),
            common::opt(p.msgs_per_s, 0),
            common::opt(p.mib_per_s, 1),
            o.missing,
            o.duplicates,
            o.seq_violations,
            o.unexpected,
            o.recovered.map_or("-".into(), |b| b.to_string()),
            common::mib_kib(p.rss.start_kib),
            common::mib_kib(p.rss.peak_kib),
            common::opt(p.cpu.server_pct, 0),
            common::opt(p.cpu.bench_pct, 0),
            common::opt(p.cpu.other_pct, 0),
        );
    }
    println!(
        "full ÷ selective time: {}×; full replay goal ≥ {:.0} msgs/s: {}",
        common::opt(r.full_over_selective, 1),
        GOAL_MSGS_PER_S,
        match r.full.msgs_per_s {
            Some(v) if v >= GOAL_MSGS_PER_S => "met",
            Some(_) => "NOT met",
            None => "no result",
        }
    );
    for n in &r.notes {
        println!("note: {n}");
    }
    if markdown {
        println!();
        println!("| replay | filter | messages | hello→welcome ms | hello→caught_up s | msgs/s | MiB/s | missing / dup / seq viol. | recovered | mqws RSS at start → peak MiB | mqws CPU % | bench CPU % | other CPU % |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for p in [&r.full, &r.selective] {
            let o = &p.outcome;
            println!(
                "| {} | `{}` | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} → {} | {} | {} | {} |",
                p.name,
                p.filter,
                o.replayed,
                common::opt(since_hello(o, o.welcome_ms), 1),
                common::opt(p.seconds, 3),
                common::opt(p.msgs_per_s, 0),
                common::opt(p.mib_per_s, 1),
                o.missing,
                o.duplicates,
                o.seq_violations,
                o.recovered.map_or("-".into(), |b| b.to_string()),
                common::mib_kib(p.rss.start_kib),
                common::mib_kib(p.rss.peak_kib),
                common::opt(p.cpu.server_pct, 0),
                common::opt(p.cpu.bench_pct, 0),
                common::opt(p.cpu.other_pct, 0),
            );
        }
    }
}
