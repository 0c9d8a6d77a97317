//! Configuration for mqws: one serde tree, loaded once with figment and validated into typed
//! values (durations as `Duration`, sizes as byte counts).
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `MQWS_` environment variables
//! (`__` between levels), command-line overrides. Every default is documented on its field and
//! in docs/configuration.md.

mod auth;
mod cluster;
mod error;
mod load;
mod logging;
mod model;
mod validate;

pub use auth::{AuthConfig, AuthMode, JwtConfig, Secret, TokenConfig};
pub use cluster::{ClusterConfig, LogBackend, NatsConfig};
pub use error::ConfigError;
pub use load::{load, Overrides};
pub use logging::{LogFormat, LoggingConfig};

/// Every key with its default and what it does, as a TOML file (`mqws check-config
/// --defaults`). A test keeps it equal to the defaults and complete.
pub const EXAMPLE: &str = include_str!("../mqws.example.toml");
pub use model::{
    BridgeConfig, BrokerConfig, BrokerTls, BrokerUser, Config, EncodingRule, HttpConfig, LogConfig,
    PayloadEncoding, SessionConfig, TlsFiles, WsConfig,
};
