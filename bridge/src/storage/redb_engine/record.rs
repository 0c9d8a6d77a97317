//! A log record's on-disk encoding.
//!
//! Layout, version 1: `[1u8][flags u8][ts_ms u64 BE][topic_len u16 BE][topic]`, then, with flag
//! bit 1 (MQTT details), `[qos u8][props_len u32 BE][props]` and, with flag bit 2 as well (an
//! origin), `[origin_len u16 BE][origin]`; then the payload. Flag bit 0 is the MQTT retain
//! flag. Records written before mqws kept MQTT details have neither bit and decode with none.
//! Inside a chunk the key is the seq as a big-endian u64, so byte order is seq order. Decoding
//! never panics on any input; it returns [`DecodeError`].

use std::sync::Arc;

use bytes::Bytes;

use crate::storage::{MqttMeta, Record};

const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 2;
const FLAG_RETAIN: u8 = 1;
const FLAG_MQTT: u8 = 2;
const FLAG_ORIGIN: u8 = 4;
const FLAGS: u8 = FLAG_RETAIN | FLAG_MQTT | FLAG_ORIGIN;

/// Why stored bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the header or the topic length says.
    #[error("record truncated")]
    Truncated,
    /// An encoding version this build does not know.
    #[error("unknown record version {0}")]
    Version(u8),
    /// The topic bytes are not UTF-8.
    #[error("record topic is not UTF-8")]
    Topic,
    /// The key is not 8 bytes.
    #[error("record key is not a u64")]
    Key,
    /// Flag bits this version does not define.
    #[error("unknown record flags {0:#04x}")]
    Flags(u8),
    /// Seqs in a chunk do not ascend.
    #[error("chunk records out of order")]
    Order,
    /// Bytes after the last record of a chunk.
    #[error("trailing bytes after a chunk")]
    Trailing,
    /// A QoS other than 0, 1 or 2.
    #[error("record QoS {0} is not 0, 1 or 2")]
    Qos(u8),
    /// The origin client id is not UTF-8.
    #[error("record origin is not UTF-8")]
    Origin,
}

impl Record {
    /// The key of `seq` inside a chunk.
    #[cfg(test)]
    pub(crate) fn key(seq: u64) -> [u8; 8] {
        seq.to_be_bytes()
    }

    /// Encodes everything but the seq (which is the key).
    pub(crate) fn encode_value(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let extra = self.mqtt.as_ref().map_or(0, |m| {
            7 + m.properties.len() + m.origin.as_ref().map_or(0, |o| o.len())
        });
        let mut v = Vec::with_capacity(HEADER + topic.len() + extra + self.payload.len());
        v.push(VERSION);
        let mut flags = if self.retain { FLAG_RETAIN } else { 0 };
        if let Some(m) = &self.mqtt {
            flags |= FLAG_MQTT | if m.origin.is_some() { FLAG_ORIGIN } else { 0 };
        }
        v.push(flags);
        v.extend_from_slice(&self.ts_ms.to_be_bytes());
        // Topics and client ids are at most 65535 bytes by MQTT's own encoding, and properties
        // fit in a packet, which the broker bounds.
        put_u16_str(&mut v, topic);
        if let Some(m) = &self.mqtt {
            v.push(m.qos);
            let len = u32::try_from(m.properties.len()).unwrap_or(u32::MAX);
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&m.properties[..len as usize]);
            if let Some(origin) = &m.origin {
                put_u16_str(&mut v, origin.as_bytes());
            }
        }
        v.extend_from_slice(&self.payload);
        v
    }

    /// Decodes a stored key and value.
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Record, DecodeError> {
        let (meta, parts) = split(key, value)?;
        let mqtt = parts.mqtt.map(|m| MqttMeta {
            qos: m.qos,
            origin: m.origin.map(Arc::from),
            properties: Bytes::copy_from_slice(m.properties),
        });
        Ok(Record {
            seq: meta.seq,
            ts_ms: meta.ts_ms,
            topic: meta.topic.to_owned(),
            payload: Bytes::copy_from_slice(parts.payload),
            retain: parts.retain,
            mqtt,
        })
    }
}

