//! A log record's on-disk encoding.
//!
//! Layout, version 1: `[1u8][flags u8][ts_ms u64 BE][topic_len u16 BE][topic][payload]`, with
//! flag bit 0 the MQTT retain flag. Inside a chunk the key is the seq as a big-endian u64, so
//! byte order is seq order. Decoding never panics on any input; it returns [`DecodeError`].

use bytes::Bytes;

use crate::storage::Record;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 2;
const FLAG_RETAIN: u8 = 1;

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
        let mut v = Vec::with_capacity(HEADER + topic.len() + self.payload.len());
        v.push(VERSION);
        v.push(if self.retain { FLAG_RETAIN } else { 0 });
        v.extend_from_slice(&self.ts_ms.to_be_bytes());
        // Topics are at most 65535 bytes by MQTT's own encoding, which the broker enforces.
        let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&topic[..usize::from(len)]);
        v.extend_from_slice(&self.payload);
        v
    }

    /// Decodes a stored key and value.
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Record, DecodeError> {
        let (meta, retain, payload) = split(key, value)?;
        Ok(Record {
            seq: meta.seq,
            ts_ms: meta.ts_ms,
            topic: meta.topic.to_owned(),
            payload: Bytes::copy_from_slice(payload),
            retain,
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
    split(key, value).map(|(m, _, _)| m)
}

/// The header, the retain flag and the payload of a stored record.
fn split<'a>(key: &[u8], value: &'a [u8]) -> Result<(Meta<'a>, bool, &'a [u8]), DecodeError> {
    let seq = seq_of(key)?;
    let header = value.get(..HEADER).ok_or(DecodeError::Truncated)?;
    if header[0] != VERSION {
        return Err(DecodeError::Version(header[0]));
    }
    if header[1] & !FLAG_RETAIN != 0 {
        return Err(DecodeError::Flags(header[1]));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&header[2..10]);
    let topic_len = usize::from(u16::from_be_bytes([header[10], header[11]]));
    let topic = value
        .get(HEADER..HEADER + topic_len)
        .ok_or(DecodeError::Truncated)?;
    let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::Topic)?;
    let payload = &value[HEADER + topic_len..];
    let meta = Meta {
        seq,
        ts_ms: u64::from_be_bytes(ts),
        topic,
        size: (topic.len() + payload.len()) as u64,
    };
    Ok((meta, header[1] & FLAG_RETAIN != 0, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let r = Record {
            seq: 42,
            ts_ms: 1_732_270_000_123,
            topic: "site/a/tags/x".to_owned(),
            payload: Bytes::from_static(b"\x00\xff{}"),
            retain: true,
        };
        assert_eq!(Record::decode(&Record::key(42), &r.encode_value()), Ok(r));
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
        v[1] = 1;
        v[10] = 0;
        v[11] = 5;
        assert_eq!(Record::decode(&[0; 8], &v), Err(DecodeError::Truncated));
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
                                  retain: bool) {
            let r = Record { seq, ts_ms: ts, topic, payload: Bytes::from(payload), retain };
            prop_assert_eq!(Record::decode(&Record::key(seq), &r.encode_value()), Ok(r));
        }
    }
}
