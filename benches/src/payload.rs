//! The benchmark payload: a JSON object with a send timestamp, padded to an exact size.
//!
//! A payload looks like `{"t_us":1732270000123456,"r":7,"p":0,"n":42,"pad":"xxxx…"}`: `t_us` is
//! the send time in microseconds since the Unix epoch (exact in an IEEE double, so any JSON
//! implementation on the path keeps it), `r` the phase's tag (so a late message of an earlier
//! phase is not counted in the next one), `p` the publisher id and `n` that publisher's counter.
//! The `pad` field (or, when fewer than 9 bytes are left, trailing spaces) brings the payload to
//! the requested size. Receivers parse it back with [`parse_stamp`].

use std::borrow::Cow;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// What a receiver learns from one benchmark payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Stamp {
    /// Send time, microseconds since the Unix epoch.
    pub t_us: u64,
    /// Tag of the phase that sent it.
    pub r: u32,
    /// Publisher id.
    pub p: u32,
    /// Per-publisher message counter, from 0.
    pub n: u64,
}

/// The current wall-clock time in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Writes the payload for `stamp` into `buf` (cleared first), padded to `size` bytes when
/// `size` is at least the unpadded length.
pub fn build(buf: &mut Vec<u8>, stamp: Stamp, size: usize) {
    buf.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(
        buf,
        "{{\"t_us\":{},\"r\":{},\"p\":{},\"n\":{}",
        stamp.t_us, stamp.r, stamp.p, stamp.n
    );
    const PAD_OVERHEAD: usize = ",\"pad\":\"\"".len();
    let room = size.saturating_sub(buf.len() + 1);
    if room >= PAD_OVERHEAD {
        buf.extend_from_slice(b",\"pad\":\"");
        buf.resize(buf.len() + room - PAD_OVERHEAD, b'x');
        buf.push(b'"');
    } else {
        buf.resize(buf.len() + room, b' ');
    }
    buf.push(b'}');
}

/// Parses a benchmark payload from raw MQTT payload bytes.
pub fn parse_stamp(bytes: &[u8]) -> Option<Stamp> {
    serde_json::from_slice(bytes).ok()
}

/// How the stamp was found in a WebSocket `message` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// `enc` was `json` and `payload` was the object itself, as the contract says.
    Json(Stamp),
    /// The payload came as a JSON string holding the object (e.g. `enc` `text`): a contract
    /// deviation for a JSON payload, counted but still measured.
    Text(Stamp),
    /// The payload was not a benchmark payload (another publisher's message, or base64).
    Foreign,
}

/// A server frame, borrowed from the received text as far as possible; the payload is decoded
/// in the same pass (no second parse).
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    /// The frame's `type`.
    #[serde(rename = "type", borrow)]
    pub ty: Cow<'a, str>,
    /// `seq` of a `message` frame.
    #[serde(default)]
    pub seq: Option<u64>,
    /// `payload` of a `message` frame, decoded as far as the benchmark needs.
    #[serde(default)]
    pub payload: Option<PayloadField>,
    /// `enc` of a `message` frame.
    #[serde(default, borrow)]
    pub enc: Option<Cow<'a, str>>,
    /// `code` of an `error` frame.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
}

/// A frame's `payload`, as the benchmark sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadField {
    /// A JSON object holding a benchmark stamp.
    Object(Stamp),
    /// A JSON string whose text is a benchmark payload.
    Text(Stamp),
    /// Anything else.
    Other,
}

impl<'de> Deserialize<'de> for PayloadField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PayloadVisitor)
    }
}

struct PayloadVisitor;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum StampKey {
    TUs,
    R,
    P,
    N,
    #[serde(other)]
    Other,
}

