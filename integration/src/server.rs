//! The `mqws` process under test: locating (and if needed building) the binary, starting
//! `mqws serve` on free ports, waiting for its ready line, signalling it, and keeping the tail
//! of its output to print when a test fails.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use rustix::process::{kill_process, Pid};
use tempfile::TempDir;

/// How long `mqws serve` may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many of the first lines of output are kept for the failure report.
const HEAD_LINES: usize = 40;
/// How many of the last lines of output are kept for the failure report.
const TAIL_LINES: usize = 200;

/// Path of the `mqws` binary under test.
///
/// `$MQWS_BIN` wins when set. Otherwise the binary next to this test executable's target
/// directory is used (`target/debug/mqws`); when it does not exist yet it is built once with
/// `cargo build -p mqws --bin mqws` (guarded so parallel tests build it only once).
pub fn mqws_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MQWS_BIN") {
            return PathBuf::from(p);
        }
        let target = target_dir();
        let candidate = target.join(format!("mqws{}", std::env::consts::EXE_SUFFIX));
        if !candidate.exists() {
            build_binary(&target);
        }
        assert_cmd::cargo::cargo_bin("mqws")
    })
    .clone()
}

/// `target/<profile>` of the running test executable (it lives in `target/<profile>/deps`).
fn target_dir() -> PathBuf {
    let mut path = std::env::current_exe().expect("current_exe");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path
}

fn build_binary(target: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "mqws", "--bin", "mqws"])
        .current_dir(&workspace);
    if target.ends_with("release") {
        cmd.arg("--release");
    }
    eprintln!("mqws binary not found in {}; building it", target.display());
    let status = cmd.status().expect("run cargo build -p mqws");
    assert!(
        status.success(),
        "cargo build -p mqws --bin mqws failed: {status}"
    );
}

/// Removes every `MQWS_*` variable inherited from the test environment so a run depends only
/// on what the test sets.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MQWS_") {
            cmd.env_remove(key);
        }
    }
}

/// Runs `mqws ARGS` to completion (bounded by `timeout`) with only the given `MQWS_*`
/// environment, in `cwd`, and returns its output. For `check-config` and start-up failures.
pub fn run_mqws(args: &[&str], env: &[(&str, &str)], cwd: &Path, timeout: Duration) -> Output {
    let mut cmd = Command::new(mqws_bin());
    scrub_env(&mut cmd);
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut cmd = assert_cmd::Command::from_std(cmd);
    cmd.timeout(timeout);
    cmd.output().expect("run mqws")
}

/// Parses `mqws ready http=ADDR mqtt=ADDR`.
fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim_end().strip_prefix("mqws ready ")?;
    let mut http = None;
    let mut mqtt = None;
    for part in rest.split(' ') {
        if let Some(a) = part.strip_prefix("http=") {
            http = a.parse().ok();
        } else if let Some(a) = part.strip_prefix("mqtt=") {
            mqtt = a.parse().ok();
        } else {
            return None;
        }
    }
    Some((http?, mqtt?))
}

/// The process's output as kept for failure reports: the first lines (start-up, the first
/// error) and the last lines, with a count of what was skipped between them.
#[derive(Default)]
struct Kept {
    head: Vec<String>,
    tail: VecDeque<String>,
    skipped: usize,
}

type Tail = Arc<Mutex<Kept>>;

fn push_tail(kept: &Tail, line: String) {
    let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
    if k.head.len() < HEAD_LINES {
        k.head.push(line);
        return;
    }
    if k.tail.len() >= TAIL_LINES {
        k.tail.pop_front();
        k.skipped += 1;
    }
    k.tail.push_back(line);
}

/// Reads lines until EOF; non-UTF-8 output is kept lossily.
fn read_lines(src: impl Read, mut each: impl FnMut(String)) {
    let mut reader = BufReader::new(src);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                each(line);
            }
        }
    }
}

