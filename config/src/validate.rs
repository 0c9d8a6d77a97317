//! Validation of the whole tree: the ranges and relations serde cannot express, checked once
//! by [`crate::load`], one function per section (the auth and cluster sections check
//! themselves in their own modules).

use std::time::Duration;

use bytesize::ByteSize;

use crate::{BridgeConfig, BrokerConfig, Config, ConfigError, HttpConfig, LogConfig};
use crate::{SessionConfig, WsConfig};

impl Config {
    /// Checks the ranges serde cannot express. Called once by [`crate::load`].
    ///
    /// Only the first problem is reported, so the sections are checked in this fixed order
    /// (the broker's TLS files and users after `http`, the log's retention after `bridge`), the
    /// order start-up has always reported them in.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        validate_broker_limits(&self.broker)?;
        validate_broker_storage(&self.broker)?;
        validate_client_id_prefix(&self.broker)?;
        validate_http(&self.http)?;
        validate_broker_access(&self.broker)?;
        validate_ws(&self.ws)?;
        validate_log_storage(&self.log)?;
        self.cluster.validate(self.log.backend)?;
        validate_log_dir(&self.log)?;
        validate_bridge_inbound(&self.bridge)?;
        validate_log_retention(&self.log)?;
        validate_session(&self.session)?;
        self.auth.validate()?;
        positive("bridge.outbound_queue", self.bridge.outbound_queue)?;
        Ok(())
    }
}

/// The broker's connection and filter limits, and that every login's filter quota fits in
/// the total: a login must not be able to lock the others out.
fn validate_broker_limits(broker: &BrokerConfig) -> Result<(), ConfigError> {
    positive("broker.max_connections", broker.max_connections)?;
    positive("broker.max_pending_connects", broker.max_pending_connects)?;
    positive(
        "broker.max_pending_per_source",
        broker.max_pending_per_source,
    )?;
    positive("broker.max_inflight", broker.max_inflight)?;
    positive("broker.max_filters", broker.max_filters)?;
    positive(
        "broker.max_filters_per_client",
        broker.max_filters_per_client,
    )?;
    positive(
        "broker.max_new_filters_per_login",
        broker.max_new_filters_per_login,
    )?;
    positive(
        "broker.max_new_filters_per_source",
        broker.max_new_filters_per_source,
    )?;
    let logins = broker.users.len();
    if logins.saturating_mul(broker.max_new_filters_per_login) > broker.max_filters {
        return Err(ConfigError::invalid(
            "broker.max_filters",
            broker.max_filters,
            &format!(
                "at least broker.users ({logins}) × broker.max_new_filters_per_login ({}), \
                 so every login's quota fits",
                broker.max_new_filters_per_login
            ),
        ));
    }
    if !(1..=65_535).contains(&broker.max_filter_length) {
        return Err(ConfigError::invalid(
            "broker.max_filter_length",
            broker.max_filter_length,
            "1 to 65535 (bytes)",
        ));
    }
    Ok(())
}

/// What the broker keeps in memory (payloads, segments, retained values, sessions) and how
/// long: sizes rumqttd and MQTT can represent.
fn validate_broker_storage(broker: &BrokerConfig) -> Result<(), ConfigError> {
    at_least_bytes("broker.max_payload_size", broker.max_payload_size, 1)?;
    at_least_bytes("broker.segment_size", broker.segment_size, 1024)?;
    positive("broker.segment_count", broker.segment_count)?;
    positive("broker.max_retained", broker.max_retained)?;
    positive("broker.max_sessions", broker.max_sessions)?;
    positive(
        "broker.max_sessions_per_login",
        broker.max_sessions_per_login,
    )?;
    if broker.max_session_expiry > Duration::from_secs(u64::from(u32::MAX)) {
        return Err(ConfigError::invalid(
            "broker.max_session_expiry",
            format!("{:?}", broker.max_session_expiry),
            "at most 4294967295 s (MQTT's largest session expiry interval)",
        ));
    }
    nonzero_duration("broker.connect_timeout", broker.connect_timeout)
}

