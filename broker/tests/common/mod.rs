//! The embedded broker started as the bridge starts it, with this test playing the log: every
//! PUBLISH the proxy sends to the log is answered as durable by [`Bridge::logged`].

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use mqws_broker::{embedded, BrokerLink, InboundMessage, Ingress, RetainedUpdate};
use mqws_config::{BridgeConfig, BrokerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// The broker's link plus the log's end of the ingress queue.
pub(crate) struct Bridge {
    pub(crate) link: BrokerLink,
    pub(crate) log: mpsc::Receiver<Ingress>,
    pub(crate) stop: CancellationToken,
}

impl Deref for Bridge {
    type Target = BrokerLink;
    fn deref(&self) -> &BrokerLink {
        &self.link
    }
}

impl DerefMut for Bridge {
    fn deref_mut(&mut self) -> &mut BrokerLink {
        &mut self.link
    }
}

/// Starts the embedded broker with `cfg`, restoring `retained`.
pub(crate) async fn start(cfg: BrokerConfig, retained: Vec<RetainedUpdate>) -> Bridge {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let bridge = BridgeConfig::default();
    let (ingress, log) = mqws_broker::ingress(1024, 1 << 20, bridge.filters.clone());
    let link = embedded::start(&cfg, &bridge, listener, retained, ingress, stop.clone())
        .await
        .unwrap();
    Bridge { link, log, stop }
}

impl Bridge {
    /// The next message sent to the log, answered as durable.
    pub(crate) async fn logged(&mut self) -> InboundMessage {
        self.logged_within(Duration::from_secs(10))
            .await
            .expect("a message for the log within 10 s")
    }

    /// The next message sent to the log within `t`, answered as durable.
    pub(crate) async fn logged_within(&mut self, t: Duration) -> Option<InboundMessage> {
        let ingress = timeout(t, self.log.recv()).await.ok()??;
        let (message, durable) = ingress.into_parts();
        durable.confirm();
        Some(message)
    }
}
