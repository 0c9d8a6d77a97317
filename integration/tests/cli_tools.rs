//! The operator tools of the real binary: `mqws sub` printing what an MQTT client (rumqttc)
//! publishes, `mqws pub` reaching an MQTT subscriber (rumqttc), resuming with `--from`, gaps,
//! exit statuses on close, refusal and signals, tokens from `MQWS_TOKEN`, and `mqws inspect`
//! on a stopped and on a running server's data dir. The MQTT peers are rumqttc clients, not
//! mosquitto's: mosquitto_pub and mosquitto_sub meet the server in `integration/interop/`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mqws::testkit::{seed_log, Seed};
use mqws_integration::*;
use rumqttc::QoS;
use serde_json::Value;
use sha2::Digest;

const WAIT: Duration = Duration::from_secs(20);

/// `mqws ARGS` to completion (bounded), with only `env` as its `MQWS_*` environment.
fn mqws(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    run_mqws(args, env, cwd.path(), WAIT)
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An MQTT 3.1.1 client of the server's broker that publishes for a test.
async fn publisher(server: &Server) -> Mqtt {
    mqtt_client(server, "cli-publisher").await
}

/// A QoS 1 publish of one message (retained when `retain`), returned once the broker has
/// acknowledged it (its PubAck), so that publishes follow each other in order.
async fn mqtt_pub(client: &mut Mqtt, topic: &str, msg: &str, retain: bool) {
    client
        .publish(topic, QoS::AtLeastOnce, retain, msg.as_bytes())
        .await;
    client.wait_pubacks(1, WAIT).await;
}

/// A `mqws sub` (or any) process running in the background, its output read line by line.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    err_seen: Vec<String>,
}

impl Running {
    fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MQWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let lines = |src: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(src).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
            err_seen: Vec::new(),
        }
    }

    /// `mqws sub -v ARGS…`, returned once it reports its connection.
    fn sub(args: &[&str]) -> Running {
        let mut all = vec!["sub", "-v"];
        all.extend_from_slice(args);
        let mut sub = Running::spawn(&mqws_bin(), &all, &[]);
        sub.wait_stderr("info: connected");
        sub
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.err_seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no stderr line with {needle:?}; stderr so far: {:?}",
            self.err_seen
        );
    }

    fn signal(&self, sig: Signal) {
        signal(self.child.id(), sig);
    }

    /// Waits (bounded) for the exit; returns the status, stdout lines and the whole stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit in {WAIT:?}; stderr {:?}",
                    self.err_seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, shortly after the exit.
        let drain = |rx: &mpsc::Receiver<String>| {
            let mut out = Vec::new();
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
                out.push(line);
            }
            out
        };
        let out = drain(&self.stdout);
        let mut err = std::mem::take(&mut self.err_seen);
        err.extend(drain(&self.stderr));
        (status, out, err.join("\n"))
    }
}

