//! Per-subscriber counters and latency histograms, and merging them into phase totals.
//!
//! Definitions used throughout the reports:
//! - the *measure window* is `[warm-up end, warm-up end + duration)` in wall-clock µs;
//! - *delivered in window* counts benchmark messages **received** inside the window (the
//!   throughput a subscriber actually saw);
//! - *latency* is recorded for every benchmark message **sent** inside the window, whenever it
//!   arrives (including the drain after the publishers stop), as receive time − send time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::payload::Stamp;

/// Highest latency the histograms track, in µs (60 s); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// A new latency histogram in µs, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// The measure window shared by the publishers and subscribers of a phase, in wall-clock µs
/// since the Unix epoch. Zero until the phase runner sets it, just before publishing starts.
#[derive(Debug, Default)]
pub struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
    tag: u32,
}

impl Window {
    /// A window (unset) for the phase tagged `tag`; payloads carry the tag.
    pub fn new(tag: u32) -> Self {
        Self {
            tag,
            ..Self::default()
        }
    }

    /// The phase's tag.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Sets the window.
    pub fn set(&self, start_us: u64, end_us: u64) {
        self.start_us.store(start_us, Ordering::Release);
        self.end_us.store(end_us, Ordering::Release);
    }

    /// Whether `t_us` falls inside the window (always false before it is set).
    pub fn contains(&self, t_us: u64) -> bool {
        let start = self.start_us.load(Ordering::Acquire);
        start != 0 && t_us >= start && t_us < self.end_us.load(Ordering::Acquire)
    }
}

/// What one subscriber (WebSocket or native MQTT) saw during a phase.
#[derive(Debug)]
pub struct SubStats {
    /// Latencies (µs) of benchmark messages sent inside the window.
    pub hist: Histogram<u64>,
    /// Benchmark messages received in the whole phase, drain included.
    pub delivered_total: u64,
    /// Benchmark messages received inside the window.
    pub delivered_window: u64,
    /// `message` frames whose `seq` was not strictly larger than the previous one.
    pub seq_violations: u64,
    /// Benchmark messages whose per-publisher counter did not increase (reorder or duplicate).
    pub order_violations: u64,
    /// Messages that were not benchmark payloads.
    pub foreign: u64,
    /// Benchmark payloads of another phase or run (late deliveries), not counted otherwise.
    pub stale: u64,
    /// Benchmark payloads that arrived as a JSON string instead of a JSON value.
    pub text_enc: u64,
    /// `error` frames received, by code.
    pub error_frames: BTreeMap<String, u64>,
    /// Other frame types received (not `message`/`error`), by type.
    pub other_frames: BTreeMap<String, u64>,
    /// How the connection ended early, if it did (close code and reason, or an error).
    pub ended_early: Option<String>,
    last_seq: Option<u64>,
    last_n: Vec<Option<u64>>,
    live: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
}

impl SubStats {
    /// New, empty stats; `live` is bumped on every benchmark message and `peak` raised to the
    /// largest latency seen (µs), so the phase runner can show progress without locking.
    pub fn new(live: Arc<AtomicU64>, peak: Arc<AtomicU64>) -> Self {
        Self {
            hist: new_histogram(),
            delivered_total: 0,
            delivered_window: 0,
            seq_violations: 0,
            order_violations: 0,
            foreign: 0,
            stale: 0,
            text_enc: 0,
            error_frames: BTreeMap::new(),
            other_frames: BTreeMap::new(),
            ended_early: None,
            last_seq: None,
            last_n: Vec::new(),
            live,
            peak,
        }
    }

    /// Checks a `message` frame's `seq` against the previous one on this connection.
    pub fn seq(&mut self, seq: u64) {
        if let Some(last) = self.last_seq {
            if seq <= last {
                self.seq_violations += 1;
            }
        }
        self.last_seq = Some(seq);
    }

    /// Records a benchmark message received at `now_us`.
    pub fn record(&mut self, stamp: Stamp, now_us: u64, window: &Window) {
        if stamp.r != window.tag {
            self.stale += 1;
            return;
        }
        self.delivered_total += 1;
        self.live.fetch_add(1, Ordering::Relaxed);
        if window.contains(now_us) {
            self.delivered_window += 1;
        }
        let lat = now_us.saturating_sub(stamp.t_us).clamp(1, MAX_LATENCY_US);
        if lat > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(lat, Ordering::Relaxed);
        }
        if window.contains(stamp.t_us) {
            self.hist.saturating_record(lat);
        }
        let p = stamp.p as usize;
        if p < 100_000 {
            if self.last_n.len() <= p {
                self.last_n.resize(p + 1, None);
            }
            if let Some(last) = self.last_n[p] {
                if stamp.n <= last {
                    self.order_violations += 1;
                }
            }
            self.last_n[p] = Some(stamp.n);
        }
    }
}

