//! The MQTT side of mqws, behind one interface: [`BrokerLink`].
//!
//! The bridge never touches rumqttd types. It gets a stream of [`Inbound`] events (messages the
//! broker routed to the bridge, and gaps where the broker dropped some) and a [`Publisher`] for
//! browser publishes. The embedded implementation ([`embedded`]) runs rumqttd in this process; an
//! external-broker implementation over rumqttc can return the same [`BrokerLink`].

mod connect;
mod demux;
pub mod embedded;
mod error;
mod link;
mod observe;
pub mod tls;
mod users;

pub use error::BrokerError;
pub use link::{
    BrokerLink, Inbound, InboundMessage, LinkHealth, PublishRequest, Publisher, QoS, RetainedWrite,
};
pub use observe::RetainedUpdate;
pub use users::hash_password;
