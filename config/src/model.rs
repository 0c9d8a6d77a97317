//! The configuration tree: every key, its type, its default and why it exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The whole configuration. Sections mirror the process's parts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The embedded MQTT broker.
    pub broker: BrokerConfig,
    /// The HTTP server (WebSocket, health, metrics).
    pub http: HttpConfig,
    /// WebSocket sessions and their limits.
    pub ws: WsConfig,
    /// The durable log.
    pub log: LogConfig,
    /// What the bridge takes from the broker.
    pub bridge: BridgeConfig,
    /// Server-held sessions.
    pub session: SessionConfig,
    /// Who may connect, subscribe and publish.
    pub auth: crate::AuthConfig,
    /// How log lines are written.
    pub logging: crate::LoggingConfig,
    /// Cluster mode: the shared log on NATS JetStream.
    pub cluster: crate::ClusterConfig,
}

/// Server-held sessions (resume with `session` + `resume_token`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session without a connection for this long is forgotten. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most sessions kept; at the limit the one idle longest is forgotten first.
    /// Default 100,000.
    pub max: usize,
    /// Largest `limit` of a `history` query. Default 1000.
    pub max_history: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ttl: Duration::from_secs(24 * 3600),
            max: 100_000,
            max_history: 1000,
        }
    }
}

/// Embedded broker settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 and 5.0 listener. Default `127.0.0.1:1883`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Most MQTT client connections at once; more are refused at accept. Default 10000.
    pub max_connections: usize,
    /// Largest MQTT PUBLISH accepted from MQTT clients, counted as MQTT's remaining length
    /// (topic, properties and payload); a larger one ends its connection (MQTT 5: DISCONNECT
    /// 0x95) before any of it is logged. Default 1 MiB.
    pub max_payload_size: ByteSize,
    /// QoS 1/2 messages in flight per MQTT connection. Default 100.
    pub max_inflight: usize,
    /// Time an MQTT client has to send CONNECT. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// MQTT connections that have not sent their CONNECT yet, at most, in total. Default 4096.
    pub max_pending_connects: usize,
    /// The same per source address, so one host's half-open sockets cannot lock others out.
    /// Raise it when many clients reach mqws through one address (NAT, a load balancer).
    /// Default 256.
    pub max_pending_per_source: usize,
    /// Distinct subscription filters MQTT clients may use, in total. rumqttd keeps state for
    /// every distinct filter it was ever given (about 11 KiB each, measured, plus up to
    /// `(segment_count + 1) × segment_size` of messages) and cannot forget one, so a new filter
    /// past this is refused with a SUBACK failure code until restart. Default 1000.
    pub max_filters: usize,
    /// New distinct filters the clients of one login may add until restart (with
    /// `broker.users`; all logins' quotas together must fit in `max_filters`, so no login can
    /// lock another out). Default 100.
    pub max_new_filters_per_login: usize,
    /// New distinct filters the clients of one source address may add until restart, when no
    /// logins are required. Many addresses together can still use up `max_filters`: require
    /// logins (`broker.users`) where that matters. Default 100.
    pub max_new_filters_per_source: usize,
    /// Filters one MQTT connection may hold at once; more are refused with a SUBACK failure
    /// code. Default 100.
    pub max_filters_per_client: usize,
    /// Longest subscription filter an MQTT client may use, in bytes; longer ones are refused
    /// with a SUBACK failure code. Default 1024.
    pub max_filter_length: usize,
    /// Size of one in-memory segment of rumqttd's per-filter log. Default 4 MiB.
    pub segment_size: ByteSize,
    /// Segments kept per filter; memory per distinct filter is about
    /// `(segment_count + 1) × segment_size`, and an MQTT subscriber that falls further behind
    /// than that loses messages (the log is not affected). Default 4.
    pub segment_count: usize,
    /// Most topics whose retained value mqws keeps across restarts; a retained value for a new
    /// topic beyond this is not kept (logged, counted). Default 100,000.
    pub max_retained: usize,
    /// An MQTT-over-TLS listener (8883 by convention) beside `listen`. Default none.
    pub tls: Option<BrokerTls>,
    /// MQTT clients must log in as one of these users when the list is not empty. Default
    /// empty (no login).
    pub users: Vec<BrokerUser>,
    /// Prefix of the bridge's own MQTT client id; a random suffix is added so no MQTT client
    /// can guess it and take the bridge's link over. Default `mqws-bridge`.
    pub client_id_prefix: String,
    /// Persistent MQTT sessions (3.1.1 clean session 0, MQTT 5 with a session expiry interval)
    /// kept at once, connected or not; a new one past this is refused (CONNACK 0x97, 3.1.1:
    /// 0x03), never made by evicting a reader's session. Default 10,000.
    pub max_sessions: usize,
    /// The same per login, with `broker.users`, so the clients of one login cannot take every
    /// session from the others. Default 1,000.
    pub max_sessions_per_login: usize,
    /// How long a persistent MQTT session is kept after its connection ends: what MQTT 3.1.1
    /// sessions get (the protocol has no expiry) and the most an MQTT 5 client may ask for.
    /// Default 7 days.
    #[serde(with = "humantime_serde")]
    pub max_session_expiry: Duration,
    /// Deliver QoS 0 messages logged while a persistent session was offline when it returns
    /// (Mosquitto's `queue_qos0_messages`). Default false: only QoS 1 and 2 ones.
    pub queue_qos0_messages: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: 10_000,
            max_payload_size: ByteSize::mib(1),
            max_inflight: 100,
            connect_timeout: Duration::from_secs(5),
            max_pending_connects: 4096,
            max_pending_per_source: 256,
            max_filters: 1000,
            max_new_filters_per_login: 100,
            max_new_filters_per_source: 100,
            max_filters_per_client: 100,
            max_filter_length: 1024,
            segment_size: ByteSize::mib(4),
            segment_count: 4,
            max_retained: 100_000,
            tls: None,
            users: Vec::new(),
            client_id_prefix: "mqws-bridge".to_owned(),
            max_sessions: 10_000,
            max_sessions_per_login: 1000,
            max_session_expiry: Duration::from_secs(7 * 24 * 3600),
            queue_qos0_messages: false,
        }
    }
}

