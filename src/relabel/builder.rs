//! A label-set builder that behaves like Prometheus' `labels.Builder`, which
//! relabeling mutates rule by rule.
//!
//! Mirroring it (rather than editing a sorted vector in place) matters for
//! exactness: `Range` visits untouched base labels first, in name order, then
//! labels added or overwritten by earlier rules, in insertion order. With
//! `labelmap`, when two labels map to the same new name, the last one visited
//! wins, so this order decides the result.
//!
//! Invariants: `base` is the input, sorted by name and never modified; `add`
//! holds labels set since (unique names, non-empty values); `del` names
//! labels removed since, including base labels with empty values (empty
//! means absent in Prometheus).

/// Prometheus `labels.Builder` over owned `(name, value)` pairs.
pub(crate) struct Builder {
    base: Vec<(String, String)>,
    del: Vec<String>,
    add: Vec<(String, String)>,
}

impl Builder {
    /// Starts from `base`, which must be sorted by name.
    pub(crate) fn new(base: Vec<(String, String)>) -> Self {
        let del = base
            .iter()
            .filter(|(_, value)| value.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        Builder {
            base,
            del,
            add: Vec::new(),
        }
    }

    /// The current value of `name`, or "" if absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        // Set() does not remove names from `del`, so `add` is checked first.
        if let Some((_, value)) = self.add.iter().find(|(n, _)| n == name) {
            return value;
        }
        if self.del.iter().any(|n| n == name) {
            return "";
        }
        let i = self.base.partition_point(|(n, _)| n.as_str() < name);
        match self.base.get(i) {
            Some((n, value)) if n == name => value,
            _ => "",
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
        self.add.push((name.to_owned(), value));
    }

    /// Deletes `name`.
    pub(crate) fn del(&mut self, name: &str) {
        self.add.retain(|(n, _)| n != name);
        if !self.del.iter().any(|n| n == name) {
            self.del.push(name.to_owned());
        }
    }

    /// The current labels in Prometheus' `Builder.Range` order. Callers
    /// collect what they need before mutating, which gives Range's snapshot
    /// semantics.
    pub(crate) fn range(&self) -> impl Iterator<Item = (&str, &str)> {
        let untouched = self.base.iter().filter(|(name, _)| {
            !self.del.iter().any(|n| n == name) && !self.add.iter().any(|(n, _)| n == name)
        });
        untouched
            .chain(self.add.iter())
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The final label set, sorted by name.
    pub(crate) fn into_labels(self) -> Vec<(String, String)> {
        let Builder { base, del, add } = self;
        if del.is_empty() && add.is_empty() {
            return base;
        }
        let mut labels: Vec<(String, String)> = base
            .into_iter()
            .filter(|(name, _)| {
                !del.iter().any(|n| n == name) && !add.iter().any(|(n, _)| n == name)
            })
            .collect();
        labels.extend(add);
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels
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
