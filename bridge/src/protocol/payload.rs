//! MQTT payload bytes ⇄ JSON: `enc` is `json` (valid UTF-8 JSON, carried as that value),
//! `text` (other UTF-8, carried as a string) or `base64` (anything else).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use mqws_config::PayloadEncoding;
use serde::Serialize;
use serde_json::value::RawValue;

/// A payload ready to be serialized into a `message` frame.
#[derive(Debug)]
pub(crate) enum Encoded<'a> {
    /// The bytes were JSON; embedded as is.
    Json(&'a RawValue),
    /// UTF-8 that is not JSON.
    Text(&'a str),
    /// Anything else, standard base64.
    Base64(String),
}

impl Encoded<'_> {
    /// The `enc` field's value.
    pub(crate) fn enc(&self) -> &'static str {
        match self {
            Encoded::Json(_) => "json",
            Encoded::Text(_) => "text",
            Encoded::Base64(_) => "base64",
        }
    }
}

impl Serialize for Encoded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Encoded::Json(v) => v.serialize(s),
            Encoded::Text(t) => s.serialize_str(t),
            Encoded::Base64(b) => s.serialize_str(b),
        }
    }
}

/// `bridge.encodings`: how each topic's payloads are carried (first matching filter wins,
/// `auto` when none matches).
#[derive(Debug, Clone, Default)]
pub(crate) struct Encodings(Vec<(String, PayloadEncoding)>);

impl Encodings {
    pub(crate) fn new(rules: &[mqws_config::EncodingRule]) -> Encodings {
        Encodings(rules.iter().map(|r| (r.filter.clone(), r.enc)).collect())
    }

    /// How `topic`'s payloads are carried.
    pub(crate) fn of(&self, topic: &str) -> PayloadEncoding {
        self.0
            .iter()
            .find(|(f, _)| mqws_topic::matches(f, topic))
            .map_or(PayloadEncoding::Auto, |(_, e)| *e)
    }
}

/// Encodes `bytes` as `mode` says. `auto` carries only JSON objects and arrays as JSON: a bare
/// scalar such as `303400000000000000001234` would lose precision as a JavaScript number, so
/// it goes as text.
pub(crate) fn encode(bytes: &[u8], mode: PayloadEncoding) -> Encoded<'_> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Encoded::Base64(STANDARD.encode(bytes));
    };
    match mode {
        PayloadEncoding::Base64 => Encoded::Base64(STANDARD.encode(bytes)),
        PayloadEncoding::Text => Encoded::Text(text),
        PayloadEncoding::Auto => match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) if raw.get().starts_with(['{', '[']) => Encoded::Json(raw),
            _ => Encoded::Text(text),
        },
    }
}

/// Why a browser payload could not be turned into bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// `enc` is not one we know.
    #[error("enc must be \"json\" or \"base64\"")]
    UnknownEnc,
    /// `enc: "base64"` with something that is not a base64 string.
    #[error("payload is not a standard base64 string")]
    BadBase64,
}

/// Turns a browser `publish` payload into MQTT bytes: a JSON string becomes its UTF-8 bytes,
/// any other value its compact JSON text; with `enc: "base64"` the string is decoded.
pub(crate) fn decode(payload: &serde_json::Value, enc: Option<&str>) -> Result<Bytes, DecodeError> {
    match enc {
        None | Some("json") | Some("text") => Ok(match payload {
            serde_json::Value::String(s) => Bytes::from(s.clone().into_bytes()),
            other => Bytes::from(other.to_string().into_bytes()),
        }),
        Some("base64") => match payload {
            serde_json::Value::String(s) => STANDARD
                .decode(s)
                .map(Bytes::from)
                .map_err(|_| DecodeError::BadBase64),
            _ => Err(DecodeError::BadBase64),
        },
        Some(_) => Err(DecodeError::UnknownEnc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auto(bytes: &[u8]) -> Encoded<'_> {
        encode(bytes, PayloadEncoding::Auto)
    }

    #[test]
    fn auto_carries_only_objects_and_arrays_as_json() {
        assert_eq!(auto(br#"{"epc":"3034"}"#).enc(), "json");
        assert_eq!(auto(b" [1, 2] ").enc(), "json");
        assert_eq!(auto(b"42").enc(), "text");
        assert_eq!(auto(b"303400000000000000001234").enc(), "text");
        assert_eq!(auto(b"true").enc(), "text");
        assert_eq!(auto(b"\"quoted\"").enc(), "text");
        assert_eq!(auto(b"hello").enc(), "text");
        assert_eq!(auto(b"").enc(), "text");
        assert_eq!(auto(b"{\"a\":").enc(), "text");
        assert_eq!(auto(&[0xff, 0x00]).enc(), "base64");
        let s = serde_json::to_string(&auto(b"303400000000000000001234")).expect("serialize");
        assert_eq!(s, r#""303400000000000000001234""#, "digits kept exactly");
    }

    #[test]
    fn bridge_encodings_override_per_topic_first_match_wins() {
        let rule = |filter: &str, enc| mqws_config::EncodingRule {
            filter: filter.to_owned(),
            enc,
        };
        let e = Encodings::new(&[
            rule("raw/#", PayloadEncoding::Base64),
            rule("raw/+/text", PayloadEncoding::Text),
            rule("#", PayloadEncoding::Text),
        ]);
        assert_eq!(e.of("raw/a/text"), PayloadEncoding::Base64);
        assert_eq!(e.of("site/x"), PayloadEncoding::Text);
        assert_eq!(Encodings::default().of("x"), PayloadEncoding::Auto);
        assert_eq!(encode(br#"{"a":1}"#, PayloadEncoding::Text).enc(), "text");
        assert_eq!(encode(b"hi", PayloadEncoding::Base64).enc(), "base64");
        assert_eq!(encode(&[0xff], PayloadEncoding::Text).enc(), "base64");
    }

    #[test]
    fn serializes_as_contract_says() {
        let s = |b: &[u8]| serde_json::to_string(&auto(b)).expect("serialize");
        assert_eq!(s(br#"{"epc":"3034"}"#), r#"{"epc":"3034"}"#);
        assert_eq!(s(b"hi \"x\""), r#""hi \"x\"""#);
        assert_eq!(s(&[0xff, 0x00, 0x01]), r#""/wAB""#);
    }

    #[test]
    fn decodes_browser_payloads() {
        assert_eq!(
            decode(&json!({"op":"start"}), None),
            Ok(Bytes::from_static(br#"{"op":"start"}"#))
        );
        assert_eq!(
            decode(&json!("plain"), None),
            Ok(Bytes::from_static(b"plain"))
        );
        assert_eq!(decode(&json!(7), None), Ok(Bytes::from_static(b"7")));
        assert_eq!(
            decode(&json!("/wAB"), Some("base64")),
            Ok(Bytes::from_static(&[0xff, 0, 1]))
        );
        assert_eq!(
            decode(&json!("***"), Some("base64")),
            Err(DecodeError::BadBase64)
        );
        assert_eq!(
            decode(&json!(1), Some("base64")),
            Err(DecodeError::BadBase64)
        );
        assert_eq!(decode(&json!(1), Some("zip")), Err(DecodeError::UnknownEnc));
    }
}
