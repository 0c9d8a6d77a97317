//! The `logging` section: how mqws writes its log lines.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Logging settings. Levels and targets come from `RUST_LOG` (see docs/configuration.md, Logging).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Line format on stderr: `text` (default) or `json` (one object per line, for log
    /// shippers). Flag `--log-format`.
    pub format: LogFormat,
}

/// A log line format.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colours only on a terminal without `NO_COLOR`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<LogFormat, ConfigError> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError::invalid(
                "logging.format",
                format!("{s:?}"),
                "\"text\" or \"json\"",
            )),
        }
    }
}
