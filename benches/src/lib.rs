//! mqws-benches: the `mqws-load` load generator and benchmark harness for mqws.
//!
//! It starts the real `mqws` binary (or attaches to a running one), drives it with MQTT
//! publishers, measures delivery to WebSocket subscribers and, in the same run, to native MQTT
//! subscribers on the same broker (and with `--sse-subscribers`, to SSE subscribers), and
//! reports throughput, latency, ordering and memory.
//! See `benches/README.md` for the ready-made scenarios. The `mqws-catchup` binary
//! ([`catchup`]) benchmarks the log's read side: replay, resume storms and retention.

pub mod catchup;
pub mod cli;
pub mod fastscan;
pub mod lean_publisher;
pub mod mosquitto;
pub mod mqtt_sub;
pub mod mqtt_ws;
pub mod payload;
pub mod phase;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod run;
pub mod server;
pub mod sse_sub;
pub mod stats;
pub mod storage;
pub mod ws_sub;
