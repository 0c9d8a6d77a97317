//! The SUBSCRIBE and UNSUBSCRIBE packets of one MQTT connection: which filters reach rumqttd.
//!
//! rumqttd 0.20 grants filters MQTT forbids (`a/#/b`, empty, NUL) and keeps state for every
//! distinct filter it has ever been given, for good: it cannot forget one. So the proxy refuses
//! invalid filters and bounds filters per connection and distinct filters in total, answering
//! each refused filter with a SUBACK failure code (MQTT 3.1.1: 0x80; MQTT 5: 0x8F for an invalid
//! or too long filter, 0x97 for a bound) while the others still go to rumqttd.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::RwLock;
use tracing::info;

use super::outflow::Sub;
use super::wire::{put_remaining_length, varint};
use crate::served::LoggedTopics;

/// Whom a filter new to rumqttd is charged to: the login when logins are on (then every
/// client has one), else the client's source address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Login(String),
    Source(IpAddr),
}

/// The bound a refused filter met, as refusals name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    /// Filters one connection holds at once (`broker.max_filters_per_client`).
    Connection,
    /// New filters one login may add (`broker.max_new_filters_per_login`).
    Login,
    /// New filters the clients of one address may add (`broker.max_new_filters_per_source`).
    Source,
    /// Distinct filters in total (`broker.max_filters`).
    Total,
}

impl Quota {
    /// The metric label and the configuration key that sets it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Quota::Connection => "per_connection",
            Quota::Login => "per_login",
            Quota::Source => "per_source",
            Quota::Total => "total",
        }
    }

    /// The reason string of an MQTT 5 SUBACK that refused for this quota.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Quota::Connection => "quota: filters per connection (broker.max_filters_per_client)",
            Quota::Login => "quota: new filters per login (broker.max_new_filters_per_login)",
            Quota::Source => {
                "quota: new filters per source address (broker.max_new_filters_per_source)"
            }
            Quota::Total => "quota: distinct filters in total (broker.max_filters)",
        }
    }
}

/// Every distinct filter rumqttd was given, shared by all connections, and whom each new one
/// was charged to. It only grows, like rumqttd's own state (about 11 KiB per filter, measured),
/// so no client may add more than its owner's quota: with logins on, the configuration is
/// checked so that every login's quota fits in the total together, and one login can never lock
/// another out; without logins each source address has its quota within the total.
#[derive(Debug)]
pub(crate) struct FilterRegistry {
    /// Read for every logged PUBLISH (`FilterRegistry::wanted`), written for a new filter.
    state: RwLock<Registry>,
    max: usize,
    per_login: usize,
    per_source: usize,
}

#[derive(Debug, Default)]
struct Registry {
    seen: HashSet<String>,
    /// Those rumqttd may route logged topics by (a shared subscription's without
    /// `$share/GROUP/`), to ask whether rumqttd could route a logged topic to anyone. A filter
    /// the proxy serves in part (see [`Subscriptions::subscribe`]) is left out: the proxy
    /// delivers its logged topics itself.
    trie: mqws_topic::Trie<()>,
    /// The filters in `trie`.
    routing: HashSet<String>,
    /// New filters charged to each owner; at most one entry per filter seen.
    charged: HashMap<Owner, usize>,
}

impl FilterRegistry {
    /// A registry of at most `max` filters, `per_login` and `per_source` new ones per owner.
    pub(crate) fn new(max: usize, per_login: usize, per_source: usize) -> Arc<FilterRegistry> {
        Arc::new(FilterRegistry {
            state: RwLock::new(Registry::default()),
            max,
            per_login,
            per_source,
        })
    }

    /// Admits `filter` for `owner`: a known filter costs nothing; a new one is charged to the
    /// owner within its quota and the total (it is known from now). `routes_logged`: rumqttd
    /// delivers logged topics on it (the proxy does not serve them).
    fn admit(&self, filter: &str, owner: &Owner, routes_logged: bool) -> Result<(), Quota> {
        let mut state = self.state.write();
        if state.seen.contains(filter) {
            state.route(filter, routes_logged);
            return Ok(());
        }
        let (quota, kind) = match owner {
            Owner::Login(_) => (self.per_login, Quota::Login),
            Owner::Source(_) => (self.per_source, Quota::Source),
        };
        let charged = state.charged.get(owner).copied().unwrap_or(0);
        if charged >= quota {
            return Err(kind);
        }
        if state.seen.len() >= self.max {
            return Err(Quota::Total);
        }
        state.seen.insert(filter.to_owned());
        state.route(filter, routes_logged);
        *state.charged.entry(owner.clone()).or_insert(0) += 1;
        Ok(())
    }

