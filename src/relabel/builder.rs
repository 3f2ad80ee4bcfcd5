//! A label-set builder that behaves like Prometheus' `labels.Builder`, which
//! relabeling mutates rule by rule.
//!
//! Mirroring it (rather than editing a sorted vector in place) matters for
//! exactness: `Range` visits untouched base labels first, in name order, then
//! labels added or overwritten by earlier rules, in insertion order. With
//! `labelmap`, when two labels map to the same new name, the last one visited
//! wins, so this order decides the result.
//!
//! Prometheus keeps the base intact and records deletions in a `del` list.
//! Here `base` holds only the *untouched* base labels instead: a label that
//! is deleted or overwritten is removed from it. That gives the same `Get`,
//! `Range` and result, and lets the label set be moved in and out without
//! copying any string, which matters because this runs for every series on
//! every route.
//!
//! Invariants: `base` is sorted by name and holds no empty values and no
//! name that is in `add`; `add` holds labels set since (unique names,
//! non-empty values) in insertion order.

use crate::remote_write::cmp_names;
use crate::remote_write::proto::v1::Label;

/// A label the relabel engine can work on: a `(name, value)` pair, or the
/// remote-write [`Label`], so the router relabels decoded series in place.
pub trait LabelPair {
    /// The label name.
    fn name(&self) -> &str;
    /// The label value.
    fn value(&self) -> &str;
    /// Builds a label from its parts.
    fn from_parts(name: String, value: String) -> Self;
}

impl LabelPair for (String, String) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
    fn from_parts(name: String, value: String) -> Self {
        (name, value)
    }
}

impl LabelPair for Label {
    fn name(&self) -> &str {
        &self.name
    }
    fn value(&self) -> &str {
        &self.value
    }
    fn from_parts(name: String, value: String) -> Self {
        Label { name, value }
    }
}

/// Buffers relabeling reuses from series to series, so that a caller that
/// relabels many series ([`super::Rules::process_with`]) allocates nothing
/// per series once they are warm: the labels rules set and spare strings
/// for them, the joined source values and each rule's capture positions.
#[derive(Default)]
pub struct Scratch {
    pub(crate) set: SetLabels,
    pub(crate) text: RuleText,
    /// Capture positions, one slot per rule index, made on first use...
    pub(crate) captures: Vec<Option<regex::CaptureLocations>>,
    /// ...for the regexes of the rule list with this id.
    pub(crate) rules: u64,
}

impl Scratch {
    /// An empty string, reusing a spare one's buffer when there is one.
    pub fn string(&mut self) -> String {
        self.set.string()
    }

    /// Takes `s` back as a spare once its label has been written.
    pub fn give(&mut self, s: String) {
        self.set.give(s)
    }
}

/// Text one rule builds before it sets anything, kept from rule to rule.
#[derive(Default)]
pub(crate) struct RuleText {
    /// The joined source label values.
    pub(crate) joined: String,
    /// A `replace`'s expanded target name; `labelmap`'s mapped labels, each
    /// its new name then its value...
    pub(crate) mapped: String,
    /// ...which end where these say: (name end, value end) per label.
    pub(crate) ends: Vec<(usize, usize)>,
}

/// The labels set since a [`Builder`] started (unique names, non-empty
/// values, in insertion order) and emptied strings to set more with.
#[derive(Default)]
pub(crate) struct SetLabels {
    add: Vec<(String, String)>,
    spare: Vec<String>,
}

impl SetLabels {
    /// Spare strings kept: a few per series is all relabeling sets.
    const MAX_SPARE: usize = 64;

    fn string(&mut self) -> String {
        self.spare.pop().unwrap_or_default()
    }

    fn give(&mut self, s: String) {
        give(&mut self.spare, s);
    }

    /// Empties `add`, keeping its strings as spares and its capacity.
    fn clear(&mut self) {
        for (name, value) in self.add.drain(..) {
            give(&mut self.spare, name);
            give(&mut self.spare, value);
        }
    }
}

fn give(spare: &mut Vec<String>, mut s: String) {
    if spare.len() < SetLabels::MAX_SPARE && s.capacity() > 0 {
        s.clear();
        spare.push(s);
    }
}

/// Prometheus `labels.Builder` over owned labels.
pub(crate) struct Builder<'s, L> {
    base: Vec<L>,
    /// `add` of the module docs, with the spare strings.
    set: &'s mut SetLabels,
}

impl<'s, L: LabelPair> Builder<'s, L> {
    /// Starts from `base`, which must be sorted by name; `set` must hold no
    /// labels (as [`Builder::finish`] and [`Builder::into_cleared`] leave it).
    pub(crate) fn new(mut base: Vec<L>, set: &'s mut SetLabels) -> Self {
        debug_assert!(set.add.is_empty());
        // Empty means absent in Prometheus.
        base.retain(|label| !label.value().is_empty());
        Builder { base, set }
    }

    /// An empty string, from the spare ones when there is one.
    pub(crate) fn string(&mut self) -> String {
        self.set.string()
    }

    /// A string holding `text`, from the spare ones.
    pub(crate) fn string_of(&mut self, text: &str) -> String {
        let mut s = self.set.string();
        s.push_str(text);
        s
    }

