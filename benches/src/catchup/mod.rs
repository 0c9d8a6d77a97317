//! `mqws-catchup`: benchmarks of the durable log's read side — replay (catch-up), reconnect
//! storms of server-held sessions, and retention's effect on disk use.
//!
//! It reuses the `mqws-load` pieces: [`crate::server`] starts and stops the real binary,
//! [`crate::procstat`] reads RSS and CPU, [`crate::payload`] builds and [`crate::fastscan`] reads
//! the 256-byte JSON benchmark payloads. What is new here: publishers that fill the log as fast as
//! the bridge logs (QoS 1, flow-controlled on `mqws_messages_logged_total` so rumqttd never has
//! to drop for the bridge), a WebSocket client that follows one catch-up from `hello` to
//! `caught_up` and checks it is complete, and the three scenarios. See `benches/README.md`.

pub mod cli;
pub mod client;
pub mod common;
pub mod fill;
pub mod metrics;
pub mod mqtt_client;
pub mod replay;
pub mod retention;
pub mod storm;

/// Runs the subcommand chosen on the command line.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        cli::Cmd::Replay(a) => replay::run(&cli.common, a).await,
        cli::Cmd::Storm(a) => storm::run(&cli.common, a).await,
        cli::Cmd::Retention(a) => retention::run(&cli.common, a).await,
    }
}
