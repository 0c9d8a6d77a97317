//! The client's Receive Maximum (MQTT 5) on one connection, shared by the two senders of QoS
//! 1/2 PUBLISHes to it: the proxy's served subscriptions ([`super::deliver`]) and rumqttd,
//! whose PUBLISHes pass the broker→client side ([`super::downstream`]). rumqttd does not
//! honour the client's Receive Maximum and knows nothing of the proxy's PUBLISHes, so the
//! proxy counts both: a QoS 1/2 PUBLISH goes to the client only while fewer than Receive
//! Maximum of either sender's are unacknowledged (QoS 1 until PUBACK, QoS 2 until PUBCOMP),
//! and the one that may not go waits (the served one in its driver, rumqttd's in the
//! broker→client side, which stops reading from rumqttd after a few held).
//!
//! Each take happens under one lock, so the two senders together never pass the limit.

use parking_lot::Mutex;
use tokio::sync::Notify;

/// One connection's window.
#[derive(Debug)]
pub(crate) struct Window {
    limit: usize,
    used: Mutex<Used>,
    /// Woken when the served side may send again (rumqttd's side freed a slot).
    pub(crate) to_served: Notify,
    /// Woken when rumqttd's held PUBLISHes may go (either side freed a slot).
    pub(crate) to_broker: Notify,
}

/// The unacknowledged QoS 1/2 PUBLISHes of each sender.
#[derive(Debug, Default)]
struct Used {
    served: usize,
    broker: usize,
}

impl Window {
    /// The window of a client whose CONNECT said Receive Maximum `receive_max` (at least 1).
    pub(crate) fn new(receive_max: u16) -> Window {
        Window {
            limit: usize::from(receive_max.max(1)),
            used: Mutex::new(Used::default()),
            to_served: Notify::new(),
            to_broker: Notify::new(),
        }
    }

    /// Whether the served side, with `in_flight` of its own unacknowledged, may send one more;
    /// when it may, the slot is its own until [`Window::served`] says what it has.
    pub(crate) fn reserve_served(&self, in_flight: usize) -> bool {
        let mut u = self.used.lock();
        let room = in_flight + u.broker < self.limit;
        u.served = in_flight + usize::from(room);
        room
    }

    /// Whether the served side, with `in_flight`, would find room now (nothing reserved).
    pub(crate) fn room_for_served(&self, in_flight: usize) -> bool {
        in_flight + self.used.lock().broker < self.limit
    }

    /// The served side has `in_flight` unacknowledged now (after a send, an ack, a reserved
    /// slot it did not use): a freed slot may let rumqttd's held PUBLISHes go.
    pub(crate) fn served(&self, in_flight: usize) {
        let freed = {
            let mut u = self.used.lock();
            let freed = in_flight < u.served;
            u.served = in_flight;
            freed
        };
        if freed {
            self.to_broker.notify_one();
        }
    }

    /// Takes a slot for one of rumqttd's QoS 1/2 PUBLISHes; false while the window is full.
    pub(crate) fn take_broker(&self) -> bool {
        let mut u = self.used.lock();
        let room = u.served + u.broker < self.limit;
        u.broker += usize::from(room);
        room
    }

    /// The client ended an exchange of rumqttd's (PUBACK, or PUBCOMP).
    pub(crate) fn broker_done(&self) {
        {
            let mut u = self.used.lock();
            u.broker = u.broker.saturating_sub(1);
        }
        self.to_served.notify_one();
        self.to_broker.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_senders_together_never_pass_the_limit() {
        let w = Window::new(2);
        assert!(w.take_broker());
        assert!(w.reserve_served(0));
        w.served(1);
        assert!(!w.take_broker(), "one of each is two");
        assert!(!w.reserve_served(1));
        assert!(!w.room_for_served(1));
        w.broker_done();
        assert!(w.room_for_served(1));
        assert!(w.reserve_served(1));
        w.served(2);
        assert!(!w.take_broker());
        // An ack of the served side's frees a slot for rumqttd's.
        w.served(1);
        assert!(w.take_broker());
    }

    #[test]
    fn a_reserved_slot_not_used_is_given_back() {
        let w = Window::new(1);
        assert!(w.reserve_served(0));
        assert!(!w.take_broker(), "reserved");
        // The message went at QoS 0 (or not at all): nothing in flight.
        w.served(0);
        assert!(w.take_broker());
        assert!(!w.reserve_served(0));
    }
}
