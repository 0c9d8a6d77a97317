//! Starting the real `mqws` binary (or attaching to a running one) and stopping it.
//!
//! A started server gets `serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0
//! --data-dir DIR`; we wait for its one stdout line `mqws ready http=ADDR mqtt=ADDR`. Both pipes
//! are drained by background threads; stderr is kept (last lines, warning/error counts, and
//! optionally a copy in a file) so odd server behaviour shows up in the report.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

/// How long a started server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Stderr lines kept for the report.
const TAIL_LINES: usize = 40;

/// What the server's stderr showed.
#[derive(Debug, Default)]
struct LogWatch {
    tail: VecDeque<String>,
    warn: u64,
    error: u64,
    first_warnings: Vec<String>,
}

/// How a started server stopped.
#[derive(Debug, Clone, Serialize)]
pub struct StopInfo {
    /// Exit code (None when ended by a signal).
    pub exit_code: Option<i32>,
    /// Milliseconds from SIGTERM to exit.
    pub shutdown_ms: u64,
    /// Whether it had to be killed after the timeout.
    pub killed: bool,
    /// WARN lines seen on stderr.
    pub warn_lines: u64,
    /// ERROR lines seen on stderr.
    pub error_lines: u64,
    /// The first few WARN/ERROR lines.
    pub first_warnings: Vec<String>,
}

/// A running mqws, started by us or attached to.
#[derive(Debug)]
pub struct Server {
    /// HTTP address (WebSocket at `/ws`); None when only an MQTT broker was given.
    pub http: Option<SocketAddr>,
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// Process id, when known (started by us, or given for an attached server).
    pub pid: Option<u32>,
    child: Option<Child>,
    log: Arc<Mutex<LogWatch>>,
    _data_dir: Option<tempfile::TempDir>,
}

/// How to start a server.
#[derive(Debug)]
pub struct SpawnOptions<'a> {
    /// The binary.
    pub bin: &'a Path,
    /// Data directory; a temporary one when None.
    pub data_dir: Option<&'a Path>,
    /// Extra environment, `KEY=VALUE`.
    pub env: &'a [String],
    /// Copy stderr here.
    pub log_file: Option<&'a Path>,
}

impl Server {
    /// Uses a server that is already running.
    pub fn attach(http: Option<SocketAddr>, mqtt: SocketAddr, pid: Option<u32>) -> Self {
        Self {
            http,
            mqtt,
            pid,
            child: None,
            log: Arc::default(),
            _data_dir: None,
        }
    }

