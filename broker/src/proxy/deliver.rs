//! The driver of one connection's served subscriptions ([`super::outflow`]): takes the client
//! side's requests (subscribe, unsubscribe, acknowledgements), messages from the bridge's feed
//! while the client's window is open, and hands the PUBLISHes to the broker→client side, which
//! puts them between rumqttd's packets.
//!
//! For a persistent session ([`Persist`]) it first resumes the feed at the stored position
//! (what was logged while the client was away comes first, then live), and saves the session:
//! before a SUBACK, about every second while the position moves, and when the connection
//! ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::broker_to_client::TAKEN_OVER;
use super::downstream::Control;
use super::outflow::{Before, Counts, Outflow, Sub};
use super::session::{SaveError, Session, SessionLimits};
use super::window::Window;
use crate::served::{Delivery, Feed, LoggedTopics, ServedMessage};

/// How often a moving position is saved: what a crash may replay again (at least once).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Bytes of PUBLISH packets handed to the broker→client side at once, at most (about).
const BURST_BYTES: usize = 16 * 1024;

/// MQTT 5 DISCONNECT with reason 0x97 (quota exceeded): the subscriber stayed behind too long.
const BEHIND: [u8; 4] = [0xe0, 2, 0x97, 0];

/// What the client→broker side asks of the served subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Serve these subscriptions, then send the SUBACK when the proxy answers it (when some
    /// filters went to rumqttd, rumqttd's SUBACK is merged instead): a message logged after
    /// the client has its SUBACK is never missed.
    Subscribe(Vec<Sub>, Option<Vec<u8>>),
    /// Stop serving these filters (the UNSUBACK is already queued).
    Unsubscribe(Vec<String>),
    /// An acknowledgement for one of the proxy's packet ids: kind (4, 5, 7), id, whether an
    /// MQTT 5 PUBREC refused it.
    Ack(u8, u16, bool),
    /// The client's DISCONNECT set a new Session Expiry Interval (MQTT 5).
    Expiry(u32),
}

/// A request of the client side, and who is told once it is carried out (the part of a
/// SUBSCRIBE that goes to rumqttd waits for its served part: rumqttd's SUBACK answers for both).
pub(crate) type Request = (Command, Option<oneshot::Sender<()>>);

/// The persistent session a driver continues.
#[derive(Debug)]
pub(crate) struct Persist {
    session: Session,
    limits: SessionLimits,
    /// When it was last saved, and [`Outflow::changes`] then.
    saved_at: Instant,
    saved: u64,
    /// Another connection (on another node) took the session: this one saves nothing more.
    lost: bool,
}

impl Persist {
    pub(crate) fn new(session: Session, limits: SessionLimits) -> Persist {
        Persist {
            session,
            limits,
            saved_at: Instant::now(),
            saved: 0,
            lost: false,
        }
    }

    /// When it is next due: soon while the position moves, else before its deadline.
    fn due(&self, outflow: &Outflow) -> Instant {
        if outflow.changes() != self.saved {
            return self.saved_at + SAVE_EVERY;
        }
        let half = Duration::from_secs(u64::from(self.session.stored.expiry_s) / 2);
        self.saved_at + half.clamp(SAVE_EVERY, Duration::from_secs(3600))
    }

