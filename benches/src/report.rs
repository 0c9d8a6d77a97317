//! The run's results: a human table, a Markdown block for RESULTS.md, a JSON record, and notes
//! on anything odd the run saw. Ratios compare phases of the same run: ws ÷ baseline, with
//! `--sse-subscribers` sse ÷ ws, and with Mosquitto, ws ÷ mosquitto-ws and baseline ÷
//! mosquitto-mqtt.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{Args, Order};
use crate::mosquitto::{self, MosquittoInfo};
use crate::phase::{Kind, PhaseReport};
use crate::server::StopInfo;
use crate::storage::StorageInfo;

/// The scenario as run.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Run label.
    pub label: String,
    /// Publishers.
    pub publishers: u32,
    /// QoS.
    pub qos: u8,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Total target rate, msgs/s (0 = flat out).
    pub rate: u64,
    /// Subscribers per phase (ws and baseline).
    pub subscribers: u32,
    /// SSE subscribers in the sse phase (0: no sse phase).
    pub sse_subscribers: u32,
    /// Subscription filter.
    pub filter: String,
    /// Measured seconds per phase.
    pub duration_s: u64,
    /// Warm-up seconds per phase.
    pub warmup_s: u64,
    /// Baseline before or after the ws phase (None: no baseline).
    pub baseline_order: Option<Order>,
    /// Publishers and subscribers over MQTT over WebSocket (`--mqtt-ws`).
    pub mqtt_ws: bool,
    /// Environment given to a started server.
    pub server_env: Vec<String>,
}

impl Scenario {
    /// From the command line.
    pub fn from_args(a: &Args) -> Self {
        Self {
            label: a.label.clone(),
            publishers: a.publishers,
            qos: a.qos,
            payload_bytes: a.payload_bytes,
            rate: a.rate,
            subscribers: a.ws_subscribers,
            sse_subscribers: a.sse_subscribers,
            filter: a.filter.clone(),
            duration_s: a.duration,
            warmup_s: a.warmup,
            baseline_order: (a.run_baseline() && !a.mqtt_ws).then_some(a.baseline_order),
            mqtt_ws: a.mqtt_ws,
            server_env: a.server_env.clone(),
        }
    }
}

/// One phase ÷ another (ws ÷ baseline unless `label` says otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Which phases, e.g. `ws ÷ mosquitto-ws`.
    pub label: String,
    /// Published msgs/s (QoS 1: acknowledged msgs/s, within the in-flight window).
    pub published_rate: Option<f64>,
    /// Delivered msgs/s, ws ÷ baseline (1.0 = the bridge costs nothing).
    pub delivered_rate: Option<f64>,
    /// p50 latency, ws ÷ baseline.
    pub p50: Option<f64>,
    /// p99 latency, ws ÷ baseline.
    pub p99: Option<f64>,
    /// p99.9 latency, ws ÷ baseline.
    pub p999: Option<f64>,
    /// max latency, ws ÷ baseline.
    pub max: Option<f64>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| (a / b * 1000.0).round() / 1000.0)
}

impl Ratios {
    /// Computes `ws ÷ base` (any two phases).
    pub fn of(ws: &PhaseReport, base: &PhaseReport) -> Self {
        let (w, b) = (&ws.latency, &base.latency);
        Self {
            label: format!("{} ÷ {}", ws.phase.name(), base.phase.name()),
            published_rate: ratio(ws.publish_rate, base.publish_rate),
            delivered_rate: ratio(ws.delivered_rate, base.delivered_rate),
            p50: ratio(w.p50_us as f64, b.p50_us as f64),
            p99: ratio(w.p99_us as f64, b.p99_us as f64),
            p999: ratio(w.p999_us as f64, b.p999_us as f64),
            max: ratio(w.max_us as f64, b.max_us as f64),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Unix time the run started, seconds.
    pub started_unix_s: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// Whether we started mqws (false: attached).
    pub spawned_server: bool,
    /// Phases in run order.
    pub phases: Vec<PhaseReport>,
    /// ws ÷ baseline, when both ran.
    pub ratios: Option<Ratios>,
    /// sse ÷ ws, when both ran (the contract's goal: delivered rate ≥ 0.8×).
    pub sse_vs_ws: Option<Ratios>,
    /// How a started server stopped.
    pub server_stop: Option<StopInfo>,
    /// The disk under the data dir and its fsync latency.
    pub storage: Option<StorageInfo>,
    /// The Mosquitto of the run, with `--mosquitto-bin`.
    pub mosquitto: Option<MosquittoInfo>,
    /// mqws ÷ Mosquitto: ws ÷ mosquitto-ws, baseline ÷ mosquitto-mqtt.
    pub vs_mosquitto: Vec<Ratios>,
    /// Anything odd.
    pub notes: Vec<String>,
}

impl Report {
    /// The phase of a kind.
    pub fn phase(&self, kind: Kind) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.phase == kind)
    }

