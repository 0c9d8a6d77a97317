//! Configuration for mqws: one serde tree, loaded once with figment and validated into typed
//! values (durations as `Duration`, sizes as byte counts).
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `MQWS_` environment variables
//! (`__` between levels), command-line overrides. Every default is documented on its field and
//! in the README's configuration reference.

mod auth;
mod error;
mod load;
mod model;

pub use auth::{AuthConfig, AuthMode, JwtConfig, Secret, TokenConfig};
pub use error::ConfigError;
pub use load::{load, Overrides};
pub use model::{
    BridgeConfig, BrokerConfig, BrokerTls, BrokerUser, Config, HttpConfig, LogConfig,
    SessionConfig, TlsFiles, WsConfig,
};