    /// Err when another connection took the session (it is not saved, now or later).
    async fn save(
        &mut self,
        topics: &Arc<dyn LoggedTopics>,
        outflow: &Outflow,
        flush: bool,
    ) -> Result<(), Gone> {
        if self.lost {
            return Err(Gone);
        }
        let stored = &mut self.session.stored;
        stored.subs = outflow.subs().to_vec();
        stored.acked = stored.acked.max(outflow.cursor());
        stored.sent = stored.sent.max(outflow.sent());
        stored.released = outflow.released();
        stored.epoch = topics.epoch();
        match self.session.save(topics, flush).await {
            Ok(()) => {}
            Err(SaveError::Lost) => {
                info!(client_id = %self.session.client_id, "the session was taken by a connection on another node");
                self.lost = true;
                return Err(Gone);
            }
            Err(SaveError::Store(e)) => {
                warn!(client_id = %self.session.client_id, error = %e, "could not save an MQTT session");
            }
        }
        self.saved_at = Instant::now();
        self.saved = outflow.changes();
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One connection's driver state.
struct Driver {
    topics: std::sync::Arc<dyn LoggedTopics>,
    outflow: Outflow,
    /// Opened at the first served SUBSCRIBE, so a connection that only publishes has none.
    feed: Option<Box<dyn Feed>>,
    /// Retained values due on new subscriptions, encoded (and given a packet id) only when the
    /// window lets them go. Bounded by the retained store's own bound.
    retained: VecDeque<(ServedMessage, Sub, bool)>,
    to_client: mpsc::Sender<Control>,
    v5: bool,
    persist: Option<Persist>,
    /// The client's Receive Maximum, shared with rumqttd's PUBLISHes (MQTT 5).
    window: Option<Arc<Window>>,
    /// A message taken from the feed while rumqttd's PUBLISHes filled the window: it goes
    /// first once a slot frees.
    waiting: Option<ServedMessage>,
}

/// The client side is gone: stop.
struct Gone;

/// Runs until the client side stops asking (the connection ends) or the feed ends. Returns
/// what was sent, for the connection's log line.
pub(crate) async fn run(
    topics: std::sync::Arc<dyn LoggedTopics>,
    outflow: Outflow,
    mut commands: mpsc::Receiver<Request>,
    (to_client, window): (mpsc::Sender<Control>, Option<Arc<Window>>),
    v5: bool,
    persist: Option<Persist>,
) -> Counts {
    let mut d = Driver {
        topics,
        outflow,
        feed: None,
        retained: VecDeque::new(),
        to_client,
        v5,
        persist,
        window,
        waiting: None,
    };
    if d.resume().await.is_ok() {
        let _ = d.serve(&mut commands).await;
    }
    d.end().await;
    d.outflow.counts()
}

impl Driver {
    async fn serve(&mut self, commands: &mut mpsc::Receiver<Request>) -> Result<(), Gone> {
        loop {
            self.send_retained().await?;
            if let Some(p) = self.send_waiting() {
                send(&self.to_client, p).await?;
            }
            let open = self.waiting.is_none() && self.window_open();
            // Shut by rumqttd's PUBLISHes: a slot they free wakes it.
            let window = self.window.clone().filter(|_| !open);
            let opened = async {
                match window {
                    Some(w) => w.to_served.notified().await,
                    None => std::future::pending().await,
                }
            };
            // With the window shut nothing is taken, but a feed behind too long still ends.
            let feed = &mut self.feed;
            let next = async {
                match feed.as_mut() {
                    Some(f) if open => f.next().await,
                    Some(f) => Delivery::Ended(f.ended().await),
                    None => std::future::pending().await,
                }
            };
            let due = self.persist.as_ref().map(|p| p.due(&self.outflow));
            let save = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let taken = self.persist.as_ref().map(|p| p.session.hold.taken.clone());
            let taken = async {
                match taken {
                    Some(t) => t.cancelled_owned().await,
                    None => std::future::pending().await,
                }
            };
            let packet = tokio::select! {
                () = taken => {
                    info!("the session was taken over by a newer connection");
                    return Err(Gone);
                }
                () = save => {
                    self.save(false).await?;
                    None
                }
                request = commands.recv() => {
                    let Some((command, done)) = request else {
                        return Err(Gone);
                    };
                    let packet = self.command(command).await?;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    packet
                }
                delivery = next => self.delivered(delivery).await?,
                () = opened => None,
            };
            if let Some(p) = packet {
                send(&self.to_client, p).await?;
            }
        }
    }

    /// Carries out a request of the client side; what to send the client.
    async fn command(&mut self, command: Command) -> Result<Option<Vec<u8>>, Gone> {
        Ok(match command {
            Command::Subscribe(subs, suback) => {
                self.subscribe(subs, suback).await?;
                None
            }
            Command::Unsubscribe(filters) => {
                let gone = self.outflow.unsubscribe(&filters);
                if let Some(f) = self.feed.as_mut() {
                    f.unsubscribe(&gone);
                }
                self.save(false).await?;
                None
            }
            Command::Ack(kind, id, failed) => {
                let rel = self.outflow.ack(kind, id, failed);
                self.in_flight_now();
                rel
            }
            Command::Expiry(s) => {
                // A session that was to end with the connection cannot be kept at
                // DISCONNECT (MQTT 5 3.14.2.2.2): only a kept one changes.
                if let Some(p) = self.persist.as_mut() {
                    if p.session.stored.expiry_s > 0 {
                        p.session.stored.expiry_s = s.min(p.limits.max_expiry_s);
                    }
                }
                None
            }
        })
    }

    /// What the feed delivered; what to send the client.
    async fn delivered(&mut self, delivery: Delivery) -> Result<Option<Vec<u8>>, Gone> {
        match delivery {
            Delivery::Message(m) => Ok(self.burst(m)),
            Delivery::Lost { from, to } => {
                self.lost(from, to);
                Ok(None)
            }
            Delivery::Ended(why) => {
                info!(why, "disconnecting an MQTT subscriber");
                if self.v5 {
                    let _ = self.to_client.send(Control::Goodbye(BEHIND.to_vec())).await;
                }
                Err(Gone)
            }
        }
    }

    /// The PUBLISH of `first` and of the messages ready behind it, while the window allows,
    /// as one write: a busy subscriber costs a channel send and a socket write per burst, not
    /// per message. A message the window has no slot for waits ([`Driver::waiting`]).
    fn burst(&mut self, first: ServedMessage) -> Option<Vec<u8>> {
        let now = now_ms();
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            if !self.reserve() {
                self.waiting = Some(m);
                break;
            }
            if let Some(p) = self.outflow.live(&m, now) {
                out.extend_from_slice(&p);
            }
            self.in_flight_now();
            if out.len() >= BURST_BYTES || !self.outflow.window_open() {
                break;
            }
            let Some(feed) = self.feed.as_mut() else {
                break;
            };
            match feed.try_next() {
                Some(Delivery::Message(m)) => next = Some(m),
                Some(Delivery::Lost { from, to }) => self.lost(from, to),
                // The end shows again at the next wait.
                Some(Delivery::Ended(_)) | None => break,
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The PUBLISH of the message that waited for a slot, once there is one.
    fn send_waiting(&mut self) -> Option<Vec<u8>> {
        if self.waiting.is_none() || !self.outflow.window_open() || !self.reserve() {
            return None;
        }
        let m = self.waiting.take()?;
        let p = self.outflow.live(&m, now_ms());
        self.in_flight_now();
        p
    }

    /// Sends the retained values due while the window is open.
    async fn send_retained(&mut self) -> Result<(), Gone> {
        while !self.retained.is_empty() && self.outflow.window_open() && self.reserve() {
            let Some((value, sub, new)) = self.retained.pop_front() else {
                return Ok(());
            };
            let p = self.outflow.retained(&value, &sub, new, now_ms());
            self.in_flight_now();
            if let Some(p) = p {
                send(&self.to_client, p).await?;
            }
        }
        Ok(())
    }

    /// Whether another QoS 1/2 PUBLISH of the proxy's may go now, counting rumqttd's.
    fn window_open(&self) -> bool {
        self.outflow.window_open()
            && self
                .window
                .as_ref()
                .is_none_or(|w| w.room_for_served(self.outflow.in_flight()))
    }

    /// Takes a slot of the shared window for the next PUBLISH (given back by
    /// [`Driver::in_flight_now`] when it goes at QoS 0 or not at all). Asked for every
    /// message, whose QoS is decided only when it is encoded: with rumqttd's PUBLISHes filling
    /// the window, a QoS 0 one waits behind them too, in order.
    fn reserve(&self) -> bool {
        self.window
            .as_ref()
            .is_none_or(|w| w.reserve_served(self.outflow.in_flight()))
    }

    /// Tells the shared window what the proxy has in flight now.
    fn in_flight_now(&self) {
        if let Some(w) = &self.window {
            w.served(self.outflow.in_flight());
        }
    }

    /// Joins the hub with the new subscriptions, then sends the proxy's SUBACK (if it answers
    /// it) and queues the retained values they bring.
    async fn subscribe(&mut self, subs: Vec<Sub>, suback: Option<Vec<u8>>) -> Result<(), Gone> {
        let filters: Vec<String> = subs.iter().map(|s| s.filter.clone()).collect();
        let fresh = self.feed.is_none();
        let topics = &self.topics;
        let (values, cut) = self
            .feed
            .get_or_insert_with(|| topics.open())
            .subscribe(&filters)
            .await;
        if fresh {
            self.outflow.started_at(cut);
        }
        // A new filter starts at the cut: a catch-up in progress never brings it older ones.
        let subs = subs
            .into_iter()
            .map(|mut s| {
                s.since = self
                    .outflow
                    .subs()
                    .iter()
                    .find(|o| o.filter == s.filter)
                    .map_or(cut, |o| o.since);
                s
            })
            .collect();
        let made = self.outflow.subscribe(subs);
        // The SUBACK goes once the subscription is durable.
        self.save(true).await?;
        if let Some(p) = suback {
            send(&self.to_client, p).await?;
        }
        for value in values {
            for (sub, new) in &made {
                if mqws_topic::matches(&sub.filter, &value.topic) {
                    self.retained.push_back((value.clone(), sub.clone(), *new));
                }
            }
        }
        Ok(())
    }
}

impl Driver {
    /// Counts and logs what retention removed before this subscriber read it; an MQTT 5
    /// client is told on its next PUBLISH.
    fn lost(&mut self, from: u64, to: u64) {
        self.outflow.lost(from, to);
        metrics::counter!("mqws_mqtt_served_lost_total").increment(to - from + 1);
        let client_id = self.persist.as_ref().map(|p| p.session.client_id.as_str());
        warn!(
            from,
            to, client_id, "messages removed by retention before this MQTT subscriber read them"
        );
    }

    /// A resumed session with subscriptions: the feed starts at its stored position, and the
    /// PUBRELs of QoS 2 exchanges past PUBREC go again first.
    async fn resume(&mut self) -> Result<(), Gone> {
        let Some(p) = self.persist.as_mut() else {
            return Ok(());
        };
        let stored = &mut p.session.stored;
        if stored.subs.is_empty() {
            return Ok(());
        }
        let filters: Vec<String> = stored.subs.iter().map(|s| s.filter.clone()).collect();
        let resumed = match self
            .topics
            .resume(&stored.epoch, stored.acked, &filters)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(client_id = %p.session.client_id, error = %e, "could not resume an MQTT session");
                return Err(Gone);
            }
        };
        if resumed.log_replaced {
            metrics::counter!("mqws_mqtt_sessions_log_replaced_total").increment(1);
            warn!(
                client_id = %p.session.client_id,
                "the log was replaced since this MQTT session's position: what was logged while it was away is unknown"
            );
            // The old log's seqs mean nothing in this one: continue from the cut.
            stored.acked = resumed.cut;
            stored.sent = 0;
            stored.released.clear();
            for sub in &mut stored.subs {
                sub.since = sub.since.min(resumed.cut);
            }
        }
        let before = Before {
            acked: stored.acked,
            sent: stored.sent,
            away_through: resumed.cut,
            released: stored.released.clone(),
        };
        let subs = stored.subs.clone();
        let queue_qos0 = p.limits.queue_qos0;
        for (from, to) in resumed.lost {
            self.lost(from, to);
        }
        self.feed = Some(resumed.feed);
        let pubrels = self.outflow.resume(subs, before, queue_qos0);
        self.in_flight_now();
        if !pubrels.is_empty() {
            send(&self.to_client, pubrels).await?;
        }
        Ok(())
    }

    /// The connection ended: the session is saved (durably), or forgotten when its expiry
    /// is 0.
    async fn end(&mut self) {
        let Some(p) = self.persist.as_mut().filter(|p| !p.lost) else {
            return;
        };
        if p.session.stored.expiry_s == 0 {
            p.session.forget(&self.topics).await;
        } else {
            let _ = p.save(&self.topics, &self.outflow, true).await;
        }
    }

    /// Saves the persistent session, if any. When another connection took it, the client is
    /// told (MQTT 5: DISCONNECT 0x8E) and the connection ends.
    async fn save(&mut self, flush: bool) -> Result<(), Gone> {
        let Some(p) = self.persist.as_mut() else {
            return Ok(());
        };
        if p.save(&self.topics, &self.outflow, flush).await.is_ok() {
            return Ok(());
        }
        let bye = if self.v5 {
            TAKEN_OVER.to_vec()
        } else {
            Vec::new()
        };
        let _ = self.to_client.send(Control::Goodbye(bye)).await;
        Err(Gone)
    }
}

/// Hands a packet to the broker→client side.
async fn send(to_client: &mpsc::Sender<Control>, packet: Vec<u8>) -> Result<(), Gone> {
    to_client
        .send(Control::Packet(packet))
        .await
        .map_err(|_| Gone)
}
