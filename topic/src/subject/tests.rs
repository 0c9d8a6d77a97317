use super::*;
use crate::{check_filter, check_topic_name, matches};
use proptest::prelude::*;

const P: &str = "mqws.log";

/// A literal NATS subject as this module promises them: non-empty tokens of printable ASCII,
/// no whitespace, no bare wildcard.
fn valid_subject(s: &str) -> bool {
    s.split('.').all(|t| {
        !t.is_empty()
            && t != "*"
            && t != ">"
            && t.chars()
                .all(|c| c.is_ascii_graphic() && !c.is_whitespace())
    })
}

/// A NATS subject filter: like a subject, but `*` may be a token and `>` the last one.
fn valid_filter(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    tokens
        .iter()
        .enumerate()
        .all(|(i, t)| (*t == ">" && i + 1 == tokens.len()) || *t == "*" || valid_subject(t))
}

/// Reference NATS matching: `*` one token, `>` one or more trailing tokens.
fn nats_match(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn round_trip(topic: &str) -> String {
    let subject = topic_to_subject(P, topic);
    assert!(valid_subject(&subject), "{subject:?}");
    assert_eq!(subject_to_topic(P, &subject).as_deref(), Ok(topic));
    subject
}

#[test]
fn common_topics_stay_readable() {
    assert_eq!(round_trip("site/a/tags/x"), "mqws.log.site.a.tags.x");
    assert_eq!(
        round_trip("readers/r-17/status"),
        "mqws.log.readers.r-17.status"
    );
    assert_eq!(round_trip("a_b/C:9/x@y,z"), "mqws.log.a_b.C:9.x@y,z");
}

#[test]
fn empty_levels() {
    assert_eq!(round_trip("a//b"), "mqws.log.a.~.b");
    assert_eq!(round_trip("/a"), "mqws.log.~.a");
    assert_eq!(round_trip("a/"), "mqws.log.a.~");
    assert_eq!(round_trip("/"), "mqws.log.~.~");
    assert_eq!(round_trip(""), "mqws.log.~");
}

#[test]
fn dollar_topics() {
    assert_eq!(round_trip("$SYS/broker/load"), "mqws.log.$SYS.broker.load");
    assert_eq!(round_trip("$"), "mqws.log.$");
}

#[test]
fn unsafe_levels_are_escaped() {
    for (topic, subject) in [
        ("a.b/c", "mqws.log.~612e62.c"),
        (".", "mqws.log.~2e"),
        ("a b", "mqws.log.~612062"),
        ("\t", "mqws.log.~09"),
        ("x\r\n", "mqws.log.~780d0a"),
        ("*", "mqws.log.~2a"),
        (">", "mqws.log.~3e"),
        ("a*b/c>d", "mqws.log.~612a62.~633e64"),
        ("~", "mqws.log.~7e"),
        ("~7e", "mqws.log.~7e3765"),
        ("a~", "mqws.log.~617e"),
        ("Größe", "mqws.log.~4772c3b6c39f65"),
        ("🙂/x", "mqws.log.~f09f9982.x"),
        ("\u{a0}", "mqws.log.~c2a0"),
    ] {
        assert_eq!(round_trip(topic), subject, "{topic:?}");
    }
}

#[test]
fn refuses_what_it_never_writes() {
    use SubjectError::*;
    for (subject, err) in [
        ("other.a", NotUnderPrefix),
        ("mqws.log", NotUnderPrefix),
        ("mqws.logx.a", NotUnderPrefix),
        ("mqws.log.", EmptyToken { index: 0 }),
        ("mqws.log.a..b", EmptyToken { index: 1 }),
        ("mqws.log.a.*", UnsafeChar { index: 1, ch: '*' }),
        ("mqws.log.>", UnsafeChar { index: 0, ch: '>' }),
        ("mqws.log.a b", UnsafeChar { index: 0, ch: ' ' }),
        ("mqws.log.a/b", UnsafeChar { index: 0, ch: '/' }),
        ("mqws.log.é", UnsafeChar { index: 0, ch: 'é' }),
        ("mqws.log.~6", BadEscape { index: 0 }),
        ("mqws.log.~6g", BadEscape { index: 0 }),
        ("mqws.log.~2A", BadEscape { index: 0 }),
        ("mqws.log.a.~~", BadEscape { index: 1 }),
        ("mqws.log.~ff", InvalidUtf8 { index: 0 }),
        ("mqws.log.~2f", Slash { index: 0 }),
        ("mqws.log.~61", NonCanonical { index: 0 }),
    ] {
        assert_eq!(subject_to_topic(P, subject), Err(err), "{subject:?}");
    }
}

#[test]
fn filters_become_subject_filters() {
    let exact = |subjects: &[&str]| SubjectFilters {
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        exact: true,
    };
    let inexact = |subjects: &[&str]| SubjectFilters {
        exact: false,
        ..exact(subjects)
    };
    for (filter, want) in [
        ("site/a/tags/x", exact(&["p.site.a.tags.x"])),
        (
            "site/+/tags/#",
            exact(&["p.site.*.tags", "p.site.*.tags.>"]),
        ),
        ("a/+/#", exact(&["p.a.>"])),
        ("a//+", exact(&["p.a.~.*"])),
        ("a.b/+", exact(&["p.~612e62.*"])),
        ("$SYS/#", exact(&["p.$SYS", "p.$SYS.>"])),
        ("#", inexact(&["p.>"])),
        ("+/#", inexact(&["p.>"])),
        ("+", inexact(&["p.*"])),
        ("+/x/#", inexact(&["p.*.x", "p.*.x.>"])),
        ("/+", exact(&["p.~.*"])),
    ] {
        assert_eq!(filter_to_subjects("p", filter), want, "{filter}");
    }
    let all = filter_to_subjects("p", "#");
    assert!(all.admits("a/b"));
    assert!(!all.admits("$SYS/x"));
    assert!(filter_to_subjects("p", "$SYS/#").admits("$SYS/x"));
}

#[test]
fn overlap_and_groups() {
    assert!(subjects_overlap("p.a.*.c", "p.a.b.*"));
    assert!(subjects_overlap("p.>", "p.a"));
    assert!(subjects_overlap("p.*.>", "p.a.b.c"));
    assert!(!subjects_overlap("p.a", "p.a.>"));
    assert!(!subjects_overlap("p.*", "p.a.b"));
    assert!(!subjects_overlap("p.a.b", "p.a.c"));
    let subjects: Vec<String> = ["a/+/c", "a/b/+", "a/b/c", "x/#", "x/y", "a/+/c"]
        .iter()
        .flat_map(|f| filter_to_subjects("p", f).subjects)
        .collect();
    let groups = disjoint_groups(&subjects);
    assert_eq!(
        groups,
        vec![vec!["p.a.*.c", "p.x", "p.x.>"], vec!["p.a.b.*"],]
    );
    assert_eq!(
        disjoint_groups(&["p.>".to_owned(), "p.a".to_owned()]),
        vec![vec!["p.>"]]
    );
    assert!(disjoint_groups(&[]).is_empty());
}

fn topic_level() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["site", "a", "tags", "r-17", "$SYS", "$x", "x@y"]),
        Just(""),
        prop::sample::select(vec![
            ".", " ", "*", ">", "~", "~7e", "a.b", "a b", "a*", ">b", "Größe", "🙂", "\t", "a~",
        ]),
    ]
    .prop_map(str::to_owned)
    .boxed()
    .prop_union(any::<String>().boxed())
}

