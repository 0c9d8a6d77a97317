//! Admission: whether a client may use a filter or a topic. One place for MQTT validity, the
//! configured size limits, the client's grant and the per-session filter count, used by every
//! transport and request (hello, subscribe, history, last, publish).

use std::collections::BTreeSet;

use mqws_broker::{PublishRequest, QoS};
use mqws_config::WsConfig;
use mqws_topic::{check_filter, check_topic};
use serde_json::Value;

use crate::auth::Grant;
use crate::protocol::{payload, ErrorCode};

/// Why something was not admitted: the contract error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Contract error code.
    pub(crate) code: ErrorCode,
    /// Human text, without internals.
    pub(crate) message: String,
}

fn refuse(code: ErrorCode, message: String) -> Refusal {
    Refusal { code, message }
}

/// A publish as a client asks for it: the fields of a WebSocket `publish` frame, which a
/// `POST /publish` body repeats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publish<'a> {
    /// MQTT topic name.
    pub(crate) topic: &'a str,
    /// The payload as JSON (see [`payload::decode`]).
    pub(crate) payload: &'a Value,
    /// The payload's encoding, when not JSON.
    pub(crate) enc: Option<&'a str>,
    /// 0, 1 or 2.
    pub(crate) qos: u8,
    /// MQTT retain flag.
    pub(crate) retain: bool,
}

/// The rules one client is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission<'a> {
    /// What the client's token allows.
    pub(crate) grant: &'a Grant,
    /// Size and count limits.
    pub(crate) ws: &'a WsConfig,
}

impl Admission<'_> {
    /// Admits `filters` for a session that would then hold `total` filters.
    pub(crate) fn filters(&self, filters: &BTreeSet<String>, total: usize) -> Result<(), Refusal> {
        for f in filters {
            self.valid_filter(f)?;
        }
        for f in filters {
            self.granted(f)?;
        }
        if total > self.ws.max_filters {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("a session holds at most {} filters", self.ws.max_filters),
            ));
        }
        Ok(())
    }

    /// Admits one filter for a query (`history`, `last`).
    pub(crate) fn query(&self, filter: &str) -> Result<(), Refusal> {
        self.valid_filter(filter)?;
        self.granted(filter)
    }

    /// Checks filters the client names to remove: they must at least be valid.
    pub(crate) fn valid_filters(&self, filters: &BTreeSet<String>) -> Result<(), Refusal> {
        filters.iter().try_for_each(|f| self.valid_filter(f))
    }

    /// Admits a topic to publish to.
    pub(crate) fn topic(&self, topic: &str) -> Result<(), Refusal> {
        if let Err(e) = check_topic(topic) {
            return Err(refuse(
                ErrorCode::BadTopic,
                format!("the topic {topic:?} {e}"),
            ));
        }
        if let Err(e) = self.sized(topic) {
            return Err(refuse(
                ErrorCode::BadTopic,
                format!("the topic {topic:?} is {e}"),
            ));
        }
        if !self.grant.may_publish(topic) {
            metrics::counter!("mqws_forbidden_total", "what" => "publish").increment(1);
            return Err(refuse(
                ErrorCode::Forbidden,
                format!("publishing to {topic:?} is not within your grant"),
            ));
        }
        Ok(())
    }

    /// Admits a publish, the same for every transport: the topic (validity, size, grant), the
    /// QoS, the payload's encoding and its decoded size (at most `max_bytes`).
    pub(crate) fn publish(
        &self,
        asked: Publish<'_>,
        max_bytes: usize,
    ) -> Result<PublishRequest, Refusal> {
        self.topic(asked.topic)?;
        let qos = match asked.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    "qos must be 0, 1 or 2".to_owned(),
                ))
            }
        };
        let bytes = payload::decode(asked.payload, asked.enc)
            .map_err(|e| refuse(ErrorCode::BadRequest, e.to_string()))?;
        if bytes.len() > max_bytes {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("payload is larger than {max_bytes} bytes"),
            ));
        }
        Ok(PublishRequest {
            topic: asked.topic.to_owned(),
            payload: bytes,
            qos,
            retain: asked.retain,
        })
    }

    fn valid_filter(&self, f: &str) -> Result<(), Refusal> {
        if let Err(e) = check_filter(f) {
            return Err(refuse(
                ErrorCode::BadFilter,
                format!("the filter {f:?} {e}"),
            ));
        }
        if let Err(e) = self.sized(f) {
            return Err(refuse(
                ErrorCode::BadFilter,
                format!("the filter {f:?} is {e}"),
            ));
        }
        Ok(())
    }

    fn granted(&self, f: &str) -> Result<(), Refusal> {
        if self.grant.may_subscribe(f) {
            return Ok(());
        }
        metrics::counter!("mqws_forbidden_total", "what" => "subscribe").increment(1);
        Err(refuse(
            ErrorCode::Forbidden,
            format!("the filter {f:?} is not within your grant"),
        ))
    }

    /// The configured topic and filter size limits.
    fn sized(&self, s: &str) -> Result<(), String> {
        if s.len() > self.ws.max_topic_length {
            return Err(format!("longer than {} bytes", self.ws.max_topic_length));
        }
        if s.split('/').count() > self.ws.max_topic_levels {
            return Err(format!("more than {} levels", self.ws.max_topic_levels));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_size_grant_and_count_in_one_place() {
        let ws = WsConfig {
            max_topic_length: 16,
            max_topic_levels: 3,
            max_filters: 2,
            ..WsConfig::default()
        };
        let grant = Grant::all();
        let a = Admission {
            grant: &grant,
            ws: &ws,
        };
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert!(a.filters(&set(&["a/+", "b/#"]), 2).is_ok());
        let code = |r: Result<(), Refusal>| r.expect_err("refused").code;
        assert_eq!(code(a.filters(&set(&["a/#/b"]), 1)), ErrorCode::BadFilter);
        assert_eq!(code(a.filters(&set(&["a/b/c/d"]), 1)), ErrorCode::BadFilter);
        assert_eq!(
            code(a.filters(&set(&["a", "b", "c"]), 3)),
            ErrorCode::BadRequest
        );
        assert_eq!(code(a.topic("a/+")), ErrorCode::BadTopic);
        assert_eq!(code(a.topic(&"x".repeat(17))), ErrorCode::BadTopic);
        let none = Grant::none();
        let closed = Admission {
            grant: &none,
            ws: &ws,
        };
        assert_eq!(code(closed.query("a/#")), ErrorCode::Forbidden);
        assert_eq!(code(closed.topic("a")), ErrorCode::Forbidden);
    }
}