/// The log position (`welcome.position`) of a fresh connection.
async fn position(server: &Server) -> (String, u64) {
    let mut ws = ws_connect(server).await;
    let welcome = hello(&mut ws, &[]).await;
    let p = &welcome["position"];
    (
        p["epoch"].as_str().unwrap().to_owned(),
        p["seq"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_prints_what_an_mqtt_qos1_publish_sends_as_text_and_as_json() {
    let server = Server::start();
    let url = server.ws_url();
    let text = Running::sub(&["--url", &url, "--count", "3", "cli/#"]);
    let json = Running::sub(&["--url", &url, "--count", "3", "--format", "json", "cli/#"]);
    let mut mqtt = publisher(&server).await;
    mqtt_pub(&mut mqtt, "cli/a", "hello world", false).await;
    mqtt_pub(&mut mqtt, "other/x", "not matched", false).await;
    mqtt_pub(&mut mqtt, "cli/b", r#"{"x":1}"#, false).await;
    mqtt_pub(&mut mqtt, "cli/c", "303400000000000000001234", false).await;

    let (status, out, err) = text.finish();
    assert!(status.success(), "{status}; stderr {err}");
    assert_eq!(
        out,
        [
            "cli/a hello world",
            r#"cli/b {"x":1}"#,
            "cli/c 303400000000000000001234"
        ]
    );

    let (status, out, err) = json.finish();
    assert!(status.success(), "{status}; stderr {err}");
    let frames: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 3, "{out:?}");
    assert!(frames.iter().all(|f| f["type"] == "message"), "{out:?}");
    assert_eq!(frames[0]["payload"], "hello world");
    assert_eq!(frames[0]["enc"], "text");
    assert_eq!(frames[1]["payload"], serde_json::json!({"x": 1}));
    assert_eq!(frames[1]["enc"], "json");
    // A bare JSON number: carried exactly (as a string with enc "text" per the contract, or
    // as the number itself), never rounded by the tool.
    assert!(out[2].contains("303400000000000000001234"), "{}", out[2]);
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_from_a_position_prints_exactly_the_later_messages() {
    let server = Server::start();
    let url = server.ws_url();
    let mut mqtt = publisher(&server).await;
    for i in 1..=3 {
        mqtt_pub(&mut mqtt, "res/a", &format!("early{i}"), false).await;
    }
    wait_dispatched(&server, 3, WAIT).await;
    let (epoch, seq) = position(&server).await;
    assert_eq!(seq, 3);
    for i in 1..=2 {
        mqtt_pub(&mut mqtt, "res/a", &format!("late{i}"), false).await;
    }
    mqtt_pub(&mut mqtt, "elsewhere", "x", false).await;
    wait_dispatched(&server, 6, WAIT).await;

    let from = format!("{epoch}:{seq}");
    let out = mqws(
        &[
            "sub", "-v", "--url", &url, "--from", &from, "--count", "2", "res/#",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_lines(&out), ["res/a late1", "res/a late2"]);
    // The position to continue from is the last message printed.
    assert!(
        stderr_text(&out).contains(&format!("continue with --from {epoch}:5")),
        "{}",
        stderr_text(&out)
    );

    // From the start, and from a time before everything: all five, in order.
    for from in ["earliest", "time:0", "time:1970-01-01T00:00:00Z"] {
        let out = mqws(
            &[
                "sub", "--url", &url, "--from", from, "--count", "5", "res/#",
            ],
            &[],
        );
        assert!(out.status.success(), "{from}: {out:?}");
        assert_eq!(
            stdout_lines(&out),
            [
                "res/a early1",
                "res/a early2",
                "res/a early3",
                "res/a late1",
                "res/a late2"
            ],
            "{from}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_reports_lost_ranges_in_both_formats() {
    let data = tempfile::tempdir().unwrap();
    let message = |p: &str| Seed::Message {
        topic: "g/a".to_owned(),
        payload: p.as_bytes().to_vec(),
    };
    seed_log(
        data.path(),
        &[message("one"), Seed::Lost(3), message("five")],
    )
    .unwrap();
    let server = Server::start_with(&[], Some(data.path().to_path_buf()));
    let url = server.ws_url();

    let args = [
        "sub", "--url", &url, "--from", "earliest", "--count", "2", "g/#",
    ];
    let out = mqws(&args, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_lines(&out), ["g/a one", "g/a five"]);
    assert!(stderr_text(&out).contains("gap 2-4 dropped"), "{out:?}");

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let out = mqws(&json_args, &[]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        serde_json::json!({"type": "gap", "reason": "dropped", "from": 2, "to": 4})
    );
    assert_eq!(lines[1]["payload"], "one");
    assert_eq!(lines[2]["payload"], "five");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_exits_zero_on_sigint_and_non_zero_when_the_server_closes() {
    let mut server = Server::start();
    let url = server.ws_url();
    let interrupted = Running::sub(&["--url", &url, "live/#"]);
    interrupted.signal(Signal::INT);
    let (status, out, err) = interrupted.finish();
    assert!(status.success(), "{status}; {err}");
    assert!(out.is_empty(), "{out:?}");

    let closed = Running::sub(&["--url", &url, "live/#"]);
    server.sigterm();
    let (status, _, err) = closed.finish();
    assert!(!status.success(), "exit {status} on the server's close");
    assert!(
        err.contains("error: the server closed the connection: 1001"),
        "{err}"
    );
    server.wait(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_reaches_an_mqtt_subscriber_and_refusals_exit_non_zero() {
    let server = Server::start();
    let url = server.ws_url();
    // Subscribed once the broker's SubAck is in: from then on one publish must reach it.
    let mut listener = mqtt_client(&server, "cli-listener").await;
    listener.subscribe("cmd/r1", QoS::AtMostOnce).await;
    let payload = r#"{"op":"start"}"#;
    let out = mqws(&["pub", "--url", &url, "-q", "1", "cmd/r1", payload], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let got = listener.next_publish(WAIT).await;
    assert_eq!(got.topic, "cmd/r1");
    assert_eq!(&got.payload[..], payload.as_bytes());

    // Refused by the server: the contract's code on stderr, exit 1.
    let out = mqws(&["pub", "--url", &url, "cmd/+/x", "p"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr_text(&out).starts_with("error: bad_topic: "),
        "{}",
        stderr_text(&out)
    );
    // Nobody listening.
    let out = mqws(&["pub", "--url", "ws://127.0.0.1:1/ws", "t", "p"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr_text(&out).starts_with("error: cannot connect to ws://127.0.0.1:1/ws"));
    // Unusable arguments: exit 2.
    let out = mqws(&["sub", "--url", &url, "--from", "yesterday", "#"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr_text(&out).contains("--from"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_the_environment_and_grants_apply() {
    let token = "cli-secret-token";
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let config = format!(
        "[auth]\nmode = \"tokens\"\n[[auth.tokens]]\nsha256 = \"{hash}\"\nsub = [\"t/#\"]\npub = [\"t/#\"]\n"
    );
    let server = Server::start_configured(&config, &[], None);
    let url = server.ws_url();

    let out = mqws(&["pub", "--url", &url, "t/x", "p"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr_text(&out).starts_with("error: unauthorized"),
        "{out:?}"
    );

    let env = [("MQWS_TOKEN", token)];
    let out = mqws(&["pub", "--url", &url, "t/x", "p"], &env);
    assert!(out.status.success(), "{out:?}");
    let out = mqws(&["pub", "--url", &url, "u/x", "p"], &env);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr_text(&out).starts_with("error: forbidden"), "{out:?}");
    assert!(!stderr_text(&out).contains(token));

    let out = mqws(
        &[
            "sub", "--url", &url, "--token", token, "--from", "earliest", "-C", "1", "t/#",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_lines(&out), ["t/x p"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_a_stopped_servers_data_dir_and_refuses_a_running_one() {
    let mut server = Server::start();
    let dir = server.data_dir.to_string_lossy().into_owned();
    let mut mqtt = publisher(&server).await;
    mqtt_pub(&mut mqtt, "insp/a", "1", false).await;
    mqtt_pub(&mut mqtt, "insp/b", "22", true).await;
    mqtt_pub(&mut mqtt, "insp/a", "333", false).await;
    drop(mqtt);
    wait_dispatched(&server, 3, WAIT).await;
    let (epoch, _) = position(&server).await;

    let out = mqws(&["inspect", &dir], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr_text(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: another mqws process is using {dir}")),
        "{err}"
    );

    server.sigterm();
    assert!(server.wait(WAIT).await.success());
    let out = mqws(&["inspect", &dir], &[]);
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    for want in [
        format!("epoch: {epoch}"),
        "first seq: 1".to_owned(),
        "head seq: 3".to_owned(),
        "messages: 3".to_owned(),
        format!("bytes: {} (topic + payload)", 3 * 6 + 6),
        "topics: 2".to_owned(),
        "lost ranges: 0".to_owned(),
        "retained topics: 1".to_owned(),
        "  insp/b (2 bytes)".to_owned(),
    ] {
        assert!(lines.contains(&want), "no {want:?} in {lines:?}");
    }
    let out = mqws(&["inspect", "--format", "json", &dir], &[]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["epoch"], epoch.as_str());
    assert_eq!(report["head"], 3);
    assert_eq!(report["messages"], 3);

    // Lost ranges of a seeded dir; a directory that is no data dir.
    let seeded = tempfile::tempdir().unwrap();
    let m = || Seed::Message {
        topic: "s".to_owned(),
        payload: b"x".to_vec(),
    };
    seed_log(seeded.path(), &[m(), Seed::Lost(2), m()]).unwrap();
    let out = mqws(&["inspect", &seeded.path().to_string_lossy()], &[]);
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    assert!(lines.contains(&"lost ranges: 1".to_owned()), "{lines:?}");
    assert!(lines.contains(&"  2-3 dropped".to_owned()), "{lines:?}");
    let empty = tempfile::tempdir().unwrap();
    let out = mqws(&["inspect", &empty.path().to_string_lossy()], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr_text(&out).contains("is not an mqws data dir"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_checks_the_certificate_against_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let tls_files = test_cert(dir.path());
    let c = tls_files.pem.clone();
    let server = Server::start_configured(&tls_files.config, &[], None);
    let url = format!("wss://localhost:{}/ws", server.http_addr.port());

    // The test certificate as the only root (SSL_CERT_FILE is how rustls-native-certs is
    // pointed at other roots): published and received over wss.
    let roots = [("SSL_CERT_FILE", c.to_str().unwrap())];
    let out = mqws(
        &["pub", "--url", &url, "--retain", "tls/x", "secure"],
        &roots,
    );
    assert!(out.status.success(), "{out:?}");
    let out = mqws(
        &[
            "sub", "--url", &url, "--from", "earliest", "-C", "1", "tls/#",
        ],
        &roots,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_lines(&out), ["tls/x secure"]);

    // Without it, the certificate is not trusted.
    let other = dir.path().join("other.pem");
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&other, stranger.cert.pem()).unwrap();
    let out = mqws(
        &["pub", "--url", &url, "tls/x", "p"],
        &[("SSL_CERT_FILE", other.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr_text(&out).starts_with("error: cannot connect to wss://"),
        "{out:?}"
    );
}
