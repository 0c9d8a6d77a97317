//! What an authenticated client may do: its [`Grant`] (the `sub` and `pub` filter lists of
//! protocol §3) and the two questions asked of it — may this filter be subscribed
//! ([`Grant::may_subscribe`], by filter containment, [`contains`]) and may this topic be
//! published to ([`Grant::may_publish`], by MQTT matching).

use serde::{Deserialize, Serialize};

use mqws_topic::{self as filter, TopicError};

/// The permissions carried by a token: MQTT filters bounding what the holder may read and
/// where it may publish. The JSON/TOML shape is `{"sub": [...], "pub": [...]}`; a missing list
/// is empty, and an empty grant allows nothing (but the connection itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    /// Filters a subscription (and replay, history, last) must lie within.
    #[serde(default)]
    pub(crate) sub: Vec<String>,
    /// Filters a published topic must match.
    #[serde(default, rename = "pub")]
    pub(crate) pub_: Vec<String>,
    /// Auth mode `none`: any valid filter may be subscribed, `$`-topics included (a `$SYS/#`
    /// subscription still receives only what `bridge.filters` logs). Never set by a token.
    #[serde(skip)]
    pub(crate) unrestricted: bool,
}

/// Which list of a [`Grant`] a bad filter was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantList {
    /// The `sub` list.
    Sub,
    /// The `pub` list.
    Pub,
}

impl GrantList {
    /// The list's name as written in tokens and config.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GrantList::Sub => "sub",
            GrantList::Pub => "pub",
        }
    }
}

/// A grant holding a filter that is not valid MQTT filter syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filter {filter:?} in the {} grant {source}", list.name())]
pub struct GrantError {
    /// The list holding it.
    pub(crate) list: GrantList,
    /// The filter as given.
    pub(crate) filter: String,
    /// What is wrong with it.
    #[source]
    pub(crate) source: TopicError,
}

impl Grant {
    /// Everything (auth mode `none`): any valid filter may be subscribed, `$` filters
    /// included; publishing is `#` (MQTT clients do not publish to `$`-topics).
    pub(crate) fn all() -> Self {
        Grant {
            sub: vec!["#".to_owned()],
            pub_: vec!["#".to_owned()],
            unrestricted: true,
        }
    }

    /// Nothing at all (a token without an `mqws` claim).
    pub(crate) fn none() -> Self {
        Grant::default()
    }