/// Latency summary in µs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// Summarises a histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// The subscribers of one phase, merged.
#[derive(Debug)]
pub struct Merged {
    /// All latencies.
    pub hist: Histogram<u64>,
    /// Sum of `delivered_total`.
    pub delivered_total: u64,
    /// Sum of `delivered_window`.
    pub delivered_window: u64,
    /// Sum of `seq_violations`.
    pub seq_violations: u64,
    /// Sum of `order_violations`.
    pub order_violations: u64,
    /// Sum of `foreign`.
    pub foreign: u64,
    /// Sum of `stale`.
    pub stale: u64,
    /// Sum of `text_enc`.
    pub text_enc: u64,
    /// `error` frames by code.
    pub error_frames: BTreeMap<String, u64>,
    /// Other frame types by type.
    pub other_frames: BTreeMap<String, u64>,
    /// Early ends by description.
    pub ended_early: BTreeMap<String, u64>,
    /// Smallest per-subscriber `delivered_total`.
    pub min_delivered: u64,
    /// Largest per-subscriber `delivered_total`.
    pub max_delivered: u64,
}

/// Merges subscriber stats.
pub fn merge(all: &[SubStats]) -> Merged {
    let mut m = Merged {
        hist: new_histogram(),
        delivered_total: 0,
        delivered_window: 0,
        seq_violations: 0,
        order_violations: 0,
        foreign: 0,
        stale: 0,
        text_enc: 0,
        error_frames: BTreeMap::new(),
        other_frames: BTreeMap::new(),
        ended_early: BTreeMap::new(),
        min_delivered: all.iter().map(|s| s.delivered_total).min().unwrap_or(0),
        max_delivered: all.iter().map(|s| s.delivered_total).max().unwrap_or(0),
    };
    for s in all {
        // Same bounds on both sides, so adding cannot fail.
        let _ = m.hist.add(&s.hist);
        m.delivered_total += s.delivered_total;
        m.delivered_window += s.delivered_window;
        m.seq_violations += s.seq_violations;
        m.order_violations += s.order_violations;
        m.foreign += s.foreign;
        m.stale += s.stale;
        m.text_enc += s.text_enc;
        for (k, v) in &s.error_frames {
            *m.error_frames.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.other_frames {
            *m.other_frames.entry(k.clone()).or_default() += v;
        }
        if let Some(e) = &s.ended_early {
            *m.ended_early.entry(e.clone()).or_default() += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_and_order_checks() {
        let w = Window::new(4);
        w.set(1_000, 2_000);
        let mut s = SubStats::new(Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        for seq in [1, 2, 5, 5, 4, 6] {
            s.seq(seq);
        }
        assert_eq!(s.seq_violations, 2);
        let st = |n, t_us| Stamp {
            t_us,
            r: 4,
            p: 1,
            n,
        };
        s.record(st(0, 500), 900, &w); // sent and received before the window
        s.record(st(1, 1_100), 1_500, &w); // inside: latency 400
        s.record(st(1, 1_200), 2_500, &w); // duplicate n; received after the window
        s.record(st(3, 1_900), 2_100, &w);
        s.record(
            Stamp {
                t_us: 1_500,
                r: 3,
                p: 1,
                n: 9,
            },
            1_600,
            &w,
        ); // another phase
        assert_eq!(s.stale, 1);
        assert_eq!(s.order_violations, 1);
        assert_eq!(s.delivered_total, 4);
        assert_eq!(s.delivered_window, 1);
        assert_eq!(s.hist.len(), 3);
        let m = merge(&[s]);
        let lat = Latency::from_histogram(&m.hist);
        assert_eq!(lat.count, 3);
        assert!(lat.max_us >= 1_300 && lat.max_us <= 1_302, "{}", lat.max_us);
    }

    #[test]
    fn unset_window_contains_nothing() {
        assert!(!Window::default().contains(5));
    }
}
