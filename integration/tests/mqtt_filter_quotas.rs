//! No subscription lockout through rumqttd's never-forgotten filters, on the real binary: many
//! client ids from many source addresses subscribing to many new filters cannot keep a reader
//! from subscribing to its own new filter, and each refusal names its quota (an MQTT 5 SUBACK
//! Reason String, the `quota` label of `mqws_mqtt_filters_refused_total`).
//!
//! Before the quotas, ten client ids each adding 100 new filters made every later SUBSCRIBE to a
//! new filter fail with 0x80 until restart.
//!
//! The quotas bound only the filters rumqttd holds: the proxy serves a filter inside
//! `bridge.filters` itself (on a connection whose session ends with it), so such a filter is
//! never charged and never refused. The tests log only `site/#` ([`LOGGED`]), so their `junk/…`
//! and `readers/…` filters go to rumqttd and meet the quotas.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::process::Command;

use mqws_integration::{hash_password, http_get, metric_value, mqws_bin, RawMqtt, Server};

/// `bridge.filters` of every test here: the `junk/…` filters lie outside it.
const LOGGED: &str = "[bridge]\nfilters = [\"site/#\"]\n";

/// A source address of its own for attacker `n` (loopback is 127.0.0.0/8).
fn host(n: u8) -> Option<IpAddr> {
    Some(IpAddr::from([127, 0, 0, 10 + n]))
}

/// Subscribes `count` new filters from client `id`, ten per SUBSCRIBE; returns the codes and
/// the last Reason String.
fn flood(
    server: &Server,
    source: Option<IpAddr>,
    id: &str,
    login: Option<(&str, &str)>,
    count: usize,
) -> (Vec<u8>, Option<String>) {
    flood_under(server, source, id, login, count, "junk")
}

