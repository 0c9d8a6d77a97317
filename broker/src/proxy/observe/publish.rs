//! A PUBLISH body as the watcher reads it: its topic checked (wildcards, NUL, aliases), what is
//! logged, whether it reaches rumqttd at all (the bypass), and a retained value.

use bytes::Bytes;

use super::props::{kept_properties, topic_alias};
use super::{Observer, RetainedUpdate, Seen};
use crate::proxy::wire::varint;

impl Observer {
    /// Parses a PUBLISH body (a prefix when not `complete`, enough for the topic and alias);
    /// reports a bad topic, else the message when it is complete and logged, and the retained
    /// update when it is retained and complete.
    pub(super) fn publish(&mut self, flags: u8, body: &[u8], complete: bool, out: &mut Vec<Seen>) {
        if let Some(violation) = self.parse(flags, body, complete, out) {
            out.push(violation);
        }
    }

    fn parse(
        &mut self,
        flags: u8,
        body: &[u8],
        complete: bool,
        out: &mut Vec<Seen>,
    ) -> Option<Seen> {
        let retain = flags & 1 == 1;
        let qos = (flags >> 1) & 3;
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let topic = std::str::from_utf8(body.get(2..2 + topic_len)?)
            .ok()?
            .to_owned();
        if let Err(violation) = check_topic(&topic) {
            return Some(violation);
        }
        let pkid_at = 2 + topic_len;
        let pkid = match qos {
            2 => Some(u16::from_be_bytes([
                *body.get(pkid_at)?,
                *body.get(pkid_at + 1)?,
            ])),
            _ => None,
        };
        let mut pos = pkid_at + if qos > 0 { 2 } else { 0 };
        let mut alias = None;
        let mut props: &[u8] = &[];
        if self.v5 {
            let (props_len, used) = varint(body.get(pos..)?)?;
            pos += used;
            props = body.get(pos..pos + props_len)?;
            alias = topic_alias(props);
            if alias == Some(0) {
                return Some(Seen::Violation("topic alias 0"));
            }
            pos += props_len;
        }
        let topic = match self.resolve_topic(topic, alias) {
            Ok(topic) => topic,
            Err(violation) => return Some(violation),
        };
        if !complete {
            return None;
        }
        let payload = Bytes::copy_from_slice(body.get(pos..)?);
        if self.logged.iter().any(|f| mqws_topic::matches(f, &topic)) {
            self.decide_bypass(retain, qos, alias, &topic);
            if self.bypassed && qos == 1 {
                let id = u16::from_be_bytes([*body.get(pkid_at)?, *body.get(pkid_at + 1)?]);
                out.push(Seen::Bypassed {
                    id,
                    after: self.forwarded_owed,
                });
            }
            out.push(Seen::Publish(
                crate::InboundMessage {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    retain,
                    qos,
                    origin: None,
                    properties: kept_properties(props),
                },
                pkid,
            ));
        }
        if retain {
            out.push(Seen::Retained(RetainedUpdate {
                topic,
                payload,
                qos,
                properties: kept_properties(props),
            }));
        }
        None
    }

    /// The topic a PUBLISH is for: its own (learning its alias, if it sets one), or the one
    /// its alias stands for when it names none; a violation when neither gives one.
    fn resolve_topic(&mut self, topic: String, alias: Option<u16>) -> Result<String, Seen> {
        match (topic.is_empty(), alias) {
            (false, Some(a)) => {
                self.aliases.insert(a, topic.clone());
                Ok(topic)
            }
            (false, None) => Ok(topic),
            (true, Some(a)) => match self.aliases.get(&a) {
                Some(t) => Ok(t.clone()),
                None => Err(Seen::Violation("unknown topic alias")),
            },
            (true, None) => Err(Seen::Violation("empty topic without a topic alias")),
        }
    }

    /// Decides whether the logged PUBLISH just read bypasses rumqttd (and counts it when it
    /// does). It is kept from rumqttd when no filter it holds could match and nothing of its
    /// state depends on it (a retained value or a topic alias it must learn; QoS 2, whose
    /// exchange rumqttd finishes).
    fn decide_bypass(&mut self, retain: bool, qos: u8, alias: Option<u16>, topic: &str) {
        self.bypassed = self.bypass
            && !retain
            && qos <= 1
            && alias.is_none()
            && !self.subscriptions.rumqttd_wants(topic);
        if self.bypassed {
            metrics::counter!("mqws_mqtt_bypassed_total").increment(1);
        }
    }
}

/// A PUBLISH topic MQTT forbids and rumqttd does not check (NUL, wildcards), as the
/// violation that ends the connection.
fn check_topic(topic: &str) -> Result<(), Seen> {
    match mqws_topic::check_topic_name(topic) {
        Ok(()) => Ok(()),
        Err(mqws_topic::TopicError::Nul) => Err(Seen::Violation("NUL in a PUBLISH topic")),
        Err(_) => Err(Seen::Violation("wildcard in a PUBLISH topic")),
    }
}
