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

use parking_lot::Mutex;
use tracing::info;

use super::wire::{put_remaining_length, varint};

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
    state: Mutex<Registry>,
    max: usize,
    per_login: usize,
    per_source: usize,
}

#[derive(Debug, Default)]
struct Registry {
    seen: HashSet<String>,
    /// New filters charged to each owner; at most one entry per filter seen.
    charged: HashMap<Owner, usize>,
}

impl FilterRegistry {
    /// A registry of at most `max` filters, `per_login` and `per_source` new ones per owner.
    pub(crate) fn new(max: usize, per_login: usize, per_source: usize) -> Arc<FilterRegistry> {
        Arc::new(FilterRegistry {
            state: Mutex::new(Registry::default()),
            max,
            per_login,
            per_source,
        })
    }

    /// Admits `filter` for `owner`: a known filter costs nothing; a new one is charged to the
    /// owner within its quota and the total (it is known from now).
    fn admit(&self, filter: &str, owner: &Owner) -> Result<(), Quota> {
        let mut state = self.state.lock();
        if state.seen.contains(filter) {
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
        *state.charged.entry(owner.clone()).or_insert(0) += 1;
        Ok(())
    }
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
    /// Every filter is refused: pass nothing, answer with these codes (and, in MQTT 5, the
    /// quota that refused the last of them, when one did).
    Refuse {
        id: u16,
        codes: Vec<u8>,
        quota: Option<Quota>,
    },
    /// Some are refused: pass `packet` (the others only), and merge rumqttd's SUBACK into `plan`.
    Rewrite {
        id: u16,
        packet: Vec<u8>,
        plan: Vec<Option<u8>>,
    },
    /// Not a well-formed SUBSCRIBE: close the connection.
    Malformed,
}

/// One connection's filters.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    v5: bool,
    limits: FilterLimits,
    owner: Owner,
    mine: HashSet<String>,
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

impl Subscriptions {
    pub(crate) fn new(v5: bool, limits: FilterLimits, owner: Owner) -> Subscriptions {
        Subscriptions {
            v5,
            limits,
            owner,
            mine: HashSet::new(),
            quota: None,
        }
    }

