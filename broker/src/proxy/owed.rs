//! rumqttd's QoS 1/2 PUBLISHes to one client that the proxy kept from it, and the
//! acknowledgements it owes rumqttd for them, in rumqttd's order.
//!
//! The proxy serves every logged topic a connection's filters match itself (from the log, at
//! the right QoS), so a copy rumqttd routes to the same connection (through a `$share/…`
//! filter, or a filter the proxy serves only in part) is a duplicate, and a packet over the
//! client's Maximum Packet Size must not reach it at all. Such packets are kept from the
//! client ([`super::downstream`]), but rumqttd still waits for their PUBACK or PUBREC (and the
//! PUBCOMP after its PUBREL), and it refuses acknowledgements out of order ("out of order
//! ack", `router/iobufs.rs`): one that is not for the oldest unacknowledged PUBLISH ends the
//! connection. So the proxy's acks go between the client's, exactly when every earlier PUBLISH
//! has been acknowledged. At most rumqttd's 100 PUBLISHes in flight are tracked.
//!
//! rumqttd also keeps a persistent session's PUBRELs still waiting for PUBCOMP and sends them
//! again right after the CONNACK of the next connection: those come first in its order, so
//! the proxy's PUBCOMPs wait for the client's answers to them too, and they take no slot of the
//! client's Receive Maximum (they were counted on the connection that sent the PUBLISH).

use std::collections::VecDeque;

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::window::Window;

/// One connection's record, shared by its two sides: the broker→client side records each of
/// rumqttd's QoS 1/2 PUBLISHes as passed or kept; the side that writes to rumqttd takes the
/// client's acks and writes the proxy's own when their turn comes.
#[derive(Debug, Default)]
pub(crate) struct Owed {
    queue: Mutex<Queue>,
    /// Woken when one of the proxy's acks may be due.
    pub(crate) wake: Notify,
    /// The client's Receive Maximum (MQTT 5): an exchange the client ends frees a slot.
    window: Option<Arc<Window>>,
}

/// rumqttd's view of the connection's outgoing QoS 1/2 exchanges, oldest first.
#[derive(Debug, Default)]
struct Queue {
    /// PUBLISHes waiting for PUBACK or PUBREC: `None` passed to the client (it acknowledges),
    /// `Some((id, qos))` kept (the proxy acknowledges).
    inflight: VecDeque<Option<(u16, u8)>>,
    /// PUBRELs rumqttd sent or will send, waiting for PUBCOMP, in rumqttd's order.
    released: VecDeque<Rel>,
    /// The client's PUBRECs whose PUBREL from rumqttd has not passed yet: a PUBREL that
    /// passes while none is awaited is one rumqttd sent again for an earlier connection.
    awaiting_rels: usize,
}

/// A QoS 2 exchange of rumqttd's past PUBREC, waiting for PUBCOMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    /// The client answers; `counted`: it holds a slot of the client's Receive Maximum (false
    /// for a PUBREL sent again after a reconnect).
    Client { counted: bool },
    /// The proxy answers (a kept PUBLISH), packet id.
    Own(u16),
}

/// An acknowledgement the client sent for one of rumqttd's packet ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAck {
    /// PUBACK (QoS 1).
    Puback,
    /// PUBREC (QoS 2, first half).
    Pubrec,
    /// PUBCOMP (QoS 2, second half).
    Pubcomp,
}

impl ClientAck {
    /// The acknowledgement an MQTT packet type is, if it is one.
    pub(crate) fn of(kind: u8) -> Option<ClientAck> {
        match kind {
            4 => Some(ClientAck::Puback),
            5 => Some(ClientAck::Pubrec),
            7 => Some(ClientAck::Pubcomp),
            _ => None,
        }
    }
}

impl Owed {
    /// The record of a connection whose client's Receive Maximum is `window` (MQTT 5).
    pub(crate) fn new(window: Option<Arc<Window>>) -> Owed {
        Owed {
            window,
            ..Owed::default()
        }
    }

    /// A QoS 1/2 PUBLISH of rumqttd's went to the client.
    pub(crate) fn passed(&self) {
        self.queue.lock().inflight.push_back(None);
    }

    /// A QoS 1/2 PUBLISH of rumqttd's, packet id `id`, was kept from the client.
    pub(crate) fn kept(&self, id: u16, qos: u8) {
        let due = {
            let mut q = self.queue.lock();
            q.inflight.push_back(Some((id, qos)));
            q.inflight.len() == 1
        };
        if due {
            self.wake.notify_one();
        }
    }

    /// A PUBREL of rumqttd's passed to the client: the answer to a PUBREC of the client's, or
    /// one rumqttd sent again after a reconnect (then the client's PUBCOMP for it comes
    /// before any later one's).
    pub(crate) fn rel_passed(&self) {
        let mut q = self.queue.lock();
        if q.awaiting_rels > 0 {
            q.awaiting_rels -= 1;
        } else {
            q.released.push_back(Rel::Client { counted: false });
        }
    }

