//! A fast, allocation-free reader for the one frame the subscribers see most: `message`.
//!
//! With 1,000 subscribers the load generator parses hundreds of thousands of frames a second
//! on the same two cores as the server, so full `serde_json` parsing (about 1 µs a frame here)
//! would steal CPU from the server under test. This walker reads a frame's top-level members in
//! any order, skips values it does not need (strings with a byte search), and decodes only
//! `type`, `seq`, `enc` and the benchmark fields of `payload`. Whenever a frame is not exactly
//! what it expects (another type, escapes in a key or in `type`/`enc`, a string payload,
//! malformed input), it answers `None` and the caller falls back to the full parser, so the
//! results are the same either way (the tests check that on varied frames).

use crate::payload::{Found, Stamp};

/// What the walker found in a `message` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastMessage {
    /// The frame's `seq`.
    pub seq: u64,
    /// The benchmark stamp, as [`crate::payload::Frame::stamp`] would report it.
    pub found: Found,
}

/// Reads a `message` frame; `None` means "use the full parser".
pub fn scan_message(text: &str) -> Option<FastMessage> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    let (mut is_message, mut seq, mut enc_json, mut enc_seen) = (false, None, false, false);
    let mut stamp: Option<Option<Stamp>> = None;
    loop {
        i = skip_ws(b, i);
        let (key, next) = plain_string(text, i)?;
        i = skip_ws(b, next);
        if *b.get(i)? != b':' {
            return None;
        }
        i = skip_ws(b, i + 1);
        match key {
            "type" => {
                let (v, next) = plain_string(text, i)?;
                if v != "message" {
                    return None;
                }
                is_message = true;
                i = next;
            }
            "seq" => {
                let (v, next) = uint(b, i)?;
                seq = Some(v);
                i = next;
            }
            "enc" => {
                let (v, next) = plain_string(text, i)?;
                enc_seen = true;
                enc_json = v == "json";
                i = next;
            }
            "payload" => match *b.get(i)? {
                b'{' => {
                    let (s, next) = stamp_object(text, i)?;
                    stamp = Some(s);
                    i = next;
                }
                // A string payload needs unescaping: leave it to the full parser.
                b'"' => return None,
                _ => {
                    i = skip_value(text, i)?;
                    stamp = Some(None);
                }
            },
            _ => i = skip_value(text, i)?,
        }
        i = skip_ws(b, i);
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    if skip_ws(b, i + 1) != b.len() || !is_message {
        return None;
    }
    let found = match stamp.flatten() {
        Some(s) if enc_seen && enc_json => Found::Json(s),
        Some(s) => Found::Text(s),
        None => Found::Foreign,
    };
    Some(FastMessage { seq: seq?, found })
}

