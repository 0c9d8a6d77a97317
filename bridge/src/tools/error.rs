//! Why an operator tool (`mqws sub`, `mqws pub`, `mqws inspect`) stopped, and the exit status
//! each reason maps to.

use std::path::PathBuf;

use crate::storage::StorageError;

/// A tool's failure. Its `Display` is the one line printed after `error: `; it never contains
/// the token.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A command-line value is not usable (a `--from`, a `--format`, a `--url`).
    #[error("{0}")]
    Usage(String),
    /// The WebSocket connection could not be opened.
    #[error("cannot connect to {url}: {detail}")]
    Connect {
        /// The URL given.
        url: String,
        /// Why (refused, HTTP status of a refused upgrade, TLS failure, …).
        detail: String,
    },
    /// The server answered with an `error` frame.
    #[error("{code}: {message}")]
    Server {
        /// The contract's error code (`forbidden`, `bad_topic`, …).
        code: String,
        /// The server's human text.
        message: String,
    },
    /// The server closed the WebSocket.
    #[error("the server closed the connection: {}", describe_close(*.code, .reason))]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason, possibly empty.
        reason: String,
    },
    /// The connection ended without a close frame.
    #[error("the connection was lost: {0}")]
    Lost(String),
    /// The server did not answer in time.
    #[error("no {what} from the server within {secs} s")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        secs: u64,
    },
    /// The server sent something the contract does not allow here.
    #[error("unexpected frame from the server: {0}")]
    Protocol(String),
    /// Standard output or error could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// The async runtime could not be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A running mqws holds the data dir.
    #[error(
        "another mqws process is using {} (stop it, or copy the directory and inspect the copy)",
        dir.display()
    )]
    Locked {
        /// The data dir.
        dir: PathBuf,
    },
    /// The directory holds no mqws data.
    #[error("{} is not an mqws data dir: {detail}", dir.display())]
    NotDataDir {
        /// The directory given.
        dir: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// The storage could not be read.
    #[error("{0}")]
    Storage(#[source] StorageError),
}

impl ToolError {
    /// The process exit status for this failure: 2 for unusable arguments and for data dirs
    /// that cannot be inspected (locked, not a data dir), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ToolError::Usage(_) | ToolError::Locked { .. } | ToolError::NotDataDir { .. } => 2,
            _ => 1,
        }
    }
}

/// What a close code means in the contract (§2.6), for messages.
pub(crate) fn close_name(code: u16) -> &'static str {
    match code {
        1000 => "(normal)",
        1001 => "(server shutting down)",
        1002 => "(protocol error)",
        1005 => "(no close code)",
        1007 => "(invalid UTF-8)",
        1008 => "(policy: auth or hello)",
        1009 => "(message too large)",
        1011 => "(internal server error)",
        4001 => "(slow consumer)",
        4002 => "(session taken over)",
        4003 => "(token expired)",
        4004 => "(hello timeout)",
        _ => "",
    }
}

/// `1001 (server shutting down): reason`.
fn describe_close(code: u16, reason: &str) -> String {
    let mut out = code.to_string();
    let name = close_name(code);
    if !name.is_empty() {
        out.push(' ');
        out.push_str(name);
    }
    if !reason.is_empty() {
        out.push_str(": ");
        out.push_str(reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_codes_and_exit_statuses() {
        let closed = ToolError::Closed {
            code: 1001,
            reason: "shutdown".to_owned(),
        };
        assert_eq!(
            closed.to_string(),
            "the server closed the connection: 1001 (server shutting down): shutdown"
        );
        assert_eq!(closed.exit_code(), 1);
        let refused = ToolError::Server {
            code: "forbidden".to_owned(),
            message: "not in your grant".to_owned(),
        };
        assert_eq!(refused.to_string(), "forbidden: not in your grant");
        let locked = ToolError::Locked {
            dir: PathBuf::from("/d"),
        };
        assert!(locked
            .to_string()
            .starts_with("another mqws process is using /d"));
        assert_eq!(locked.exit_code(), 2);
    }
}