/// The bridge's own client id prefix: it ends up in MQTT client ids, so it must be a short
/// plain name.
fn validate_client_id_prefix(broker: &BrokerConfig) -> Result<(), ConfigError> {
    let prefix = &broker.client_id_prefix;
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::invalid(
            "broker.client_id_prefix",
            format!("{prefix:?}"),
            "1 to 64 ASCII letters, digits, '-' or '_'",
        ));
    }
    Ok(())
}

/// The HTTP server: its timeouts and limits, the static directory, the allowed origins and
/// the TLS files.
fn validate_http(http: &HttpConfig) -> Result<(), ConfigError> {
    nonzero_duration("http.shutdown_timeout", http.shutdown_timeout)?;
    nonzero_duration("http.handshake_timeout", http.handshake_timeout)?;
    positive("http.max_connections", http.max_connections)?;
    positive("http.publish_sources", http.publish_sources)?;
    if let Some(dir) = &http.static_dir {
        if !dir.is_dir() {
            return Err(ConfigError::invalid(
                "http.static_dir",
                dir.display(),
                "an existing directory",
            ));
        }
    }
    validate_origins(&http.allowed_origins)?;
    if let Some(t) = &http.tls {
        readable("http.tls.cert", &t.cert)?;
        readable("http.tls.key", &t.key)?;
    }
    Ok(())
}

/// `http.allowed_origins`: each an origin as browsers send it (scheme, host, optional port),
/// or `*` or `null`, so a typo cannot silently let no page (or any page) in.
fn validate_origins(origins: &[String]) -> Result<(), ConfigError> {
    for o in origins {
        let ok = o == "*"
            || o == "null"
            || (o.starts_with("http://") || o.starts_with("https://"))
                && !o.ends_with('/')
                && !o[o.find("//").map_or(0, |i| i + 2)..].contains('/');
        if !ok {
            return Err(ConfigError::invalid(
                "http.allowed_origins",
                format!("{o:?}"),
                "origins like \"https://app.example.com\" or \"http://localhost:3000\" (scheme, host, optional port; no path), \"*\" (any) or \"null\" (file:// pages)",
            ));
        }
    }
    Ok(())
}

/// Who may reach the broker: its TLS files are readable, and every user has a name and an
/// argon2 hash (never a plaintext password).
fn validate_broker_access(broker: &BrokerConfig) -> Result<(), ConfigError> {
    if let Some(t) = &broker.tls {
        readable("broker.tls.cert", &t.cert)?;
        readable("broker.tls.key", &t.key)?;
    }
    for u in &broker.users {
        if u.username.is_empty() {
            return Err(ConfigError::invalid(
                "broker.users.username",
                "\"\"",
                "a non-empty username",
            ));
        }
        if !u.password_hash.expose().starts_with("$argon2") {
            return Err(ConfigError::invalid(
                "broker.users.password_hash",
                "\"***\"",
                "an argon2 PHC string ($argon2id$…), e.g. from `mqws hash-password`",
            ));
        }
    }
    Ok(())
}

/// WebSocket sessions: publish rates, topic limits, timeouts, frame and buffer sizes.
fn validate_ws(ws: &WsConfig) -> Result<(), ConfigError> {
    positive("ws.publish_rate", ws.publish_rate as usize)?;
    positive("ws.publish_burst", ws.publish_burst as usize)?;
    if !(1..=65_535).contains(&ws.max_topic_length) {
        return Err(ConfigError::invalid(
            "ws.max_topic_length",
            ws.max_topic_length,
            "1 to 65535",
        ));
    }
    positive("ws.max_topic_levels", ws.max_topic_levels)?;
    nonzero_duration("ws.hello_timeout", ws.hello_timeout)?;
    nonzero_duration("ws.ping_interval", ws.ping_interval)?;
    nonzero_duration("ws.pong_timeout", ws.pong_timeout)?;
    nonzero_duration("ws.publish_timeout", ws.publish_timeout)?;
    nonzero_duration("ws.close_timeout", ws.close_timeout)?;
    at_least_bytes("ws.max_message_size", ws.max_message_size, 256)?;
    at_least_bytes("ws.max_frame_size", ws.max_frame_size, 256)?;
    at_least_bytes("ws.max_pending_bytes", ws.max_pending_bytes, 1024)?;
    positive("ws.max_pending_messages", ws.max_pending_messages)?;
    at_least_bytes(
        "ws.max_total_pending_bytes",
        ws.max_total_pending_bytes,
        1024 * 1024,
    )?;
    nonzero_duration("ws.slow_consumer_timeout", ws.slow_consumer_timeout)?;
    at_least_bytes("ws.tail_bytes", ws.tail_bytes, 1024 * 1024)?;
    positive("ws.max_connections", ws.max_connections)?;
    positive("ws.max_filters", ws.max_filters)
}

