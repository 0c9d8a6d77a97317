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
        None,
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
    let Outcome::Rewrite {
        id, packet, plan, ..
    } = got
    else {
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
        Outcome::Answer {
            id: 4,
            codes: vec![0x80, 0x80],
            quota: None,
            served: vec![],
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
    let mut one = Subscriptions::new(true, limits.clone(), from(1), None);
    let got = one.subscribe(&subscribe(true, 1, &["a", "b", "c"]));
    assert!(
        matches!(&got, Outcome::Rewrite { plan, .. } if plan == &[None, None, Some(0x97)]),
        "{got:?}"
    );
    assert_eq!(one.subscribe(&subscribe(true, 2, &["a"])), Outcome::Pass);
    one.unsubscribe(&unsubscribe(3, &["a"]));
    assert_eq!(one.subscribe(&subscribe(true, 4, &["c"])), Outcome::Pass);
    let mut two = Subscriptions::new(true, limits, from(2), None);
    assert_eq!(two.subscribe(&subscribe(true, 1, &["a"])), Outcome::Pass);
    assert_eq!(
        two.subscribe(&subscribe(true, 2, &["new"])),
        Outcome::Answer {
            id: 2,
            codes: vec![0x97],
            quota: Some(Quota::Total),
            served: vec![],
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
    let mut a1 = Subscriptions::new(true, limits(10), login("guest"), None);
    assert_eq!(
        a1.subscribe(&subscribe(true, 1, &["g/1", "g/2"])),
        Outcome::Pass
    );
    let mut a2 = Subscriptions::new(true, limits(10), login("guest"), None);
    assert_eq!(
        a2.subscribe(&subscribe(true, 1, &["g/3"])),
        Outcome::Answer {
            id: 1,
            codes: vec![0x97],
            quota: Some(Quota::Login),
            served: vec![],
        }
    );
    assert_eq!(
        a2.subscribe(&subscribe(true, 2, &["g/1"])),
        Outcome::Pass,
        "a filter rumqttd holds already costs nothing"
    );
    // Another login is not held back by it.
    let mut reader = Subscriptions::new(true, limits(10), login("reader"), None);
    assert_eq!(
        reader.subscribe(&subscribe(true, 1, &["r/1/cmd"])),
        Outcome::Pass
    );
    // Without logins, each address has its quota.
    let mut s = Subscriptions::new(false, limits(10), from(9), None);
    let got = s.subscribe(&subscribe(false, 1, &["s/1", "s/2", "s/3", "s/4"]));
    assert!(
        matches!(&got, Outcome::Rewrite { plan, .. } if plan == &[None, None, None, Some(0x80)]),
        "{got:?}"
    );
    let mut other = Subscriptions::new(false, limits(10), from(8), None);
    assert_eq!(
        other.subscribe(&subscribe(false, 1, &["o/1"])),
        Outcome::Pass
    );
    // A connection's own bound names itself.
    let mut small = Subscriptions::new(true, limits(1), from(7), None);
    assert_eq!(
        small.subscribe(&subscribe(true, 1, &["k/1"])),
        Outcome::Pass
    );
    assert_eq!(
        small.subscribe(&subscribe(true, 2, &["k/2"])),
        Outcome::Answer {
            id: 2,
            codes: vec![0x97],
            quota: Some(Quota::Connection),
            served: vec![],
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

/// A served connection where `site/#` is logged.
fn serving_site(registry: &Arc<FilterRegistry>) -> Subscriptions {
    Subscriptions::new(
        false,
        FilterLimits {
            registry: registry.clone(),
            per_client: 10,
            max_length: 16,
        },
        from(1),
        Some(Arc::new(crate::proxy::test_topics::Logged("site/#"))),
    )
}

#[test]
fn a_filter_matching_some_logged_topics_is_served_and_passed_to_rumqttd() {
    let registry = FilterRegistry::new(10, 10, 10);
    let mut s = serving_site(&registry);
    let got = s.subscribe(&subscribe(false, 4, &["site/a", "+/x", "other/y"]));
    let Outcome::Rewrite {
        packet,
        plan,
        served,
        ..
    } = got
    else {
        panic!("{got:?}")
    };
    // `site/a` is the proxy's alone; `+/x` both; `other/y` rumqttd's alone.
    assert_eq!(plan, vec![Some(1), None, None]);
    let filters: Vec<&str> = served.iter().map(|s| s.filter.as_str()).collect();
    assert_eq!(filters, vec!["site/a", "+/x"]);
    let mut expect = vec![0x82, 18, 0, 4];
    for f in ["+/x", "other/y"] {
        expect.extend_from_slice(&(f.len() as u16).to_be_bytes());
        expect.extend_from_slice(f.as_bytes());
        expect.push(1);
    }
    assert_eq!(packet, expect);
    // rumqttd routes no logged topic by `+/x` (the proxy delivers those).
    assert!(!registry.wanted("site/x"));
    assert!(registry.wanted("other/y"));
    let mut serving: Vec<String> = s.serving().to_vec();
    serving.sort();
    assert_eq!(serving, vec!["+/x", "site/a"]);
    // Unsubscribing `+/x` drops it from both.
    let mut body = unsubscribe(5, &["+/x", "site/a"]);
    body.remove(2); // MQTT 3.1.1: no properties
    let u = s.unsubscribe(&body).expect("a well-formed UNSUBSCRIBE");
    assert_eq!(u.served, vec!["+/x", "site/a"]);
    let expect = vec![0xa2, 7, 0, 5, 0, 3, b'+', b'/', b'x'];
    assert_eq!(u.packet, Some(expect));
}

#[test]
fn a_filter_served_in_part_alone_is_served_too() {
    let registry = FilterRegistry::new(10, 10, 10);
    let mut s = serving_site(&registry);
    let body = subscribe(false, 4, &["+/x"]);
    let got = s.subscribe(&body);
    let Outcome::Rewrite {
        packet,
        plan,
        served,
        ..
    } = got
    else {
        panic!("{got:?}")
    };
    // rumqttd gets the packet as it came (its SUBACK code stands), and the proxy serves it.
    assert_eq!(plan, vec![None]);
    let mut expect = vec![0x82];
    put_remaining_length(&mut expect, body.len());
    expect.extend_from_slice(&body);
    assert_eq!(packet, expect);
    let filters: Vec<&str> = served.iter().map(|s| s.filter.as_str()).collect();
    assert_eq!(filters, vec!["+/x"]);
    assert!(!registry.wanted("site/x"));
}

#[test]
fn a_shared_subscription_routes_logged_topics_by_rumqttd() {
    let registry = FilterRegistry::new(10, 10, 10);
    let mut s = serving_site(&registry);
    assert_eq!(
        s.subscribe(&subscribe(false, 4, &["$share/g/site/#"])),
        Outcome::Pass
    );
    assert!(registry.wanted("site/x"));
    assert!(s.serving().is_empty());
}
