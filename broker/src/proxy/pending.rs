//! Connections that have not completed their CONNECT yet, counted in total and per source
//! address, so a flood of half-open sockets (from one place, or in total) cannot take every
//! connection slot from real clients. A connection leaves the count when its CONNECT is read
//! (or it ends); `broker.connect_timeout` bounds how long that may take.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// The counts.
#[derive(Debug)]
pub(crate) struct Pending {
    per_source: usize,
    max_total: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One pending connection's place in the counts; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct PendingGuard {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    pub(crate) fn new(max_total: usize, per_source: usize) -> Arc<Pending> {
        Arc::new(Pending {
            per_source: per_source.max(1),
            max_total: max_total.max(1),
            counts: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a new connection from `ip`, or the limit it would break.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<PendingGuard, &'static str> {
        let mut counts = self.counts.lock();
        if counts.0 >= self.max_total {
            return Err("max_pending_connects");
        }
        let n = counts.1.entry(ip).or_insert(0);
        if *n >= self.per_source {
            return Err("max_pending_per_source");
        }
        *n += 1;
        counts.0 += 1;
        Ok(PendingGuard {
            pending: self.clone(),
            ip,
        })
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut counts = self.pending.counts.lock();
        counts.0 = counts.0.saturating_sub(1);
        if let Some(n) = counts.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_source_and_in_total() {
        let p = Pending::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.1".parse().expect("ip");
        let a1 = p.enter(a).expect("first");
        let _a2 = p.enter(a).expect("second");
        assert_eq!(p.enter(a).map(|_| ()), Err("max_pending_per_source"));
        let _b1 = p.enter(b).expect("another source");
        assert_eq!(p.enter(b).map(|_| ()), Err("max_pending_connects"));
        drop(a1);
        assert!(
            p.enter(a).is_ok(),
            "a place is freed when its CONNECT is read"
        );
    }
}
