//! What `mqws sub` prints for a `message` and for a lost range, in both formats. Pure
//! functions of the frames, so the lines are unit-tested without a server.
//!
//! Text: `TOPIC PAYLOAD` on standard output, where PAYLOAD is the compact JSON for
//! `enc:"json"`, the string for `enc:"text"` (with `\n`, `\r` and `\t` written as those two
//! characters, so one message stays one line) and `base64:…` for `enc:"base64"`; gaps go to
//! standard error as `gap FROM-TO REASON` (or `gap epoch …`).
//! JSON: every `message` frame as the server sent it, and every gap as a `gap` frame
//! (`{"type":"gap","reason":…,"from":…,"to":…}`; the gaps listed in `welcome` are turned into
//! such frames), all on standard output.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The fields of a `message` frame the text line needs, with the payload as sent: JSON
/// numbers are not rounded through `f64` (`303400000000000000001234` stays exact).
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(default, borrow)]
    enc: Option<Cow<'a, str>>,
}

/// The text line of a `message` frame, given as the server sent it.
pub(crate) fn message_text(text: &str) -> String {
    let Ok(m) = serde_json::from_str::<Message<'_>>(text) else {
        // Not the contract's shape: show what there is.
        return compact_json(text);
    };
    let raw = m.payload.get();
    let string = serde_json::from_str::<String>(raw).ok();
    let body = match (m.enc.as_deref(), string) {
        (Some("base64"), Some(s)) => format!("base64:{s}"),
        (_, Some(s)) => one_line(&s),
        (_, None) => compact_json(raw),
    };
    format!("{} {body}", m.topic)
}

/// The JSON line of a `message` frame: the frame as the server sent it, without the line
/// breaks a JSON payload may carry.
pub(crate) fn message_json(text: &str) -> String {
    if text.contains(['\n', '\r']) {
        compact_json(text)
    } else {
        text.to_owned()
    }
}

/// `json` without whitespace outside strings; numbers and strings stay as written.
pub(crate) fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// The text line of a gap (a `gap` frame or an entry of `welcome.gaps`).
pub(crate) fn gap_text(gap: &Value) -> String {
    let reason = gap["reason"].as_str().unwrap_or("unknown");
    match (gap["from"].as_u64(), gap["to"].as_u64()) {
        (Some(from), Some(to)) => format!("gap {from}-{to} {reason}"),
        _ if reason == "epoch" => {
            "gap epoch: the position belongs to another log (reset or replaced); nothing was \
             replayed"
                .to_owned()
        }
        _ => format!("gap {reason}"),
    }
}

/// The JSON line of a gap: a `gap` frame as is; an entry of `welcome.gaps` with
/// `"type":"gap"` added.
pub(crate) fn gap_json(gap: &Value) -> String {
    let mut frame = Map::new();
    frame.insert("type".to_owned(), Value::from("gap"));
    if let Value::Object(fields) = gap {
        for (k, v) in fields {
            if k != "type" {
                frame.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(frame).to_string()
}

/// `"a\nb"` → `a\nb` (backslash, n): control characters that would split or hide a line.
fn one_line(s: &str) -> String {
    if !s.contains(['\n', '\r', '\t']) {
        return s.to_owned();
    }
    s.replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_lines() {
        let json_frame = r#"{"type":"message","seq":58,"topic":"site/a/tags/x","payload":{"epc":"3034"},"enc":"json","retain":false,"ts":1}"#;
        assert_eq!(message_text(json_frame), r#"site/a/tags/x {"epc":"3034"}"#);
        let text_frame = r#"{"type":"message","seq":59,"topic":"t","payload":"303400000000000000001234","enc":"text"}"#;
        assert_eq!(message_text(text_frame), "t 303400000000000000001234");
        let number = r#"{"topic":"t","payload":303400000000000000001234,"enc":"json"}"#;
        assert_eq!(message_text(number), "t 303400000000000000001234");
        let pretty = "{\"topic\":\"p\",\"payload\":{ \"a b\" :\n [1, 2.50] },\"enc\":\"json\"}";
        assert_eq!(message_text(pretty), r#"p {"a b":[1,2.50]}"#);
        assert_eq!(
            message_json(pretty),
            r#"{"topic":"p","payload":{"a b":[1,2.50]},"enc":"json"}"#
        );
        let multi = r#"{"topic":"t","payload":"a\nb\tc \"q\"","enc":"text"}"#;
        assert_eq!(message_text(multi), r#"t a\nb\tc "q""#);
        let binary = r#"{"topic":"b","payload":"AAEC","enc":"base64"}"#;
        assert_eq!(message_text(binary), "b base64:AAEC");
        let empty = r#"{"topic":"e","payload":"","enc":"text"}"#;
        assert_eq!(message_text(empty), "e ");

        let raw = r#"{"type":"message","seq":1,"topic":"t","payload":"x","enc":"text"}"#;
        assert_eq!(message_json(raw), raw);
        assert_eq!(
            compact_json(r#" { "a\" b" : "x\\" , "c": 1 } "#),
            r#"{"a\" b":"x\\","c":1}"#
        );
    }

    #[test]
    fn gap_lines() {
        let evicted = json!({"reason":"evicted","from":120,"to":180});
        assert_eq!(gap_text(&evicted), "gap 120-180 evicted");
        let frame = json!({"type":"gap","reason":"dropped","from":7,"to":7});
        assert_eq!(gap_text(&frame), "gap 7-7 dropped");
        assert!(gap_text(&json!({"reason":"epoch"})).starts_with("gap epoch: "));

        let line: Value = serde_json::from_str(&gap_json(&evicted)).expect("json");
        assert_eq!(
            line,
            json!({"type":"gap","reason":"evicted","from":120,"to":180})
        );
        let line: Value = serde_json::from_str(&gap_json(&frame)).expect("json");
        assert_eq!(line, frame);
        let line: Value =
            serde_json::from_str(&gap_json(&json!({"reason":"epoch"}))).expect("json");
        assert_eq!(line, json!({"type":"gap","reason":"epoch"}));
    }
}