    /// True when rumqttd holds, or ever held, a filter matching `topic`, a logged topic, by
    /// which it routes logged topics (it forgets none): only then can it route a PUBLISH on
    /// `topic` to anyone the proxy does not serve it to.
    pub(crate) fn wanted(&self, topic: &str) -> bool {
        let mut found = false;
        self.state
            .read()
            .trie
            .for_each_match(topic, |_, _| found = true);
        found
    }
}

impl Registry {
    /// Counts `filter` among those rumqttd routes logged topics by, when it does.
    fn route(&mut self, filter: &str, routes_logged: bool) {
        if routes_logged && self.routing.insert(filter.to_owned()) {
            self.trie.insert(routed(filter), 0, ());
        }
    }
}

/// The filter rumqttd routes by: a shared subscription's (`$share/GROUP/FILTER`) is FILTER.
fn routed(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

/// How the proxy serves a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// Not at all: rumqttd holds it.
    No,
    /// Every topic it matches is logged: the proxy alone holds it.
    Whole,
    /// Some topics it matches are logged: the proxy serves those, rumqttd holds it for the
    /// others.
    Part,
}

/// Bounds on what one connection may subscribe to.
#[derive(Debug, Clone)]
pub(crate) struct FilterLimits {
    pub(crate) registry: Arc<FilterRegistry>,
    /// Filters one connection may hold at once.
    pub(crate) per_client: usize,
    /// Longest filter, in bytes.
    pub(crate) max_length: usize,
}

/// What to do with a complete SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every filter is granted to rumqttd: pass the packet as it came.
    Pass,
    /// The proxy answers every filter (refused, or served by the proxy): pass nothing, answer
    /// with these codes (and, in MQTT 5, the quota that refused the last refused one, when one
    /// did), and serve `served`.
    Answer {
        id: u16,
        codes: Vec<u8>,
        quota: Option<Quota>,
        served: Vec<Sub>,
    },
    /// Some go to rumqttd: pass `packet` (those only), merge rumqttd's SUBACK into `plan`, and
    /// serve `served`.
    Rewrite {
        id: u16,
        packet: Vec<u8>,
        plan: Vec<Option<u8>>,
        served: Vec<Sub>,
    },
    /// Not a well-formed SUBSCRIBE: close the connection.
    Malformed,
}

/// What a complete UNSUBSCRIBE turns into: the proxy's UNSUBACK (rumqttd's are dropped, as it
/// sends none for a filter it does not hold), the served filters to drop, and the packet that
/// still goes to rumqttd (the filters it holds), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsubscribed {
    pub(crate) unsuback: Vec<u8>,
    pub(crate) served: Vec<String>,
    pub(crate) packet: Option<Vec<u8>>,
}

/// One connection's filters.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    v5: bool,
    limits: FilterLimits,
    owner: Owner,
    /// Every filter the connection holds, served or with rumqttd.
    mine: HashSet<String>,
    /// Those the proxy serves.
    serving: HashSet<String>,
    /// Decides which filters the proxy serves; `None` when it serves none on this connection
    /// (a persistent session, whose subscriptions stay with rumqttd, or no stream core).
    served: Option<std::sync::Arc<dyn LoggedTopics>>,
    /// The quota that refused the last refused filter of the SUBSCRIBE being decided.
    quota: Option<Quota>,
}

/// Where the filters of a SUBSCRIBE or UNSUBSCRIBE body start: after the packet id and (MQTT 5)
/// the properties.
fn entries_start(v5: bool, body: &[u8]) -> Option<usize> {
    if body.len() < 2 {
        return None;
    }
    if !v5 {
        return Some(2);
    }
    let (len, used) = varint(&body[2..])?;
    Some(2 + used + len).filter(|&at| at <= body.len())
}

/// The next filter at `at` (a length-prefixed UTF-8 string): the filter and where it ends.
fn filter_at(body: &[u8], at: usize) -> Option<(&str, usize)> {
    let len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let end = at + 2 + len;
    let filter = std::str::from_utf8(body.get(at + 2..end)?).ok()?;
    Some((filter, end))
}

