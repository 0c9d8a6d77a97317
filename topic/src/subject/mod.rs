//! MQTT topics and filters as NATS subjects, for the cluster log kept in one JetStream stream:
//! the reversible topic ⇄ subject mapping ([`topic_to_subject`], [`subject_to_topic`]), the
//! subject filters an MQTT filter becomes ([`filter_to_subjects`]), and splitting subject filters
//! into sets JetStream accepts on one consumer ([`subjects_overlap`], [`disjoint_groups`]). No
//! I/O; MQTT's own rules stay in [`matches`](crate::matches).
//!
//! # Topic → subject
//! A topic is logged on `<prefix>.<token>.<token>…`, one token per MQTT level (split on `/`).
//! `prefix` is a literal NATS subject chosen by the caller (`mqws.log`). A level becomes:
//! - `~` when it is empty (`a//b`, `/a`, `a/`): `a//b` → `<prefix>.a.~.b`;
//! - itself when every character is *safe*, i.e. printable ASCII (`!`..=`~`) other than `.`,
//!   `*`, `>`, `/` and `~`: `site/a/tags/x` → `<prefix>.site.a.tags.x`, `$SYS/x` →
//!   `<prefix>.$SYS.x`;
//! - otherwise `~` followed by the lowercase hex of its UTF-8 bytes: `a.b` → `~612e62`,
//!   `a b` → `~612062`, `*` → `~2a`, `~` → `~7e`, `Größe` → `~4772c3b6c39f65`.
//!
//! A token written as-is never holds `~` and an escaped one always starts with it, so the
//! mapping is injective, and every token is non-empty printable ASCII without whitespace and
//! never a bare `*` or `>`: a valid literal NATS subject. [`subject_to_topic`] inverts it and
//! refuses anything [`topic_to_subject`] would not write (such as `~61` for `a`), so decoding
//! and re-encoding always gives the same subject back. The mapping is total: any string
//! round-trips, valid topic or not.
//!
//! Growth: a level of `n` bytes takes `n` characters as-is and `2n + 1` escaped, so a topic of
//! `n` bytes gives at most `prefix.len() + 2 + 2n` bytes (exactly `prefix.len() + 1 + n` when no
//! level is escaped). Nothing is capped here: NATS has no subject limit of its own, but a server
//! refuses protocol lines over its `max_control_line` (4 KiB by default), so the publisher must
//! check the subject's length (MQTT allows topics of 64 KiB).
//!
//! # Filter → subject filters
//! `+` becomes `*`; a trailing `#` becomes both the parent (`a/#` matches `a`) and `parent.>`,
//! or just `parent.>` when the level before `#` is `+` (`x.*` with `x.*.>` is `x.>`), so a bare
//! `#` is `<prefix>.>`. MQTT keeps topics starting with `$` out of filters whose first level is
//! `+` or `#`; no NATS filter can say "first token does not start with `$`", so those filters
//! come back marked inexact and the caller drops what [`SubjectFilters::admits`] refuses.
//!
//! # Overlap
//! JetStream refuses a consumer whose filter subjects overlap (error 10138), and MQTT filters
//! overlap all the time (`a/+/c` and `a/b/+`). [`disjoint_groups`] splits a set of subject
//! filters into groups without overlap, one consumer each.

use std::collections::BTreeSet;

/// Marks an escaped token (followed by hex) or, alone, an empty level.
const MARKER: char = '~';
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a subject is not one [`topic_to_subject`] writes. `index` counts topic levels from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject does not start with the prefix and a `.`.
    #[error("the subject is not under the prefix")]
    NotUnderPrefix,
    /// A token is empty (`..` or a trailing `.`); an empty level is written `~`.
    #[error("level {index}: empty token")]
    EmptyToken {
        /// The topic level the token stands for.
        index: usize,
    },
    /// A token not starting with `~` holds a character that is always escaped.
    #[error("level {index}: {ch:?} must be escaped")]
    UnsafeChar {
        /// The topic level the token stands for.
        index: usize,
        /// The first offending character.
        ch: char,
    },
    /// After `~` comes something other than lowercase hex of whole bytes.
    #[error("level {index}: escape is not lowercase hex of whole bytes")]
    BadEscape {
        /// The topic level the token stands for.
        index: usize,
    },
    /// The escaped bytes are not UTF-8.
    #[error("level {index}: escaped bytes are not valid UTF-8")]
    InvalidUtf8 {
        /// The topic level the token stands for.
        index: usize,
    },
    /// The escaped level holds `/`, which no level can.
    #[error("level {index}: escaped level holds '/'")]
    Slash {
        /// The topic level the token stands for.
        index: usize,
    },
    /// The escaped level would have been written as-is, so no topic maps to this subject.
    #[error("level {index}: escaped level needs no escaping")]
    NonCanonical {
        /// The topic level the token stands for.
        index: usize,
    },
}

fn is_safe(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | MARKER)
}

/// Whether a level is written as-is.
fn is_plain(level: &str) -> bool {
    !level.is_empty() && level.chars().all(is_safe)
}

fn push_level(out: &mut String, level: &str) {
    if is_plain(level) {
        out.push_str(level);
        return;
    }
    out.push(MARKER);
    for b in level.bytes() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// The subject a message on `topic` is logged on under `prefix` (a literal subject such as
/// `mqws.log`), one token per level, so that MQTT filters become JetStream subject filters.
/// See the module doc for the escaping and the length bound.
pub fn topic_to_subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + topic.len());
    out.push_str(prefix);
    for level in topic.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    out
}

