//! Configuration: precedence (defaults < file < `MQWS_*` env < flags) as shown by
//! `check-config` and by `serve`, `./mqws.toml` pick-up, and invalid values (env, flag, file)
//! that exit with status 2 and one stderr line naming the key and the bad value.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mqws_integration::*;

const RUN: Duration = Duration::from_secs(20);

/// Flattens `check-config`'s TOML into `section.key → value` (quotes stripped). Enough for
/// the flat `[section]` + `key = value` layout of the config.
fn parse_toml(text: &str) -> HashMap<String, String> {
    let mut section = String::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_owned();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let key = if section.is_empty() {
                k.trim().to_owned()
            } else {
                format!("{section}.{}", k.trim())
            };
            out.insert(key, v.trim().trim_matches('"').to_owned());
        }
    }
    out
}

/// A humantime-style duration (`3s`, `1500ms`, `2m`) in milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let mut total = 0;
    for part in text.split_whitespace() {
        let split = part.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = part.split_at(split);
        let n: u64 = n.parse().ok()?;
        total += n * match unit {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
    }
    Some(total)
}

fn check_config(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> HashMap<String, String> {
    let mut full = vec!["check-config"];
    full.extend_from_slice(args);
    let out = run_mqws(&full, env, cwd, RUN);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_toml(&String::from_utf8_lossy(&out.stdout))
}

/// Exit status 2, exactly one non-empty stderr line, naming one of `keys` and the value.
fn assert_invalid(out: &Output, keys: &[&str], value: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit status; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got:\n{stderr}"
    );
    assert!(
        keys.iter().any(|k| lines[0].contains(k)),
        "{what}: the line must name {keys:?}: {}",
        lines[0]
    );
    assert!(
        has_token(lines[0], value),
        "{what}: the line must show {value:?}: {}",
        lines[0]
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("mqws ready"),
        "{what}: printed a ready line"
    );
}

/// `value` appears in `line` as a whole token (so `0` is not found inside `10`).
fn has_token(line: &str, value: &str) -> bool {
    line.split(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)))
        .any(|t| t == value || t.trim_end_matches('.') == value)
}

#[test]
fn check_config_shows_file_env_flag_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custom.toml");
    std::fs::write(
        &file,
        "[ws]\nhello_timeout = \"3s\"\nmax_filters = 7\nping_interval = \"15s\"\n\n\
         [http]\nlisten = \"127.0.0.1:7001\"\nshutdown_timeout = \"4s\"\n\n\
         [broker]\nlisten = \"127.0.0.1:7101\"\n\n\
         [log]\ndir = \"/tmp/mqws-from-file\"\n",
    )
    .unwrap();
    let cfg = check_config(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:7003",
            "--data-dir",
            "/tmp/mqws-from-flag",
        ],
        &[
            ("MQWS_WS__MAX_FILTERS", "9"),
            ("MQWS_WS__PONG_TIMEOUT", "7s"),
            ("MQWS_HTTP__LISTEN", "127.0.0.1:7002"),
            ("MQWS_BROKER__LISTEN", "127.0.0.1:7102"),
        ],
    );
    let get = |k: &str| {
        cfg.get(k)
            .unwrap_or_else(|| panic!("{k} missing from check-config output: {cfg:?}"))
            .as_str()
    };
    assert_eq!(
        duration_ms(get("ws.hello_timeout")),
        Some(3000),
        "file beats default"
    );
    assert_eq!(
        duration_ms(get("ws.ping_interval")),
        Some(15_000),
        "file beats default"
    );
    assert_eq!(
        duration_ms(get("http.shutdown_timeout")),
        Some(4000),
        "file beats default"
    );
    assert_eq!(get("ws.max_filters"), "9", "env beats file");
    assert_eq!(get("broker.listen"), "127.0.0.1:7102", "env beats file");
    assert_eq!(
        duration_ms(get("ws.pong_timeout")),
        Some(7000),
        "env beats default"
    );
    assert_eq!(
        get("http.listen"),
        "127.0.0.1:7003",
        "flag beats env and file"
    );
    assert_eq!(get("log.dir"), "/tmp/mqws-from-flag", "flag beats file");
    assert_eq!(
        get("ws.max_pending_messages"),
        "65536",
        "untouched key keeps its default"
    );
}

