//! `mqws-catchup retention`: run mqws with a small `log.max_bytes`, append many times that
//! much, and sample the engine's size on disk (`mqws_log_disk_bytes` and `du -sb` of the data dir)
//! once a second, to see whether retention keeps the disk bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::cli::{Common, RetentionArgs};
use super::common::{self, DataDir};
use super::fill::{self, FillConfig, FillReport, FillSpec};
use super::metrics;
use crate::procstat;
use crate::server::StopInfo;

/// One sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the fill started.
    pub t_s: f64,
    /// `mqws_messages_logged_total`.
    pub logged: u64,
    /// `mqws_log_messages` (retained, as of the last completed retention pass).
    pub log_messages: u64,
    /// `logged − evicted`: what the log holds right now (the gauges above are only updated
    /// when a retention pass completes).
    pub retained_now: u64,
    /// `mqws_log_bytes` (topics + payloads retained, as of the last completed retention pass).
    pub log_bytes: u64,
    /// `mqws_log_disk_bytes` (the database file's size, as of the last completed retention pass).
    pub disk_bytes: u64,
    /// `du -sb` of the data dir.
    pub du_bytes: Option<u64>,
    /// Blocks allocated under the data dir, bytes.
    pub allocated_bytes: u64,
    /// `mqws_log_evicted_total`.
    pub evicted: u64,
    /// mqws `VmRSS`, KiB.
    pub rss_kib: Option<u64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionReport {
    /// UTC start time.
    pub started: String,
    /// Messages appended.
    pub messages: u64,
    /// `log.max_bytes` asked for.
    pub max_bytes: String,
    /// Payload size.
    pub payload_bytes: usize,
    /// Environment of the server.
    pub server_env: Vec<String>,
    /// The fill.
    pub fill: FillReport,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Largest `mqws_log_disk_bytes`.
    pub max_disk_bytes: u64,
    /// Largest `du -sb`.
    pub max_du_bytes: u64,
    /// Largest `logged − evicted` (messages in the log at once).
    pub max_retained_now: u64,
    /// The retained message count once retention had caught up (last sample).
    pub settled_messages: u64,
    /// Largest `mqws_log_bytes` seen.
    pub max_log_bytes: u64,
    /// Samples in which the log gauges were stale (no retention pass completed since the
    /// previous sample while messages were appended).
    pub stale_gauge_samples: usize,
    /// The last sample (after the settle time).
    pub last: Sample,
    /// `du -sb` after mqws stopped.
    pub du_after_stop: Option<u64>,
    /// Growth of `du -sb` per million messages appended over the second half of the fill.
    pub du_growth_per_million: Option<f64>,
    /// Growth of `mqws_log_disk_bytes` per million messages over the second half.
    pub disk_growth_per_million: Option<f64>,
    /// The verdict, in words.
    pub verdict: String,
    /// Shutdown of the server.
    pub server_stop: Option<StopInfo>,
    /// Anything odd.
    pub notes: Vec<String>,
}

