//! The shipped dashboard and alert rules against the real binary: every `mqws_*` name that
//! `deploy/grafana-dashboard.json` and `deploy/alerts.yml` mention must be in the `/metrics`
//! of a server scraped right after start (before any traffic), and both files must parse. The
//! readiness and log-writability gauges the log alerts use must also move when the log
//! cannot be written.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use mqws_integration::*;

const DASHBOARD: &str = include_str!("../../deploy/grafana-dashboard.json");
const ALERTS: &str = include_str!("../../deploy/alerts.yml");

/// Every `mqws_[a-z0-9_]+` identifier in `text` (not part of a longer identifier).
fn referenced(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("mqws_").map(|i| i + from) {
        let mut end = i + "mqws_".len();
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        let starts_word = i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1].is_ascii_alphabetic());
        if starts_word && end > i + "mqws_".len() {
            names.insert(text[i..end].to_owned());
        }
        from = end;
    }
    names
}

/// The sample names of a Prometheus text exposition, and the declared type of each family.
fn exported(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut samples = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_owned(), kind.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (samples, types)
}

/// True when `name` is a series of the exposition: a sample name, or the `_sum`/`_count`
/// (and for histograms `_bucket`) series of a histogram or summary family.
fn is_exported(name: &str, samples: &BTreeSet<String>, types: &BTreeMap<String, String>) -> bool {
    if samples.contains(name) {
        return true;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match types.get(base).map(String::as_str) {
                Some("histogram") => return true,
                Some("summary") if suffix != "_bucket" => return true,
                _ => {}
            }
        }
    }
    false
}

#[test]
fn dashboard_is_grafana_json() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let schema = dash["schemaVersion"].as_u64().unwrap_or(0);
    assert!(schema >= 36, "schemaVersion {schema} < 36");
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable in templating"
    );
    let panels = dash["panels"].as_array().expect("panels");
    let graphs: Vec<_> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 10, "only {} panels", graphs.len());
    let mut ids = BTreeSet::new();
    for p in &graphs {
        let title = p["title"].as_str().expect("panel title");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: duplicate id"
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                expr.contains("mqws_") || expr.contains("up{"),
                "{title}: {expr}"
            );
        }
    }
}

/// A structural check of the rules file without a YAML parser (`.ci/run` also loads it with
/// PyYAML): the `groups:` root, and for every rule an expression, a `for:`, a severity, a
/// summary and a description.
#[test]
fn alerts_are_prometheus_rules() {
    assert!(
        ALERTS.lines().any(|l| l == "groups:"),
        "alerts.yml: no `groups:` root"
    );
    assert!(ALERTS.contains("  - name: "), "alerts.yml: no named group");
    assert!(!ALERTS.contains('\t'), "alerts.yml: tabs are not YAML");
    let rules: Vec<&str> = ALERTS.split("      - alert: ").skip(1).collect();
    assert!(rules.len() >= 5, "only {} rules", rules.len());
    let mut names = BTreeSet::new();
    for rule in rules {
        let name = rule.lines().next().unwrap_or_default().trim();
        assert!(names.insert(name.to_owned()), "{name}: defined twice");
        for key in [
            "\n        expr: ",
            "\n        for: ",
            "\n        labels:",
            "\n          severity: ",
            "\n        annotations:",
            "\n          summary: ",
            "\n          description: ",
        ] {
            assert!(rule.contains(key), "rule {name}: no `{}`", key.trim());
        }
    }
    for wanted in [
        "MqwsDown",
        "MqwsLogNotWritable",
        "MqwsSlowConsumerCloses",
        "MqwsIngressBackpressure",
        "MqwsLogNearRetentionLimit",
    ] {
        assert!(names.contains(wanted), "no rule {wanted}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_referenced_metric_is_exported_at_start() {
    let server = Server::start();
    let m = http_get(server.http_addr, "/metrics").await;
    assert_eq!(m.status, 200, "/metrics: {m:?}");
    let (samples, types) = exported(&m.body);

    let mut missing = Vec::new();
    for (file, text) in [
        ("deploy/grafana-dashboard.json", DASHBOARD),
        ("deploy/alerts.yml", ALERTS),
    ] {
        let names = referenced(text);
        assert!(names.len() >= 5, "{file}: only {names:?}");
        for name in names {
            if !is_exported(&name, &samples, &types) {
                missing.push(format!("{name} (in {file})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "referenced but not exported by a fresh server:\n  {}\n/metrics:\n{}",
        missing.join("\n  "),
        m.body
    );

    // The values a fresh server must show.
    let value = |name: &str| metric_value(&m.body, name);
    assert_eq!(value("mqws_ready"), Some(1.0), "mqws_ready");
    assert_eq!(value("mqws_log_writable"), Some(1.0), "mqws_log_writable");
    assert_eq!(value("mqws_log_errors_total"), Some(0.0));
    assert_eq!(value("mqws_slow_consumer_closes_total"), Some(0.0));
    assert_eq!(value("mqws_ws_connections"), Some(0.0));
    assert_eq!(value("mqws_log_max_bytes"), Some(1024.0 * 1024.0 * 1024.0));
    assert_eq!(value("mqws_ingress_queue_capacity"), Some(65536.0));
    // Labelled counters are there for every label value the code uses, at zero.
    for line in [
        "mqws_mqtt_refused_total{reason=\"auth\"} 0",
        "mqws_ws_refused_total{reason=\"origin\"} 0",
        "mqws_errors_total{code=\"bad_request\"} 0",
    ] {
        assert!(m.body.lines().any(|l| l == line), "no `{line}` in /metrics");
    }
}

/// The signals of the log alerts move: with `log.min_free_disk` larger than any disk, every
/// append is refused, so `mqws_log_writable` and `mqws_ready` drop to 0 (as `/readyz` goes
/// 503) and `mqws_log_errors_total` counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_alert_signals_follow_an_unwritable_log() {
    let server = Server::start_with(&[("MQWS_LOG__MIN_FREE_DISK", "1000000GiB")], None);
    let publisher = mqtt_client(&server, "obs-pub").await;
    publisher
        .publish("obs/t", rumqttc::QoS::AtMostOnce, false, "x")
        .await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let body = http_get(server.http_addr, "/metrics").await.body;
        let value = |name: &str| metric_value(&body, name);
        if value("mqws_log_writable") == Some(0.0)
            && value("mqws_ready") == Some(0.0)
            && value("mqws_log_errors_total").is_some_and(|v| v >= 1.0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log alert signals did not move within {TIMEOUT:?}; /metrics:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(http_get(server.http_addr, "/readyz").await.status, 503);
}

#[test]
fn extraction_handles_suffixes_and_words() {
    let names = referenced("rate(mqws_a_sum[5m]) / x_mqws_b + mqws_c_total{x=\"mqws_d\"}");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["mqws_a_sum", "mqws_c_total", "mqws_d"]
    );
    let (samples, types) = exported(
        "# TYPE s summary\ns{quantile=\"0.5\"} 0\ns_sum 0\ns_count 0\n# TYPE h histogram\nc_total 1\n",
    );
    assert!(is_exported("s_sum", &samples, &types));
    assert!(is_exported("c_total", &samples, &types));
    assert!(is_exported("h_bucket", &samples, &types));
    assert!(!is_exported("s_bucket", &samples, &types));
    assert!(!is_exported("nope", &samples, &types));
}
