//! Wills waiting out their delay (MQTT 5 will delay interval), per client id, so the log gets a
//! will when rumqttd publishes it: after the delay, at once when the client id connects again
//! with a clean start, never when it resumes its session in time.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The waiting wills, shared by every proxied connection. Bounded: past `max` waiting wills a
/// new one does not wait.
#[derive(Debug)]
pub(crate) struct Wills {
    waiting: Mutex<HashMap<String, (u64, oneshot::Sender<bool>)>>,
    next: std::sync::atomic::AtomicU64,
    max: usize,
}

impl Wills {
    pub(crate) fn new(max: usize) -> Wills {
        Wills {
            waiting: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
            max,
        }
    }

    /// `client_id` connected: its waiting will goes now when the session starts clean (the old
    /// session ended), and is dropped when the session resumes.
    pub(crate) fn connected(&self, client_id: &str, clean: bool) {
        if let Some((_, fire)) = self.waiting.lock().remove(client_id) {
            let _ = fire.send(clean);
        }
    }

    /// Waits out `delay` for `client_id`'s will; true when it is to be published. The wait is
    /// registered before this returns, so a connection of the client id that comes after the
    /// call decides it, even before the future is first polled.
    pub(crate) fn wait(
        self: &std::sync::Arc<Self>,
        client_id: &str,
        delay: Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let me = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // An empty client id names no one: its will waits, and nothing can cancel it.
        let nameless = client_id.is_empty();
        let rx = (!delay.is_zero() && !nameless)
            .then(|| {
                let mut waiting = self.waiting.lock();
                if waiting.len() >= self.max && !waiting.contains_key(client_id) {
                    return None;
                }
                let (tx, rx) = oneshot::channel();
                waiting.insert(client_id.to_owned(), (me, tx));
                Some(rx)
            })
            .flatten();
        let (wills, client_id) = (self.clone(), client_id.to_owned());
        async move {
            let Some(rx) = rx else {
                if nameless {
                    tokio::time::sleep(delay).await;
                }
                return true;
            };
            match tokio::time::timeout(delay, rx).await {
                Ok(Ok(fire)) => fire,
                // Replaced by a later will of the same id: that one decides.
                Ok(Err(_)) => false,
                Err(_) => {
                    let mut waiting = wills.waiting.lock();
                    if waiting.get(&client_id).is_some_and(|(id, _)| *id == me) {
                        waiting.remove(&client_id);
                    }
                    true
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_will_waits_its_delay_unless_the_client_returns() {
        let wills = std::sync::Arc::new(Wills::new(10));
        assert!(wills.wait("a", Duration::ZERO).await, "no delay");
        let w = wills.clone();
        let late = tokio::spawn(async move { w.wait("a", Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        assert!(late.await.unwrap(), "published after the delay");

        let w = wills.clone();
        let resumed = tokio::spawn(async move { w.wait("b", Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        wills.connected("b", false);
        assert!(!resumed.await.unwrap(), "the session resumed in time");

        let w = wills.clone();
        let clean = tokio::spawn(async move { w.wait("c", Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        wills.connected("c", true);
        assert!(clean.await.unwrap(), "a clean start ends the session: now");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_a_will_does_not_wait() {
        let wills = std::sync::Arc::new(Wills::new(1));
        let w = wills.clone();
        let _first = tokio::spawn(async move { w.wait("a", Duration::from_secs(500)).await });
        tokio::task::yield_now().await;
        assert!(wills.wait("b", Duration::from_secs(500)).await);
    }
}
