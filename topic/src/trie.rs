//! Subscription index: a trie over filter levels with `+` and `#` branches. Matching a topic
//! visits only the branches its levels can reach.

use std::collections::HashMap;

/// Subscribers keyed by connection id, stored at the node where their filter ends.
#[derive(Debug)]
struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    plus: Option<Box<Node<V>>>,
    /// Filters ending in `#` here.
    hash: HashMap<u64, V>,
    /// Filters ending exactly here.
    exact: HashMap<u64, V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            hash: HashMap::new(),
            exact: HashMap::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.exact.is_empty()
    }
}

/// Filter → subscriber index. `V` is what a match yields (an outbox in the hub).
#[derive(Debug)]
pub struct Trie<V> {
    root: Node<V>,
}

impl<V> Default for Trie<V> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
        }
    }
}

impl<V> Trie<V> {
    /// Adds subscriber `id` under `filter` (valid MQTT syntax); replaces an earlier entry.
    pub fn insert(&mut self, filter: &str, id: u64, value: V) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    node.hash.insert(id, value);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                name => node.children.entry(name.into()).or_default(),
            };
        }
        node.exact.insert(id, value);
    }

    /// Removes subscriber `id` from `filter`, pruning emptied branches.
    pub fn remove(&mut self, filter: &str, id: u64) {
        let levels: Vec<&str> = filter.split('/').collect();
        remove_at(&mut self.root, &levels, id);
    }

    /// Calls `f` for each subscriber whose filter matches `topic`. A subscriber with several
    /// matching filters is visited once per filter; callers deduplicate.
    pub fn for_each_match(&self, topic: &str, f: impl FnMut(u64, &V)) {
        let mut levels = Vec::new();
        self.for_each_match_in(topic, &mut levels, f);
    }

    /// [`Trie::for_each_match`] with a caller-owned buffer for the topic's levels, so a loop
    /// over many topics allocates once.
    pub fn for_each_match_in<'t>(
        &self,
        topic: &'t str,
        levels: &mut Vec<&'t str>,
        mut f: impl FnMut(u64, &V),
    ) {
        levels.clear();
        levels.extend(topic.split('/'));
        let dollar = topic.starts_with('$');
        walk(&self.root, levels, dollar, &mut f);
    }
}

fn remove_at<V>(node: &mut Node<V>, levels: &[&str], id: u64) {
    let Some((first, rest)) = levels.split_first() else {
        node.exact.remove(&id);
        return;
    };
    match *first {
        "#" => {
            node.hash.remove(&id);
        }
        "+" => {
            if let Some(child) = node.plus.as_mut() {
                remove_at(child, rest, id);
                if child.is_empty() {
                    node.plus = None;
                }
            }
        }
        name => {
            if let Some(child) = node.children.get_mut(name) {
                remove_at(child, rest, id);
                if child.is_empty() {
                    node.children.remove(name);
                }
            }
        }
    }
}

/// `skip_wild` is true only at the root of a `$` topic: MQTT keeps `$` topics out of
/// first-level wildcards.
fn walk<V>(node: &Node<V>, levels: &[&str], skip_wild: bool, f: &mut impl FnMut(u64, &V)) {
    if !skip_wild {
        // `a/#` also matches `a` itself, so `#` is checked before consuming a level.
        for (id, v) in &node.hash {
            f(*id, v);
        }
    }
    match levels.split_first() {
        None => {
            for (id, v) in &node.exact {
                f(*id, v);
            }
        }
        Some((first, rest)) => {
            if let Some(child) = node.children.get(*first) {
                walk(child, rest, false, f);
            }
            if !skip_wild {
                if let Some(plus) = &node.plus {
                    walk(plus, rest, false, f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::matches;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn matched(t: &Trie<()>, topic: &str) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        t.for_each_match(topic, |id, _| {
            out.insert(id);
        });
        out
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut t = Trie::default();
        t.insert("site/+/tags/#", 1, ());
        t.insert("#", 2, ());
        t.insert("site/a/tags/x", 3, ());
        t.insert("$SYS/#", 4, ());
        t.insert("+/x", 5, ());
        assert_eq!(matched(&t, "site/a/tags/x"), BTreeSet::from([1, 2, 3]));
        assert_eq!(matched(&t, "site/a/tags"), BTreeSet::from([1, 2]));
        assert_eq!(matched(&t, "other"), BTreeSet::from([2]));
        assert_eq!(matched(&t, "$SYS/x"), BTreeSet::from([4]));
        assert_eq!(matched(&t, "a/x"), BTreeSet::from([2, 5]));
        t.remove("#", 2);
        t.remove("site/+/tags/#", 1);
        assert_eq!(matched(&t, "site/a/tags/x"), BTreeSet::from([3]));
        t.remove("site/a/tags/x", 3);
        t.remove("$SYS/#", 4);
        t.remove("+/x", 5);
        assert!(t.root.is_empty(), "removals prune the trie");
    }

    fn level() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "", "$s"]).prop_map(str::to_owned)
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 1..4),
            any::<bool>(),
        )
            .prop_map(|(mut lv, hash)| {
                if hash {
                    lv.push("#".to_owned());
                }
                lv.join("/")
            })
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference(filters in prop::collection::vec(filter(), 1..12),
                                      topics in prop::collection::vec(prop::collection::vec(level(), 1..5), 1..12)) {
            let mut t = Trie::default();
            for (i, f) in filters.iter().enumerate() {
                t.insert(f, i as u64, ());
            }
            for lv in topics {
                let topic = lv.join("/");
                let expect: BTreeSet<u64> = filters.iter().enumerate()
                    .filter(|(_, f)| matches(f, &topic)).map(|(i, _)| i as u64).collect();
                prop_assert_eq!(matched(&t, &topic), expect, "topic {}", topic);
            }
        }
    }
}
