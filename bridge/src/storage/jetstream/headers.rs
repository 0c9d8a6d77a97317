//! The NATS headers a logged message carries besides its subject and payload: the retain flag,
//! lost-range markers, the appending node, and the message's MQTT details (QoS, the publishing
//! client's id, MQTT 5 properties), in text NATS headers can hold.

use async_nats::header::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;

use crate::storage::MqttMeta;

/// Header: the MQTT retain flag (`1`).
pub(super) const RETAIN: &str = "Mqws-Retain";
/// Header of a lost-range marker: how many messages were lost.
pub(super) const LOST: &str = "Mqws-Lost";
/// Header: the id of the node that appended the message.
pub(super) const NODE: &str = "Mqws-Node";
/// Header: the QoS the message was published with; present when its MQTT details are kept.
pub(super) const QOS: &str = "Mqws-Qos";
/// Header: the publishing MQTT client's id, hex (a client id may hold any character).
pub(super) const ORIGIN: &str = "Mqws-Origin";
/// Header: the message's MQTT 5 PUBLISH properties, base64.
pub(super) const PROPERTIES: &str = "Mqws-Props";

/// Puts a message's MQTT details in its headers.
pub(super) fn put_mqtt(headers: &mut HeaderMap, m: &MqttMeta) {
    headers.insert(QOS, m.qos.to_string());
    if let Some(origin) = &m.origin {
        headers.insert(ORIGIN, hex::encode(origin.as_bytes()));
    }
    if !m.properties.is_empty() {
        headers.insert(
            PROPERTIES,
            base64::engine::general_purpose::STANDARD.encode(&m.properties),
        );
    }
}

/// A stored message's MQTT details; `None` when it has none (appended before mqws kept them)
/// or they do not read back.
pub(super) fn mqtt_of(headers: &HeaderMap) -> Option<MqttMeta> {
    let qos = headers
        .get(QOS)?
        .as_str()
        .parse()
        .ok()
        .filter(|q| *q <= 2)?;
    let origin = match headers.get(ORIGIN) {
        Some(h) => Some(std::sync::Arc::from(
            String::from_utf8(hex::decode(h.as_str()).ok()?).ok()?,
        )),
        None => None,
    };
    let properties = match headers.get(PROPERTIES) {
        Some(h) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(h.as_str())
                .ok()?,
        ),
        None => Bytes::new(),
    };
    Some(MqttMeta {
        qos,
        origin,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_details_round_trip_through_headers() {
        for m in [
            MqttMeta {
                qos: 0,
                origin: None,
                properties: Bytes::new(),
            },
            MqttMeta {
                qos: 2,
                origin: Some(std::sync::Arc::from("odd\r\nid ü")),
                properties: Bytes::from_static(&[0x26, 0, 1, b'k', 0, 1, 0xff]),
            },
        ] {
            let mut headers = HeaderMap::new();
            put_mqtt(&mut headers, &m);
            assert_eq!(mqtt_of(&headers), Some(m));
        }
        assert_eq!(
            mqtt_of(&HeaderMap::new()),
            None,
            "appended before mqws kept them"
        );
    }
}
