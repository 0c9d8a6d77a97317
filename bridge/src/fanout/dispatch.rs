//! The `mqws-fanout` thread: follows the tail and hands every logged message to the hub, which
//! queues it for each matching connection. It never waits on a connection; when it falls
//! behind the tail itself, every connection continues from the log.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::{Hub, Read, Tail};

/// Most messages dispatched per step.
const BATCH: usize = 4096;
/// How often an idle fan-out thread wakes up (to notice a closed tail).
const TICK: Duration = Duration::from_millis(500);

/// Starts the fan-out thread; it ends once the tail is closed and drained.
pub(crate) fn spawn(hub: Arc<Hub>, tail: Arc<Tail>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("mqws-fanout".to_owned())
        .spawn(move || run(&hub, &tail))
        .map(drop)
}

fn run(hub: &Hub, tail: &Tail) {
    let mut dispatched = hub.dispatched();
    while let Some(read) = tail.wait_read(dispatched, BATCH, TICK) {
        match read {
            Read::Items { items, upto } => {
                if let Some(logged) = items.first().and_then(|l| l.logged_at) {
                    metrics::histogram!("mqws_fanout_wait_seconds").record(logged.elapsed());
                }
                let n = hub.dispatch(&items, upto);
                metrics::counter!("mqws_messages_delivered_total").increment(n);
                metrics::counter!("mqws_messages_dispatched_total").increment(items.len() as u64);
                dispatched = upto;
            }
            Read::Behind { floor } => {
                warn!(
                    from = dispatched + 1,
                    to = floor,
                    "fan-out fell behind the tail; every connection continues from the log"
                );
                metrics::counter!("mqws_fanout_fell_behind_total").increment(1);
                // Handed on all the same: every connection's catch-up covers them.
                metrics::counter!("mqws_messages_dispatched_total").increment(floor - dispatched);
                hub.lag_all(floor);
                dispatched = floor;
            }
        }
    }
}