impl<'de> serde::de::Visitor<'de> for PayloadVisitor {
    type Value = PayloadField;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut t_us, mut r, mut p, mut n) = (None, None, None, None);
        let mut valid = true;
        while let Some(key) = map.next_key::<StampKey>()? {
            let slot = match key {
                StampKey::TUs => &mut t_us,
                StampKey::R => &mut r,
                StampKey::P => &mut p,
                StampKey::N => &mut n,
                StampKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            let AnyU64(v) = map.next_value()?;
            valid &= v.is_some();
            *slot = v;
        }
        let p = p.and_then(|p| u32::try_from(p).ok());
        let r = r.and_then(|r| u32::try_from(r).ok());
        Ok(match (t_us, r, p, n, valid) {
            (Some(t_us), Some(r), Some(p), Some(n), true) => {
                PayloadField::Object(Stamp { t_us, r, p, n })
            }
            _ => PayloadField::Other,
        })
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(match serde_json::from_str::<Stamp>(v) {
            Ok(s) => PayloadField::Text(s),
            Err(_) => PayloadField::Other,
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(PayloadField::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(PayloadField::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(PayloadField::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(PayloadField::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(PayloadField::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(PayloadField::Other)
    }
}

/// Any JSON value, kept only when it is an unsigned integer.
struct AnyU64(Option<u64>);

impl<'de> Deserialize<'de> for AnyU64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(U64Visitor).map(AnyU64)
    }
}

struct U64Visitor;

impl<'de> serde::de::Visitor<'de> for U64Visitor {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl Frame<'_> {
    /// Extracts the benchmark stamp from a `message` frame's payload.
    pub fn stamp(&self) -> Found {
        match self.payload {
            Some(PayloadField::Object(s)) if self.enc.as_deref() == Some("json") => Found::Json(s),
            Some(PayloadField::Object(s)) | Some(PayloadField::Text(s)) => Found::Text(s),
            _ => Found::Foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            t_us: 1_732_270_000_123_456,
            r: 5,
            p: 3,
            n: 99,
        }
    }

    #[test]
    fn sizes_are_exact_and_parse_back() {
        let mut buf = Vec::new();
        for size in [
            0, 10, 50, 51, 52, 53, 55, 58, 59, 60, 61, 64, 100, 256, 1024, 65_536,
        ] {
            build(&mut buf, stamp(), size);
            let min = br#"{"t_us":1732270000123456,"r":5,"p":3,"n":99}"#.len();
            assert_eq!(buf.len(), size.max(min), "size {size}");
            assert_eq!(parse_stamp(&buf), Some(stamp()), "size {size}");
        }
    }

    #[test]
    fn ws_frame_with_json_payload() {
        let mut buf = Vec::new();
        build(&mut buf, stamp(), 256);
        let payload = String::from_utf8(buf).expect("ascii");
        let text = format!(
            r#"{{"type":"message","seq":7,"topic":"bench/p3","payload":{payload},"enc":"json","retain":false,"ts":1}}"#
        );
        let f: Frame<'_> = serde_json::from_str(&text).expect("frame parses");
        assert_eq!(f.ty, "message");
        assert_eq!(f.seq, Some(7));
        assert_eq!(f.stamp(), Found::Json(stamp()));
    }

    #[test]
    fn ws_frame_with_text_payload_is_flagged() {
        let text = r#"{"type":"message","seq":8,"payload":"{\"t_us\":1732270000123456,\"r\":5,\"p\":3,\"n\":99}","enc":"text"}"#;
        let f: Frame<'_> = serde_json::from_str(text).expect("frame parses");
        assert_eq!(f.stamp(), Found::Text(stamp()));
    }

    #[test]
    fn foreign_payloads() {
        let text = r#"{"type":"message","seq":9,"payload":"aGVsbG8=","enc":"base64"}"#;
        let f: Frame<'_> = serde_json::from_str(text).expect("frame parses");
        assert_eq!(f.stamp(), Found::Foreign);
        let text = r#"{"type":"message","seq":9,"payload":{"a":1},"enc":"json"}"#;
        let f: Frame<'_> = serde_json::from_str(text).expect("frame parses");
        assert_eq!(f.stamp(), Found::Foreign);
        assert_eq!(parse_stamp(b"not json"), None);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore = "timing only"]
    fn frame_parse_cost() {
        let mut buf = Vec::new();
        build(
            &mut buf,
            Stamp {
                t_us: 1_732_270_000_123_456,
                r: 1,
                p: 0,
                n: 1,
            },
            256,
        );
        let payload = String::from_utf8(buf).expect("ascii");
        let text = format!(
            r#"{{"type":"message","seq":7,"topic":"bench/p0","payload":{payload},"enc":"json","retain":false,"ts":1732270000123}}"#
        );
        let n = 1_000_000;
        let t0 = std::time::Instant::now();
        let mut acc = 0u64;
        for _ in 0..n {
            let f: Frame<'_> = serde_json::from_str(&text).expect("parse");
            if let Found::Json(s) = f.stamp() {
                acc += s.n + f.seq.unwrap_or(0);
            }
            acc += now_us() & 1;
        }
        eprintln!("{} ns/frame ({acc})", t0.elapsed().as_nanos() / n as u128);
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            let _: serde::de::IgnoredAny = serde_json::from_str(&text).expect("parse");
        }
        eprintln!("{} ns/frame ignored", t0.elapsed().as_nanos() / n as u128);
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            let m = crate::fastscan::scan_message(&text).expect("fast path");
            acc += m.seq;
        }
        eprintln!("{} ns/frame fastscan", t0.elapsed().as_nanos() / n as u128);
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            acc += now_us() & 1;
        }
        eprintln!("{} ns/now ({acc})", t0.elapsed().as_nanos() / n as u128);
    }
}
