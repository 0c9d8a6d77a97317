//! The configuration error: one line naming the key, the bad value and what is allowed.

/// Why the configuration could not be used. Its `Display` is the single line printed before
/// mqws exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key holds a value of the wrong type or out of range.
    #[error("invalid config: {key} = {value}: {allowed}")]
    Invalid {
        /// Dotted key, e.g. `ws.hello_timeout`.
        key: String,
        /// The offending value as written (or as parsed).
        value: String,
        /// What the key accepts.
        allowed: String,
    },
    /// The config file could not be read or parsed at all.
    #[error("invalid config file {path}: {cause}")]
    File {
        /// Path of the file.
        path: String,
        /// Parser or I/O message.
        cause: String,
    },
    /// A key that mqws does not know (a likely typo).
    #[error("invalid config: unknown key {key}: {allowed}")]
    Unknown {
        /// Dotted key.
        key: String,
        /// The keys allowed at that level.
        allowed: String,
    },
}

impl ConfigError {
    /// Shorthand for an out-of-range value found by validation.
    pub(crate) fn invalid(key: &str, value: impl std::fmt::Display, allowed: &str) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            allowed: allowed.to_owned(),
        }
    }
}
