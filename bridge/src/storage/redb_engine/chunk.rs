//! A chunk: up to [`MAX_RECORDS`] records and [`MAX_BYTES`] encoded bytes of one group commit
//! stored as one value of the `log` table, keyed by its first seq. Storing chunks instead of
//! single records cuts the B-tree's per-insert cost (copy-on-write pages) by the chunk size,
//! which is what bounds durable throughput; the byte cap keeps large payloads from making huge
//! values (a record larger than the cap gets a chunk of its own).
//!
//! Layout, version 2: `[2u8][count u32 BE]` then per record `[seq u64 BE][len u32 BE][record
//! value]`, the record value as in [`super::record`]. Seqs ascend within a chunk; they may skip
//! (seqs consumed by a broker gap). Decoding never panics on any input.

use super::record::{self, DecodeError, Meta};
use crate::storage::Record;

const VERSION: u8 = 2;

/// Records per chunk at most.
pub(super) const MAX_RECORDS: usize = 256;
/// Encoded bytes per chunk at most, unless one record alone is larger. Just under 1 MiB, so a
/// full chunk and its page header fit a 1 MiB allocation of redb's power-of-two page allocator
/// instead of taking 2 MiB.
pub(super) const MAX_BYTES: usize = (1 << 20) - (4 << 10);
/// Chunk header: version and count.
const HEAD: usize = 5;
/// Per-record framing (seq, length) plus the record header.
const PER_RECORD: usize = 12 + 12;

/// Encoded size of `r` inside a chunk.
fn encoded_len(r: &Record) -> usize {
    PER_RECORD + r.topic.len() + r.payload.len()
}

