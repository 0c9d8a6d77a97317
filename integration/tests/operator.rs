//! What an operator sees on the real binary: JSON log lines that parse and carry the
//! connection's fields, one line when a connection ends, no colour codes in a file, and start-up
//! errors said once with what to do.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// The process's stderr lines (not its `[stdout]` ones).
fn log_lines(server: &Server) -> Vec<String> {
    server
        .tail_text()
        .lines()
        .filter(|l| !l.starts_with("[stdout]") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_each_connections_end() {
    let mut server = Server::start_with(&[("MQWS_LOGGING__FORMAT", "json")], None);
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["ops/#"]).await;
    let mut publisher = mqtt_client(&server, "ops-reader").await;
    publisher
        .publish("ops/t", QoS::AtLeastOnce, false, "x")
        .await;
    publisher.wait_pubacks(1, WAIT).await;
    next_message(&mut ws, WAIT).await;
    close(&mut ws, 1000).await;
    drop(publisher);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.sigterm();
    assert!(server.wait(WAIT).await.success());
    let lines = log_lines(&server);
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &parsed {
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
    }
    let ws_end = parsed
        .iter()
        .find(|v| v["fields"]["message"] == "websocket closed")
        .unwrap_or_else(|| panic!("no `websocket closed` line in {lines:#?}"));
    assert_eq!(ws_end["level"], "INFO");
    assert!(
        ws_end["span"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{ws_end}"
    );
    assert!(ws_end["fields"]["session"].is_string(), "{ws_end}");
    assert!(
        ws_end["fields"]["frames_out"].as_u64().unwrap() >= 2,
        "{ws_end}"
    );
    assert!(ws_end["fields"]["duration_ms"].is_u64(), "{ws_end}");
    let mqtt_end = parsed
        .iter()
        .find(|v| {
            v["fields"]["message"] == "mqtt connection closed"
                && v["span"]["client_id"] == "ops-reader"
        })
        .unwrap_or_else(|| panic!("no `mqtt connection closed` line in {lines:#?}"));
    assert_eq!(mqtt_end["fields"]["publishes_in"], 1, "{mqtt_end}");
    assert!(
        !lines.iter().any(|l| l.contains("already gone")),
        "rumqttd's routine disconnect noise is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let mut server = Server::start();
    let mut ws = ws_connect(&server).await;
    hello(&mut ws, &["ops/#"]).await;
    close(&mut ws, 1000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.sigterm();
    assert!(server.wait(WAIT).await.success());
    let lines = log_lines(&server);
    assert!(
        lines.iter().any(|l| l.contains("websocket closed")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains('\u{1b}')),
        "ANSI escape codes in a pipe: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_in_use_is_refused_once_naming_log_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _running = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let data_dir = dir.path().to_str().unwrap();
    let out = run_mqws(
        &[
            "serve",
            "--data-dir",
            data_dir,
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ],
        &[],
        dir.path(),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("in use by another process").count(),
        1,
        "said once: {stderr}"
    );
    assert!(stderr.contains("log.dir"), "{stderr}");
    assert!(stderr.contains(data_dir), "{stderr}");
}

#[test]
fn check_config_defaults_prints_a_commented_config_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_mqws(
        &["check-config", "--defaults"],
        &[],
        dir.path(),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    assert!(example.lines().filter(|l| l.starts_with('#')).count() > 60);
    std::fs::write(dir.path().join("mqws.toml"), &example).unwrap();
    let checked = run_mqws(&["check-config"], &[], dir.path(), Duration::from_secs(30));
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn config_errors_name_the_line_or_the_closest_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        std::fs::write(dir.path().join("mqws.toml"), toml).unwrap();
        let out = run_mqws(&["check-config"], &[], dir.path(), Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "exit status 2 for {toml:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let syntax = check("[http]\nlisten = \"127.0.0.1:80\n");
    assert!(
        syntax.contains("mqws.toml") && syntax.contains("line 2, column"),
        "{syntax}"
    );
    let typo = check("[ws]\nhelo_timeout = \"5s\"\n");
    assert_eq!(typo.lines().count(), 1, "one line: {typo}");
    assert!(typo.contains("unknown key ws.helo_timeout:"), "{typo}");
    assert!(typo.contains("did you mean hello_timeout?"), "{typo}");
    let out = run_mqws(
        &["check-config", "--log-format", "yaml"],
        &[],
        dir.path(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("logging.format") && stderr.contains("\"json\""),
        "{stderr}"
    );
}