/// The Subscription Identifier among a SUBSCRIBE's properties.
fn subscription_id(v5: bool, body: &[u8], start: usize) -> Option<u32> {
    if !v5 {
        return None;
    }
    let (_, used) = varint(body.get(2..)?)?;
    let mut p = body.get(2 + used..start)?;
    while let Some((&id, rest)) = p.split_first() {
        match id {
            0x0B => return varint(rest).and_then(|(v, _)| u32::try_from(v).ok()),
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                let v = usize::from(u16::from_be_bytes([*rest.get(k)?, *rest.get(k + 1)?]));
                p = rest.get(k + 2 + v..)?;
            }
            _ => return None,
        }
    }
    None
}

impl Subscriptions {
    pub(crate) fn new(
        v5: bool,
        limits: FilterLimits,
        owner: Owner,
        served: Option<std::sync::Arc<dyn LoggedTopics>>,
    ) -> Subscriptions {
        Subscriptions {
            v5,
            limits,
            owner,
            mine: HashSet::new(),
            serving: HashSet::new(),
            served,
            quota: None,
        }
    }

    /// The served filters of a resumed session.
    pub(crate) fn restore(&mut self, filters: &[String]) {
        for f in filters {
            self.mine.insert(f.clone());
            self.serving.insert(f.clone());
        }
    }

    /// True when the proxy may serve filters on this connection (then it also takes the
    /// client's acknowledgements of its own packet ids).
    pub(crate) fn serves(&self) -> bool {
        self.served.is_some()
    }

    /// True when rumqttd could route a PUBLISH on `topic` to a subscriber (see
    /// [`FilterRegistry::wanted`]).
    pub(crate) fn rumqttd_wants(&self, topic: &str) -> bool {
        self.limits.registry.wanted(topic)
    }

    /// Decides on a complete SUBSCRIBE body.
    pub(crate) fn subscribe(&mut self, body: &[u8]) -> Outcome {
        let Some(start) = entries_start(self.v5, body) else {
            return Outcome::Malformed;
        };
        let id = u16::from_be_bytes([body[0], body[1]]);
        let sub_id = subscription_id(self.v5, body, start);
        self.quota = None;
        // Each entry's byte range and the proxy's code for it (None: granted to rumqttd).
        let mut entries = Vec::new();
        let mut served = Vec::new();
        let mut at = start;
        while at < body.len() {
            let Some((filter, end)) = filter_at(body, at) else {
                return Outcome::Malformed;
            };
            let Some(&options) = body.get(end) else {
                return Outcome::Malformed;
            };
            // A filter the connection already holds with rumqttd stays there.
            let with_rumqttd = self.mine.contains(filter) && !self.serving.contains(filter);
            let mut code = self.decide(filter);
            let serve = if code.is_none() && !with_rumqttd {
                self.serve(filter)
            } else {
                Serve::No
            };
            if serve != Serve::No {
                served.push(Sub {
                    filter: filter.to_owned(),
                    qos: (options & 3).min(2),
                    no_local: self.v5 && options & 0x04 != 0,
                    retain_as_published: self.v5 && options & 0x08 != 0,
                    retain_handling: if self.v5 { (options >> 4) & 3 } else { 0 },
                    id: sub_id,
                    since: 0,
                });
            }
            if serve == Serve::Whole {
                code = Some(options & 3);
            }
            entries.push((at..end + 1, code));
            at = end + 1;
        }
        if entries.is_empty() {
            return Outcome::Malformed;
        }
        // A filter served in part (`+/x` beside `site/#`) goes to rumqttd as it came and is
        // served too: passing the packet alone would leave its logged topics to no one.
        if served.is_empty() && entries.iter().all(|(_, code)| code.is_none()) {
            return Outcome::Pass;
        }
        if entries.iter().all(|(_, code)| code.is_some()) {
            let codes = entries.iter().filter_map(|(_, c)| *c).collect();
            let quota = self.quota.take();
            return Outcome::Answer {
                id,
                codes,
                quota,
                served,
            };
        }
        let mut kept = body[..start].to_vec();
        for (range, code) in &entries {
            if code.is_none() {
                kept.extend_from_slice(&body[range.clone()]);
            }
        }
        let mut packet = vec![0x82];
        put_remaining_length(&mut packet, kept.len());
        packet.extend_from_slice(&kept);
        let plan = entries.into_iter().map(|(_, code)| code).collect();
        Outcome::Rewrite {
            id,
            packet,
            plan,
            served,
        }
    }

