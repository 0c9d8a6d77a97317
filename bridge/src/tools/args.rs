//! Command-line values of the tools that carry protocol meaning: where `mqws sub` starts
//! (`--from`, mapped onto the contract's `hello.from`) and how it prints (`--format`).

use std::str::FromStr;

use serde_json::{json, Value};

use super::ToolError;

/// Where `mqws sub` starts reading: the contract's `hello.from` (§2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// `latest` (the default): live messages only; `from` is not sent.
    #[default]
    Latest,
    /// `earliest`: everything the log still holds, then live.
    Earliest,
    /// `E:N`: everything after seq `N` of epoch `E` (`{"epoch":E,"seq":N}`).
    Position {
        /// The log's epoch.
        epoch: String,
        /// The last seq already seen.
        seq: u64,
    },
    /// `time:T`: everything logged at or after `T` ms since the Unix epoch (`{"time_ms":T}`).
    Time {
        /// Milliseconds since the Unix epoch.
        ms: u64,
    },
}

impl Start {
    /// The `from` value of `hello`, or `None` for live only.
    pub(crate) fn to_json(&self) -> Option<Value> {
        match self {
            Start::Latest => None,
            Start::Earliest => Some(json!("earliest")),
            Start::Position { epoch, seq } => Some(json!({"epoch": epoch, "seq": seq})),
            Start::Time { ms } => Some(json!({"time_ms": ms})),
        }
    }
}

impl FromStr for Start {
    type Err = ToolError;

    /// `earliest`, `latest`, `E:N` (epoch and seq, as in the SSE `from` and event ids) or
    /// `time:T` with `T` in ms since the Unix epoch or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Start, ToolError> {
        let bad = |why: &str| {
            ToolError::Usage(format!(
                "invalid --from {s:?}: {why} (use earliest, latest, EPOCH:SEQ, time:MILLIS or \
                 time:RFC3339)"
            ))
        };
        match s {
            "earliest" => return Ok(Start::Earliest),
            "latest" => return Ok(Start::Latest),
            _ => {}
        }
        if let Some(t) = s.strip_prefix("time:") {
            let ms = match t.parse::<u64>() {
                Ok(ms) => ms,
                Err(_) => rfc3339_ms(t).ok_or_else(|| bad("not a time"))?,
            };
            return Ok(Start::Time { ms });
        }
        let (epoch, seq) = s.rsplit_once(':').ok_or_else(|| bad("no ':'"))?;
        if epoch.is_empty() {
            return Err(bad("empty epoch"));
        }
        let seq = seq.parse().map_err(|_| bad("the seq is not a number"))?;
        Ok(Start::Position {
            epoch: epoch.to_owned(),
            seq,
        })
    }
}

/// How `mqws sub` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `TOPIC PAYLOAD` lines; gaps on standard error.
    #[default]
    Text,
    /// Each `message` and `gap` frame as one JSON line.
    Json,
}

impl FromStr for Format {
    type Err = ToolError;

    fn from_str(s: &str) -> Result<Format, ToolError> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(ToolError::Usage(format!(
                "invalid --format {s:?} (use text or json)"
            ))),
        }
    }
}

/// Parses an RFC 3339 time (`2024-11-22T10:06:40.123Z`, `…+01:00`; `t`, `z` and a space as
/// the separator are accepted) into ms since the Unix epoch. `None` when malformed or
/// before 1970.
pub(crate) fn rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| s.get(from..from + len).and_then(digits);
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let seps_ok = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !seps_ok
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded; finer digits are dropped.
        let ms_digits: String = frac[..digits].chars().chain("00".chars()).take(3).collect();
        millis = ms_digits.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = &rest[1..];
            if r.len() != 5 || r.as_bytes()[2] != b':' {
                return None;
            }
            let (oh, om) = (digits(r.get(..2)?)?, digits(r.get(3..)?)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    u64::try_from(secs * 1000 + millis).ok()
}

/// A run of ASCII digits as a number (no sign, no spaces).
fn digits(part: &str) -> Option<i64> {
    if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_maps_onto_the_contract() {
        assert_eq!("earliest".parse::<Start>().ok(), Some(Start::Earliest));
        assert_eq!("latest".parse::<Start>().ok(), Some(Start::Latest));
        assert_eq!(Start::Latest.to_json(), None);
        assert_eq!(Start::Earliest.to_json(), Some(json!("earliest")));
        let p: Start = "3f2a9c:41".parse().expect("position");
        assert_eq!(p.to_json(), Some(json!({"epoch": "3f2a9c", "seq": 41})));
        let t: Start = "time:1732270000123".parse().expect("millis");
        assert_eq!(t.to_json(), Some(json!({"time_ms": 1_732_270_000_123_u64})));
        let t: Start = "time:2024-11-22T10:06:40.123Z".parse().expect("rfc 3339");
        assert_eq!(
            t,
            Start::Time {
                ms: 1_732_270_000_123
            }
        );
        for bad in [
            "",
            "41",
            ":41",
            "e:",
            "e:x",
            "e:-1",
            "time:",
            "time:yesterday",
        ] {
            let err = bad.parse::<Start>().expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--from"), "{err}");
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ms("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(rfc3339_ms("2000-03-01 00:00:00.5z"), Some(951_868_800_500));
        assert_eq!(
            rfc3339_ms("2024-02-29T12:00:00.123456Z"),
            Some(1_709_208_000_123)
        );
        for bad in [
            "1969-12-31T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00++1:00",
            "2024-01-01X00:00:00Z",
            "２024-01-01T00:00:00Z",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!("text".parse::<Format>().ok(), Some(Format::Text));
        assert_eq!("json".parse::<Format>().ok(), Some(Format::Json));
        assert!("yaml".parse::<Format>().is_err());
    }
}
