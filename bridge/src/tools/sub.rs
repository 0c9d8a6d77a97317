//! `mqws sub`: subscribes over the WebSocket contract and prints what arrives, like
//! `mosquitto_sub` does for MQTT.
//!
//! It opens a fresh connection with `hello` carrying the filters and `from`, prints the lost
//! ranges `welcome` reports, then every `message` and `gap` frame in order. It resumes by
//! position (`--from E:N`), which needs no acks, so it never acks and never resumes a
//! server-held session. It stops after `--count` messages, on SIGINT or SIGTERM (exit 0), or
//! when the server closes the connection (an error naming the close code).

use std::io::Write;

use serde_json::{Map, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::conn::{self, Incoming, Socket};
use super::output;
use super::{Format, SubOptions, ToolError};

/// Why the subscription ended well.
enum End {
    /// `--count` messages were printed.
    Count,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// Whoever reads standard output went away (`| head`).
    OutputClosed,
}

/// What is printed, and the position a later `--from` continues from.
struct Printer {
    format: Format,
    verbose: bool,
    epoch: String,
    /// The seq everything up to which (matching the filters) was printed, once known.
    resume: Option<u64>,
    printed: u64,
}

/// Runs `mqws sub` until it ends; see the module documentation.
pub(crate) async fn run(opts: &SubOptions) -> Result<(), ToolError> {
    // Registered before anything is printed, so a signal sent after the first line is
    // always handled.
    let mut signals = Signals::new()?;
    let mut hello = Map::new();
    hello.insert("filters".to_owned(), Value::from(opts.filters.clone()));
    if let Some(from) = opts.from.to_json() {
        hello.insert("from".to_owned(), from);
    }
    let (mut socket, welcome) = tokio::select! {
        r = conn::open(&opts.connect, hello) => r?,
        () = signals.recv() => return Ok(()),
    };
    let position = &welcome["position"];
    let mut printer = Printer {
        format: opts.format,
        verbose: opts.verbose,
        epoch: position["epoch"].as_str().unwrap_or("").to_owned(),
        resume: match &opts.from {
            super::Start::Latest => position["seq"].as_u64(),
            super::Start::Position { seq, .. } => Some(*seq),
            _ => None,
        },
        printed: 0,
    };
    printer.info(&format!(
        "connected to {}: position {}:{}, recovered {}",
        opts.connect.url,
        printer.epoch,
        position["seq"],
        welcome.get("recovered").unwrap_or(&Value::Null)
    ))?;
    let end = match printer.welcome(&welcome)? {
        Some(end) => Ok(end),
        None => tokio::select! {
            r = pump(&mut socket, &mut printer, opts.count) => r,
            () = signals.recv() => Ok(End::Interrupted),
        },
    };
    match end {
        Ok(end) => {
            conn::close(&mut socket).await;
            if !matches!(end, End::OutputClosed) {
                printer.finish()?;
            }
            Ok(())
        }
        Err(e) => {
            // Best effort: the hint is worth having even when the connection failed.
            let _ = printer.finish();
            Err(e)
        }
    }
}

/// Prints frames until `count` messages, a close, or the end of the connection.
async fn pump(
    socket: &mut Socket,
    printer: &mut Printer,
    count: Option<u64>,
) -> Result<End, ToolError> {
    loop {
        let (frame, text) = match conn::next(socket).await? {
            Incoming::Frame(v, text) => (v, text),
            Incoming::Closed { code, reason } => return Err(ToolError::Closed { code, reason }),
            Incoming::Ended(detail) => return Err(ToolError::Lost(detail)),
        };
        match frame["type"].as_str() {
            Some("message") => {
                if !printer.message(&frame, &text)? {
                    return Ok(End::OutputClosed);
                }
                if count.is_some_and(|n| printer.printed >= n) {
                    return Ok(End::Count);
                }
            }
            Some("gap") if !printer.gap(&frame)? => return Ok(End::OutputClosed),
            Some("caught_up") => {
                let seq = frame["position"]["seq"].as_u64();
                printer.resume = printer.resume.max(seq);
                printer.info(&format!(
                    "caught up at {}:{}",
                    printer.epoch, frame["position"]["seq"]
                ))?;
            }
            Some("error") => {
                let e = conn::server_error(&frame, &text);
                eprintln_or(&format!("warning: {e}"))?;
            }
            // pong, subscribed, …: nothing this tool asked for.
            _ => {}
        }
    }
}

impl Printer {
    /// Prints the lost ranges of `welcome`. `Some` when standard output closed meanwhile.
    fn welcome(&mut self, welcome: &Value) -> Result<Option<End>, ToolError> {
        if let Some(gaps) = welcome["gaps"].as_array() {
            for gap in gaps {
                if !self.gap(gap)? {
                    return Ok(Some(End::OutputClosed));
                }
            }
        }
        if welcome["gaps_truncated"] == Value::Bool(true) {
            eprintln_or("gap list truncated: the server lists at most 1000 lost ranges")?;
        }
        Ok(None)
    }

    /// Prints one message; false when standard output is closed.
    fn message(&mut self, frame: &Value, text: &str) -> Result<bool, ToolError> {
        let line = match self.format {
            Format::Text => output::message_text(text),
            Format::Json => output::message_json(text),
        };
        let open = println_or(&line)?;
        if open {
            self.printed += 1;
            if let Some(seq) = frame["seq"].as_u64() {
                self.resume = Some(seq);
            }
        }
        Ok(open)
    }

    /// Prints one gap (text: on standard error); false when standard output is closed.
    fn gap(&mut self, gap: &Value) -> Result<bool, ToolError> {
        match self.format {
            Format::Text => eprintln_or(&output::gap_text(gap)).map(|()| true),
            Format::Json => println_or(&output::gap_json(gap)),
        }
    }

    /// A `--verbose` note on standard error.
    fn info(&self, note: &str) -> Result<(), ToolError> {
        if self.verbose {
            eprintln_or(&format!("info: {note}"))?;
        }
        Ok(())
    }

    /// With `--verbose`, where a later `mqws sub --from` continues.
    fn finish(&self) -> Result<(), ToolError> {
        match self.resume {
            Some(seq) => self.info(&format!(
                "{} message(s); continue with --from {}:{seq}",
                self.printed, self.epoch
            )),
            None => self.info(&format!("{} message(s)", self.printed)),
        }
    }
}

/// Writes one line to standard output. `Ok(false)` when the reader went away.
fn println_or(line: &str) -> Result<bool, ToolError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ToolError::Output(e)),
    }
}

/// Writes one line to standard error.
fn eprintln_or(line: &str) -> Result<(), ToolError> {
    let mut err = std::io::stderr().lock();
    match writeln!(err, "{line}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(ToolError::Output(e)),
    }
}

/// SIGINT and SIGTERM, registered at once.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> Result<Signals, ToolError> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(ToolError::Runtime)?,
            term: signal(SignalKind::terminate()).map_err(ToolError::Runtime)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