/// What retention and the index need of a record, borrowed from the stored bytes: reading it
/// copies no payload (retention of 64 KiB messages once copied 10,000 payloads per step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta<'a> {
    pub(super) seq: u64,
    pub(super) ts_ms: u64,
    pub(super) topic: &'a str,
    /// Topic and payload bytes, as [`Record::size`].
    pub(super) size: u64,
}

/// The seq a record key holds.
pub(super) fn seq_of(key: &[u8]) -> Result<u64, DecodeError> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| DecodeError::Key)?,
    ))
}

/// Decodes a record's header; never copies its payload.
pub(super) fn meta<'a>(key: &[u8], value: &'a [u8]) -> Result<Meta<'a>, DecodeError> {
    split(key, value).map(|(m, _)| m)
}

/// A stored record's fields past its header, borrowed.
struct Parts<'a> {
    retain: bool,
    mqtt: Option<MqttParts<'a>>,
    payload: &'a [u8],
}

struct MqttParts<'a> {
    qos: u8,
    properties: &'a [u8],
    origin: Option<&'a str>,
}

/// Reads `[len u16 BE][len bytes]` at `at`: the bytes and where they end.
fn u16_str(value: &[u8], at: usize) -> Result<(&[u8], usize), DecodeError> {
    let len = value.get(at..at + 2).ok_or(DecodeError::Truncated)?;
    let end = at + 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    Ok((value.get(at + 2..end).ok_or(DecodeError::Truncated)?, end))
}

/// Appends `[len u16 BE][bytes]`, cut at 65535 bytes.
fn put_u16_str(v: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&bytes[..usize::from(len)]);
}

/// The MQTT details at `at`, and where they end.
fn mqtt_at(value: &[u8], at: usize, origin: bool) -> Result<(MqttParts<'_>, usize), DecodeError> {
    let qos = *value.get(at).ok_or(DecodeError::Truncated)?;
    if qos > 2 {
        return Err(DecodeError::Qos(qos));
    }
    let len = value.get(at + 1..at + 5).ok_or(DecodeError::Truncated)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let end = (at + 5).checked_add(len).ok_or(DecodeError::Truncated)?;
    let properties = value.get(at + 5..end).ok_or(DecodeError::Truncated)?;
    let (origin, end) = if origin {
        let (o, end) = u16_str(value, end)?;
        (
            Some(std::str::from_utf8(o).map_err(|_| DecodeError::Origin)?),
            end,
        )
    } else {
        (None, end)
    };
    let parts = MqttParts {
        qos,
        properties,
        origin,
    };
    Ok((parts, end))
}