    /// The current value of `name`, or "" if absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        if let Some((_, value)) = self.set.add.iter().find(|(n, _)| n == name) {
            return value;
        }
        match self.base_index(name) {
            Some(i) => self.base[i].value(),
            None => "",
        }
    }

    /// Sets `name` to `value`; an empty value deletes the label.
    pub(crate) fn set(&mut self, name: &str, value: String) {
        if value.is_empty() {
            self.set.give(value);
            self.del(name);
            return;
        }
        if let Some(i) = self.set.add.iter().position(|(n, _)| n == name) {
            let old = std::mem::replace(&mut self.set.add[i].1, value);
            self.set.give(old);
            return;
        }
        // An overwritten base label moves to `add`, as in Prometheus' Range.
        if let Some(i) = self.base_index(name) {
            self.base.remove(i);
        }
        let name = self.string_of(name);
        self.set.add.push((name, value));
    }

    /// Deletes `name`.
    pub(crate) fn del(&mut self, name: &str) {
        if let Some(i) = self.set.add.iter().position(|(n, _)| n == name) {
            let (n, v) = self.set.add.remove(i);
            self.set.give(n);
            self.set.give(v);
        }
        if let Some(i) = self.base_index(name) {
            self.base.remove(i);
        }
    }

    /// Keeps only the labels whose name satisfies `keep` (`labeldrop` and
    /// `labelkeep`). Same result as collecting the doomed names from
    /// [`Builder::range`] and deleting them one by one, without the copies.
    pub(crate) fn retain_names(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.base.retain(|label| keep(label.name()));
        let SetLabels { add, spare } = &mut *self.set;
        add.retain_mut(|(name, value)| {
            let kept = keep(name);
            if !kept {
                give(spare, std::mem::take(name));
                give(spare, std::mem::take(value));
            }
            kept
        });
    }

    /// The current labels in Prometheus' `Builder.Range` order. Callers
    /// collect what they need before mutating, which gives Range's snapshot
    /// semantics.
    pub(crate) fn range(&self) -> impl Iterator<Item = (&str, &str)> {
        let untouched = self.base.iter().map(|label| (label.name(), label.value()));
        untouched.chain(
            self.set
                .add
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
    }

    /// The final label set, sorted by name.
    pub(crate) fn finish(self) -> Vec<L> {
        let Builder { mut base, set } = self;
        // Rules add few labels, so inserting each in place costs fewer
        // comparisons than appending them all and sorting.
        base.reserve(set.add.len());
        for (name, value) in set.add.drain(..) {
            let i = base.partition_point(|label| cmp_names(label.name(), &name).is_lt());
            base.insert(i, L::from_parts(name, value));
        }
        base
    }

    /// The builder's vector, emptied, for reuse by the caller.
    pub(crate) fn into_cleared(self) -> Vec<L> {
        let Builder { mut base, set } = self;
        base.clear();
        set.clear();
        base
    }

    /// Where `name` is in `base`. Series carry a dozen labels or so, and
    /// most names differ in length, so a scan for equality (length first)
    /// costs less than a binary search that compares bytes at every step.
    fn base_index(&self, name: &str) -> Option<usize> {
        self.base.iter().position(|label| label.name() == name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn get_set_del() {
        let mut set = SetLabels::default();
        let mut b = Builder::new(pairs(&[("a", "1"), ("b", "2")]), &mut set);
        assert_eq!(b.get("a"), "1");
        assert_eq!(b.get("zz"), "");
        b.set("a", "x".into());
        assert_eq!(b.get("a"), "x");
        b.del("b");
        assert_eq!(b.get("b"), "");
        b.set("b", "again".into());
        assert_eq!(b.get("b"), "again");
        b.set("c", String::new());
        assert_eq!(b.get("c"), "");
        assert_eq!(b.finish(), pairs(&[("a", "x"), ("b", "again")]));
    }

    #[test]
    fn empty_base_values_are_absent() {
        let mut set = SetLabels::default();
        let b = Builder::new(pairs(&[("a", ""), ("b", "2")]), &mut set);
        assert_eq!(b.get("a"), "");
        assert_eq!(b.range().collect::<Vec<_>>(), vec![("b", "2")]);
        assert_eq!(b.finish(), pairs(&[("b", "2")]));
    }

    #[test]
    fn range_order_is_base_then_added_in_insertion_order() {
        let mut set = SetLabels::default();
        let mut b = Builder::new(pairs(&[("a", "1"), ("b", "2"), ("c", "3")]), &mut set);
        b.set("z", "26".into());
        b.set("a", "x".into());
        b.del("c");
        assert_eq!(
            b.range().collect::<Vec<_>>(),
            vec![("b", "2"), ("z", "26"), ("a", "x")]
        );
    }

    #[test]
    fn unmodified_builder_returns_base() {
        let mut set = SetLabels::default();
        let base = pairs(&[("a", "1")]);
        assert_eq!(Builder::new(base.clone(), &mut set).finish(), base);
    }

    /// Strings of labels that were set and then deleted, overwritten or
    /// dropped go back to the spares; a finished set is empty again.
    #[test]
    fn strings_are_handed_back_and_reused() {
        let mut set = SetLabels::default();
        let mut b = Builder::new(pairs(&[("a", "1")]), &mut set);
        let x = b.string_of("x");
        b.set("z", x);
        let y = b.string_of("y");
        b.set("z", y); // the old value "x" is a spare now
        assert_eq!(b.set.spare.len(), 1);
        b.retain_names(|name| name != "z");
        assert_eq!(b.set.spare.len(), 3);
        assert_eq!(b.string(), "");
        assert_eq!(b.finish(), pairs(&[("a", "1")]));
        assert!(set.add.is_empty());
        let mut b = Builder::new(pairs(&[("a", "1")]), &mut set);
        let v = b.string_of("2");
        b.set("b", v);
        assert!(b.into_cleared().is_empty());
        assert!(set.add.is_empty());
        assert_eq!(set.spare.len(), 2);
    }
}