    /// Decides on a complete SUBSCRIBE body.
    pub(crate) fn subscribe(&mut self, body: &[u8]) -> Outcome {
        let Some(start) = entries_start(self.v5, body) else {
            return Outcome::Malformed;
        };
        let id = u16::from_be_bytes([body[0], body[1]]);
        self.quota = None;
        // Each entry's byte range and the proxy's code for it (None: granted to rumqttd).
        let mut entries = Vec::new();
        let mut at = start;
        while at < body.len() {
            let Some((filter, end)) = filter_at(body, at) else {
                return Outcome::Malformed;
            };
            if end >= body.len() {
                return Outcome::Malformed;
            }
            entries.push((at..end + 1, self.decide(filter)));
            at = end + 1;
        }
        if entries.is_empty() {
            return Outcome::Malformed;
        }
        if entries.iter().all(|(_, code)| code.is_none()) {
            return Outcome::Pass;
        }
        if entries.iter().all(|(_, code)| code.is_some()) {
            let codes = entries.iter().filter_map(|(_, c)| *c).collect();
            let quota = self.quota.take();
            return Outcome::Refuse { id, codes, quota };
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
        Outcome::Rewrite { id, packet, plan }
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
        let admitted = if self.mine.len() >= self.limits.per_client {
            Err(Quota::Connection)
        } else {
            self.limits.registry.admit(filter, &self.owner)
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

    /// Forgets the filters of a complete UNSUBSCRIBE body (rumqttd is told as usual).
    pub(crate) fn unsubscribe(&mut self, body: &[u8]) {
        let Some(mut at) = entries_start(self.v5, body) else {
            return;
        };
        while let Some((filter, end)) = filter_at(body, at) {
            self.mine.remove(filter);
            at = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(v5: bool, id: u16, filters: &[&str]) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        if v5 {
            body.extend_from_slice(&[2, 0x0B, 5]); // a subscription identifier
        }
        for f in filters {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(1);
        }
        body
    }

    fn unsubscribe(id: u16, filters: &[&str]) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.push(0);
        for f in filters {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
        }
        body
    }

    fn from(a: u8) -> Owner {
        Owner::Source([127, 0, 0, a].into())
    }

    fn subs(v5: bool, per_client: usize, total: usize) -> Subscriptions {
        Subscriptions::new(
            v5,
            FilterLimits {
                registry: FilterRegistry::new(total, total, total),
                per_client,
                max_length: 16,
            },
            from(1),
        )
    }

    #[test]
    fn valid_filters_pass_unchanged() {
        for v5 in [false, true] {
            let mut s = subs(v5, 10, 10);
            assert_eq!(
                s.subscribe(&subscribe(v5, 3, &["a/+", "b/#"])),
                Outcome::Pass
            );
        }
    }

    #[test]
    fn invalid_filters_are_refused_and_the_rest_passed() {
        let mut s = subs(true, 10, 10);
        let got = s.subscribe(&subscribe(true, 9, &["a/#/b", "ok/+", "", "x\0", "$SYS/#"]));
        let Outcome::Rewrite { id, packet, plan } = got else {
            panic!("{got:?}");
        };
        assert_eq!(id, 9);
        assert_eq!(
            plan,
            vec![Some(0x8F), None, Some(0x8F), Some(0x8F), Some(0x8F)]
        );
        let mut want = vec![0x82];
        let body = subscribe(true, 9, &["ok/+"]);
        put_remaining_length(&mut want, body.len());
        want.extend_from_slice(&body);
        assert_eq!(packet, want, "the SUBSCRIBE keeps its id and properties");
        let mut s = subs(false, 10, 10);
        assert_eq!(
            s.subscribe(&subscribe(false, 4, &["a/#/b", "this/filter/is/too/long"])),
            Outcome::Refuse {
                id: 4,
                codes: vec![0x80, 0x80],
                quota: None
            }
        );
    }

    #[test]
    fn bounds_per_connection_and_in_total() {
        let registry = FilterRegistry::new(3, 3, 3);
        let limits = FilterLimits {
            registry,
            per_client: 2,
            max_length: 64,
        };
        let mut one = Subscriptions::new(true, limits.clone(), from(1));
        let got = one.subscribe(&subscribe(true, 1, &["a", "b", "c"]));
        assert!(
            matches!(&got, Outcome::Rewrite { plan, .. } if plan == &[None, None, Some(0x97)]),
            "{got:?}"
        );
        assert_eq!(one.subscribe(&subscribe(true, 2, &["a"])), Outcome::Pass);
        one.unsubscribe(&unsubscribe(3, &["a"]));
        assert_eq!(one.subscribe(&subscribe(true, 4, &["c"])), Outcome::Pass);
        let mut two = Subscriptions::new(true, limits, from(2));
        assert_eq!(two.subscribe(&subscribe(true, 1, &["a"])), Outcome::Pass);
        assert_eq!(
            two.subscribe(&subscribe(true, 2, &["new"])),
            Outcome::Refuse {
                id: 2,
                codes: vec![0x97],
                quota: Some(Quota::Total)
            },
            "three distinct filters in total"
        );
    }

    #[test]
    fn each_owner_has_its_quota_of_new_filters_and_known_filters_are_free() {
        let registry = FilterRegistry::new(10, 2, 3);
        let limits = |per_client| FilterLimits {
            registry: registry.clone(),
            per_client,
            max_length: 64,
        };
        let login = |name: &str| Owner::Login(name.to_owned());
        // Many connections of one login share its quota of two new filters.
        let mut a1 = Subscriptions::new(true, limits(10), login("guest"));
        assert_eq!(
            a1.subscribe(&subscribe(true, 1, &["g/1", "g/2"])),
            Outcome::Pass
        );
        let mut a2 = Subscriptions::new(true, limits(10), login("guest"));
        assert_eq!(
            a2.subscribe(&subscribe(true, 1, &["g/3"])),
            Outcome::Refuse {
                id: 1,
                codes: vec![0x97],
                quota: Some(Quota::Login)
            }
        );
        assert_eq!(
            a2.subscribe(&subscribe(true, 2, &["g/1"])),
            Outcome::Pass,
            "a filter rumqttd holds already costs nothing"
        );
        // Another login is not held back by it.
        let mut reader = Subscriptions::new(true, limits(10), login("reader"));
        assert_eq!(
            reader.subscribe(&subscribe(true, 1, &["r/1/cmd"])),
            Outcome::Pass
        );
        // Without logins, each address has its quota.
        let mut s = Subscriptions::new(false, limits(10), from(9));
        let got = s.subscribe(&subscribe(false, 1, &["s/1", "s/2", "s/3", "s/4"]));
        assert!(
            matches!(&got, Outcome::Rewrite { plan, .. } if plan == &[None, None, None, Some(0x80)]),
            "{got:?}"
        );
        let mut other = Subscriptions::new(false, limits(10), from(8));
        assert_eq!(
            other.subscribe(&subscribe(false, 1, &["o/1"])),
            Outcome::Pass
        );
        // A connection's own bound names itself.
        let mut small = Subscriptions::new(true, limits(1), from(7));
        assert_eq!(
            small.subscribe(&subscribe(true, 1, &["k/1"])),
            Outcome::Pass
        );
        assert_eq!(
            small.subscribe(&subscribe(true, 2, &["k/2"])),
            Outcome::Refuse {
                id: 2,
                codes: vec![0x97],
                quota: Some(Quota::Connection)
            }
        );
    }

    #[test]
    fn malformed_subscribes() {
        let mut s = subs(false, 10, 10);
        assert_eq!(s.subscribe(&[0]), Outcome::Malformed);
        assert_eq!(s.subscribe(&[0, 1]), Outcome::Malformed, "no filter");
        assert_eq!(s.subscribe(&[0, 1, 0, 3, b'a']), Outcome::Malformed);
        assert_eq!(
            s.subscribe(&[0, 1, 0, 1, b'a']),
            Outcome::Malformed,
            "no options"
        );
        assert_eq!(s.subscribe(&[0, 1, 0, 1, 0xff, 0]), Outcome::Malformed);
    }
}