    /// How the proxy serves `filter`, just admitted: a filter inside the logged topics
    /// whole, one that matches some logged topics in part (rumqttd gets it too, for the rest:
    /// its copies of logged messages are kept from the client, see
    /// [`super::downstream::Keep`]), a shared subscription not at all (rumqttd picks one
    /// member per message); nothing on a connection the proxy serves nothing on.
    fn serve(&mut self, filter: &str) -> Serve {
        let Some(topics) = &self.served else {
            return Serve::No;
        };
        let how = if filter.starts_with("$share/") {
            Serve::No
        } else if topics.covers(filter) {
            Serve::Whole
        } else if topics.overlaps(filter) {
            Serve::Part
        } else {
            Serve::No
        };
        if how != Serve::No {
            self.serving.insert(filter.to_owned());
        }
        how
    }

    /// The filters the proxy serves on this connection.
    pub(crate) fn serving(&self) -> std::sync::Arc<[String]> {
        self.serving.iter().cloned().collect()
    }

    /// Whether the proxy serves all of `filter` (then rumqttd does not hold it).
    fn whole(&self, filter: &str) -> bool {
        self.served
            .as_ref()
            .is_some_and(|t| !filter.starts_with("$share/") && t.covers(filter))
    }

    /// The proxy's code for one filter, or `None` when it goes to rumqttd.
    fn decide(&mut self, filter: &str) -> Option<u8> {
        let (invalid, quota) = if self.v5 { (0x8F, 0x97) } else { (0x80, 0x80) };
        // rumqttd drops a connection that subscribes to a `$` filter other than `$share/…`.
        let dollar = filter.starts_with('$') && !filter.starts_with("$share/");
        if dollar
            || mqws_topic::check_filter(filter).is_err()
            || filter.len() > self.limits.max_length
        {
            return Some(invalid);
        }
        if self.mine.contains(filter) {
            return None;
        }
        // Served in part by the proxy: rumqttd holds it but never routes logged topics by it.
        let part = !filter.starts_with("$share/")
            && self.served.as_ref().is_some_and(|t| t.overlaps(filter));
        let admitted = if self.mine.len() >= self.limits.per_client {
            Err(Quota::Connection)
        } else if self.whole(filter) {
            // Served by the proxy: rumqttd never holds it, so it costs nothing there.
            Ok(())
        } else {
            self.limits.registry.admit(filter, &self.owner, !part)
        };
        if let Err(q) = admitted {
            metrics::counter!("mqws_mqtt_filters_refused_total", "quota" => q.label()).increment(1);
            info!(filter, quota = q.reason(), "SUBSCRIBE filter refused");
            self.quota = Some(q);
            return Some(quota);
        }
        self.mine.insert(filter.to_owned());
        None
    }

    /// Forgets the filters of a complete UNSUBSCRIBE body; `None` when it is malformed.
    pub(crate) fn unsubscribe(&mut self, body: &[u8]) -> Option<Unsubscribed> {
        let start = entries_start(self.v5, body)?;
        let id = [body[0], body[1]];
        let mut at = start;
        let mut codes = Vec::new();
        let mut served = Vec::new();
        let mut kept = body[..start].to_vec();
        while at < body.len() {
            let (filter, end) = filter_at(body, at)?;
            let held = self.mine.remove(filter);
            codes.push(if held { 0x00 } else { 0x11 });
            let whole = self.whole(filter);
            if self.serving.remove(filter) {
                served.push(filter.to_owned());
            }
            if !(held && whole) {
                kept.extend_from_slice(&body[at..end]);
            }
            at = end;
        }
        if codes.is_empty() {
            return None;
        }
        let packet = (kept.len() > start).then(|| {
            let mut p = vec![0xa2];
            put_remaining_length(&mut p, kept.len());
            p.extend_from_slice(&kept);
            p
        });
        let mut unsuback = vec![0xb0];
        if self.v5 {
            put_remaining_length(&mut unsuback, 3 + codes.len());
            unsuback.extend_from_slice(&[id[0], id[1], 0]);
            unsuback.extend_from_slice(&codes);
        } else {
            unsuback.extend_from_slice(&[2, id[0], id[1]]);
        }
        Some(Unsubscribed {
            unsuback,
            served,
            packet,
        })
    }
}

#[cfg(test)]
mod tests;
