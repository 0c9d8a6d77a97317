//! Picking loopback ports for rumqttd's internal listeners.
//!
//! rumqttd binds its listeners itself and cannot take port 0, so mqws picks a free port and
//! hands its number over. Between the check and rumqttd's bind the port must stay free. A
//! port from the kernel's ephemeral range does not: every outgoing connection on the machine
//! (a load generator, a test opening thousands of connections) may take it as its source
//! port, and rumqttd's bind then fails (it logs that under `rumqttd::server::broker`, which
//! the default filter silences, and start-up waits for a listener that never comes). So ports
//! are picked below the ephemeral range, where only explicit binds compete. The integration
//! tests pick ports for the servers they start (nats-server) the same way.

use std::net::{SocketAddr, TcpListener};
use std::ops::RangeInclusive;

use crate::BrokerError;

/// The lowest port considered: below it are well-known and registered services.
const LOWEST: u16 = 10_000;

/// Random candidates tried before falling back to a kernel-chosen port.
const TRIES: usize = 64;

/// A loopback address whose port was free a moment ago, outside the ephemeral range when the
/// machine leaves room for that.
pub fn free_loopback_port() -> Result<SocketAddr, BrokerError> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_range(&s));
    if let Some(range) = ephemeral.and_then(outside) {
        for _ in 0..TRIES {
            let port = rand::random_range(range.clone());
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                return l
                    .local_addr()
                    .map_err(BrokerError::io("picking an internal port"));
            }
        }
    }
    let l =
        TcpListener::bind(("127.0.0.1", 0)).map_err(BrokerError::io("picking an internal port"))?;
    l.local_addr()
        .map_err(BrokerError::io("picking an internal port"))
}

/// `ip_local_port_range`'s two numbers.
fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// Ports below the ephemeral range `(lo, hi)`, or above it, whichever side has at least a
/// thousand; `None` when neither has.
fn outside((lo, hi): (u16, u16)) -> Option<RangeInclusive<u16>> {
    const ENOUGH: u16 = 1_000;
    if lo > LOWEST && lo - LOWEST >= ENOUGH {
        Some(LOWEST..=lo - 1)
    } else if hi < u16::MAX - ENOUGH {
        Some(hi + 1..=u16::MAX)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_defaults_give_ports_below_the_ephemeral_range() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(outside((32768, 60999)), Some(10_000..=32767));
    }

    #[test]
    fn a_range_starting_low_leaves_the_top_or_nothing() {
        assert_eq!(outside((1024, 50_000)), Some(50_001..=u16::MAX));
        assert_eq!(outside((1024, 65_000)), None);
        assert_eq!(parse_range("junk"), None);
        assert_eq!(parse_range("60000 1000"), None);
    }

    #[test]
    fn a_picked_port_can_be_bound() {
        let addr = free_loopback_port().expect("a port");
        assert!(TcpListener::bind(addr).is_ok());
    }
}