/// Runs the retention benchmark.
pub async fn run(common: &Common, args: &RetentionArgs) -> anyhow::Result<()> {
    let started = common::utc_now();
    let dir = DataDir::new(common.data_dir.as_deref())?;
    let mut env = vec![format!("MQWS_LOG__MAX_BYTES={}", args.max_bytes)];
    env.extend(common.server_env.iter().cloned());
    let srv = common::start(
        common,
        &dir.path,
        &env,
        common::log_file(common, 1).as_deref(),
    )
    .await?;
    let mut notes = Vec::new();

    // Sampler: metrics + du every sample_ms until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let (stop, http, pid, path) = (stop.clone(), srv.http, srv.pid, dir.path.clone());
        let every = Duration::from_millis(args.sample_ms);
        let hard = t0 + Duration::from_secs(args.fill_timeout + args.settle + 120);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut iv = tokio::time::interval(every);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard {
                iv.tick().await;
                samples.push(sample(http, pid, &path, t0).await);
            }
            samples
        })
    };

    let topics = args.topics;
    let spec = FillSpec {
        counts: fill::split(args.messages, common.publishers),
        message: Arc::new(move |p, n| (format!("bench/t/{}", n % topics), p, n)),
    };
    let cfg = FillConfig {
        http: srv.http,
        mqtt: srv.mqtt,
        pid: srv.pid,
        payload_bytes: common.payload_bytes,
        inflight: common.inflight,
        window: common.window,
        rate: common.rate,
        timeout: Duration::from_secs(args.fill_timeout),
        client_prefix: format!("mqws-catchup-{}-fill", std::process::id()),
        tag: 3,
    };
    eprintln!(
        "mqws-catchup: appending {} messages with log.max_bytes={}",
        args.messages, args.max_bytes
    );
    let fill_report = fill::fill(&cfg, &spec).await?;
    if !fill_report.complete {
        notes.push(format!(
            "fill incomplete: {} of {} logged ({} dropped by the broker)",
            fill_report.logged, fill_report.target, fill_report.broker_dropped
        ));
    }
    eprintln!("mqws-catchup: sampling {} s more", args.settle);
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = sampler.await.unwrap_or_default();
    let last_live = sample(srv.http, srv.pid, &dir.path, t0).await;
    samples.push(last_live.clone());
    let server_stop = common::stop(srv)?;
    let du_after_stop = common::du_sb(&dir.path);

    let max_disk_bytes = samples.iter().map(|s| s.disk_bytes).max().unwrap_or(0);
    let max_du_bytes = samples.iter().filter_map(|s| s.du_bytes).max().unwrap_or(0);
    let (du_growth, disk_growth) = growth(&samples, args.messages);
    let verdict = verdict(&samples, du_growth, args.messages);
    let max_retained_now = samples.iter().map(|s| s.retained_now).max().unwrap_or(0);
    let max_log_bytes = samples.iter().map(|s| s.log_bytes).max().unwrap_or(0);
    let stale_gauge_samples = samples
        .windows(2)
        .filter(|w| w[1].logged > w[0].logged && w[1].log_messages == w[0].log_messages)
        .count();
    if stale_gauge_samples > 0 {
        notes.push(format!(
            "mqws_log_messages / mqws_log_bytes / mqws_log_disk_bytes did not change in {} of {} \
             sampling intervals in which messages were logged: they are only updated when a \
             retention pass ends, and a pass does not end while it is behind",
            stale_gauge_samples,
            samples.len().saturating_sub(1)
        ));
    }
    let settled = samples.last().map_or(0, |s| s.retained_now);
    if settled > 0 && max_retained_now > settled + settled / 2 {
        notes.push(format!(
            "retention fell behind the appends: up to {max_retained_now} messages were in the \
             log at once, {:.1}× the {settled} it keeps once it has caught up",
            max_retained_now as f64 / settled as f64
        ));
    }
    if let Some(s) = &server_stop {
        if s.killed || s.exit_code != Some(0) {
            notes.push(format!(
                "mqws did not exit cleanly after SIGTERM: exit {:?}, killed {}",
                s.exit_code, s.killed
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
    if last_live.evicted == 0 {
        notes.push("retention never evicted anything".into());
    }
    let report = RetentionReport {
        started,
        messages: args.messages,
        max_bytes: args.max_bytes.clone(),
        payload_bytes: common.payload_bytes,
        server_env: env,
        fill: fill_report,
        samples,
        max_disk_bytes,
        max_du_bytes,
        max_retained_now,
        settled_messages: settled,
        max_log_bytes,
        stale_gauge_samples,
        last: last_live,
        du_after_stop,
        du_growth_per_million: du_growth,
        disk_growth_per_million: disk_growth,
        verdict,
        server_stop,
        notes,
    };
    print(&report, args.rows, common.markdown);
    common::write_json(common.json.as_deref(), &report)?;
    Ok(())
}

async fn sample(
    http: std::net::SocketAddr,
    pid: u32,
    dir: &std::path::Path,
    t0: Instant,
) -> Sample {
    let t_s = t0.elapsed().as_secs_f64();
    let m = metrics::scrape(http).await.unwrap_or_default();
    let path = dir.to_path_buf();
    let (du_bytes, allocated_bytes) =
        tokio::task::spawn_blocking(move || (common::du_sb(&path), common::allocated_bytes(&path)))
            .await
            .unwrap_or((None, 0));
    let (logged, evicted) = (
        m.count("mqws_messages_logged_total"),
        m.count("mqws_log_evicted_total"),
    );
    Sample {
        t_s,
        logged,
        retained_now: logged.saturating_sub(evicted),
        log_messages: m.count("mqws_log_messages"),
        log_bytes: m.count("mqws_log_bytes"),
        disk_bytes: m.count("mqws_log_disk_bytes"),
        du_bytes,
        allocated_bytes,
        evicted,
        rss_kib: procstat::status_kib(pid, "VmRSS"),
    }
}

/// Growth of `du -sb` and of `mqws_log_disk_bytes` per million messages appended, between
/// the samples nearest to half and to all of the messages logged (least-squares slope over
/// the samples in that range).
fn growth(samples: &[Sample], total: u64) -> (Option<f64>, Option<f64>) {
    let in_half: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.logged >= total / 2 && s.logged <= total)
        .collect();
    let slope = |ys: Vec<(f64, f64)>| -> Option<f64> {
        if ys.len() < 3 {
            return None;
        }
        let n = ys.len() as f64;
        let mx = ys.iter().map(|p| p.0).sum::<f64>() / n;
        let my = ys.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = ys.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = ys.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        (sxx > 0.0).then(|| sxy / sxx * 1e6)
    };
    let du = slope(
        in_half
            .iter()
            .filter_map(|s| Some((s.logged as f64, s.du_bytes? as f64)))
            .collect(),
    );
    let disk = slope(
        in_half
            .iter()
            .map(|s| (s.logged as f64, s.disk_bytes as f64))
            .collect(),
    );
    (du, disk)
}

fn verdict(samples: &[Sample], du_growth: Option<f64>, total: u64) -> String {
    let at = |frac: f64| {
        samples
            .iter()
            .find(|s| s.logged as f64 >= total as f64 * frac)
    };
    let (half, end) = (at(0.5), samples.last());
    let (Some(h), Some(e), Some(g)) = (half, end, du_growth) else {
        return "not enough samples to judge".into();
    };
    let (Some(hd), Some(ed)) = (h.du_bytes, e.du_bytes) else {
        return "not enough samples to judge".into();
    };
    let ratio = ed as f64 / hd.max(1) as f64;
    let log_note = format!(
        "messages in the log: {} at half, {} at the end",
        h.retained_now, e.retained_now
    );
    if ratio > 1.15 && g > 0.0 {
        format!(
            "GROWS WITHOUT BOUND: du -sb went from {:.1} MiB at half the messages to {:.1} MiB \
             at the end (×{ratio:.2}), +{:.1} MiB per million messages appended ({log_note})",
            common::mib(hd),
            common::mib(ed),
            g / 1048576.0
        )
    } else {
        format!(
            "bounded: du -sb {:.1} MiB at half the messages, {:.1} MiB at the end (×{ratio:.2}; \
             slope {:+.1} MiB per million messages over the second half; {log_note})",
            common::mib(hd),
            common::mib(ed),
            g / 1048576.0
        )
    }
}

fn print(r: &RetentionReport, rows: usize, markdown: bool) {
    let f = &r.fill;
    println!(
        "retention benchmark ({}): {} messages × {} B, log.max_bytes={}, env {:?}",
        r.started, r.messages, r.payload_bytes, r.max_bytes, r.server_env
    );
    println!(
        "fill: {} logged in {:.1} s = {:.0} msgs/s, broker drops {}, mqws CPU {}%",
        f.logged,
        f.seconds,
        f.logged_per_s,
        f.broker_dropped,
        common::opt(f.cpu.server_pct, 0)
    );
    let step = r.samples.len().div_ceil(rows.max(2) - 1).max(1);
    let mut table = Vec::new();
    for (i, s) in r.samples.iter().enumerate() {
        if i % step == 0 || i + 1 == r.samples.len() {
            table.push(s);
        }
    }
    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>12} {:>13} {:>11} {:>13} {:>10} {:>8}",
        "t s",
        "logged",
        "in log",
        "gauge msgs",
        "log MiB",
        "engine disk MiB",
        "du -sb MiB",
        "allocated MiB",
        "evicted",
        "RSS MiB"
    );
    for s in &table {
        println!(
            "{:>7.0} {:>10} {:>10} {:>10} {:>12.1} {:>13.1} {:>11} {:>13.1} {:>10} {:>8}",
            s.t_s,
            s.logged,
            s.retained_now,
            s.log_messages,
            common::mib(s.log_bytes),
            common::mib(s.disk_bytes),
            common::opt(s.du_bytes.map(common::mib), 1),
            common::mib(s.allocated_bytes),
            s.evicted,
            common::mib_kib(s.rss_kib)
        );
    }
    println!(
        "most messages in the log at once: {} (settled: {}); largest mqws_log_bytes {:.1} MiB",
        r.max_retained_now,
        r.settled_messages,
        common::mib(r.max_log_bytes)
    );
    println!(
        "max: engine disk {:.1} MiB, du -sb {:.1} MiB; final: engine disk {:.1} MiB, du -sb {} MiB, \
         log {:.1} MiB in {} messages; du -sb after stop {} MiB",
        common::mib(r.max_disk_bytes),
        common::mib(r.max_du_bytes),
        common::mib(r.last.disk_bytes),
        common::opt(r.last.du_bytes.map(common::mib), 1),
        common::mib(r.last.log_bytes),
        r.last.log_messages,
        common::opt(r.du_after_stop.map(common::mib), 1)
    );
    println!(
        "growth over the second half: du -sb {} MiB, engine disk {} MiB per million messages",
        common::opt(r.du_growth_per_million.map(|g| g / 1048576.0), 1),
        common::opt(r.disk_growth_per_million.map(|g| g / 1048576.0), 1)
    );
    println!("verdict: {}", r.verdict);
    for n in &r.notes {
        println!("note: {n}");
    }
    if markdown {
        println!();
        println!("| t s | logged | in log (logged − evicted) | `mqws_log_messages` | `mqws_log_bytes` MiB | `mqws_log_disk_bytes` MiB | du -sb MiB | allocated MiB | evicted | mqws RSS MiB |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for s in &table {
            println!(
                "| {:.0} | {} | {} | {} | {:.1} | {:.1} | {} | {:.1} | {} | {} |",
                s.t_s,
                s.logged,
                s.retained_now,
                s.log_messages,
                common::mib(s.log_bytes),
                common::mib(s.disk_bytes),
                common::opt(s.du_bytes.map(common::mib), 1),
                common::mib(s.allocated_bytes),
                s.evicted,
                common::mib_kib(s.rss_kib)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(logged: u64, du: u64) -> Sample {
        Sample {
            logged,
            du_bytes: Some(du),
            disk_bytes: du,
            ..Sample::default()
        }
    }

    #[test]
    fn growth_and_verdict() {
        let flat: Vec<Sample> = (0..=10).map(|i| s(i * 100, 1 << 20)).collect();
        let (du, disk) = growth(&flat, 1000);
        assert_eq!(du, Some(0.0));
        assert_eq!(disk, Some(0.0));
        assert!(verdict(&flat, du, 1000).starts_with("bounded"));
        let rising: Vec<Sample> = (0..=10).map(|i| s(i * 100, (i + 1) << 20)).collect();
        let (du, _) = growth(&rising, 1000);
        assert!(du.is_some_and(|g| g > 0.0));
        assert!(verdict(&rising, du, 1000).starts_with("GROWS"));
    }
}
