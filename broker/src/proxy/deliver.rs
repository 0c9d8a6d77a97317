//! The driver of one connection's served subscriptions ([`super::outflow`]): takes the client
//! side's requests (subscribe, unsubscribe, acknowledgements), messages from the bridge's feed
//! while the client's window is open, and hands the PUBLISHes to the broker→client side, which
//! puts them between rumqttd's packets.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::downstream::Control;
use super::outflow::{Counts, Outflow, Sub};
use crate::served::{Delivery, Feed, LoggedTopics, ServedMessage};

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
}

/// The client side is gone: stop.
struct Gone;

/// Runs until the client side stops asking (the connection ends) or the feed ends. Returns
/// what was sent, for the connection's log line.
pub(crate) async fn run(
    topics: std::sync::Arc<dyn LoggedTopics>,
    outflow: Outflow,
    mut commands: mpsc::Receiver<Command>,
    to_client: mpsc::Sender<Control>,
    v5: bool,
) -> Counts {
    let mut d = Driver {
        topics,
        outflow,
        feed: None,
        retained: VecDeque::new(),
        to_client,
        v5,
    };
    let _ = d.serve(&mut commands).await;
    d.outflow.counts()
}

impl Driver {
    async fn serve(&mut self, commands: &mut mpsc::Receiver<Command>) -> Result<(), Gone> {
        loop {
            self.send_retained().await?;
            let open = self.outflow.window_open();
            // With the window shut nothing is taken, but a feed behind too long still ends.
            let feed = &mut self.feed;
            let next = async {
                match feed.as_mut() {
                    Some(f) if open => f.next().await,
                    Some(f) => Delivery::Ended(f.ended().await),
                    None => std::future::pending().await,
                }
            };
            let packet = tokio::select! {
                command = commands.recv() => match command {
                    None => return Err(Gone),
                    Some(Command::Subscribe(subs, suback)) => {
                        self.subscribe(subs, suback).await?;
                        None
                    }
                    Some(Command::Unsubscribe(filters)) => {
                        let gone = self.outflow.unsubscribe(&filters);
                        if let Some(f) = self.feed.as_mut() {
                            f.unsubscribe(&gone);
                        }
                        None
                    }
                    Some(Command::Ack(kind, id, failed)) => self.outflow.ack(kind, id, failed),
                },
                delivery = next => match delivery {
                    Delivery::Message(m) => self.burst(&m),
                    Delivery::Lost { from, to } => {
                        lost(from, to);
                        None
                    }
                    Delivery::Ended(why) => {
                        info!(why, "disconnecting an MQTT subscriber");
                        if self.v5 {
                            let _ = self.to_client.send(Control::Goodbye(BEHIND.to_vec())).await;
                        }
                        return Err(Gone);
                    }
                },
            };
            if let Some(p) = packet {
                send(&self.to_client, p).await?;
            }
        }
    }

    /// The PUBLISH of `first` and of the messages ready behind it, while the window allows,
    /// as one write: a busy subscriber costs a channel send and a socket write per burst, not
    /// per message.
    fn burst(&mut self, first: &ServedMessage) -> Option<Vec<u8>> {
        let now = now_ms();
        let mut out = self.outflow.live(first, now).unwrap_or_default();
        while out.len() < BURST_BYTES && self.outflow.window_open() {
            let Some(feed) = self.feed.as_mut() else {
                break;
            };
            match feed.try_next() {
                Some(Delivery::Message(m)) => {
                    if let Some(p) = self.outflow.live(&m, now) {
                        out.extend_from_slice(&p);
                    }
                }
                Some(Delivery::Lost { from, to }) => lost(from, to),
                // The end shows again at the next wait.
                Some(Delivery::Ended(_)) | None => break,
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Sends the retained values due while the window is open.
    async fn send_retained(&mut self) -> Result<(), Gone> {
        while self.outflow.window_open() {
            let Some((value, sub, new)) = self.retained.pop_front() else {
                return Ok(());
            };
            if let Some(p) = self.outflow.retained(&value, &sub, new, now_ms()) {
                send(&self.to_client, p).await?;
            }
        }
        Ok(())
    }

    /// Joins the hub with the new subscriptions, then sends the proxy's SUBACK (if it answers
    /// it) and queues the retained values they bring.
    async fn subscribe(&mut self, subs: Vec<Sub>, suback: Option<Vec<u8>>) -> Result<(), Gone> {
        let filters: Vec<String> = subs.iter().map(|s| s.filter.clone()).collect();
        let made = self.outflow.subscribe(subs);
        let topics = &self.topics;
        let values = self
            .feed
            .get_or_insert_with(|| topics.open())
            .subscribe(&filters)
            .await;
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

/// Counts and logs what retention removed before this subscriber read it.
fn lost(from: u64, to: u64) {
    metrics::counter!("mqws_mqtt_served_lost_total").increment(to - from + 1);
    warn!(
        from,
        to, "messages removed by retention before this MQTT subscriber read them"
    );
}

/// Hands a packet to the broker→client side.
async fn send(to_client: &mpsc::Sender<Control>, packet: Vec<u8>) -> Result<(), Gone> {
    to_client
        .send(Control::Packet(packet))
        .await
        .map_err(|_| Gone)
}