/// Brute-force universe for overlap: every subject of 1 to 5 tokens over `a`, `b`, `c`.
fn universe() -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let mut layer = vec![String::new()];
    for _ in 0..5 {
        layer = layer
            .iter()
            .flat_map(|s| {
                ["a", "b", "c"].map(|t| {
                    if s.is_empty() {
                        t.to_owned()
                    } else {
                        format!("{s}.{t}")
                    }
                })
            })
            .collect();
        all.extend(layer.iter().cloned());
    }
    all
}

fn nats_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "*"]), 0..4),
        any::<bool>(),
    )
        .prop_filter_map("empty", |(mut tokens, tail)| {
            if tail {
                tokens.push(">");
            }
            (!tokens.is_empty()).then(|| tokens.join("."))
        })
}

fn mqtt_level() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "", "$s", "a.b"]).prop_map(str::to_owned)
}

proptest! {
    #[test]
    fn topics_round_trip(levels in prop::collection::vec(topic_level(), 1..6)) {
        let topic = levels.join("/");
        prop_assume!(!topic.is_empty() && check_topic_name(&topic).is_ok());
        let subject = topic_to_subject(P, &topic);
        prop_assert!(valid_subject(&subject), "{:?}", subject);
        prop_assert!(subject.len() <= P.len() + 2 + 2 * topic.len());
        prop_assert_eq!(subject_to_topic(P, &subject), Ok(topic));
    }

    #[test]
    fn any_string_round_trips(s in any::<String>()) {
        let subject = topic_to_subject(P, &s);
        prop_assert!(valid_subject(&subject), "{:?}", subject);
        prop_assert_eq!(subject_to_topic(P, &subject), Ok(s));
    }

    #[test]
    fn subject_filters_agree_with_matches(
        levels in prop::collection::vec(prop_oneof![mqtt_level(), Just("+".to_owned())], 0..4),
        hash in any::<bool>(),
        topics in prop::collection::vec(prop::collection::vec(mqtt_level(), 1..5), 1..16),
    ) {
        let mut levels = levels;
        if hash {
            levels.push("#".to_owned());
        }
        let filter = levels.join("/");
        prop_assume!(check_filter(&filter).is_ok());
        let sf = filter_to_subjects(P, &filter);
        for (i, s) in sf.subjects.iter().enumerate() {
            prop_assert!(valid_filter(s), "{:?}", s);
            for t in &sf.subjects[i + 1..] {
                prop_assert!(!subjects_overlap(s, t), "{} {}", s, t);
            }
        }
        for topic in topics.iter().map(|lv| lv.join("/")) {
            let subject = topic_to_subject(P, &topic);
            let hit = sf.subjects.iter().any(|s| nats_match(s, &subject));
            let want = matches(&filter, &topic);
            prop_assert_eq!(want, hit && sf.admits(&topic), "{} {} {:?}", filter, topic, sf);
            prop_assert!(!want || hit, "over-approximation only");
            if sf.exact {
                prop_assert_eq!(want, hit);
            }
        }
    }

    #[test]
    fn overlap_and_cover_agree_with_brute_force(a in nats_filter(), b in nats_filter()) {
        let all = universe();
        let common = all.iter().any(|s| nats_match(&a, s) && nats_match(&b, s));
        prop_assert_eq!(subjects_overlap(&a, &b), common);
        prop_assert_eq!(subjects_overlap(&b, &a), common);
        let covered = all.iter().all(|s| !nats_match(&b, s) || nats_match(&a, s));
        prop_assert_eq!(covers(&a, &b), covered, "{} covers {}", a, b);
    }

    #[test]
    fn groups_are_disjoint_and_match_the_same(filters in prop::collection::vec(nats_filter(), 0..9)) {
        let groups = disjoint_groups(&filters);
        let kept: Vec<&String> = groups.iter().flatten().collect();
        for group in &groups {
            prop_assert!(!group.is_empty());
            for (i, f) in group.iter().enumerate() {
                for g in &group[i + 1..] {
                    prop_assert!(!subjects_overlap(f, g), "{} {}", f, g);
                }
            }
        }
        for (i, f) in kept.iter().enumerate() {
            prop_assert!(filters.contains(f));
            prop_assert!(!kept[i + 1..].contains(f), "{} twice", f);
        }
        let all = universe();
        for s in &all {
            prop_assert_eq!(
                filters.iter().any(|f| nats_match(f, s)),
                kept.iter().any(|f| nats_match(f, s)),
                "{}", s
            );
        }
        for f in filters.iter().filter(|f| !kept.contains(f)) {
            prop_assert!(
                kept.iter().any(|g| all.iter().all(|s| !nats_match(f, s) || nats_match(g, s))),
                "dropped {} is covered by no kept filter", f
            );
        }
        // Greedy colouring never needs more than one group past the most overlaps.
        let max_degree = kept
            .iter()
            .map(|f| kept.iter().filter(|g| *g != f && subjects_overlap(f, g)).count())
            .max()
            .unwrap_or(0);
        prop_assert!(groups.len() <= max_degree + 1);
    }
}
