//! The MQTT side of mqws, behind one interface: [`BrokerLink`].
//!
//! The bridge never touches rumqttd types. It hands the proxy an [`IngressSender`]: every
//! PUBLISH matching `bridge.filters` goes through it into the log and reaches rumqttd (and so
//! is acknowledged and routed) only once durable. It gets a [`Publisher`] for browser
//! publishes, which logs the same way before handing them to rumqttd. The embedded implementation ([`embedded`]) runs rumqttd in this process; an
//! external-broker implementation over rumqttc can return the same [`BrokerLink`].

pub mod embedded;
mod error;
pub mod fuzzing;
mod link;
pub mod ports;
mod proxy;
pub mod served;
pub mod tls;
mod users;

pub use error::BrokerError;
pub use link::{
    ingress, BrokerLink, Durable, InboundMessage, Ingress, IngressSender, LinkHealth,
    PublishRequest, Publisher, QoS, RetainedWrite,
};
pub use proxy::front::{MqttAdmission, MqttFront, MqttRefused};
pub use proxy::observe::RetainedUpdate;
pub use users::hash_password;
