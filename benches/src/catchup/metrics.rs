//! Reading mqws's `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::time::Instant;

use crate::server;

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    text: String,
}

impl Metrics {
    /// Wraps a scraped body.
    pub fn from_text(text: String) -> Self {
        Self { text }
    }

    /// The value of metric `name`, summed over its label sets; None when it is absent (a
    /// counter that was never incremented is absent).
    pub fn get(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for line in self.text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let value = match rest.as_bytes().first() {
                Some(b' ') => rest.trim(),
                Some(b'{') => match rest.rfind('}') {
                    Some(end) => rest[end + 1..].trim(),
                    None => continue,
                },
                _ => continue,
            };
            // A sample may carry a timestamp after the value.
            let v: f64 = match value.split_whitespace().next().map(str::parse) {
                Some(Ok(v)) => v,
                _ => continue,
            };
            *found.get_or_insert(0.0) += v;
        }
        found
    }

    /// Like [`Metrics::get`], 0 when absent, as an integer.
    pub fn count(&self, name: &str) -> u64 {
        self.get(name).map_or(0, |v| v.max(0.0) as u64)
    }
}

/// Scrapes `/metrics` once (bounded: 5 s socket timeouts).
pub async fn scrape(http: SocketAddr) -> anyhow::Result<Metrics> {
    let (status, body) = tokio::task::spawn_blocking(move || server::http_get(http, "/metrics"))
        .await
        .context("metrics task")??;
    if status != 200 {
        bail!("GET /metrics answered HTTP {status}");
    }
    Ok(Metrics::from_text(body))
}

/// Polls `/metrics` every `every` until `done` holds for the count of `name`. Gives up after
/// `limit`, or after `stall` without the count changing; returns the last count and whether
/// `done` was reached.
pub async fn wait_count(
    http: SocketAddr,
    name: &str,
    done: impl Fn(u64) -> bool,
    every: Duration,
    stall: Duration,
    limit: Duration,
) -> anyhow::Result<(u64, bool)> {
    let t0 = Instant::now();
    let mut last = None;
    let mut last_change = Instant::now();
    loop {
        let v = scrape(http).await?.count(name);
        if done(v) {
            return Ok((v, true));
        }
        if last != Some(v) {
            last = Some(v);
            last_change = Instant::now();
        }
        if t0.elapsed() > limit || last_change.elapsed() > stall {
            return Ok((v, false));
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits (bounded, 15 s) for `GET /readyz` to answer 200.
pub async fn wait_ready(http: SocketAddr) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(15) {
        match tokio::task::spawn_blocking(move || server::http_get(http, "/readyz")).await {
            Ok(Ok((200, _))) => return Ok(()),
            Ok(Ok((code, _))) => last = format!("HTTP {code}"),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("GET /readyz never answered 200 within 15 s (last: {last})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_label_sets_and_ignores_prefixes() {
        let m = Metrics::from_text(
            "# HELP mqws_log_bytes x\n# TYPE mqws_log_bytes gauge\nmqws_log_bytes 1234\n\
             mqws_log_bytes_other 5\nmqws_errors_total{code=\"a\"} 2\n\
             mqws_errors_total{code=\"b\"} 3 1700000000\nmqws_big 1.5e9\n"
                .to_owned(),
        );
        assert_eq!(m.get("mqws_log_bytes"), Some(1234.0));
        assert_eq!(m.get("mqws_errors_total"), Some(5.0));
        assert_eq!(m.count("mqws_big"), 1_500_000_000);
        assert_eq!(m.get("mqws_missing"), None);
        assert_eq!(m.count("mqws_missing"), 0);
    }
}
