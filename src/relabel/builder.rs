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

/// Prometheus `labels.Builder` over owned labels.
pub(crate) struct Builder<L> {
    base: Vec<L>,
    add: Vec<(String, String)>,
}

impl<L: LabelPair> Builder<L> {
    /// Starts from `base`, which must be sorted by name.
    pub(crate) fn new(mut base: Vec<L>) -> Self {
        // Empty means absent in Prometheus.
        base.retain(|label| !label.value().is_empty());
        Builder {
            base,
            add: Vec::new(),
        }
    }

    /// The current value of `name`, or "" if absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        if let Some((_, value)) = self.add.iter().find(|(n, _)| n == name) {
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
            self.del(name);
            return;
        }
        if let Some(slot) = self.add.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
            return;
        }
        // An overwritten base label moves to `add`, as in Prometheus' Range.
        if let Some(i) = self.base_index(name) {
            self.base.remove(i);
        }
        self.add.push((name.to_owned(), value));
    }

    /// Deletes `name`.
    pub(crate) fn del(&mut self, name: &str) {
        self.add.retain(|(n, _)| n != name);
        if let Some(i) = self.base_index(name) {
            self.base.remove(i);
        }
    }

    /// Keeps only the labels whose name satisfies `keep` (`labeldrop` and
    /// `labelkeep`). Same result as collecting the doomed names from
    /// [`Builder::range`] and deleting them one by one, without the copies.
    pub(crate) fn retain_names(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.base.retain(|label| keep(label.name()));
        self.add.retain(|(name, _)| keep(name));
    }

    /// The current labels in Prometheus' `Builder.Range` order. Callers
    /// collect what they need before mutating, which gives Range's snapshot
    /// semantics.
    pub(crate) fn range(&self) -> impl Iterator<Item = (&str, &str)> {
        let untouched = self.base.iter().map(|label| (label.name(), label.value()));
        untouched.chain(
            self.add
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
    }

    /// The final label set, sorted by name.
    pub(crate) fn into_labels(self) -> Vec<L> {
        let Builder { mut base, add } = self;
        // Rules add few labels, so inserting each in place costs fewer
        // comparisons than appending them all and sorting.
        base.reserve(add.len());
        for (name, value) in add {
            let i = base.partition_point(|label| cmp_names(label.name(), &name).is_lt());
            base.insert(i, L::from_parts(name, value));
        }
        base
    }

    /// The builder's vector, emptied, for reuse by the caller.
    pub(crate) fn into_cleared(self) -> Vec<L> {
        let mut base = self.base;
        base.clear();
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
        let mut b = Builder::new(pairs(&[("a", "1"), ("b", "2")]));
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
        assert_eq!(b.into_labels(), pairs(&[("a", "x"), ("b", "again")]));
    }

    #[test]
    fn empty_base_values_are_absent() {
        let b = Builder::new(pairs(&[("a", ""), ("b", "2")]));
        assert_eq!(b.get("a"), "");
        assert_eq!(b.range().collect::<Vec<_>>(), vec![("b", "2")]);
        assert_eq!(b.into_labels(), pairs(&[("b", "2")]));
    }

    #[test]
    fn range_order_is_base_then_added_in_insertion_order() {
        let mut b = Builder::new(pairs(&[("a", "1"), ("b", "2"), ("c", "3")]));
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
        let base = pairs(&[("a", "1")]);
        assert_eq!(Builder::new(base.clone()).into_labels(), base);
    }
}