/// The header and the other parts of a stored record.
fn split<'a>(key: &[u8], value: &'a [u8]) -> Result<(Meta<'a>, Parts<'a>), DecodeError> {
    let seq = seq_of(key)?;
    let header = value.get(..HEADER).ok_or(DecodeError::Truncated)?;
    if header[0] != VERSION {
        return Err(DecodeError::Version(header[0]));
    }
    let flags = header[1];
    if flags & !FLAGS != 0 || (flags & FLAG_ORIGIN != 0 && flags & FLAG_MQTT == 0) {
        return Err(DecodeError::Flags(flags));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&header[2..10]);
    let (topic, mut at) = u16_str(value, HEADER - 2)?;
    let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::Topic)?;
    let mut mqtt = None;
    if flags & FLAG_MQTT != 0 {
        let (m, end) = mqtt_at(value, at, flags & FLAG_ORIGIN != 0)?;
        mqtt = Some(m);
        at = end;
    }
    let payload = &value[at..];
    let meta = Meta {
        seq,
        ts_ms: u64::from_be_bytes(ts),
        topic,
        size: (topic.len() + payload.len()) as u64,
    };
    let parts = Parts {
        retain: flags & FLAG_RETAIN != 0,
        mqtt,
        payload,
    };
    Ok((meta, parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn details(qos: u8, origin: Option<&str>, properties: &'static [u8]) -> MqttMeta {
        MqttMeta {
            qos,
            origin: origin.map(Arc::from),
            properties: Bytes::from_static(properties),
        }
    }

    #[test]
    fn round_trip() {
        let mut r = Record {
            seq: 42,
            ts_ms: 1_732_270_000_123,
            topic: "site/a/tags/x".to_owned(),
            payload: Bytes::from_static(b"\x00\xff{}"),
            retain: true,
            mqtt: None,
        };
        assert_eq!(
            Record::decode(&Record::key(42), &r.encode_value()),
            Ok(r.clone())
        );
        for m in [
            details(0, None, b""),
            details(1, Some("reader-1"), b""),
            details(
                2,
                Some(""),
                &[0x02, 0, 0, 0, 60, 0x26, 0, 1, b'k', 0, 1, b'v'],
            ),
        ] {
            r.mqtt = Some(m);
            assert_eq!(
                Record::decode(&Record::key(42), &r.encode_value()),
                Ok(r.clone())
            );
        }
    }

    /// A record as the release before MQTT details wrote it reads back, with none.
    #[test]
    fn records_written_before_mqtt_details_read_as_before() {
        let mut v = vec![1u8, 1];
        v.extend_from_slice(&1_732_270_000_123u64.to_be_bytes());
        v.extend_from_slice(&[0, 3]);
        v.extend_from_slice(b"a/b");
        v.extend_from_slice(b"payload");
        let r = Record::decode(&Record::key(7), &v).expect("an old record");
        assert_eq!(
            r,
            Record {
                seq: 7,
                ts_ms: 1_732_270_000_123,
                topic: "a/b".to_owned(),
                payload: Bytes::from_static(b"payload"),
                retain: true,
                mqtt: None,
            }
        );
        assert_eq!(r.encode_value(), v, "and is written the same way");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Record::decode(&[0; 7], &[]), Err(DecodeError::Key));
        assert_eq!(
            Record::decode(&[0; 8], &[1, 0]),
            Err(DecodeError::Truncated)
        );
        let mut v = vec![9u8; HEADER];
        assert_eq!(Record::decode(&[0; 8], &v), Err(DecodeError::Version(9)));
        v[0] = VERSION;
        assert_eq!(Record::decode(&[0; 8], &v), Err(DecodeError::Flags(9)));
        v[1] = FLAG_ORIGIN;
        assert_eq!(
            Record::decode(&[0; 8], &v),
            Err(DecodeError::Flags(FLAG_ORIGIN)),
            "an origin without details"
        );
        v[1] = 1;
        v[10] = 0;
        v[11] = 5;
        assert_eq!(Record::decode(&[0; 8], &v), Err(DecodeError::Truncated));
        let mut m = vec![1, FLAG_MQTT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        assert_eq!(Record::decode(&[0; 8], &m), Err(DecodeError::Qos(3)));
        m[12] = 1;
        m.extend_from_slice(&[0, 0, 0, 9]);
        assert_eq!(
            Record::decode(&[0; 8], &m),
            Err(DecodeError::Truncated),
            "properties longer than the record"
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(key in proptest::collection::vec(any::<u8>(), 0..12),
                               value in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(r) = Record::decode(&key, &value) {
                prop_assert_eq!(r.encode_value(), value);
            }
        }

        #[test]
        fn encode_decode_identity(seq: u64, ts: u64, topic in "[a-z/+#$]{0,40}",
                                  payload in proptest::collection::vec(any::<u8>(), 0..64),
                                  retain: bool,
                                  mqtt in proptest::option::of((0u8..=2,
                                      proptest::option::of("[ -~]{0,30}"),
                                      proptest::collection::vec(any::<u8>(), 0..40)))) {
            let mqtt = mqtt.map(|(qos, origin, properties)| MqttMeta {
                qos,
                origin: origin.map(Arc::from),
                properties: Bytes::from(properties),
            });
            let r = Record { seq, ts_ms: ts, topic, payload: Bytes::from(payload), retain, mqtt };
            prop_assert_eq!(Record::decode(&Record::key(seq), &r.encode_value()), Ok(r));
        }
    }
}
