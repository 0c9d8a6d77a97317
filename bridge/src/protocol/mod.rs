//! Wire protocol `mqws.v1.json`: what clients send ([`client`]), what the server sends
//! ([`server`]), how MQTT payload bytes travel in JSON ([`payload`]) and the encoded frames
//! the layers below carry without reading them ([`frame`]).

pub(crate) mod client;
pub(crate) mod frame;
pub(crate) mod payload;
pub(crate) mod server;

pub(crate) use client::Start;
pub(crate) use frame::{Frame, MessageFrames};
pub(crate) use server::Gap;

/// The one subprotocol this server speaks.
pub(crate) const SUBPROTOCOL: &str = "mqws.v1.json";

/// Client-facing error codes of the contract (§2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// Malformed frame, unknown type, missing field.
    BadRequest,
    /// First frame was not `hello`.
    HelloRequired,
    /// A topic filter is not valid MQTT.
    BadFilter,
    /// A publish topic is empty or has wildcards.
    BadTopic,
    /// Authentication missing or wrong.
    Unauthorized,
    /// Not allowed by the grant.
    Forbidden,
    /// Too large.
    TooLarge,
    /// Too many requests.
    RateLimited,
    /// The broker or log cannot take it now.
    Unavailable,
    /// A server fault; details are only in the server's log.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire and in metric labels.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::BadFilter => "bad_filter",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// WebSocket close codes of the contract (§2.6).
pub(crate) mod close {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// Policy: authentication or hello.
    pub(crate) const POLICY: u16 = 1008;
    /// Broken WebSocket framing (reserved bits or opcodes, fragmented or oversize control
    /// frames, unmasked client frames).
    pub(crate) const PROTOCOL: u16 = 1002;
    /// Data the endpoint does not take (a text message on `/mqtt`).
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
    /// Invalid UTF-8 in a text frame.
    pub(crate) const INVALID_DATA: u16 = 1007;
    /// A message over the size limit.
    pub(crate) const TOO_LARGE: u16 = 1009;
    /// Internal error.
    pub(crate) const INTERNAL: u16 = 1011;
    /// Slow consumer: the outbound queue overflowed; resume to catch up.
    pub(crate) const SLOW_CONSUMER: u16 = 4001;
    /// The session was taken over by a newer connection.
    pub(crate) const TAKEN_OVER: u16 = 4002;
    /// The token expired.
    pub(crate) const TOKEN_EXPIRED: u16 = 4003;
    /// No hello in time.
    pub(crate) const HELLO_TIMEOUT: u16 = 4004;
}
