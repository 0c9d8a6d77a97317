//! MQTT wire helpers every part of the proxy shares: the variable-length integer that encodes
//! a packet's remaining length (and MQTT 5 property lengths), both ways, and the PUBLISH packet.

/// Why a variable-length integer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Short {
    /// More bytes are needed.
    Incomplete,
    /// Four bytes with the continuation bit: not MQTT.
    Malformed,
}

/// Reads a variable-length integer at the start of `b`: its value and the bytes it used.
pub(crate) fn read_varint(b: &[u8]) -> Result<(usize, usize), Short> {
    let mut v = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Err(Short::Incomplete);
        };
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(Short::Malformed)
}

/// [`read_varint`] where incomplete and malformed are alike (a whole packet body is at hand).
pub(crate) fn varint(b: &[u8]) -> Option<(usize, usize)> {
    read_varint(b).ok()
}

/// The remaining length a whole fixed header (`header[0]` the packet type) announces, its
/// length bytes already checked by the caller's framing.
pub(crate) fn remaining_length(header: &[u8]) -> usize {
    header[1..]
        .iter()
        .enumerate()
        .fold(0usize, |l, (i, b)| l | usize::from(b & 0x7f) << (7 * i))
}

/// Appends MQTT's variable-length "remaining length" encoding of `len`.
pub(crate) fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len & 0x7f) as u8;
        len >>= 7;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// Encodes a PUBLISH (`properties`: MQTT 5's, without their length; `None` before MQTT 5).
pub(crate) fn publish(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    id: Option<u16>,
    properties: Option<&[u8]>,
) -> Vec<u8> {
    let mut props_len = Vec::new();
    if let Some(p) = properties {
        put_remaining_length(&mut props_len, p.len());
    }
    let len = 2
        + topic.len()
        + if id.is_some() { 2 } else { 0 }
        + props_len.len()
        + properties.map_or(0, <[u8]>::len)
        + payload.len();
    let mut out = Vec::with_capacity(len + 5);
    out.push(0x30 | (qos << 1) | u8::from(retain));
    put_remaining_length(&mut out, len);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if let Some(id) = id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(p) = properties {
        out.extend_from_slice(&props_len);
        out.extend_from_slice(p);
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_five_bytes() {
        for len in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = Vec::new();
            put_remaining_length(&mut out, len);
            assert_eq!(read_varint(&out), Ok((len, out.len())), "{len}");
            let mut header = vec![0x30];
            header.extend_from_slice(&out);
            assert_eq!(remaining_length(&header), len);
            assert_eq!(
                read_varint(&out[..out.len() - 1]),
                Err(Short::Incomplete),
                "{len} cut short"
            );
        }
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 1]),
            Err(Short::Malformed)
        );
        assert_eq!(varint(&[0x80]), None);
    }
}
