//! The MQTT 5 properties of a PUBLISH as the watcher reads them: its topic alias, and the
//! properties a logged message keeps (all but those of one connection).

use bytes::Bytes;

use super::super::wire::varint;

/// Topic Alias, a property of one connection's PUBLISH.
const TOPIC_ALIAS: u8 = 0x23;
/// Subscription Identifier, which only a server sends.
const SUBSCRIPTION_ID: u8 = 0x0B;

/// The length of the value of PUBLISH property `id` at the start of `p`; `None` for a property
/// a PUBLISH cannot carry, or one cut short.
fn property_len(id: u8, p: &[u8]) -> Option<usize> {
    let string = |p: &[u8]| Some(2 + usize::from(u16::from_be_bytes([*p.first()?, *p.get(1)?])));
    let len = match id {
        0x01 => 1,
        0x02 => 4,
        TOPIC_ALIAS => 2,
        0x03 | 0x08 | 0x09 => string(p)?,
        SUBSCRIPTION_ID => varint(p)?.1,
        0x26 => {
            let k = string(p)?;
            k + string(p.get(k..)?)?
        }
        _ => return None,
    };
    (len <= p.len()).then_some(len)
}

/// Each property of a PUBLISH properties block as (id, its bytes with the id), until the first
/// one that is not well formed.
fn properties(mut p: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&id, rest) = p.split_first()?;
        let len = property_len(id, rest)?;
        let (whole, next) = p.split_at(1 + len);
        p = next;
        Some((id, whole))
    })
}

/// The Topic Alias property among PUBLISH properties, if present.
pub(super) fn topic_alias(p: &[u8]) -> Option<u16> {
    properties(p)
        .find(|(id, _)| *id == TOPIC_ALIAS)
        .map(|(_, b)| u16::from_be_bytes([b[1], b[2]]))
}

/// The properties a logged message keeps: all but those of one connection.
pub(super) fn kept_properties(p: &[u8]) -> Bytes {
    if p.is_empty() {
        return Bytes::new();
    }
    let mut kept = Vec::with_capacity(p.len());
    for (id, bytes) in properties(p) {
        if id != TOPIC_ALIAS && id != SUBSCRIPTION_ID {
            kept.extend_from_slice(bytes);
        }
    }
    Bytes::from(kept)
}

/// The Session Expiry Interval of an MQTT 5 DISCONNECT body (reason code, properties), if it
/// sets one.
pub(super) fn disconnect_session_expiry(body: &[u8]) -> Option<u32> {
    let (len, used) = varint(body.get(1..)?)?;
    let mut p = body.get(1 + used..1 + used + len)?;
    while let Some((&id, rest)) = p.split_first() {
        let n = match id {
            0x11 => return Some(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)),
            0x1F | 0x1C => 2 + usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                k + 2 + usize::from(u16::from_be_bytes([*rest.get(k)?, *rest.get(k + 1)?]))
            }
            _ => return None,
        };
        p = rest.get(n..)?;
    }
    None
}

#[cfg(test)]
mod disconnect_tests {
    use super::disconnect_session_expiry;

    #[test]
    fn reads_the_session_expiry_of_a_disconnect() {
        // Reason 0, properties: a reason string "x", then Session Expiry Interval 5.
        let body = [0, 9, 0x1F, 0, 1, b'x', 0x11, 0, 0, 0, 5];
        assert_eq!(disconnect_session_expiry(&body), Some(5));
        assert_eq!(disconnect_session_expiry(&[0, 0]), None);
        assert_eq!(disconnect_session_expiry(&[0]), None);
        assert_eq!(
            disconnect_session_expiry(&[0, 5, 0x11, 0]),
            None,
            "cut short"
        );
    }
}
