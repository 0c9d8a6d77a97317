//! Starting Mosquitto (e.g. Debian's `/usr/sbin/mosquitto`) as a same-run reference broker.
//!
//! `mqws-load --mosquitto-bin PATH` starts it as a child process with a generated config file
//! in a temporary directory: one MQTT listener and one WebSocket listener (`protocol
//! websockets`) on free loopback ports, `allow_anonymous true`, `persistence false`, everything
//! else at Mosquitto's defaults (plus any `--mosquitto-conf` lines). The child is stopped with
//! SIGTERM at the end of the run and killed when this handle is dropped, so an error path
//! cannot leave it running.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

/// How long Mosquitto may take to open both listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Mosquitto may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines kept for error messages.
const TAIL_LINES: usize = 20;

/// Mosquitto 2.0 defaults that decide what a slow subscriber gets, stated in every report.
pub const DEFAULTS_NOTE: &str = "Mosquitto runs with its defaults apart from the listeners, \
allow_anonymous true and persistence false: max_inflight_messages 20, max_queued_messages 1000 \
(per client, beyond them Mosquitto drops), max_queued_bytes 0 (no limit), set_tcp_nodelay false, \
no persistence (QoS 1 PUBACKs are not preceded by any disk write)";

/// What we know about the Mosquitto of a run, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct MosquittoInfo {
    /// `mosquitto -h`'s version line.
    pub version: String,
    /// The generated configuration file, line by line.
    pub config: Vec<String>,
    /// Of those, the lines given with `--mosquitto-conf`.
    pub extra_config: Vec<String>,
    /// MQTT listener.
    pub mqtt: SocketAddr,
    /// WebSocket listener (MQTT over WebSocket, subprotocol `mqtt`).
    pub ws: SocketAddr,
    /// Exit code after SIGTERM (None: killed by a signal or not stopped yet).
    pub exit_code: Option<i32>,
    /// Whether it had to be killed after the stop timeout.
    pub killed: bool,
    /// Log lines containing "Error" or "Warning".
    pub warnings: Vec<String>,
}

/// A running Mosquitto child.
#[derive(Debug)]
pub struct Mosquitto {
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// WebSocket address.
    pub ws: SocketAddr,
    /// Process id.
    pub pid: u32,
    child: Option<Child>,
    info: MosquittoInfo,
    log: Arc<Mutex<(VecDeque<String>, Vec<String>)>>,
    _dir: tempfile::TempDir,
}

/// A free loopback port: bind port 0, read it, release it.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

/// The configuration lines for the two listeners plus `extra`.
pub fn config_lines(mqtt_port: u16, ws_port: u16, extra: &[String]) -> Vec<String> {
    let mut lines = vec![
        format!("listener {mqtt_port} 127.0.0.1"),
        format!("listener {ws_port} 127.0.0.1"),
        "protocol websockets".to_string(),
        "allow_anonymous true".to_string(),
        "persistence false".to_string(),
        "log_dest stderr".to_string(),
    ];
    lines.extend(extra.iter().cloned());
    lines
}

impl Mosquitto {
    /// Starts `bin` with a generated config; waits until both listeners accept connections.
    pub fn spawn(bin: &Path, extra: &[String]) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "mosquitto not found at {} (Debian: apt-get install -y mosquitto)",
                bin.display()
            );
        }
        let version = version_of(bin);
        let dir = tempfile::Builder::new()
            .prefix("mqws-load-mosquitto-")
            .tempdir()
            .context("creating Mosquitto's temporary dir")?;
        let (mqtt_port, ws_port) = (free_port()?, free_port()?);
        let lines = config_lines(mqtt_port, ws_port, extra);
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, lines.join("\n") + "\n").context("writing mosquitto.conf")?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let log = Arc::new(Mutex::new((VecDeque::new(), Vec::new())));
        if let Some(stderr) = child.stderr.take() {
            let log2 = log.clone();
            std::thread::spawn(move || drain(stderr, &log2));
        }
        let mqtt = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
        let ws = SocketAddr::from(([127, 0, 0, 1], ws_port));
        let mut m = Self {
            mqtt,
            ws,
            pid,
            child: Some(child),
            info: MosquittoInfo {
                version,
                config: lines,
                extra_config: extra.to_vec(),
                mqtt,
                ws,
                exit_code: None,
                killed: false,
                warnings: Vec::new(),
            },
            log,
            _dir: dir,
        };
        let t0 = Instant::now();
        loop {
            let up = [mqtt, ws]
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok());
            if up {
                eprintln!(
                    "mqws-load: mosquitto (pid {pid}) ready in {} ms: mqtt={mqtt} ws={ws}",
                    t0.elapsed().as_millis()
                );
                return Ok(m);
            }
            if let Some(c) = m.child.as_mut() {
                if let Some(status) = c.try_wait().context("waiting for mosquitto")? {
                    std::thread::sleep(Duration::from_millis(100));
                    bail!(
                        "mosquitto exited before it was ready ({status}); last lines:\n{}",
                        m.tail()
                    );
                }
            }
            if t0.elapsed() > READY_TIMEOUT {
                let tail = m.tail();
                m.stop();
                bail!("mosquitto did not open its listeners within {READY_TIMEOUT:?}:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last log lines.
    pub fn tail(&self) -> String {
        match self.log.lock() {
            Ok(l) => l.0.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, wait (bounded), SIGKILL; returns what the report shows. Idempotent.
    pub fn stop(&mut self) -> MosquittoInfo {
        if let Some(mut child) = self.child.take() {
            let t0 = Instant::now();
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if sent && t0.elapsed() < STOP_TIMEOUT => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        self.info.killed = true;
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                }
            };
            self.info.exit_code = status.and_then(|s| s.code());
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(l) = self.log.lock() {
                self.info.warnings = l.1.clone();
            }
        }
        self.info.clone()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The first line of `mosquitto -h` (it prints its version there and exits with status 3).
fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "mosquitto (version unknown)".into())
}

fn drain(stderr: impl Read, log: &Mutex<(VecDeque<String>, Vec<String>)>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let Ok(mut l) = log.lock() else { break };
        if (line.contains("Error") || line.contains("Warning")) && l.1.len() < 10 {
            l.1.push(line.clone());
        }
        l.0.push_back(line);
        if l.0.len() > TAIL_LINES {
            l.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_both_listeners_and_no_persistence() {
        let c = config_lines(1883, 9001, &["set_tcp_nodelay true".into()]);
        assert_eq!(c[0], "listener 1883 127.0.0.1");
        assert_eq!(c[1], "listener 9001 127.0.0.1");
        assert_eq!(c[2], "protocol websockets");
        assert!(c.contains(&"persistence false".to_string()));
        assert!(c.contains(&"allow_anonymous true".to_string()));
        assert_eq!(c.last().map(String::as_str), Some("set_tcp_nodelay true"));
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert!(free_port().expect("a free port") > 0);
    }

    #[test]
    fn missing_binary_is_an_error() {
        let e = Mosquitto::spawn(Path::new("/nonexistent/mosquitto"), &[]).expect_err("fails");
        assert!(e.to_string().contains("apt-get install"));
    }
}
