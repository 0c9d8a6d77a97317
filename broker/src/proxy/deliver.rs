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
use crate::served::{Delivery, Feed, LoggedTopics};

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

/// Runs until the client side stops asking (the connection ends) or the feed ends. Returns
/// what was sent, for the connection's log line. The feed (a place in the hub and a queue) is
/// opened at the first served SUBSCRIBE, so a connection that only publishes has none.
pub(crate) async fn run(
    topics: std::sync::Arc<dyn LoggedTopics>,
    mut outflow: Outflow,
    mut commands: mpsc::Receiver<Command>,
    to_client: mpsc::Sender<Control>,
    v5: bool,
) -> Counts {
    // Retained values wait here for the window (bounded by the retained store's own bound).
    let mut retained: VecDeque<Vec<u8>> = VecDeque::new();
    let mut feed: Option<Box<dyn Feed>> = None;
    loop {
        while outflow.window_open() {
            let Some(p) = retained.pop_front() else { break };
            if to_client.send(Control::Packet(p)).await.is_err() {
                return outflow.counts();
            }
        }
        let open = outflow.window_open();
        // With the window shut nothing is taken, but a feed behind too long still ends.
        let next = async {
            match feed.as_mut() {
                Some(f) if open => f.next().await,
                Some(f) => Delivery::Ended(f.ended().await),
                None => std::future::pending().await,
            }
        };
        let packet = tokio::select! {
            command = commands.recv() => match command {
                None => return outflow.counts(),
                Some(Command::Subscribe(subs, suback)) => {
                    let filters: Vec<String> = subs.iter().map(|s| s.filter.clone()).collect();
                    let made = outflow.subscribe(subs);
                    let values = feed
                        .get_or_insert_with(|| topics.open())
                        .subscribe(&filters)
                        .await;
                    if let Some(p) = suback {
                        if to_client.send(Control::Packet(p)).await.is_err() {
                            return outflow.counts();
                        }
                    }
                    let now = now_ms();
                    for value in &values {
                        for (sub, new) in &made {
                            if let Some(p) = outflow.retained(value, sub, *new, now) {
                                retained.push_back(p);
                            }
                        }
                    }
                    None
                }
                Some(Command::Unsubscribe(filters)) => {
                    let gone = outflow.unsubscribe(&filters);
                    if let Some(f) = feed.as_mut() {
                        f.unsubscribe(&gone);
                    }
                    None
                }
                Some(Command::Ack(kind, id, failed)) => outflow.ack(kind, id, failed),
            },
            delivery = next => match delivery {
                Delivery::Message(m) => outflow.live(&m, now_ms()),
                Delivery::Lost { from, to } => {
                    metrics::counter!("mqws_mqtt_served_lost_total").increment(to - from + 1);
                    warn!(from, to, "messages removed by retention before this MQTT subscriber read them");
                    None
                }
                Delivery::Ended(why) => {
                    info!(why, "disconnecting an MQTT subscriber");
                    if v5 {
                        let _ = to_client.send(Control::Goodbye(BEHIND.to_vec())).await;
                    }
                    return outflow.counts();
                }
            },
        };
        if let Some(p) = packet {
            if to_client.send(Control::Packet(p)).await.is_err() {
                return outflow.counts();
            }
        }
    }
}
