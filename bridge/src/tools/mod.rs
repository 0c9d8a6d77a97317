//! Operator tools behind `mqws sub`, `mqws pub` and `mqws inspect`.
//!
//! [`sub`] and [`publish`] talk to a running mqws over its WebSocket contract
//! (`mqws.v1.json`), the way `mosquitto_sub` and `mosquitto_pub` talk MQTT; [`inspect`] reads
//! a data dir offline through the storage layer. Each is a blocking call that returns when the
//! tool is done; a [`ToolError`] says why it failed and which exit status that is
//! ([`ToolError::exit_code`]). The binary only parses the command line and prints
//! `error: {e}` on failure.

mod args;
mod conn;
mod error;
mod inspect;
mod output;
mod publish;
mod sub;

use std::path::PathBuf;

pub use args::{Format, Start};
pub use error::ToolError;

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Connect {
    /// `ws://HOST:PORT/ws` or `wss://HOST:PORT/ws` (server certificates are checked against
    /// the system's root certificates).
    pub url: String,
    /// Sent in `hello` when set; never printed.
    pub token: Option<String>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What `mqws sub` does.
#[derive(Debug, Clone)]
pub struct SubOptions {
    /// The server and token.
    pub connect: Connect,
    /// MQTT topic filters (`hello.filters`).
    pub filters: Vec<String>,
    /// Where to start (`hello.from`).
    pub from: Start,
    /// Stop after this many messages; `None` runs until interrupted or closed.
    pub count: Option<u64>,
    /// How to print.
    pub format: Format,
    /// Notes on standard error: the position at connect and at catch-up, and the `--from`
    /// that continues where the run stopped.
    pub verbose: bool,
}

/// What `mqws pub` does.
#[derive(Debug, Clone)]
pub struct PubOptions {
    /// The server and token.
    pub connect: Connect,
    /// The topic (no wildcards).
    pub topic: String,
    /// The payload; its UTF-8 bytes are published as they are.
    pub payload: String,
    /// MQTT QoS, 0 to 2.
    pub qos: u8,
    /// MQTT retain flag.
    pub retain: bool,
}

/// What `mqws inspect` does.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// The data dir (`log.dir`).
    pub dir: PathBuf,
    /// Most retained topics listed.
    pub topics: usize,
    /// `key: value` lines, or one JSON object.
    pub format: Format,
}

/// `mqws sub`: subscribes and prints messages and lost ranges until `count` messages were
/// printed, SIGINT or SIGTERM (all `Ok`), or the server closes the connection or refuses
/// (`Err`).
pub fn sub(opts: &SubOptions) -> Result<(), ToolError> {
    runtime()?.block_on(sub::run(opts))
}

/// `mqws pub`: publishes one message; `Ok` once the server answered `puback`,
/// [`ToolError::Server`] with the contract's error code when it refused.
pub fn publish(opts: &PubOptions) -> Result<(), ToolError> {
    runtime()?.block_on(publish::run(opts))
}

/// `mqws inspect`: prints what the data dir holds. [`ToolError::Locked`] while a running
/// mqws holds it, [`ToolError::NotDataDir`] when it holds no mqws data.
pub fn inspect(opts: &InspectOptions) -> Result<(), ToolError> {
    inspect::run(opts)
}

/// A single-threaded runtime: a tool holds one connection.
fn runtime() -> Result<tokio::runtime::Runtime, ToolError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ToolError::Runtime)
}