/// The topic a logged message was published on, read back from its subject: the exact inverse
/// of [`topic_to_subject`], refusing any subject it would not write.
pub fn subject_to_topic(prefix: &str, subject: &str) -> Result<String, SubjectError> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or(SubjectError::NotUnderPrefix)?;
    let mut topic = String::with_capacity(rest.len());
    for (index, token) in rest.split('.').enumerate() {
        if index > 0 {
            topic.push('/');
        }
        decode_token(index, token, &mut topic)?;
    }
    Ok(topic)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn decode_token(index: usize, token: &str, out: &mut String) -> Result<(), SubjectError> {
    let Some(hex) = token.strip_prefix(MARKER) else {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken { index });
        }
        if let Some(ch) = token.chars().find(|c| !is_safe(*c)) {
            return Err(SubjectError::UnsafeChar { index, ch });
        }
        out.push_str(token);
        return Ok(());
    };
    let bytes: Option<Vec<u8>> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
            _ => None,
        })
        .collect();
    let bytes = bytes.ok_or(SubjectError::BadEscape { index })?;
    let level = String::from_utf8(bytes).map_err(|_| SubjectError::InvalidUtf8 { index })?;
    if level.contains('/') {
        return Err(SubjectError::Slash { index });
    }
    if is_plain(&level) {
        return Err(SubjectError::NonCanonical { index });
    }
    out.push_str(&level);
    Ok(())
}

/// The JetStream subject filters for one MQTT filter, and whether they are exact. One consumer
/// can hold them all: they never overlap one another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectFilters {
    /// One or two NATS subject filters whose union matches the subject of every topic the
    /// MQTT filter matches.
    pub subjects: Vec<String>,
    /// False when the filter's first level is `+` or `#`: the subjects then also match topics
    /// starting with `$`, which MQTT keeps out, and the caller must post-filter with
    /// [`SubjectFilters::admits`] (or [`matches`](crate::matches)).
    pub exact: bool,
}

impl SubjectFilters {
    /// Whether a message on `topic`, delivered by one of [`SubjectFilters::subjects`], belongs
    /// to the MQTT filter: always when exact, otherwise unless the topic starts with `$`.
    pub fn admits(&self, topic: &str) -> bool {
        self.exact || !topic.starts_with('$')
    }
}

/// The subject filters that select, from the log, the messages an MQTT `filter` matches, so
/// replay reads only those. `filter` must be valid ([`check_filter`](crate::check_filter));
/// otherwise a level that is not a whole `+` or a last `#` is taken literally.
pub fn filter_to_subjects(prefix: &str, filter: &str) -> SubjectFilters {
    let mut levels: Vec<&str> = filter.split('/').collect();
    let multi = levels.last() == Some(&"#");
    if multi {
        levels.pop();
    }
    // `x.*` and `x.*.>` together are `x.>`; a bare `#` is `prefix.>`.
    let collapse = multi && levels.last().is_none_or(|l| *l == "+");
    if collapse {
        levels.pop();
    }
    let mut base = String::with_capacity(prefix.len() + filter.len() + 3);
    base.push_str(prefix);
    for level in levels {
        base.push('.');
        if level == "+" {
            base.push('*');
        } else {
            push_level(&mut base, level);
        }
    }
    let subjects = if collapse {
        base.push_str(".>");
        vec![base]
    } else if multi {
        let deeper = format!("{base}.>");
        vec![base, deeper]
    } else {
        vec![base]
    };
    SubjectFilters {
        subjects,
        // The very test `matches` applies before keeping `$` topics out.
        exact: !(filter.starts_with('+') || filter.starts_with('#')),
    }
}

/// Whether two NATS subject filters (`*` one token, `>` one or more trailing tokens) match a
/// common subject, which is what makes JetStream refuse them on one consumer.
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `outer` matches every subject `inner` matches.
fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Splits subject filters into groups JetStream accepts on one consumer each (no two in a
/// group overlap), so a reader of many MQTT filters runs one consumer per group and merges by
/// stream sequence. Duplicates are kept once, a filter wholly covered by another (`a.b` by
/// `a.*`) is dropped, and the rest are coloured greedily, most-overlapping first; each group
/// is sorted. Groups can still match the same message (`a.*.c`, `a.b.*`), so the merge must
/// drop repeated sequences. Quadratic in the number of filters.
pub fn disjoint_groups(subject_filters: &[String]) -> Vec<Vec<String>> {
    let unique: Vec<&str> = subject_filters
        .iter()
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Drop those covered by another; of two covering each other (only possible for filters
    // that are not valid) the first stays.
    let kept: Vec<&str> = unique
        .iter()
        .enumerate()
        .filter(|&(i, f)| {
            !unique
                .iter()
                .enumerate()
                .any(|(j, g)| j != i && covers(g, f) && (j < i || !covers(f, g)))
        })
        .map(|(_, f)| *f)
        .collect();
    let degree: Vec<usize> = kept
        .iter()
        .map(|f| {
            kept.iter()
                .filter(|g| *g != f && subjects_overlap(f, g))
                .count()
        })
        .collect();
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(degree[i]));
    let mut groups: Vec<Vec<String>> = Vec::new();
    for i in order {
        let f = kept[i];
        match groups
            .iter_mut()
            .find(|group| group.iter().all(|g| !subjects_overlap(g, f)))
        {
            Some(group) => group.push(f.to_owned()),
            None => groups.push(vec![f.to_owned()]),
        }
    }
    for group in &mut groups {
        group.sort();
    }
    groups
}

#[cfg(test)]
mod tests;