    /// Starts the binary and waits for its ready line.
    pub fn spawn(opts: &SpawnOptions<'_>) -> anyhow::Result<Self> {
        if !opts.bin.is_file() {
            bail!(
                "mqws binary not found at {}; build it with `cargo build --release -p mqws` \
                 (from the workspace root), pass --mqws-bin PATH, or attach to a running server \
                 with --http ADDR --mqtt ADDR",
                opts.bin.display()
            );
        }
        let (tmp, dir): (Option<tempfile::TempDir>, PathBuf) = match opts.data_dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("mqws-load-")
                    .tempdir()
                    .context("creating a temporary data dir")?;
                let p = t.path().join("data");
                (Some(t), p)
            }
        };
        let mut cmd = Command::new(opts.bin);
        cmd.args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for kv in opts.env {
            let (k, v) = kv.split_once('=').context("--server-env wants KEY=VALUE")?;
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.bin.display()))?;
        let pid = child.id();
        let log = Arc::new(Mutex::new(LogWatch::default()));
        let stdout = child.stdout.take().context("child stdout")?;
        let stderr = child.stderr.take().context("child stderr")?;
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || drain_stdout(stdout, ready_tx));
        let mut file = match opts.log_file {
            Some(p) => Some(
                std::fs::File::create(p)
                    .with_context(|| format!("creating server log {}", p.display()))?,
            ),
            None => None,
        };
        let log2 = log.clone();
        std::thread::spawn(move || drain_stderr(stderr, &log2, file.as_mut()));

        let started = Instant::now();
        let mut server = Self {
            http: None,
            mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: Some(pid),
            child: Some(child),
            log,
            _data_dir: tmp,
        };
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let (http, mqtt) = parse_ready(&line)
                        .with_context(|| format!("unexpected ready line from mqws: {line:?}"))?;
                    server.http = Some(http);
                    server.mqtt = mqtt;
                    eprintln!(
                        "mqws-load: mqws (pid {pid}) ready in {} ms: http={http} mqtt={mqtt}",
                        started.elapsed().as_millis()
                    );
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(child) = server.child.as_mut() {
                if let Some(status) = child.try_wait().context("waiting for mqws")? {
                    // Give the stderr thread a moment to catch the last lines.
                    std::thread::sleep(Duration::from_millis(200));
                    bail!(
                        "mqws exited before it was ready ({status}); last stderr lines:\n{}",
                        server.stderr_tail()
                    );
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                let tail = server.stderr_tail();
                let _ = server.stop();
                bail!(
                    "mqws printed no ready line within {READY_TIMEOUT:?}; last stderr lines:\n{tail}"
                );
            }
        }
    }

    /// The last stderr lines, one per line.
    pub fn stderr_tail(&self) -> String {
        let log = self.log.lock().expect("log lock poisoned");
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Whether we started it.
    pub fn spawned(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is still running (true for attached servers).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Sends SIGTERM to a started server and waits (bounded) for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<Option<StopInfo>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let t0 = Instant::now();
        let mut killed = false;
        let status = match child.try_wait()? {
            Some(s) => s,
            None => {
                let sent = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                loop {
                    if let Some(s) = child.try_wait()? {
                        break s;
                    }
                    if !sent || t0.elapsed() > STOP_TIMEOUT {
                        killed = true;
                        child.kill().context("killing mqws")?;
                        break child.wait()?;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let shutdown_ms = t0.elapsed().as_millis() as u64;
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().expect("log lock poisoned");
        Ok(Some(StopInfo {
            exit_code: status.code(),
            shutdown_ms,
            killed,
            warn_lines: log.warn,
            error_lines: log.error,
            first_warnings: log.first_warnings.clone(),
        }))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn drain_stdout(stdout: impl Read, ready: mpsc::Sender<String>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("mqws ready ") {
            let _ = ready.send(line);
        } else {
            eprintln!("mqws stdout: {line}");
        }
    }
}

fn drain_stderr(stderr: impl Read, log: &Mutex<LogWatch>, mut file: Option<&mut std::fs::File>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(&buf);
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        let plain = strip_ansi(&line);
        let mut log = log.lock().expect("log lock poisoned");
        let is_warn = plain.contains(" WARN ");
        let is_error = plain.contains(" ERROR ");
        if is_warn {
            log.warn += 1;
        }
        if is_error {
            log.error += 1;
        }
        if (is_warn || is_error) && log.first_warnings.len() < 10 {
            log.first_warnings.push(plain.clone());
        }
        log.tail.push_back(plain);
        if log.tail.len() > TAIL_LINES {
            log.tail.pop_front();
        }
    }
}

/// Removes ANSI colour escapes (tracing colours its output when it thinks it may).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `mqws ready http=ADDR mqtt=ADDR`.
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let mut http = None;
    let mut mqtt = None;
    for tok in line.split_whitespace() {
        if let Some(v) = tok.strip_prefix("http=") {
            http = v.parse().ok();
        } else if let Some(v) = tok.strip_prefix("mqtt=") {
            mqtt = v.parse().ok();
        }
    }
    Some((http?, mqtt?))
}

/// A bounded plain-HTTP GET on loopback; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.take(16 << 20).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        let (h, m) =
            parse_ready("mqws ready http=127.0.0.1:8080 mqtt=127.0.0.1:1883").expect("parses");
        assert_eq!(h.port(), 8080);
        assert_eq!(m.port(), 1883);
        assert!(parse_ready("mqws ready http=127.0.0.1:8080").is_none());
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }

    #[test]
    fn missing_binary_has_a_hint() {
        let err = Server::spawn(&SpawnOptions {
            bin: Path::new("/nonexistent/mqws"),
            data_dir: None,
            env: &[],
            log_file: None,
        })
        .expect_err("must fail");
        assert!(err.to_string().contains("cargo build --release -p mqws"));
    }
}
