//! Loading: merges the providers in precedence order and turns figment's errors into the
//! one-line [`ConfigError`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Serialize;

use crate::{Config, ConfigError};

/// Values from command-line flags; they win over every other source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--mqtt-listen`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_listen: Option<SocketAddr>,
    /// `--http-listen`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// `--data-dir`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--log-format`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<crate::LogFormat>,
}

impl Overrides {
    fn provider(&self) -> Figment {
        let mut f = Figment::new();
        if let Some(a) = self.mqtt_listen {
            f = f.merge(Serialized::default("broker.listen", a));
        }
        if let Some(a) = self.http_listen {
            f = f.merge(Serialized::default("http.listen", a));
        }
        if let Some(d) = &self.data_dir {
            f = f.merge(Serialized::default("log.dir", d));
        }
        if let Some(l) = self.log_format {
            f = f.merge(Serialized::default("logging.format", l));
        }
        f
    }
}

/// The file read when `--config` is not given, if it exists.
const DEFAULT_FILE: &str = "mqws.toml";

/// Loads and validates the configuration: defaults < `file` (or `./mqws.toml` if present) <
/// `MQWS_*` environment < `overrides`.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let path = match file {
        Some(path) if !path.is_file() => {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                cause: "no such file".to_owned(),
            })
        }
        Some(path) => Some(path),
        None => Some(Path::new(DEFAULT_FILE)).filter(|p| p.is_file()),
    };
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        // Parse once here so a syntax error names the file, line and column, not a key.
        toml::from_str::<toml::Value>(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            cause: match e.span() {
                Some(span) => {
                    let (line, column) = line_column(&text, span.start);
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            },
        })?;
        figment = figment.merge(Toml::string(&text));
    }
    figment = figment
        // Every key is `section.key`, so only `MQWS_<SECTION>__<KEY>` variables are config;
        // others (say `MQWS_BIN` in a script) are not mistaken for unknown keys.
        .merge(
            Env::prefixed("MQWS_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        )
        .merge(overrides.provider());
    let config: Config = figment.extract().map_err(|e| convert(&figment, e))?;
    config.validate()?;
    Ok(config)
}

/// 1-based line and column (in characters) of byte `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// "did you mean …?" for a misspelt key: the closest allowed key, if close enough.
fn suggestion(field: &str, allowed: &[&str]) -> Option<String> {
    allowed
        .iter()
        .map(|k| (strsim::jaro_winkler(field, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_owned())
}

fn convert(figment: &Figment, err: figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let shown = || {
        figment
            .find_value(&key)
            .ok()
            .map(|v| render(&v))
            .unwrap_or_else(|| "?".to_owned())
    };
    match err.kind {
        Kind::UnknownField(field, allowed) => ConfigError::Unknown {
            // figment's path may already end with the unknown field.
            key: if key.is_empty() {
                field.clone()
            } else if err.path.last() == Some(&field) {
                key
            } else {
                format!("{key}.{field}")
            },
            allowed: match suggestion(&field, allowed) {
                Some(k) => format!(
                    "did you mean {k}? (known keys here: {})",
                    allowed.join(", ")
                ),
                None => format!("known keys here are {}", allowed.join(", ")),
            },
        },
        Kind::InvalidType(actual, expected) => ConfigError::Invalid {
            key,
            value: actual.to_string(),
            allowed: format!("expected {expected}"),
        },
        Kind::InvalidValue(actual, expected) => ConfigError::Invalid {
            key,
            value: actual.to_string(),
            allowed: format!("expected {expected}"),
        },
        Kind::Message(msg) => ConfigError::Invalid {
            key: key.clone(),
            value: shown(),
            allowed: allowed_for(&key, &msg),
        },
        other => ConfigError::Invalid {
            key: key.clone(),
            value: shown(),
            allowed: other.to_string(),
        },
    }
}

/// Explains durations and sizes, whose parsers say little on their own.
fn allowed_for(key: &str, parser_message: &str) -> String {
    const DURATIONS: &[&str] = &["timeout", "interval", "max_age", "ttl", "leeway"];
    const SIZES: &[&str] = &["size", "bytes", "capacity"];
    if DURATIONS.iter().any(|d| key.ends_with(d)) {
        format!("a duration such as \"10s\", \"500ms\" or \"2m\" ({parser_message})")
    } else if SIZES.iter().any(|s| key.ends_with(s)) {
        format!("a size such as \"1MiB\", \"64KiB\" or a number of bytes ({parser_message})")
    } else {
        parser_message.to_owned()
    }
}

fn render(v: &figment::value::Value) -> String {
    match v {
        figment::value::Value::String(_, s) => format!("{s:?}"),
        other => other.to_actual().to_string(),
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type"
)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_example_is_the_defaults_and_names_every_key() {
        let parsed: Config = toml::from_str(crate::EXAMPLE).expect("the example parses");
        assert_eq!(
            parsed,
            Config::default(),
            "the example's values are the defaults"
        );
        let defaults = toml::to_string(&Config::default()).expect("defaults render");
        let mut section = String::new();
        for line in defaults.lines() {
            if line.starts_with('[') {
                section = line.to_owned();
                assert!(
                    crate::EXAMPLE.contains(line),
                    "{line} missing from the example"
                );
            } else if let Some((key, _)) = line.split_once(" = ") {
                let after = crate::EXAMPLE
                    .split_once(section.as_str())
                    .map_or("", |(_, rest)| rest);
                assert!(
                    after.lines().any(|l| l.starts_with(&format!("{key} = "))),
                    "{section} {key} missing from the example"
                );
            }
        }
        let lines: Vec<&str> = crate::EXAMPLE.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains(" = ") && !l.starts_with('#') {
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "{l} has no comment above it"
                );
            }
        }
    }

    #[test]
    fn toml_errors_name_the_line_and_column() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[http]\nlisten = \"127.0.0.1:80\n")?;
            let e = load(Some(Path::new("bad.toml")), &Overrides::default())
                .expect_err("a syntax error");
            let text = e.to_string();
            assert!(
                text.contains("bad.toml") && text.contains("line 2, column"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_key_is_named_once_with_a_suggestion() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[http]\nallowed_origin = [\"x\"]\n")?;
            let e = load(Some(Path::new("typo.toml")), &Overrides::default())
                .expect_err("an unknown key");
            let text = e.to_string();
            assert!(text.contains("unknown key http.allowed_origin:"), "{text}");
            assert!(!text.contains("allowed_origin.allowed_origin"), "{text}");
            assert!(text.contains("did you mean allowed_origins?"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid() {
        figment::Jail::expect_with(|_| {
            let c = load(None, &Overrides::default()).expect("defaults load");
            assert_eq!(c, Config::default());
            assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
            Ok(())
        });
    }

    #[test]
    fn precedence_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "[http]\nlisten = \"127.0.0.1:9000\"\n[ws]\nhello_timeout = \"3s\"\nmax_pending_bytes = \"64KiB\"\n[broker]\nlisten = \"127.0.0.1:1999\"\n",
            )?;
            jail.set_env("MQWS_HTTP__LISTEN", "127.0.0.1:9001");
            let c =
                load(Some(Path::new("custom.toml")), &Overrides::default()).expect("file + env");
            assert_eq!(
                c.http.listen.to_string(),
                "127.0.0.1:9001",
                "env beats file"
            );
            assert_eq!(c.ws.hello_timeout, Duration::from_secs(3));
            assert_eq!(c.ws.max_pending_bytes.as_u64(), 64 * 1024);
            assert_eq!(c.broker.listen.to_string(), "127.0.0.1:1999");
            let flags = Overrides {
                http_listen: Some("127.0.0.1:9002".parse().expect("addr")),
                ..Overrides::default()
            };
            let c = load(Some(Path::new("custom.toml")), &flags).expect("flags");
            assert_eq!(
                c.http.listen.to_string(),
                "127.0.0.1:9002",
                "flags beat env"
            );
            Ok(())
        });
    }

    #[test]
    fn default_file_is_read_when_present() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("mqws.toml", "[log]\ndir = \"/tmp/x\"\n")?;
            let c = load(None, &Overrides::default()).expect("load");
            assert_eq!(c.log.dir, PathBuf::from("/tmp/x"));
            Ok(())
        });
    }

    fn error_line(toml: &str) -> String {
        let mut out = String::new();
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", toml)?;
            out = load(Some(Path::new("bad.toml")), &Overrides::default())
                .expect_err("must fail")
                .to_string();
            Ok(())
        });
        out
    }

    #[test]
    fn errors_name_key_value_and_allowed() {
        let e = error_line("[ws]\nhello_timeout = \"soon\"\n");
        assert!(e.contains("ws.hello_timeout"), "{e}");
        assert!(e.contains("\"soon\""), "{e}");
        assert!(e.contains("duration"), "{e}");

        let e = error_line("[ws]\nmax_message_size = \"lots\"\n");
        assert!(
            e.contains("ws.max_message_size") && e.contains("\"lots\""),
            "{e}"
        );
        assert!(e.contains("size"), "{e}");

        let e = error_line("[http]\nlisten = \"nowhere\"\n");
        assert!(e.contains("http.listen") && e.contains("nowhere"), "{e}");

        let e = error_line("[ws]\nmax_filters = 0\n");
        assert!(
            e.contains("ws.max_filters = 0") && e.contains("at least 1"),
            "{e}"
        );

        let e = error_line("[ws]\nhelo_timeout = \"1s\"\n");
        assert!(
            e.contains("ws.helo_timeout") && e.contains("hello_timeout"),
            "{e}"
        );

        let e = error_line("[log]\njournal_bytes = \"64KiB\"\n");
        assert!(
            e.contains("log.journal_bytes") && e.contains("at least"),
            "{e}"
        );

        let e = error_line("[bridge]\nfilters = [\"a/#/b\"]\n");
        assert!(e.contains("bridge.filters") && e.contains("a/#/b"), "{e}");

        let e = error_line("this is not toml");
        assert!(e.contains("bad.toml"), "{e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
    }

    #[test]
    fn env_errors_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MQWS_WS__PING_INTERVAL", "often");
            let e = load(None, &Overrides::default())
                .expect_err("fails")
                .to_string();
            assert!(e.contains("ws.ping_interval") && e.contains("often"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn only_sectioned_env_variables_are_config() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MQWS_BIN", "/usr/local/bin/mqws");
            load(None, &Overrides::default()).expect("MQWS_BIN is not config");
            jail.set_env("MQWS_WS__HELO_TIMEOUT", "1s");
            let e = load(None, &Overrides::default())
                .expect_err("typo in a key")
                .to_string();
            assert!(e.contains("helo_timeout"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        figment::Jail::expect_with(|_| {
            let e = load(Some(Path::new("nope.toml")), &Overrides::default())
                .expect_err("fails")
                .to_string();
            assert!(e.contains("nope.toml"), "{e}");
            Ok(())
        });
    }
}
