//! One live connection per client id, as MQTT wants, decided by the proxy before rumqttd sees
//! the CONNECT: a newer connection of a client id ends the older one and waits (bounded) until
//! the older one's connection to rumqttd is closed. rumqttd then never sees two connections of
//! one client id: when it takes over itself, it frees the older connection's id once when it
//! drops it and again when that link ends, and a connection given the id in between is
//! dropped right after its CONNACK.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long a newer connection waits for the older one to be gone before it goes on anyway
/// (the older one's client side may be stuck writing; it gets its drain grace, 5 s).
const WAIT: Duration = Duration::from_secs(10);

/// The live connections by client id.
#[derive(Debug, Default)]
pub(crate) struct Live {
    entries: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    /// Cancelled when a newer connection of the client id arrives.
    taken: CancellationToken,
    /// Held until the connection is gone.
    gone: Arc<tokio::sync::Mutex<()>>,
}

/// A connection's place as its client id's live connection; given up when dropped.
#[derive(Debug)]
pub(crate) struct Presence {
    live: Arc<Live>,
    client_id: String,
    id: u64,
    /// Cancelled when a newer connection of the same client id takes over.
    pub(crate) taken: CancellationToken,
    _held: OwnedMutexGuard<()>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut entries = self.live.entries.lock();
        if entries
            .get(&self.client_id)
            .is_some_and(|e| e.id == self.id)
        {
            entries.remove(&self.client_id);
        }
    }
}

impl Live {
    /// Makes this connection `client_id`'s live one: the older one is told to end, and this
    /// waits until it is gone (at most [`WAIT`]). An empty client id names no one (rumqttd
    /// assigns each such connection its own): nothing is ended.
    /// `stop` (the connection's shutdown) also cancels the presence's `taken`.
    pub(crate) async fn enter(
        self: &Arc<Self>,
        client_id: &str,
        stop: &CancellationToken,
    ) -> Presence {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let taken = stop.child_token();
        let gone = Arc::new(tokio::sync::Mutex::new(()));
        let held = gone.clone().lock_owned().await;
        let older = if client_id.is_empty() {
            None
        } else {
            let mut entries = self.entries.lock();
            let entry = Entry {
                id,
                taken: taken.clone(),
                gone,
            };
            entries.insert(client_id.to_owned(), entry).map(|older| {
                older.taken.cancel();
                older.gone
            })
        };
        if let Some(older) = older {
            if tokio::time::timeout(WAIT, older.lock_owned())
                .await
                .is_err()
            {
                warn!(
                    client_id,
                    "the older connection of this client id did not end in time"
                );
            }
        }
        Presence {
            live: self.clone(),
            client_id: client_id.to_owned(),
            id,
            taken,
            _held: held,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_connection_ends_the_older_and_waits_for_it() {
        let live = Arc::new(Live::default());
        let stop = CancellationToken::new();
        let first = live.enter("r1", &stop).await;
        let other = live.enter("r2", &stop).await;
        let l = live.clone();
        let second = tokio::spawn(async move { l.enter("r1", &CancellationToken::new()).await });
        first.taken.cancelled().await;
        assert!(
            !other.taken.is_cancelled(),
            "another client id is left alone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "waits while the older one lives");
        drop(first);
        let second = second.await.unwrap();
        assert!(!second.taken.is_cancelled());
        drop(second);
        assert!(
            live.entries.lock().get("r1").is_none(),
            "forgotten when gone"
        );
    }
}
