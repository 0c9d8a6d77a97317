//! QoS 2 packet ids that were logged but not yet released (PUBREL), per client id, so a QoS 2
//! PUBLISH sent again (DUP, also after a reconnect) before its PUBREL is logged once.
//!
//! In memory only: after a restart a retransmission is logged again. Bounded: at most
//! `max_clients` client ids are tracked; past that the one tracked longest is forgotten.

use std::collections::{HashMap, HashSet, VecDeque};

use parking_lot::Mutex;

/// The tracker, shared by every proxied connection.
#[derive(Debug)]
pub(crate) struct Qos2Ids {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    by_client: HashMap<String, HashSet<u16>>,
    order: VecDeque<String>,
    max_clients: usize,
}

impl Qos2Ids {
    pub(crate) fn new(max_clients: usize) -> Qos2Ids {
        Qos2Ids {
            inner: Mutex::new(Inner {
                by_client: HashMap::new(),
                order: VecDeque::new(),
                max_clients: max_clients.max(1),
            }),
        }
    }

    /// True when `(client, id)` is not pending yet: log the PUBLISH (it is pending from now).
    pub(crate) fn first(&self, client: &str, id: u16) -> bool {
        let mut inner = self.inner.lock();
        if let Some(ids) = inner.by_client.get_mut(client) {
            return ids.insert(id);
        }
        while inner.by_client.len() >= inner.max_clients {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.by_client.remove(&old);
                }
                None => break,
            }
        }
        inner
            .by_client
            .insert(client.to_owned(), HashSet::from([id]));
        inner.order.push_back(client.to_owned());
        true
    }

    /// The QoS 2 exchange of `(client, id)` ended.
    pub(crate) fn release(&self, client: &str, id: u16) {
        if let Some(ids) = self.inner.lock().by_client.get_mut(client) {
            ids.remove(&id);
        }
    }

    /// A clean session of `client` starts: nothing of it is pending any more.
    pub(crate) fn clear(&self, client: &str) {
        if let Some(ids) = self.inner.lock().by_client.get_mut(client) {
            ids.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_are_seen_once_until_released() {
        let q = Qos2Ids::new(2);
        assert!(q.first("a", 1));
        assert!(!q.first("a", 1), "DUP before PUBREL");
        assert!(q.first("b", 1), "per client");
        q.release("a", 1);
        assert!(q.first("a", 1), "a new exchange may reuse the id");
        q.clear("a");
        assert!(q.first("a", 1));
        assert!(q.first("c", 9), "a third client evicts the oldest");
        assert!(q.first("a", 1), "a was forgotten");
    }
}