/// The argon2 hash `mqws hash-password` gives `password`, for `broker.users` in tests.
pub fn hash_password(password: &str) -> String {
    let mut child = Command::new(mqws_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run mqws hash-password");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, format!("{password}\n").as_bytes()).expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("hash-password output");
    assert!(out.status.success(), "mqws hash-password failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

/// Sends `sig` to process `pid` with kill(2), through rustix since the workspace forbids unsafe
/// code (and the tests need no `kill` program); panics when it cannot be sent.
pub fn signal(pid: u32, sig: Signal) {
    let target = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let target = target.unwrap_or_else(|| panic!("{pid} is not a process id"));
    if let Err(e) = kill_process(target, sig) {
        panic!("kill({pid}, {sig:?}) failed: {e}");
    }
}

/// A running `mqws serve` process. Dropping it kills the process (SIGKILL) and, when the
/// thread is panicking, prints the last lines of its output.
pub struct Server {
    /// Bound address of the HTTP/WebSocket listener, from the ready line.
    pub http_addr: SocketAddr,
    /// Bound address of the MQTT listener, from the ready line.
    pub mqtt_addr: SocketAddr,
    /// The `--data-dir` given to the process.
    pub data_dir: PathBuf,
    child: Child,
    tail: Tail,
    exit: Option<ExitStatus>,
    _owned_data: Option<TempDir>,
    _cwd: TempDir,
}

impl Server {
    /// Starts `mqws serve` with default settings and a fresh temporary data directory.
    pub fn start() -> Server {
        Server::start_with(&[], None)
    }

    /// Starts `mqws serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir D`
    /// with the given extra environment (e.g. `("MQWS_WS__HELLO_TIMEOUT", "1s")`). `data_dir`
    /// `None` means a fresh temporary directory owned by the server; pass a directory to
    /// restart on the same log. Panics (with the output tail) when the ready line does not
    /// appear within 30 s.
    pub fn start_with(env: &[(&str, &str)], data_dir: Option<PathBuf>) -> Server {
        Server::start_configured("", env, data_dir)
    }

    /// Like [`Server::start_with`], with `config` (TOML) as the process's `./mqws.toml`.
    pub fn start_configured(
        config: &str,
        env: &[(&str, &str)],
        data_dir: Option<PathBuf>,
    ) -> Server {
        let (owned, data_dir) = match data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("mqws-data-")
                    .tempdir()
                    .expect("temp data dir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        // A private working directory, so a stray ./mqws.toml is never picked up.
        let cwd = tempfile::Builder::new()
            .prefix("mqws-cwd-")
            .tempdir()
            .expect("temp cwd");
        if !config.is_empty() {
            std::fs::write(cwd.path().join("mqws.toml"), config).expect("write mqws.toml");
        }
        let mut cmd = Command::new(mqws_bin());
        scrub_env(&mut cmd);
        cmd.arg("serve")
            .args([
                "--mqtt-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .current_dir(cwd.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn mqws serve");
        let tail: Tail = Arc::new(Mutex::new(Kept::default()));

        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let t = tail.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            read_lines(stdout, |line| {
                if !sent {
                    if let Some(addrs) = parse_ready(&line) {
                        sent = true;
                        let _ = ready_tx.send(addrs);
                    }
                }
                push_tail(&t, format!("[stdout] {line}"));
            });
        });
        let stderr = child.stderr.take().expect("stderr");
        let t = tail.clone();
        std::thread::spawn(move || read_lines(stderr, |line| push_tail(&t, line)));

        let mut server = Server {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            mqtt_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            data_dir,
            child,
            tail,
            exit: None,
            _owned_data: owned,
            _cwd: cwd,
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok((http, mqtt)) => {
                server.http_addr = http;
                server.mqtt_addr = mqtt;
                server
            }
            Err(e) => {
                let status = server.child.try_wait().ok().flatten();
                let tail = server.tail_text();
                panic!(
                    "mqws serve did not print its ready line ({e:?}; exit status {status:?}); \
                     output tail:\n{tail}"
                );
            }
        }
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.pid(), Signal::TERM);
    }

    /// Sends SIGINT.
    pub fn sigint(&self) {
        signal(self.pid(), Signal::INT);
    }

    /// SIGKILL, then reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        if let Ok(st) = self.child.wait() {
            self.exit = Some(st);
        }
    }

    /// Waits (polling, bounded by `timeout`) for the process to exit and returns its status.
    /// Panics with the output tail when it is still running at the deadline.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_wait_for(timeout).await {
            Some(st) => st,
            None => panic!(
                "mqws did not exit within {timeout:?}; output tail:\n{}",
                self.tail_text()
            ),
        }
    }

    /// Like [`Server::wait`] but returns `None` at the deadline.
    pub async fn try_wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exit {
            return Some(st);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first and the last lines of the process's stderr (and stdout, marked `[stdout]`).
    pub fn tail_text(&self) -> String {
        let k = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = k.head.clone();
        if k.skipped > 0 {
            out.push(format!("[… {} lines skipped …]", k.skipped));
        }
        out.extend(k.tail.iter().cloned());
        out.join("\n")
    }

    /// `ws://HTTP_ADDR/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- mqws output tail (pid {}, data dir {}) ----\n{}\n---- end of mqws output ----",
                self.child.id(),
                self.data_dir.display(),
                self.tail_text()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ready;

    #[test]
    fn ready_line_parses() {
        let (h, m) = parse_ready("mqws ready http=127.0.0.1:8080 mqtt=127.0.0.1:1883\n").unwrap();
        assert_eq!(h.port(), 8080);
        assert_eq!(m.port(), 1883);
        assert!(parse_ready("mqws ready http=127.0.0.1:8080").is_none());
        assert!(parse_ready("starting").is_none());
    }
}
