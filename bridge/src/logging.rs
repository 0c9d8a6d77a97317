//! Log output: text or JSON lines on stderr, levels and targets from `RUST_LOG`, colours only on
//! a terminal, and rumqttd's routine noise kept out.
//!
//! rumqttd reports ordinary MQTT disconnects as errors ("router-drop" when a client leaves,
//! "no-connection id N is already gone" right after); mqws logs each connection's end itself,
//! so those lines are dropped. rumqttd's other warnings and errors pass.

use std::io::IsTerminal;

use mqws_config::LogFormat;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The filter when `RUST_LOG` is unset: mqws at INFO, rumqttd at WARN (its connection module
/// off: it only reports ordinary disconnects, at ERROR).
const DEFAULT_FILTER: &str = "info,rumqttd=warn,rumqttd::server::broker=off";

/// rumqttd messages that only report an ordinary disconnect.
const ROUTINE: &[&str] = &["is already gone", "router-drop", "connection-stop"];

/// Installs the process's log output. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi && format == LogFormat::Text);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // The level filter outermost: its level is the subscriber's max level hint, which `init`
    // also sets as the `log` crate's max level, so a dependency's disabled `log::trace!` (one
    // per WebSocket frame in tungstenite) is skipped at a level check instead of being turned
    // into a tracing event and filtered (measured: 6–9% of mqws's CPU on `/mqtt` flat out).
    tracing_subscriber::registry()
        .with(layer.with_filter(NotRoutine).with_filter(filter))
        .init();
}

/// Drops rumqttd's routine disconnect reports.
struct NotRoutine;

impl<S> Filter<S> for NotRoutine {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        if !event.metadata().target().starts_with("rumqttd") {
            return true;
        }
        let mut message = Message(false);
        event.record(&mut message);
        !message.0
    }
}

/// Visits an event's message: true when it is one of [`ROUTINE`].
struct Message(bool);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 |= ROUTINE.iter().any(|r| value.contains(r));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let text = format!("{value:?}");
            self.0 |= ROUTINE.iter().any(|r| text.contains(r));
        }
    }
}
