//! MQTT topic and filter syntax and matching (`+`, `#`, and `$`-topics kept out of first-level
//! wildcards).

/// Longest topic or filter in bytes (MQTT's own limit).
pub const MAX_LEN: usize = 65_535;

/// Why a topic or filter is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero length.
    #[error("must not be empty")]
    Empty,
    /// Over [`MAX_LEN`] bytes.
    #[error("must not be longer than 65535 bytes")]
    TooLong,
    /// Contains U+0000.
    #[error("must not contain the NUL character")]
    Nul,
    /// `#` not as the whole last level.
    #[error("may hold '#' only as its whole last level")]
    Hash,
    /// `+` not as a whole level.
    #[error("may hold '+' only as a whole level")]
    Plus,
    /// A wildcard in a topic name.
    #[error("must not contain the wildcards '+' or '#'")]
    Wildcard,
    /// A `$` topic from a client.
    #[error("must not start with '$' (such topics are reserved for the broker)")]
    Reserved,
}

fn common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks a subscription filter.
pub fn check_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::Hash);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::Plus);
        }
    }
    Ok(())
}

/// Checks the characters of an MQTT PUBLISH topic name as MQTT requires of any publisher: no
/// wildcard, no NUL. Empty is allowed here (an MQTT 5 publish may name its topic by alias) and
/// `$` topics too (the broker decides about those).
pub fn check_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks a topic name a browser publishes to.
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    common(topic)?;
    check_topic_name(topic)?;
    if topic.starts_with('$') {
        return Err(TopicError::Reserved);
    }
    Ok(())
}

/// Whether `filter` (already valid) matches `topic`, by MQTT's rules. The trie does the real
/// matching; this is the reference it is tested against.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether two filters (already valid) match a common topic: then a subscription to one sees
/// some of what a subscription to the other sees.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    // A first-level wildcard never matches a `$` topic, which a literal `$…` level names.
    let dollar = |x: &str| x.starts_with('$');
    let wild = |x: &str| x.starts_with('+') || x.starts_with('#');
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return false;
    }
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(x), Some(y)) if x == y || x == "+" || y == "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_syntax() {
        for ok in [
            "#", "+", "a/b", "a/+/c", "a/#", "+/+/#", "/", "a//b", "$SYS/#",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_filter(""), Err(TopicError::Empty));
        assert_eq!(check_filter("a/#/b"), Err(TopicError::Hash));
        assert_eq!(check_filter("a#"), Err(TopicError::Hash));
        assert_eq!(check_filter("a/b+"), Err(TopicError::Plus));
        assert_eq!(check_filter("a\0"), Err(TopicError::Nul));
        assert_eq!(
            check_filter(&"a".repeat(MAX_LEN + 1)),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn topic_syntax() {
        assert_eq!(check_topic("readers/r1/cmd"), Ok(()));
        assert_eq!(check_topic(""), Err(TopicError::Empty));
        assert_eq!(check_topic("a/+/b"), Err(TopicError::Wildcard));
        assert_eq!(check_topic("a/#"), Err(TopicError::Wildcard));
        assert_eq!(check_topic("$SYS/x"), Err(TopicError::Reserved));
        assert_eq!(check_topic_name(""), Ok(()));
        assert_eq!(check_topic_name("$share/x"), Ok(()));
        assert_eq!(check_topic_name("a/+"), Err(TopicError::Wildcard));
        assert_eq!(check_topic_name("a\0b"), Err(TopicError::Nul));
    }

    #[test]
    fn overlapping_filters() {
        for (a, b) in [
            ("#", "a/b"),
            ("a/+", "+/b"),
            ("site/#", "+/x"),
            ("a/#", "a"),
            ("a", "a/#"),
            ("$SYS/a", "$SYS/+"),
            ("+/+", "a/b"),
        ] {
            assert!(filters_overlap(a, b), "{a} overlaps {b}");
            assert!(filters_overlap(b, a), "{b} overlaps {a}");
        }
        for (a, b) in [
            ("a/b", "a/c"),
            ("a/+", "a/b/c"),
            ("+", "a/b"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("site/#", "other/+"),
        ] {
            assert!(!filters_overlap(a, b), "{a} does not overlap {b}");
            assert!(!filters_overlap(b, a), "{b} does not overlap {a}");
        }
    }

    #[test]
    fn reference_matching() {
        assert!(matches("site/+/tags/#", "site/a/tags/x"));
        assert!(matches("site/+/tags/#", "site/a/tags"));
        assert!(!matches("site/+/tags/#", "site/a/b/tags/x"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/+", "a"));
        assert!(matches("/+", "/x"));
    }
}