/// Reads `{"t_us":…,"r":…,"p":…,"n":…, …}`; `Some(None)` when it is an object without a valid stamp.
fn stamp_object(text: &str, mut i: usize) -> Option<(Option<Stamp>, usize)> {
    let b = text.as_bytes();
    i = skip_ws(b, i + 1);
    let (mut t_us, mut r, mut p, mut n) = (None, None, None, None);
    let mut valid = true;
    if *b.get(i)? == b'}' {
        return Some((None, i + 1));
    }
    loop {
        i = skip_ws(b, i);
        let (key, next) = plain_string(text, i)?;
        i = skip_ws(b, next);
        if *b.get(i)? != b':' {
            return None;
        }
        i = skip_ws(b, i + 1);
        let slot = match key {
            "t_us" => Some(&mut t_us),
            "r" => Some(&mut r),
            "p" => Some(&mut p),
            "n" => Some(&mut n),
            _ => None,
        };
        match slot {
            Some(slot) => match uint(b, i) {
                Some((v, next)) => {
                    *slot = Some(v);
                    i = next;
                }
                None => {
                    valid = false;
                    i = skip_value(text, i)?;
                }
            },
            None => i = skip_value(text, i)?,
        }
        i = skip_ws(b, i);
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    let stamp = match (t_us, r, p, n, valid) {
        (Some(t_us), Some(r), Some(p), Some(n), true) => Some(Stamp {
            t_us,
            r: u32::try_from(r).ok()?,
            p: u32::try_from(p).ok()?,
            n,
        }),
        _ => None,
    };
    Some((stamp, i + 1))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string starting at `i` with no escapes: its contents and the index after it.
fn plain_string(text: &str, i: usize) -> Option<(&str, usize)> {
    if *text.as_bytes().get(i)? != b'"' {
        return None;
    }
    let end = find_quote(text, i + 1)?;
    let s = text.get(i + 1..end)?;
    if s.as_bytes().contains(&b'\\') {
        return None;
    }
    Some((s, end + 1))
}

/// The index of the next `"` at or after `from`. Short strings (keys, small values) are
/// scanned byte by byte; `str::find`'s SIMD-friendly search has a set-up cost that only pays
/// off on long ones (the padding).
fn find_quote(text: &str, from: usize) -> Option<usize> {
    const SHORT: usize = 24;
    let b = text.as_bytes();
    let head = b.get(from..)?;
    let short = &head[..head.len().min(SHORT)];
    if let Some(k) = short.iter().position(|&c| c == b'"') {
        return Some(from + k);
    }
    let at = from + short.len();
    match text.get(at..) {
        Some(rest) => rest.find('"').map(|k| at + k),
        None => b[at..].iter().position(|&c| c == b'"').map(|k| at + k),
    }
}

/// Skips a string starting at `i` (escapes allowed); returns the index after it.
fn skip_string(text: &str, i: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut j = i + 1;
    loop {
        let q = find_quote(text, j)?;
        // The quote ends the string unless an odd number of backslashes precede it.
        let mut k = q;
        while k > j && b[k - 1] == b'\\' {
            k -= 1;
        }
        if (q - k) % 2 == 0 {
            return Some(q + 1);
        }
        j = q + 1;
    }
}

/// Skips any JSON value starting at `i`; returns the index after it.
fn skip_value(text: &str, mut i: usize) -> Option<usize> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => skip_string(text, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = skip_string(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let start = i;
            while !matches!(
                b.get(i),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// An unsigned integer (no sign, fraction or exponent) starting at `i`.
fn uint(b: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let start = i;
    let mut v: u64 = 0;
    while let Some(d @ b'0'..=b'9') = b.get(i) {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        i += 1;
    }
    if i == start || matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((v, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{build, Frame};

    fn full(text: &str) -> Option<FastMessage> {
        let f: Frame<'_> = serde_json::from_str(text).ok()?;
        (f.ty == "message").then(|| FastMessage {
            seq: f.seq.unwrap_or(u64::MAX),
            found: f.stamp(),
        })
    }

    fn payload(size: usize) -> String {
        let mut buf = Vec::new();
        let s = Stamp {
            t_us: 1_732_270_000_123_456,
            r: 9,
            p: 2,
            n: 41,
        };
        build(&mut buf, s, size);
        String::from_utf8(buf).expect("ascii")
    }

    #[test]
    fn agrees_with_the_full_parser() {
        let p = payload(256);
        let frames = [
            format!(r#"{{"type":"message","seq":7,"topic":"bench/p2","payload":{p},"enc":"json","retain":false,"ts":1}}"#),
            format!(r#"{{"seq":7,"payload":{p},"topic":"a\"b\\","enc":"json","type":"message"}}"#),
            format!(r#" {{ "type" : "message" , "seq" : 8 , "payload" : {p} , "enc" : "json" }} "#),
            format!(r#"{{"type":"message","seq":9,"payload":{p},"enc":"text"}}"#),
            format!(r#"{{"type":"message","seq":9,"payload":{p}}}"#),
            r#"{"type":"message","seq":10,"payload":{"a":[1,{"b":"}"}],"t_us":"x"},"enc":"json"}"#.to_string(),
            r#"{"type":"message","seq":11,"payload":[1,2,"]"],"enc":"json"}"#.to_string(),
            r#"{"type":"message","seq":12,"payload":null,"enc":"json"}"#.to_string(),
            r#"{"type":"message","seq":13,"payload":{"t_us":1,"r":1,"p":1,"n":1.5},"enc":"json"}"#.to_string(),
            r#"{"type":"message","seq":14,"payload":{"t_us":1,"r":1,"p":1,"n":2,"pad":"x\\\"y"},"enc":"json","replay":true}"#.to_string(),
        ];
        for f in &frames {
            let fast = scan_message(f);
            assert!(fast.is_some(), "fast path should take {f}");
            assert_eq!(fast, full(f), "{f}");
        }
    }

    #[test]
    fn falls_back_when_unsure() {
        let p = payload(100);
        for f in [
            r#"{"type":"welcome","session":"s"}"#.to_string(),
            r#"{"type":"error","code":"bad_request"}"#.to_string(),
            r#"{"type":"message","seq":1,"payload":"{\"t_us\":1,\"p\":1,\"n\":1}","enc":"text"}"#
                .to_string(),
            format!(r#"{{"type":"mess\u0061ge","seq":1,"payload":{p}}}"#),
            format!(r#"{{"type":"message","seq":-1,"payload":{p}}}"#),
            format!(r#"{{"type":"message","seq":1,"payload":{p}"#),
            format!(r#"{{"type":"message","seq":1,"payload":{p}}} x"#),
            r#"{"type":"message","payload":{}}"#.to_string(),
            "not json".to_string(),
            String::new(),
        ] {
            assert_eq!(scan_message(&f), None, "{f}");
        }
    }
}
