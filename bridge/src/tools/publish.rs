//! `mqws pub`: publishes one message over the WebSocket contract, like `mosquitto_pub` does
//! for MQTT: `hello`, then `publish` with the payload as a JSON string (the server sends a
//! string's UTF-8 bytes as they are, §2.5), then waits for the `puback` or the `error`
//! answering it.

use serde_json::{json, Map, Value};

use super::conn::{self};
use super::{PubOptions, ToolError};

/// The request id of the one publish.
const ID: u64 = 1;

/// The `publish` frame for `opts`.
pub(crate) fn frame(opts: &PubOptions) -> Value {
    json!({
        "type": "publish",
        "id": ID,
        "topic": opts.topic,
        "payload": opts.payload,
        "qos": opts.qos,
        "retain": opts.retain,
    })
}

/// Publishes and waits for the answer: `Ok` on `puback`, [`ToolError::Server`] with the
/// contract's code on `error`.
pub(crate) async fn run(opts: &PubOptions) -> Result<(), ToolError> {
    let (mut socket, _welcome) = conn::open(&opts.connect, Map::new()).await?;
    conn::send(&mut socket, &frame(opts)).await?;
    let result = loop {
        let (v, text) = match conn::reply(&mut socket, "puback").await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        let answers = v["id"] == json!(ID);
        match v["type"].as_str() {
            Some("puback") if answers => break Ok(()),
            Some("error") if answers || v.get("id").is_none() => {
                break Err(conn::server_error(&v, &text))
            }
            // Anything else (a message of no subscription, a pong) is not the answer.
            _ => {}
        }
    };
    conn::close(&mut socket).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Connect;

    #[test]
    fn the_payload_travels_as_a_string() {
        let opts = PubOptions {
            connect: Connect {
                url: "ws://127.0.0.1:8080/ws".to_owned(),
                token: None,
            },
            topic: "readers/r1/cmd".to_owned(),
            payload: r#"{"op":"start"}"#.to_owned(),
            qos: 1,
            retain: true,
        };
        assert_eq!(
            frame(&opts),
            json!({"type":"publish","id":1,"topic":"readers/r1/cmd",
                   "payload":"{\"op\":\"start\"}","qos":1,"retain":true})
        );
    }
}