/// The broker's TLS listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    /// Address of the TLS listener, e.g. `127.0.0.1:8883`.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// An MQTT login. Only a password hash is stored.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    /// MQTT username.
    pub username: String,
    /// PHC-format password hash, argon2 (e.g. from `mqws hash-password`). Masked in
    /// `check-config` output and `Debug`: a hash still allows offline guessing.
    pub password_hash: crate::Secret,
}

impl std::fmt::Debug for BrokerUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerUser")
            .field("username", &self.username)
            .field("password_hash", &"***")
            .finish()
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP/WebSocket listener. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// How long a graceful shutdown waits for sessions to close before it gives up on them.
    /// Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Time a client has to finish the TLS handshake and send its request headers; a slower
    /// (or trickling) client is disconnected. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// HTTP connections at once that have not (yet) become WebSockets; at this many no more
    /// are accepted until one upgrades or ends (the rest wait in the listen backlog). Default
    /// 1024.
    pub max_connections: usize,
    /// `Origin` values allowed to open `/ws` (e.g. `https://app.example.com`), besides
    /// same-origin requests and requests without `Origin` (non-browser clients), which are
    /// always allowed. `"*"` allows any origin and `"null"` pages opened from `file://`; both
    /// are logged as a warning at start. Default empty.
    pub allowed_origins: Vec<String>,
    /// Client addresses whose `POST /publish` rate is tracked at once; each address is held to
    /// `ws.publish_rate` and `ws.publish_burst`. When this many are publishing, a new address
    /// gets 429 until one has been idle long enough to refill its burst. Default 10000.
    pub publish_sources: usize,
    /// Serve HTTPS/wss with this certificate and key. Default none.
    pub tls: Option<TlsFiles>,
    /// A directory of your own pages, served same-origin under `/app/` (so they may open `/ws`
    /// and import `/mqws.js` without listing an origin). Must exist. Default none.
    pub static_dir: Option<PathBuf>,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            allowed_origins: Vec::new(),
            publish_sources: 10_000,
            tls: None,
            static_dir: None,
        }
    }
}

/// WebSocket session settings and limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Time a client has to send `hello` after the upgrade (then close 4004). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// Interval of server WebSocket pings. Default 20 s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A pong later than this after a ping closes the connection. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// Largest client message (close 1009 above it). Default 1 MiB.
    pub max_message_size: ByteSize,
    /// Largest single client frame. Default 1 MiB.
    pub max_frame_size: ByteSize,
    /// Most bytes queued for one connection. Beyond it the connection stops taking live
    /// messages and continues from the log (catch-up in place). Default 8 MiB.
    pub max_pending_bytes: ByteSize,
    /// Most frames queued for one connection; beyond it, as for `max_pending_bytes`.
    /// Default 65536.
    pub max_pending_messages: usize,
    /// Most bytes queued for all connections together. When it is reached, connections whose
    /// queue is above their fair share (this divided by the connections) continue from the log
    /// first. Default 64 MiB (sized for a 1 GiB machine; see docs/performance.md).
    pub max_total_pending_bytes: ByteSize,
    /// A connection that stays behind the live stream (catching up from the log) this long,
    /// or whose socket takes no data this long, is closed with 4001. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_timeout: Duration,
    /// Bytes of the most recent logged messages kept in memory, so connections that fall a
    /// little behind catch up without reading the log. Default 16 MiB.
    pub tail_bytes: ByteSize,
    /// Most WebSocket connections at once; more are refused with HTTP 503. Default 10000.
    pub max_connections: usize,
    /// Most filters one session may hold. Default 100.
    pub max_filters: usize,
    /// How long a browser publish may wait for the broker before `unavailable`. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long a close frame may wait behind unsent data (a peer that does not read) before
    /// the socket is dropped without it. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Browser publishes per second per connection (sustained); above it, `rate_limited`.
    /// Default 100.
    pub publish_rate: u32,
    /// Browser publishes a connection may send in a burst above the rate. Default 200.
    pub publish_burst: u32,
    /// Longest topic or filter a client may use, in bytes. Default 1024.
    pub max_topic_length: usize,
    /// Most levels in a topic or filter a client may use. Default 32.
    pub max_topic_levels: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            max_message_size: ByteSize::mib(1),
            max_frame_size: ByteSize::mib(1),
            max_pending_bytes: ByteSize::mib(8),
            max_pending_messages: 65_536,
            max_total_pending_bytes: ByteSize::mib(64),
            slow_consumer_timeout: Duration::from_secs(30),
            tail_bytes: ByteSize::mib(16),
            max_connections: 10_000,
            max_filters: 100,
            publish_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            publish_rate: 100,
            publish_burst: 200,
            max_topic_length: 1024,
            max_topic_levels: 32,
        }
    }
}