/// [`flood`] with filters under `prefix`.
fn flood_under(
    server: &Server,
    source: Option<IpAddr>,
    id: &str,
    login: Option<(&str, &str)>,
    count: usize,
    prefix: &str,
) -> (Vec<u8>, Option<String>) {
    let mut c = RawMqtt::connect_from(server.mqtt_addr, source, id, true, 30, login);
    let (mut codes, mut reason) = (Vec::new(), None);
    for batch in 0..count / 10 {
        let filters: Vec<String> = (0..10)
            .map(|i| format!("{prefix}/{id}/{batch}/{i}"))
            .collect();
        let refs: Vec<&[u8]> = filters.iter().map(|f| f.as_bytes()).collect();
        let (got, r) = c.subscribe_full(u16::try_from(batch + 1).unwrap(), &refs);
        codes.extend(got);
        reason = r.or(reason);
    }
    (codes, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_logins_one_address_cannot_use_up_the_filters_of_others() {
    let config =
        format!("{LOGGED}[broker]\nmax_filters = 1000\nmax_new_filters_per_source = 100\n");
    let server = Server::start_configured(&config, &[], None);
    // Ten client ids from one address, 100 new filters each: only the first 100 are taken.
    let mut granted = 0;
    let mut last_reason = None;
    for i in 0..10 {
        let (codes, reason) = flood(&server, host(1), &format!("junk-{i}"), None, 100);
        granted += codes.iter().filter(|c| **c < 0x80).count();
        last_reason = reason.or(last_reason);
        assert!(codes.iter().all(|c| *c < 0x80 || *c == 0x97), "{codes:?}");
    }
    assert_eq!(granted, 100, "max_new_filters_per_source from one address");
    let reason = last_reason.expect("the refusals carry a Reason String");
    assert!(
        reason.contains("broker.max_new_filters_per_source"),
        "{reason}"
    );
    // A reader from another address still subscribes to its own new filter.
    let mut reader = RawMqtt::connect_from(server.mqtt_addr, host(0), "r1", true, 30, None);
    assert_eq!(reader.subscribe(1, &[b"readers/r1/cmd"]), vec![1]);
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    let refused = metric_value(
        &metrics,
        "mqws_mqtt_filters_refused_total{quota=\"per_source\"}",
    );
    assert_eq!(refused, Some(900.0), "each refusal counted with its quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_logins_many_ids_and_addresses_of_one_login_cannot_lock_another_out() {
    let config = format!(
        "{LOGGED}[broker]\nmax_filters = 200\nmax_new_filters_per_login = 100\n\
         [[broker.users]]\nusername = \"guest\"\npassword_hash = \"{}\"\n\
         [[broker.users]]\nusername = \"reader\"\npassword_hash = \"{}\"\n",
        hash_password("g"),
        hash_password("r"),
    );
    let server = Server::start_configured(&config, &[], None);
    let mut granted = 0;
    let mut last_reason = None;
    for i in 0..10u8 {
        let id = format!("guest-{i}");
        let (codes, reason) = flood(&server, host(i), &id, Some(("guest", "g")), 50);
        granted += codes.iter().filter(|c| **c < 0x80).count();
        last_reason = reason.or(last_reason);
    }
    assert_eq!(
        granted, 100,
        "one login's new filters, whatever its ids and addresses"
    );
    let reason = last_reason.expect("the refusals carry a Reason String");
    assert!(
        reason.contains("broker.max_new_filters_per_login"),
        "{reason}"
    );
    let mut reader = RawMqtt::connect_from(
        server.mqtt_addr,
        host(0),
        "r1",
        true,
        30,
        Some(("reader", "r")),
    );
    assert_eq!(reader.subscribe(1, &[b"readers/r1/cmd"]), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_filter_inside_the_logged_topics_is_never_locked_out() {
    // Far more new filters inside the logged topics than rumqttd may hold in total (50) or one
    // address may add (20): the proxy serves them all, so none is charged or refused.
    let config = format!("{LOGGED}[broker]\nmax_filters = 50\nmax_new_filters_per_source = 20\n");
    let server = Server::start_configured(&config, &[], None);
    for i in 0..20u8 {
        let id = format!("many-{i}");
        let (codes, reason) = flood_under(&server, host(i % 4), &id, None, 100, "site");
        assert_eq!(codes.len(), 100);
        assert!(
            codes.iter().all(|c| *c == 1),
            "{id}: every served filter granted at QoS 1: {codes:?} ({reason:?})"
        );
    }
    let addr = server.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        let mut reader = RawMqtt::connect_from(addr, host(0), "r1", true, 30, None);
        assert_eq!(reader.subscribe(1, &[b"site/r1/cmd"]), vec![1]);
        let mut publisher = RawMqtt::connect_from(addr, host(1), "r1-pub", true, 30, None);
        publisher.publish("site/r1/cmd", 1, b"go");
        assert_eq!(publisher.packet()[0], 0x40, "PUBACK");
        let got = reader.packet();
        assert_eq!(got[0] >> 4, 3, "a PUBLISH, got {got:?}");
        assert!(
            got.windows(11).any(|w| w == b"site/r1/cmd") && got.ends_with(b"go"),
            "{got:?}"
        );
    })
    .await
    .unwrap();
    let metrics = http_get(server.http_addr, "/metrics").await.body;
    let refused = metric_value(&metrics, "mqws_mqtt_filters_refused_total").unwrap_or(0.0);
    assert_eq!(refused, 0.0, "no served filter is refused or counted");
}

#[test]
fn a_configuration_whose_login_quotas_do_not_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mqws.toml");
    std::fs::write(
        &config,
        "[broker]\nmax_filters = 150\nmax_new_filters_per_login = 100\n\
         [[broker.users]]\nusername = \"a\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n\
         [[broker.users]]\nusername = \"b\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n",
    )
    .unwrap();
    let out = Command::new(mqws_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("broker.max_filters") && err.contains("max_new_filters_per_login"),
        "{err}"
    );
}
