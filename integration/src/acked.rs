//! A QoS 1 publisher that knows exactly which of its messages were acknowledged: each payload
//! starts with the publisher's id and a 10-digit counter, rumqttc's outgoing packet ids are
//! mapped back to counters, and every PUBACK marks its counter. Used to check that every
//! acknowledged message is in the log after a crash, a full disk or an overload.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::task::JoinHandle;

/// What a running [`AckedPublisher`] has seen.
#[derive(Debug, Default)]
pub struct AckLog {
    /// Counters whose PUBACK arrived.
    pub acked: BTreeSet<u64>,
    /// Messages handed to the client so far.
    pub sent: u64,
    /// Set when the connection failed.
    pub error: Option<String>,
}

/// A publisher task; stop it with [`AckedPublisher::stop`].
pub struct AckedPublisher {
    /// Its id, the prefix of every payload.
    pub id: String,
    /// What it has seen so far.
    pub log: Arc<Mutex<AckLog>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
    events: JoinHandle<()>,
}

/// The payload of message `i` of publisher `id`, padded to `size` bytes.
pub fn counted_payload(id: &str, i: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{id}{i:010}").into_bytes();
    p.resize(size.max(p.len()), b'x');
    p
}

/// The publisher id and counter a payload made by [`counted_payload`] carries.
pub fn parse_counted(payload: &[u8], id_len: usize) -> Option<(String, u64)> {
    let id = std::str::from_utf8(payload.get(..id_len)?).ok()?;
    let n = std::str::from_utf8(payload.get(id_len..id_len + 10)?).ok()?;
    Some((id.to_owned(), n.parse().ok()?))
}

impl AckedPublisher {
    /// Connects as `id` and publishes up to `n` messages of `size` bytes on `topic` at QoS 1
    /// with up to `inflight` unacknowledged, as fast as the server takes them.
    pub async fn start(
        addr: SocketAddr,
        id: &str,
        topic: &str,
        size: usize,
        inflight: u16,
        n: u64,
    ) -> AckedPublisher {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_inflight(inflight);
        opts.set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let log = Arc::new(Mutex::new(AckLog::default()));
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let events = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut connected_tx = Some(connected_tx);
                // Outgoing publishes leave in the order they were queued: the k-th is counter k.
                let mut next_out = 0u64;
                let mut by_pkid: HashMap<u16, u64> = HashMap::new();
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            if let Some(tx) = connected_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            by_pkid.insert(pkid, next_out);
                            next_out += 1;
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => {
                            if let Some(i) = by_pkid.remove(&a.pkid) {
                                log.lock().unwrap().acked.insert(i);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            log.lock().unwrap().error = Some(e.to_string());
                            return;
                        }
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), connected)
            .await
            .expect("CONNACK within 10 s")
            .expect("event loop alive");
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (log, stop, id, topic) =
                (log.clone(), stop.clone(), id.to_owned(), topic.to_owned());
            tokio::spawn(async move {
                let mut i = 0u64;
                while i < n && !stop.load(Ordering::Relaxed) {
                    let payload = counted_payload(&id, i, size);
                    // A bounded wait, so a stop request is seen while the server pushes back.
                    let queued = tokio::time::timeout(
                        Duration::from_millis(100),
                        client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload),
                    )
                    .await;
                    match queued {
                        Ok(Ok(())) => {
                            i += 1;
                            log.lock().unwrap().sent = i;
                        }
                        Ok(Err(_)) => return,
                        Err(_) => {}
                    }
                }
            })
        };
        AckedPublisher {
            id: id.to_owned(),
            log,
            stop,
            task,
            events,
        }
    }

    /// How many messages were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.log.lock().unwrap().acked.len()
    }

    /// Stops publishing (the connection stays up so outstanding PUBACKs still arrive).
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until the publishing task has ended (after [`AckedPublisher::stop`] or `n`).
    pub async fn finished(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for AckedPublisher {
    fn drop(&mut self) {
        self.task.abort();
        self.events.abort();
    }
}