/// Durable log settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Where the log lives: `embedded` (the redb file in `dir`, one node) or `jetstream` (a NATS
    /// JetStream stream shared by several nodes, see `cluster.nats`; sessions and retained
    /// values stay in `dir`). Default `embedded`.
    pub backend: crate::LogBackend,
    /// Data directory: the log, sessions and retained values in one redb file (`mqws.redb`).
    /// Default `./mqws-data`.
    pub dir: PathBuf,
    /// Most messages appended and flushed as one group commit. Default 4096.
    pub max_batch_messages: usize,
    /// Flush (fsync) every batch before delivering it. Turning this off trades the kill -9
    /// guarantee for throughput. Default true.
    pub sync: bool,
    /// The storage engine's page cache (redb). Reads beyond it come from the operating system's
    /// file cache, which does not count against mqws's memory. Default 16 MiB.
    pub cache_capacity: ByteSize,
    /// Disk space kept free on the data dir's filesystem: an append that would leave less is
    /// refused (publishers wait, `/readyz` 503) until space frees up, so the engine never hits
    /// a full disk mid-write. 0 disables the check. Default 64 MiB.
    pub min_free_disk: ByteSize,
    /// The log's journal (`mqws.journal` in the data dir, written full size when created, used
    /// in two halves): each append is synced there, a sequential write, and reaches the database
    /// file durably at the next checkpoint (within a second, after 256 KiB, or when a half is
    /// full), so an acknowledgement costs about one disk write + `fdatasync`. 0 turns it off:
    /// each append is then a durable database commit (about 2–4× that). Ignored in cluster
    /// mode. Default 16 MiB.
    pub journal_bytes: ByteSize,
    /// Messages older than this are removed. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The log keeps at most this many bytes of topics and payloads (the engine's own overhead
    /// on disk comes on top). Default 1 GiB.
    pub max_bytes: ByteSize,
    /// The log keeps at most this many messages. Default 10,000,000.
    pub max_messages: u64,
    /// How often retention runs. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Most messages one retention step removes, so appends are never stalled long.
    /// Default 10,000.
    pub retention_batch: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            backend: crate::LogBackend::Embedded,
            dir: PathBuf::from("./mqws-data"),
            max_batch_messages: 4096,
            sync: true,
            cache_capacity: ByteSize::mib(16),
            min_free_disk: ByteSize::mib(64),
            journal_bytes: ByteSize::mib(16),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: ByteSize::gib(1),
            max_messages: 10_000_000,
            retention_interval: Duration::from_secs(1),
            retention_batch: 10_000,
        }
    }
}

/// What the bridge takes from the broker into the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// MQTT filters the bridge subscribes to; only matching messages are logged and
    /// delivered. Default `["#"]` (every topic except `$`-topics).
    pub filters: Vec<String>,
    /// Messages queued towards the log. When full (or `inbound_bytes` is reached), the MQTT
    /// proxy stops reading from publishers (TCP backpressure). Default 65536.
    pub inbound_queue: usize,
    /// Topic and payload bytes queued towards the log at most, across all publishers.
    /// Default 16 MiB.
    pub inbound_bytes: ByteSize,
    /// Browser publishes queued towards the broker. Default 1024.
    pub outbound_queue: usize,
    /// How payloads are carried to WebSocket clients, per topic: `[[bridge.encodings]]` with
    /// `filter` and `enc` (`auto`, `text` or `base64`); the first matching entry wins, and
    /// topics no entry matches use `auto` (JSON objects and arrays as JSON, other UTF-8 as a
    /// string, anything else base64). Default empty.
    pub encodings: Vec<EncodingRule>,
}

/// One `bridge.encodings` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncodingRule {
    /// MQTT filter of the topics it applies to.
    pub filter: String,
    /// How their payloads are carried.
    pub enc: PayloadEncoding,
}

/// How a payload is carried in a `message` frame.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// JSON objects and arrays as JSON, other UTF-8 as a string, anything else base64.
    Auto,
    /// As a string when the bytes are UTF-8 (even JSON), else base64.
    Text,
    /// Always base64.
    Base64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            filters: vec!["#".to_owned()],
            inbound_queue: 65_536,
            inbound_bytes: ByteSize::mib(16),
            outbound_queue: 1024,
            encodings: Vec::new(),
        }
    }
}