/// Splits `records` into consecutive chunks within [`MAX_RECORDS`] and [`MAX_BYTES`]. The
/// split of a prefix is a prefix of the split, so retrying a batch rewrites the same keys.
pub(super) fn split(records: &[Record]) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, HEAD);
    for (i, r) in records.iter().enumerate() {
        let len = encoded_len(r);
        if i > start && (i - start == MAX_RECORDS || bytes + len > MAX_BYTES) {
            out.push(&records[start..i]);
            (start, bytes) = (i, HEAD);
        }
        bytes += len;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// Encodes `records` (ascending seqs, one element of [`split`]) as one value.
pub(super) fn encode(records: &[Record]) -> Vec<u8> {
    let size: usize = records.iter().map(encoded_len).sum();
    let mut v = Vec::with_capacity(HEAD + size);
    encode_into(records, &mut v);
    v
}

/// Appends the encoding of `records` (as [`encode`]) to `v`.
pub(super) fn encode_into(records: &[Record], v: &mut Vec<u8>) {
    v.push(VERSION);
    v.extend_from_slice(
        &u32::try_from(records.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for r in records {
        let value = r.encode_value();
        v.extend_from_slice(&r.seq.to_be_bytes());
        v.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
        v.extend_from_slice(&value);
    }
}

/// Decodes a chunk value.
pub(super) fn decode(value: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut out = Vec::new();
    for item in records(value)? {
        let (key, body) = item?;
        out.push(Record::decode(key, body)?);
    }
    Ok(out)
}

/// The headers of a chunk's records, without copying any payload.
pub(super) fn metas(value: &[u8]) -> Result<Vec<Meta<'_>>, DecodeError> {
    let mut out = Vec::new();
    for item in records(value)? {
        let (key, body) = item?;
        out.push(record::meta(key, body)?);
    }
    Ok(out)
}

/// The record with `seq` in a chunk value, decoding only that record: the per-record headers
/// are scanned and the other bodies skipped, so a point read costs one record, not a chunk.
pub(super) fn find(value: &[u8], seq: u64) -> Result<Option<Record>, DecodeError> {
    for item in records(value)? {
        let (key, body) = item?;
        let here = record::seq_of(key)?;
        if here == seq {
            return Record::decode(key, body).map(Some);
        }
        if here > seq {
            return Ok(None);
        }
    }
    Ok(None)
}

/// A record's key and value inside a chunk.
pub(super) type Slices<'a> = (&'a [u8], &'a [u8]);

/// The (key, record value) slices of a chunk, in order; checks the version, the count, that
/// seqs ascend and that nothing trails the last record. Decoding is left to the caller, so a
/// read decodes (and copies) only the records it wants.
pub(super) fn records(
    value: &[u8],
) -> Result<impl Iterator<Item = Result<Slices<'_>, DecodeError>>, DecodeError> {
    let (&version, rest) = value.split_first().ok_or(DecodeError::Truncated)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let count = rest.get(..4).ok_or(DecodeError::Truncated)?;
    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
    if count > MAX_RECORDS {
        return Err(DecodeError::Truncated);
    }
    let mut at = &rest[4..];
    let mut left = count;
    let mut last: Option<u64> = None;
    Ok(std::iter::from_fn(move || {
        if left == 0 {
            if at.is_empty() {
                return None;
            }
            at = &[];
            return Some(Err(DecodeError::Trailing));
        }
        left -= 1;
        let item = next_record(&mut at, &mut last);
        if item.is_err() {
            (left, at) = (0, &[]);
        }
        Some(item)
    }))
}

/// Cuts the next record off `at`, checking that its seq ascends past `last`.
fn next_record<'a>(at: &mut &'a [u8], last: &mut Option<u64>) -> Result<Slices<'a>, DecodeError> {
    let head = at.get(..12).ok_or(DecodeError::Truncated)?;
    let key = &head[..8];
    let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
    let body = at.get(12..12 + len).ok_or(DecodeError::Truncated)?;
    let seq = record::seq_of(key)?;
    if last.is_some_and(|l| seq <= l) {
        return Err(DecodeError::Order);
    }
    *last = Some(seq);
    *at = &at[12 + len..];
    Ok((key, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn rec(seq: u64, topic: &str, payload: &'static [u8]) -> Record {
        Record {
            seq,
            ts_ms: seq * 10,
            topic: topic.to_owned(),
            payload: Bytes::from_static(payload),
            retain: seq.is_multiple_of(2),
            // Some with MQTT details, some without (as logged before mqws kept them).
            mqtt: seq.is_multiple_of(3).then(|| crate::storage::MqttMeta {
                qos: (seq % 3) as u8,
                origin: seq.is_multiple_of(2).then(|| std::sync::Arc::from("c")),
                properties: Bytes::from_static(&[0x01, 1]),
            }),
        }
    }

    #[test]
    fn round_trip_and_errors() {
        let recs = vec![
            rec(5, "a/b", b"x"),
            rec(6, "", b""),
            rec(9, "c", b"\x00\xff"),
        ];
        assert_eq!(decode(&encode(&recs)), Ok(recs.clone()));
        assert_eq!(decode(&encode(&[])), Ok(vec![]));
        let mut bad = encode(&recs);
        bad.push(0);
        assert_eq!(decode(&bad), Err(DecodeError::Trailing));
        let swapped = vec![rec(6, "a", b""), rec(5, "b", b"")];
        assert_eq!(decode(&encode(&swapped)), Err(DecodeError::Order));
        assert_eq!(decode(&[1]), Err(DecodeError::Version(1)));
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn find_decodes_one_record() {
        let recs = vec![
            rec(5, "a/b", b"x"),
            rec(6, "", b""),
            rec(9, "c", b"\x00\xff"),
        ];
        let v = encode(&recs);
        assert_eq!(find(&v, 6), Ok(Some(recs[1].clone())));
        assert_eq!(find(&v, 9), Ok(Some(recs[2].clone())));
        assert_eq!(find(&v, 7), Ok(None));
        assert_eq!(find(&v, 4), Ok(None));
        assert_eq!(find(&v, 10), Ok(None));
    }

    #[test]
    fn chunks_are_capped_in_bytes_and_records() {
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let recs: Vec<Record> = (1..=256)
            .map(|seq| Record {
                seq,
                ts_ms: 1,
                topic: "t".to_owned(),
                payload: big.clone(),
                retain: false,
                mqtt: None,
            })
            .collect();
        let chunks = split(&recs);
        assert_eq!(
            chunks.len(),
            256,
            "a 1 MiB record exceeds the cap: a chunk of its own"
        );
        assert!(chunks.iter().all(|c| c.len() == 1));
        let half = Bytes::from(vec![7u8; 400 << 10]);
        let halves: Vec<Record> = (1..=5)
            .map(|seq| Record {
                payload: half.clone(),
                ..rec(seq, "h", b"")
            })
            .collect();
        let sizes: Vec<usize> = split(&halves).iter().map(|c| c.len()).collect();
        assert_eq!(
            sizes,
            vec![2, 2, 1],
            "two 400 KiB records fit, three do not"
        );
        assert!(split(&halves).iter().all(|c| encode(c).len() <= MAX_BYTES));
        assert_eq!(decode(&encode(chunks[9])), Ok(vec![recs[9].clone()]));
        let small: Vec<Record> = (1..=600).map(|s| rec(s, "a", b"x")).collect();
        let sizes: Vec<usize> = split(&small).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![256, 256, 88]);
        let mixed: Vec<Record> = (1..=40)
            .map(|seq| Record {
                payload: Bytes::from(vec![0u8; 100 * 1024]),
                ..rec(seq, "m", b"")
            })
            .collect();
        for c in split(&mixed) {
            assert!(encode(c).len() <= MAX_BYTES, "{} records", c.len());
        }
        assert_eq!(
            split(&mixed).iter().map(|c| c.len()).sum::<usize>(),
            40,
            "nothing lost in the split"
        );
        let prefix = split(&small[..300]);
        assert_eq!(prefix[0], split(&small)[0], "a prefix splits the same way");
    }

    proptest! {
        #[test]
        fn decode_never_panics(value in proptest::collection::vec(any::<u8>(), 0..200), seq: u64) {
            let _ = find(&value, seq);
            if let Ok(records) = decode(&value) {
                for r in &records {
                    prop_assert_eq!(find(&value, r.seq), Ok(Some(r.clone())));
                }
                prop_assert_eq!(encode(&records), value);
            }
        }
    }
}