#[test]
fn check_config_reads_mqws_toml_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mqws.toml"), "[ws]\nmax_filters = 11\n").unwrap();
    let cfg = check_config(dir.path(), &[], &[]);
    assert_eq!(cfg.get("ws.max_filters").map(String::as_str), Some("11"));
}

/// `serve`'s `--http-listen`/`--mqtt-listen 127.0.0.1:0` beat `MQWS_HTTP__LISTEN` and
/// `MQWS_BROKER__LISTEN`, which name ports that are already taken.
#[test]
fn serve_flags_beat_env() {
    let http_taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mqtt_taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_env = http_taken.local_addr().unwrap().to_string();
    let mqtt_env = mqtt_taken.local_addr().unwrap().to_string();
    let server = Server::start_with(
        &[
            ("MQWS_HTTP__LISTEN", http_env.as_str()),
            ("MQWS_BROKER__LISTEN", mqtt_env.as_str()),
        ],
        None,
    );
    assert_ne!(server.http_addr.to_string(), http_env);
    assert_ne!(server.mqtt_addr.to_string(), mqtt_env);
    assert_ne!(server.http_addr.port(), 0);
    assert_ne!(server.mqtt_addr.port(), 0);
}

#[test]
fn invalid_env_value_exits_2_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_mqws(
        &["check-config"],
        &[("MQWS_WS__HELLO_TIMEOUT", "soon")],
        dir.path(),
        RUN,
    );
    assert_invalid(
        &out,
        &["ws.hello_timeout"],
        "soon",
        "MQWS_WS__HELLO_TIMEOUT=soon",
    );
}

#[test]
fn invalid_file_value_exits_2_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[ws]\nmax_filters = 0\n").unwrap();
    let out = run_mqws(
        &["check-config", "--config", file.to_str().unwrap()],
        &[],
        dir.path(),
        RUN,
    );
    assert_invalid(&out, &["ws.max_filters"], "0", "max_filters = 0 in a file");
}

#[test]
fn invalid_flag_value_exits_2_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run_mqws(
        &[
            "serve",
            "--http-listen",
            "not-an-address",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
        dir.path(),
        RUN,
    );
    assert_invalid(
        &out,
        &["http.listen", "--http-listen"],
        "not-an-address",
        "--http-listen not-an-address",
    );
}

#[test]
fn serve_with_invalid_values_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = [
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let out = run_mqws(
        &serve,
        &[("MQWS_WS__HELLO_TIMEOUT", "soon")],
        dir.path(),
        RUN,
    );
    assert_invalid(
        &out,
        &["ws.hello_timeout"],
        "soon",
        "serve with MQWS_WS__HELLO_TIMEOUT=soon",
    );

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[ws]\nmax_filters = 0\n").unwrap();
    let mut with_file = serve.to_vec();
    with_file.extend_from_slice(&["--config", file.to_str().unwrap()]);
    let out = run_mqws(&with_file, &[], dir.path(), RUN);
    assert_invalid(&out, &["ws.max_filters"], "0", "serve with max_filters = 0");
}

#[test]
fn helpers_parse_what_they_claim() {
    let cfg = parse_toml("[ws]\nhello_timeout = \"10s\"\nmax_filters = 100\n[log]\nsync = true\n");
    assert_eq!(cfg["ws.hello_timeout"], "10s");
    assert_eq!(cfg["log.sync"], "true");
    assert_eq!(duration_ms("1m 30s"), Some(90_000));
    assert_eq!(duration_ms("250ms"), Some(250));
    assert_eq!(duration_ms("soon"), None);
    assert!(has_token(
        "invalid config: ws.max_filters = 0: at least 1",
        "0"
    ));
    assert!(!has_token("ws.max_filters = 10", "0"));
    assert!(has_token(
        "bad value 'not-an-address' for --http-listen",
        "not-an-address"
    ));
}