    /// Fills `ratios` and `notes` from the phases and the stop info.
    pub fn finish(&mut self) {
        if let (Some(w), Some(b)) = (self.phase(Kind::Ws), self.phase(Kind::Baseline)) {
            self.ratios = Some(Ratios::of(w, b));
        }
        if let (Some(sse), Some(w)) = (self.phase(Kind::Sse), self.phase(Kind::Ws)) {
            self.sse_vs_ws = Some(Ratios::of(sse, w));
        }
        self.vs_mosquitto = [
            (Kind::Ws, Kind::MosquittoWs),
            (Kind::Baseline, Kind::MosquittoMqtt),
            (Kind::MqttWs, Kind::MosquittoMqttWs),
        ]
        .iter()
        .filter_map(|(a, b)| Some(Ratios::of(self.phase(*a)?, self.phase(*b)?)))
        .collect();
        let mut notes = Vec::new();
        if let Some(m) = &self.mosquitto {
            notes.push(format!("{}; {}", m.version, mosquitto::DEFAULTS_NOTE));
            if !m.extra_config.is_empty() {
                notes.push(format!(
                    "mosquitto.conf has extra lines, which override those defaults: {}",
                    m.extra_config.join("; ")
                ));
            }
            if m.killed || m.exit_code != Some(0) {
                notes.push(format!(
                    "mosquitto exited with {:?} after SIGTERM{}",
                    m.exit_code,
                    if m.killed { " (killed)" } else { "" }
                ));
            }
            if !m.warnings.is_empty() {
                notes.push(format!("mosquitto logged: {}", m.warnings.join(" | ")));
            }
        }
        for p in &self.phases {
            notes.extend(phase_notes(p, self.scenario.qos));
        }
        if let Some(s) = &self.server_stop {
            if s.killed {
                notes.push(format!(
                    "mqws did not exit within the stop timeout after SIGTERM and was killed ({} ms)",
                    s.shutdown_ms
                ));
            } else if s.exit_code != Some(0) {
                notes.push(format!(
                    "mqws exited with {:?} after SIGTERM (contract: 0), in {} ms",
                    s.exit_code, s.shutdown_ms
                ));
            }
            if s.warn_lines + s.error_lines > 0 {
                notes.push(format!(
                    "mqws logged {} WARN and {} ERROR line(s); first: {}",
                    s.warn_lines,
                    s.error_lines,
                    s.first_warnings
                        .iter()
                        .take(3)
                        .map(|l| l.chars().take(240).collect::<String>())
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
        }
        self.notes = notes;
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {:?}: {} publisher(s) QoS {}, {} B payloads, rate {}, {} subscriber(s){} on {:?}, {} s measured after {} s warm-up",
            s.label,
            s.publishers,
            s.qos,
            s.payload_bytes,
            rate_text(s.rate),
            s.subscribers,
            match s.sse_subscribers {
                0 => String::new(),
                n => format!(" ({n} in the sse phase)"),
            },
            s.filter,
            s.duration_s,
            s.warmup_s
        );
        let _ = writeln!(
            out,
            "{:<17} {:>10} {:>11} {:>21} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8} {:>9} {:>6} {:>6} {:>6}",
            "phase",
            "pub/s",
            "deliv/s",
            "delivered/expected",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "seq-vio",
            "missing",
            "RSS MiB",
            "srv%",
            "gen%",
            "other%"
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "{:<17} {:>10.0} {:>11.0} {:>21} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8} {:>9} {:>6} {:>6} {:>6}",
                p.phase.name(),
                p.publish_rate,
                p.delivered_rate,
                format!("{}/{}", p.delivered, p.expected),
                p.latency.p50_us,
                p.latency.p99_us,
                p.latency.p999_us,
                p.latency.max_us,
                p.seq_violations,
                p.missing,
                opt_mib(p.server_peak_rss_kib),
                opt_f(p.server_cpu_pct),
                opt_f(p.loadgen_cpu_pct),
                opt_f(p.other_cpu_pct),
            );
        }
        for r in self.all_ratios() {
            let _ = writeln!(
                out,
                "{}: published rate {}  delivered rate {}  p50 {}  p99 {}  p99.9 {}  max {}",
                r.label,
                opt_x(r.published_rate),
                opt_x(r.delivered_rate),
                opt_x(r.p50),
                opt_x(r.p99),
                opt_x(r.p999),
                opt_x(r.max)
            );
        }
        if let Some(line) = self.sse_goal() {
            let _ = writeln!(out, "{line}");
        }
        if let Some(st) = &self.storage {
            let _ = writeln!(out, "{}", st.line());
        }
        if let Some(st) = &self.server_stop {
            let _ = writeln!(
                out,
                "mqws stop: exit {:?} in {} ms{}",
                st.exit_code,
                st.shutdown_ms,
                if st.killed { " (killed)" } else { "" }
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// A Markdown table (header + one row per phase + a ratio row) for RESULTS.md.
    pub fn markdown(&self) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        out.push_str(
            "| scenario | phase | pubs × QoS | payload B | target rate | subs | published/s | delivered/s | p50 µs | p99 µs | p99.9 µs | max µs | seq viol. | missing | server peak RSS MiB | server CPU % | load gen CPU % | other CPU % |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for p in &self.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} × {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.label,
                p.phase.name(),
                s.publishers,
                s.qos,
                s.payload_bytes,
                rate_text(s.rate),
                p.subscribers_connected,
                p.publish_rate,
                p.delivered_rate,
                p.latency.p50_us,
                p.latency.p99_us,
                p.latency.p999_us,
                p.latency.max_us,
                p.seq_violations,
                p.missing,
                opt_mib(p.server_peak_rss_kib),
                opt_f(p.server_cpu_pct),
                opt_f(p.loadgen_cpu_pct),
                opt_f(p.other_cpu_pct),
            );
        }
        for r in self.all_ratios() {
            let _ = writeln!(
                out,
                "| {} | {} | | | | | {} | {} | {} | {} | {} | {} | | | | | | |",
                s.label,
                r.label,
                opt_x(r.published_rate),
                opt_x(r.delivered_rate),
                opt_x(r.p50),
                opt_x(r.p99),
                opt_x(r.p999),
                opt_x(r.max),
            );
        }
        if let Some(line) = self.sse_goal() {
            let _ = writeln!(out, "\n{line}");
        }
        if let Some(st) = &self.storage {
            let _ = writeln!(out, "\n{}", st.line());
        }
        out
    }

    /// Every ratio of the run, in report order.
    fn all_ratios(&self) -> impl Iterator<Item = &Ratios> {
        self.ratios
            .iter()
            .chain(&self.sse_vs_ws)
            .chain(&self.vs_mosquitto)
    }

    /// The contract's SSE goal against this run's figures: delivered rate to one client at least
    /// 0.8× the WebSocket rate in the same run.
    /// Compared per client, as the subscriber counts of the two phases may differ.
    fn sse_goal(&self) -> Option<String> {
        let (sse, ws) = (self.phase(Kind::Sse)?, self.phase(Kind::Ws)?);
        let per_client =
            |p: &PhaseReport| p.delivered_rate / f64::from(p.subscribers_connected.max(1));
        let (s, w) = (per_client(sse), per_client(ws));
        let r = ratio(s, w)?;
        Some(format!(
            "SSE goal (delivered msgs/s per client ≥ 0.80× WebSocket): {} ({r:.2}×: {s:.0} vs {w:.0})",
            if r >= 0.8 { "met" } else { "NOT met" },
        ))
    }
}

fn phase_notes(p: &PhaseReport, qos: u8) -> Vec<String> {
    let name = p.phase.name();
    let mut n = Vec::new();
    if p.subscribers_connected < p.subscribers {
        n.push(format!(
            "[{name}] only {}/{} subscribers connected; first error: {}",
            p.subscribers_connected,
            p.subscribers,
            p.subscriber_error.as_deref().unwrap_or("?")
        ));
    }
    if p.seq_violations > 0 {
        n.push(format!(
            "[{name}] {} seq violation(s): seq not strictly increasing",
            p.seq_violations
        ));
    }
    if p.order_violations > 0 {
        n.push(format!(
            "[{name}] {} per-publisher order violation(s) (reordered or duplicated messages)",
            p.order_violations
        ));
    }
    if p.missing > 0 {
        let pct = p.missing as f64 * 100.0 / p.expected.max(1) as f64;
        n.push(format!(
            "[{name}] {} of {} expected deliveries missing ({pct:.2}%){}",
            p.missing,
            p.expected,
            if qos == 0 {
                "; QoS 0 allows loss under overload"
            } else {
                ""
            }
        ));
    }
    if p.text_enc > 0 {
        n.push(format!(
            "[{name}] {} JSON payload(s) arrived as a string (enc not json): contract says a JSON payload is delivered as a JSON value",
            p.text_enc
        ));
    }
    if p.stale > 0 {
        n.push(format!(
            "[{name}] {} late message(s) of an earlier phase received (ignored)",
            p.stale
        ));
    }
    if p.foreign > 0 {
        n.push(format!(
            "[{name}] {} non-benchmark message(s) received",
            p.foreign
        ));
    }
    if !p.error_frames.is_empty() {
        n.push(format!("[{name}] error frames: {:?}", p.error_frames));
    }
    if !p.other_frames.is_empty() {
        n.push(format!("[{name}] unexpected frames: {:?}", p.other_frames));
    }
    if !p.ended_early.is_empty() {
        n.push(format!(
            "[{name}] subscribers ended early: {:?}",
            p.ended_early
        ));
    }
    if p.publish_errors > 0 {
        n.push(format!(
            "[{name}] {} publisher connection error(s); first: {}",
            p.publish_errors,
            p.publish_first_error.as_deref().unwrap_or("?")
        ));
    }
    if qos == 1 && p.acked < p.published {
        n.push(format!(
            "[{name}] {} of {} QoS 1 publishes never acked",
            p.published - p.acked,
            p.published
        ));
    }
    if let Some(logged) = p.logged {
        // Every published message is logged (bridge.filters matches the bench topics); at
        // QoS 1 an acknowledged message that is not in the log breaks the contract.
        let (what, count) = if qos == 1 {
            ("acknowledged", p.acked)
        } else {
            ("published", p.published)
        };
        if logged < count {
            n.push(format!(
                "[{name}] only {logged} message(s) logged of {count} {what} \
                 (mqws_messages_logged_total over the phase)"
            ));
        } else {
            n.push(format!(
                "[{name}] log check: {logged} logged (mqws_messages_logged_total over the phase) \
                 ≥ {count} {what}"
            ));
        }
    }
    if let Some(other) = p.other_cpu_pct.filter(|o| *o >= 20.0) {
        n.push(format!(
            "[{name}] other processes used {other:.0}% of a core during the window: figures are disturbed"
        ));
    }
    if p.server_peak_rss_kib.is_some() && !p.hwm_reset {
        n.push(format!(
            "[{name}] could not reset VmHWM: peak RSS is since server start"
        ));
    }
    n
}

fn rate_text(rate: u64) -> String {
    if rate == 0 {
        "flat out".into()
    } else {
        format!("{rate}/s")
    }
}

fn opt_mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

fn opt_f(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn opt_x(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}×")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_guards_zero() {
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
    }

    #[test]
    fn helpers() {
        assert_eq!(rate_text(0), "flat out");
        assert_eq!(rate_text(500), "500/s");
        assert_eq!(opt_mib(Some(2048)), "2.0");
        assert_eq!(opt_x(Some(1.5)), "1.50×");
    }
}