    /// The client's acknowledgement of one of rumqttd's PUBLISHes is about to be written to
    /// rumqttd: the oldest exchange it answers is the client's.
    pub(crate) fn client(&self, ack: ClientAck) {
        let freed = {
            let mut q = self.queue.lock();
            match ack {
                ClientAck::Puback => {
                    q.inflight.pop_front();
                    true
                }
                ClientAck::Pubrec => {
                    q.inflight.pop_front();
                    q.released.push_back(Rel::Client { counted: true });
                    q.awaiting_rels += 1;
                    false
                }
                ClientAck::Pubcomp => {
                    q.released.pop_front() != Some(Rel::Client { counted: false })
                }
            }
        };
        if let (Some(w), true) = (&self.window, freed) {
            w.broker_done();
        }
    }

    /// Appends the proxy's acknowledgements whose turn it is (every earlier exchange
    /// acknowledged) to `out`, at a packet boundary of the stream to rumqttd.
    pub(crate) fn due(&self, out: &mut Vec<u8>) {
        let mut q = self.queue.lock();
        loop {
            if let Some(Some((id, qos))) = q.inflight.front().copied() {
                q.inflight.pop_front();
                let [a, b] = id.to_be_bytes();
                if qos == 1 {
                    out.extend_from_slice(&[0x40, 2, a, b]);
                } else {
                    out.extend_from_slice(&[0x50, 2, a, b]);
                    q.released.push_back(Rel::Own(id));
                }
                continue;
            }
            if let Some(Rel::Own(id)) = q.released.front().copied() {
                q.released.pop_front();
                let [a, b] = id.to_be_bytes();
                out.extend_from_slice(&[0x70, 2, a, b]);
                continue;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(o: &Owed) -> Vec<u8> {
        let mut out = Vec::new();
        o.due(&mut out);
        out
    }

    #[test]
    fn a_kept_publish_is_acknowledged_only_after_the_earlier_ones() {
        let o = Owed::default();
        o.passed();
        o.kept(2, 1);
        o.passed();
        o.kept(4, 1);
        assert!(due(&o).is_empty(), "the client owes the first");
        o.client(ClientAck::Puback);
        assert_eq!(due(&o), vec![0x40, 2, 0, 2]);
        assert!(due(&o).is_empty(), "the client owes the third");
        o.client(ClientAck::Puback);
        assert_eq!(due(&o), vec![0x40, 2, 0, 4]);
    }

    #[test]
    fn kept_qos2_gets_pubrec_then_pubcomp_in_rumqttds_order() {
        let o = Owed::default();
        o.passed();
        o.kept(7, 2);
        o.client(ClientAck::Pubrec);
        // The proxy's PUBREC goes now; its PUBCOMP waits for the client's PUBCOMP.
        assert_eq!(due(&o), vec![0x50, 2, 0, 7]);
        o.client(ClientAck::Pubcomp);
        assert_eq!(due(&o), vec![0x70, 2, 0, 7]);
        // Alone, a kept QoS 2 exchange ends at once.
        o.kept(8, 2);
        assert_eq!(due(&o), vec![0x50, 2, 0, 8, 0x70, 2, 0, 8]);
    }

    #[test]
    fn pubrels_sent_again_after_a_reconnect_come_first_and_take_no_slot() {
        let window = Arc::new(Window::new(1));
        let o = Owed::new(Some(window.clone()));
        // Right after the CONNACK rumqttd sends the session's PUBREL 5 again.
        o.rel_passed();
        // Then a copy the proxy keeps, QoS 2: its PUBREC may go, its PUBCOMP waits for the
        // client's PUBCOMP of 5 (rumqttd takes PUBCOMPs only in its order).
        o.kept(8, 2);
        assert_eq!(due(&o), vec![0x50, 2, 0, 8]);
        // A PUBLISH of rumqttd's passes and takes the only slot.
        assert!(window.take_broker());
        o.passed();
        o.client(ClientAck::Pubcomp);
        assert_eq!(due(&o), vec![0x70, 2, 0, 8]);
        assert!(
            !window.take_broker(),
            "the PUBCOMP of a PUBREL sent again freed no slot"
        );
        // The passed one's exchange: PUBREC, rumqttd's PUBREL passes, PUBCOMP frees the slot.
        o.client(ClientAck::Pubrec);
        o.rel_passed();
        o.client(ClientAck::Pubcomp);
        assert!(window.take_broker());
        assert!(due(&o).is_empty());
    }

    #[test]
    fn a_kept_publish_at_the_head_wakes_the_writer() {
        let o = Owed::default();
        o.kept(1, 1);
        // The permit is stored: the writer's next wait returns at once.
        let woken = futures_now(o.wake.notified());
        assert!(woken);
    }

    /// Whether `f` is ready at its first poll.
    fn futures_now(f: impl std::future::Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx).is_ready()
    }
}