    /// Checks that every filter of both lists is valid MQTT filter syntax. Grants from tokens
    /// and config are checked once, when they are read, so a typo fails loudly instead of
    /// silently allowing nothing.
    pub(crate) fn check(&self) -> Result<(), GrantError> {
        for (list, filters) in [(GrantList::Sub, &self.sub), (GrantList::Pub, &self.pub_)] {
            for f in filters {
                filter::check_filter(f).map_err(|source| GrantError {
                    list,
                    filter: f.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Whether `filter` may be subscribed: every topic it can match must be matched by one
    /// `sub` grant filter. The filter must lie within a SINGLE grant filter (see [`contains`]);
    /// a filter that only a union of grant filters covers (`a/+` against `a/x` and `a/y`) is
    /// refused, which is safe and what users of broker ACLs expect. An invalid `filter` is
    /// refused (the caller reports `bad_filter` before asking).
    pub(crate) fn may_subscribe(&self, filter: &str) -> bool {
        filter::check_filter(filter).is_ok()
            && (self.unrestricted
                || self
                    .sub
                    .iter()
                    .any(|g| filter::check_filter(g).is_ok() && contains(g, filter)))
    }

    /// Whether a logged message on `topic` may be shown to the holder (e.g. a `last` result):
    /// some `sub` grant filter matches it.
    #[cfg(test)]
    pub(crate) fn may_read(&self, topic: &str) -> bool {
        is_topic_name(topic)
            && self
                .sub
                .iter()
                .any(|g| filter::check_filter(g).is_ok() && filter::matches(g, topic))
    }

    /// Whether the holder may publish to `topic`: a `pub` grant filter matches it. Topics with
    /// wildcards or empty ones are refused (the caller reports `bad_topic` before asking).
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        is_topic_name(topic)
            && self
                .pub_
                .iter()
                .any(|g| filter::check_filter(g).is_ok() && filter::matches(g, topic))
    }
}

fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#'])
}

/// The levels of a valid filter, with a lone `#` written as `+/#`. The two match exactly the
/// same topics (a topic has at least one level, and `$`-topics are excluded by both), and the
/// longer form lets [`contains`] compare level by level.
fn levels(filter: &str) -> Vec<&str> {
    if filter == "#" {
        vec!["+", "#"]
    } else {
        filter.split('/').collect()
    }
}

/// Whether every topic `inner` can match is also matched by `outer` (filter containment),
/// MQTT's `$` rule included: a `$`-topic is matched only by filters whose first level is
/// that literal, so `#` does not contain `$SYS/#`. Both must be valid filters.
///
/// Examples: `site/a/tags/+` ⊆ `site/a/#`; `site/#` ⊄ `site/a/#`; `a/+/c` ⊆ `+/+/c`;
/// `a` ⊆ `a/#` (a `#` also matches its parent level); `#` ⊆ `+/#`.
///
/// This is exact, not an approximation: when it answers false, some topic matched by `inner`
/// is not matched by `outer` (the property test in this module checks both directions
/// against brute force).
pub(crate) fn contains(outer: &str, inner: &str) -> bool {
    let o = levels(outer);
    let i = levels(inner);
    // A literal `$x` first level is only matched by the same literal, never by `+` or `#`.
    if i[0].starts_with('$') && (o[0] == "+" || o[0] == "#") {
        return false;
    }
    let mut k = 0;
    loop {
        match (o.get(k).copied(), i.get(k).copied()) {
            // `#` matches whatever follows, the parent level included.
            (Some("#"), _) => return true,
            (None, None) => return true,
            // One is longer: the longer one matches topics the shorter cannot (a trailing
            // `#` in `inner` still matches one more level than `outer` allows).
            (None, Some(_)) | (Some(_), None) => return false,
            // An inner `#` also matches its parent topic, except when that parent would be the
            // empty string (`/#`), which is no topic; the deeper topics `+/#` covers.
            (Some("+"), Some("#")) if k == 1 && i[0].is_empty() && o.get(2) == Some(&"#") => {
                return true
            }
            // `inner` goes on arbitrarily deep, `outer` does not.
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqws_topic::matches;
    use proptest::prelude::*;

    fn grant(sub: &[&str], pub_: &[&str]) -> Grant {
        Grant {
            unrestricted: false,
            sub: sub.iter().map(|s| (*s).to_owned()).collect(),
            pub_: pub_.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn containment_examples() {
        let yes = [
            ("site/a/#", "site/a/tags/+"),
            ("+/+/#", "/#"),
            ("site/a/#", "site/a"),
            ("site/a/#", "site/a/#"),
            ("a/+/c", "a/+/c"),
            ("+/+/c", "a/+/c"),
            ("#", "#"),
            ("#", "+/#"),
            ("+/#", "#"),
            ("#", "a/b/c"),
            ("#", "+"),
            ("a/#", "a/+/#"),
            ("a/+/#", "a/+"),
            ("$SYS/#", "$SYS/broker/+"),
            ("$SYS/#", "$SYS"),
            ("+/x", "a/x"),
            ("a//b", "a//b"),
            ("a/+/b", "a//b"),
            ("x/$y", "x/$y"),
            ("+/$y", "x/$y"),
        ];
        for (outer, inner) in yes {
            assert!(contains(outer, inner), "{inner} should be inside {outer}");
        }
        let no = [
            ("site/a/#", "site/#"),
            ("site/a/#", "site/+/x"),
            ("a/+/c", "+/+/c"),
            ("a/+", "a/#"),
            ("a/+", "a"),
            ("a", "a/#"),
            ("a/+/#", "a"),
            ("a/+/#", "a/#"),
            ("+", "#"),
            ("#", "$SYS/#"),
            ("#", "$SYS"),
            ("+/#", "$SYS/x"),
            ("+", "$x"),
            ("a/b", "a/+"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("$SYS/a", "$SYS/+"),
        ];
        for (outer, inner) in no {
            assert!(
                !contains(outer, inner),
                "{inner} should not be inside {outer}"
            );
        }
    }

    #[test]
    fn subscribe_needs_one_covering_grant_filter() {
        let g = grant(&["site/a/#", "readers/x/status", "readers/y/status"], &[]);
        assert!(g.may_subscribe("site/a/tags/+"));
        assert!(g.may_subscribe("site/a"));
        assert!(g.may_subscribe("readers/x/status"));
        assert!(!g.may_subscribe("site/#"));
        assert!(!g.may_subscribe("#"));
        assert!(!g.may_subscribe("$SYS/#"));
        // Covered only by the union of two grant filters: refused (documented).
        assert!(!g.may_subscribe("readers/+/status"));
        // Invalid filters are refused, never interpreted.
        assert!(!g.may_subscribe("site/a/#/x"));
        assert!(!g.may_subscribe(""));
        assert!(!Grant::none().may_subscribe("a"));
    }

    #[test]
    fn all_covers_every_valid_filter_dollar_topics_included() {
        let g = Grant::all();
        for f in ["#", "+", "a/b", "a/+/#", "+/+/+", "$SYS/#", "$SYS/broker/+"] {
            assert!(g.may_subscribe(f), "{f}");
        }
        assert!(!g.may_subscribe("a/#/b"));
        // A token's `#` grant still does not cover `$`-topics.
        assert!(!grant(&["#"], &[]).may_subscribe("$SYS/#"));
        assert!(g.may_publish("readers/r1/cmd"));
        assert!(!g.may_publish("$SYS/x"));
        assert!(g.may_read("a/b"));
        assert_eq!(g.check(), Ok(()));
    }

    #[test]
    fn publish_matches_a_pub_filter() {
        let g = grant(&["site/#"], &["readers/+/cmd"]);
        assert!(g.may_publish("readers/r1/cmd"));
        assert!(!g.may_publish("readers/r1/cmd/x"));
        assert!(
            !g.may_publish("site/a"),
            "sub grants do not allow publishing"
        );
        assert!(!g.may_publish("readers/+/cmd"), "wildcards are not topics");
        assert!(!g.may_publish(""));
        assert!(g.may_read("site/a/b"));
        assert!(!g.may_read("readers/r1/cmd"));
    }

    #[test]
    fn check_names_the_bad_filter() {
        assert_eq!(grant(&["a/#", "b/+"], &["c"]).check(), Ok(()));
        let err = grant(&["a/#"], &["c/#/d"]).check().expect_err("invalid");
        assert_eq!(err.list, GrantList::Pub);
        assert_eq!(err.filter, "c/#/d");
        assert_eq!(
            err.to_string(),
            "the filter \"c/#/d\" in the pub grant may hold '#' only as its whole last level"
        );
        // An invalid grant filter never allows anything.
        let bad = grant(&["a#"], &["a#"]);
        assert!(!bad.may_subscribe("a#"));
        assert!(!bad.may_publish("a#"));
    }

    #[test]
    fn serde_shape() {
        let g: Grant = serde_json::from_str(r#"{"sub":["a/#"],"pub":["b"]}"#).expect("parses");
        assert_eq!(g, grant(&["a/#"], &["b"]));
        let g: Grant = serde_json::from_str(r#"{"sub":["a/#"]}"#).expect("parses");
        assert!(g.pub_.is_empty());
        assert_eq!(
            serde_json::to_string(&grant(&["a"], &["b"])).expect("serializes"),
            r#"{"sub":["a"],"pub":["b"]}"#
        );
    }

    // Property test against brute force.
    //
    // Filters: 1 to 4 levels over {a, b, "", $a, +}, optionally ending in `#` (at most 4
    // levels counting the `#`, at least one level).
    // Universe U: every topic of 1 to 5 levels over {a, b, "", $a, z} (but the empty string).
    //
    // Claim: contains(g, f) ⟺ ∀t∈U: matches(f, t) ⇒ matches(g, t).
    // (⇒) is soundness: containment never over-grants on U.
    // (⇐) holds on this finite U because whenever contains is false a witness exists inside U:
    // take f, write the fresh level `z` (in no filter, not a `$` level) for each `+`, and either
    // drop a trailing `#` (its parent topic, when g needs another level there) or write `z` for
    // it (when g stops earlier or has a literal there); a `$a` first level of f witnesses the
    // `$` rule against g's `+`/`#`. Such a witness has at most as many levels as f (≤ 4 < 5).
    fn level() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just(""), Just("$a"), Just("+")]
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        (prop::collection::vec(level(), 0..=4), any::<bool>()).prop_filter_map(
            "1 to 4 levels",
            |(mut levels, hash)| {
                if hash {
                    levels.push("#");
                }
                let filter = levels.join("/");
                // A lone empty level would be the empty string, which is no filter.
                ((1..=4).contains(&levels.len()) && !filter.is_empty()).then_some(filter)
            },
        )
    }

    fn universe() -> Vec<String> {
        const ALPHABET: [&str; 5] = ["a", "b", "", "$a", "z"];
        let mut all: Vec<String> = Vec::new();
        let mut frontier: Vec<String> = ALPHABET.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5 {
            // The one-level topic "" is the empty string, which is no topic.
            all.extend(frontier.iter().filter(|t| !t.is_empty()).cloned());
            frontier = frontier
                .iter()
                .flat_map(|t| ALPHABET.iter().map(move |l| format!("{t}/{l}")))
                .collect();
        }
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn contains_agrees_with_brute_force(g in filter_strategy(), f in filter_strategy()) {
            prop_assert_eq!(filter::check_filter(&g), Ok(()));
            prop_assert_eq!(filter::check_filter(&f), Ok(()));
            let u = universe();
            let counterexample = u.iter().find(|t| matches(&f, t) && !matches(&g, t));
            if contains(&g, &f) {
                prop_assert!(
                    counterexample.is_none(),
                    "contains({}, {}) but {:?} matches only the inner filter", g, f, counterexample
                );
            } else {
                prop_assert!(
                    counterexample.is_some(),
                    "not contains({}, {}) yet no topic of U tells them apart", g, f
                );
            }
        }

        #[test]
        fn may_subscribe_is_sound(
            sub in prop::collection::vec(filter_strategy(), 0..4),
            f in filter_strategy(),
        ) {
            let g = Grant { sub, pub_: Vec::new(), unrestricted: false };
            if g.may_subscribe(&f) {
                for t in universe().iter().filter(|t| matches(&f, t)) {
                    prop_assert!(g.may_read(t), "{} granted by {:?} but {} is not", f, g.sub, t);
                }
            }
        }
    }

    #[test]
    fn universe_is_as_described() {
        assert_eq!(universe().len(), 5 + 25 + 125 + 625 + 3125 - 1);
    }
}