/// How the log writes and caches: the batch size and the cache.
fn validate_log_storage(log: &LogConfig) -> Result<(), ConfigError> {
    positive("log.max_batch_messages", log.max_batch_messages)?;
    if log.journal_bytes.as_u64() != 0 {
        at_least_bytes("log.journal_bytes", log.journal_bytes, 1024 * 1024)?;
    }
    at_least_bytes("log.cache_capacity", log.cache_capacity, 1024 * 1024)
}

/// Where the log lives: a path must be given.
fn validate_log_dir(log: &LogConfig) -> Result<(), ConfigError> {
    if log.dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("log.dir", "\"\"", "a directory path"));
    }
    Ok(())
}

/// What the bridge takes from the broker: its filters, the encoding rules' filters and the
/// inbound queue.
fn validate_bridge_inbound(bridge: &BridgeConfig) -> Result<(), ConfigError> {
    if bridge.filters.is_empty() {
        return Err(ConfigError::invalid(
            "bridge.filters",
            "[]",
            "at least one MQTT topic filter",
        ));
    }
    for f in &bridge.filters {
        if let Err(why) = check_filter(f) {
            return Err(ConfigError::invalid(
                "bridge.filters",
                format!("{f:?}"),
                &format!("valid MQTT topic filters ({why})"),
            ));
        }
    }
    for rule in &bridge.encodings {
        if let Err(why) = check_filter(&rule.filter) {
            return Err(ConfigError::invalid(
                "bridge.encodings",
                format!("{:?}", rule.filter),
                &format!("valid MQTT topic filters ({why})"),
            ));
        }
    }
    positive("bridge.inbound_queue", bridge.inbound_queue)?;
    at_least_bytes("bridge.inbound_bytes", bridge.inbound_bytes, 1024)
}

/// How long the log keeps messages and how retention runs.
fn validate_log_retention(log: &LogConfig) -> Result<(), ConfigError> {
    nonzero_duration("log.max_age", log.max_age)?;
    at_least_bytes("log.max_bytes", log.max_bytes, 1024 * 1024)?;
    if log.max_messages == 0 {
        return Err(ConfigError::invalid(
            "log.max_messages",
            0,
            "a whole number of at least 1",
        ));
    }
    nonzero_duration("log.retention_interval", log.retention_interval)?;
    positive("log.retention_batch", log.retention_batch)
}

/// Server-held sessions: their lifetime, count and history limit.
fn validate_session(session: &SessionConfig) -> Result<(), ConfigError> {
    nonzero_duration("session.ttl", session.ttl)?;
    positive("session.max", session.max)?;
    positive("session.max_history", session.max_history)
}

fn readable(key: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("{:?}", path.display().to_string()),
            "a readable PEM file",
        )),
    }
}

fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(key, v, "a whole number of at least 1"));
    }
    Ok(())
}

fn at_least_bytes(key: &str, v: ByteSize, min: u64) -> Result<(), ConfigError> {
    if v.as_u64() < min {
        return Err(ConfigError::invalid(
            key,
            format!("\"{v}\""),
            &format!("a size of at least {} (e.g. \"1MiB\")", ByteSize::b(min)),
        ));
    }
    Ok(())
}

fn nonzero_duration(key: &str, v: Duration) -> Result<(), ConfigError> {
    if v.is_zero() {
        return Err(ConfigError::invalid(
            key,
            "\"0s\"",
            "a duration above zero (e.g. \"10s\", \"500ms\")",
        ));
    }
    Ok(())
}

/// MQTT filter syntax, checked here only to reject a bad `bridge.filters` at start-up; the
/// bridge has its own full filter type.
fn check_filter(f: &str) -> Result<(), &'static str> {
    if f.is_empty() {
        return Err("empty filter");
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("'#' must be a whole last level");
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}
