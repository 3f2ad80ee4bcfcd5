//! Compiled relabel rules and their application to a label set, following
//! Prometheus' `relabel.Process` step for step.
//!
//! Compilation (in `compile.rs`, re-exported here) validates each
//! [`RelabelConfig`] like Prometheus does when it
//! loads YAML (source label names, action name, regex) and then like
//! `Config.Validate()`, under a [`NameValidation`] scheme: legacy label
//! names (Prometheus 2, and [`Rules::compile`]) or any non-empty UTF-8 name
//! (Prometheus 3's default, where a `$` template target or a `labelmap`
//! replacement need only be non-empty). A `replace` whose expanded target
//! is invalid under the scheme is skipped, as in Prometheus. Regexes are compiled
//! once, anchored as `^(?s:…)$` like Prometheus' `NewRegexp`.
//!
//! Processing: rules run in order on a [`Builder`]; `keep`/`drop`/
//! `keepequal`/`dropequal` can drop the series, which stops processing. A
//! series left with no labels is dropped too. Output is sorted by name.

use md5::{Digest, Md5};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::{CaptureLocations, Regex};

use super::builder::{Builder, LabelPair, RuleText, Scratch};
use super::case::{push_lower, push_upper};
use super::config::{parse_configs, Action, RelabelConfig};
use super::template::{expand, push_replace_all};
use super::RelabelError;
use crate::remote_write::{cmp_names, NameValidation};

pub(crate) use super::compile::compile_regex;
pub use super::compile::{RegexError, RuleError};

/// One compiled, validated relabel rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(super) action: Action,
    pub(super) source_labels: Vec<String>,
    pub(super) separator: String,
    pub(super) regex: Regex,
    /// Set when the regex is only words and `word.*` prefixes joined by
    /// `|` (like `container` or `go_.*|process_.*`): comparing strings is
    /// much cheaper than running the regex on every label name.
    pub(super) literals: Option<Literals>,
    /// The config left `regex` unset, so `regex` is Prometheus' default.
    pub(super) default_regex: bool,
    /// A `replace` whose regex is `(.*)` and replacement `$1` with a fixed
    /// target: the value is the joined source labels as they are.
    pub(super) copies_source: bool,
    /// `target_label` contains `$`, so it is a template to expand.
    pub(super) target_is_template: bool,
    /// `target_label` or `replacement` contains `$`: `replace` needs the
    /// capture groups, not just whether the regex matches.
    pub(super) needs_captures: bool,
    pub(super) modulus: u64,
    pub(super) target_label: String,
    pub(super) replacement: String,
    /// Which expanded `replace` targets are valid label names.
    pub(super) names: NameValidation,
}

/// The strings a literal-only regex matches (see [`Rule::literals`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Literals {
    /// Matched exactly.
    pub(super) words: Vec<String>,
    /// Matched by every string that starts with one of them.
    pub(super) prefixes: Vec<String>,
}

/// An ordered list of compiled relabel rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Tells compiled rule lists apart, so that a [`Scratch`] used with
    /// another list drops the capture positions made for this one's
    /// regexes. Clones share it (and their regexes).
    id: u64,
}

impl Rules {
    /// Compiles and validates `configs` with legacy label names
    /// (Prometheus 2). The error names the first bad rule's 0-based position.
    pub fn compile(configs: &[RelabelConfig]) -> Result<Rules, RelabelError> {
        Rules::compile_with(configs, NameValidation::Legacy)
    }

    /// [`Rules::compile`] with label names validated under `names`.
    pub fn compile_with(
        configs: &[RelabelConfig],
        names: NameValidation,
    ) -> Result<Rules, RelabelError> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(index, cfg)| {
                Rule::compile(cfg, names)
                    .map_err(|error| RelabelError::InvalidRule { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Rules { rules, id })
    }

    /// Parses a YAML list of rules and compiles it.
    pub fn from_yaml(yaml: &str) -> Result<Rules, RelabelError> {
        Rules::compile(&parse_configs(yaml)?)
    }

    /// The compiled rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules to `labels` (sorted by name, unique names; an
    /// unsorted input is sorted first). Returns false if the series is
    /// dropped, in which case `labels` is left empty. On true, `labels` is
    /// the relabeled set, sorted by name and non-empty. As in Prometheus,
    /// labels with empty values count as absent and are removed.
    pub fn process(&self, labels: &mut Vec<(String, String)>) -> bool {
        self.process_any(labels)
    }

    /// [`Rules::process`] for any [`LabelPair`], e.g. the remote-write labels
    /// of a decoded series, which the router relabels in place: unchanged
    /// labels are moved, never copied. (`process` itself stays non-generic
    /// so that callers passing an untyped `Vec::new()` still compile.)
    pub fn process_any<L: LabelPair>(&self, labels: &mut Vec<L>) -> bool {
        self.process_with(labels, &mut Scratch::default())
    }

    /// [`Rules::process_any`] with buffers kept from the series before
    /// (one [`Scratch`] per thread, reused for every series): the strings of
    /// the labels the rules set come from `scratch`, and once the caller has
    /// written the series it can hand them back ([`Scratch::give`]).
    pub fn process_with<L: LabelPair>(&self, labels: &mut Vec<L>, scratch: &mut Scratch) -> bool {
        if labels
            .windows(2)
            .any(|w| cmp_names(w[0].name(), w[1].name()).is_gt())
        {
            labels.sort_by(|a, b| cmp_names(a.name(), b.name()));
        }
        let Scratch {
            set,
            text,
            captures,
            rules,
        } = scratch;
        if *rules != self.id {
            captures.clear();
            *rules = self.id;
        }
        captures.resize_with(self.rules.len(), || None);
        let mut builder = Builder::new(std::mem::take(labels), set);
        for (rule, captures) in self.rules.iter().zip(captures.iter_mut()) {
            if !rule.apply(&mut builder, text, captures) {
                // Hand the emptied vector back: the caller reuses it.
                *labels = builder.into_cleared();
                return false;
            }
        }
        *labels = builder.finish();
        !labels.is_empty()
    }
}

impl Rule {
    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Applies the rule; false means the series is dropped. `text` holds
    /// scratch buffers reused across rules, `captures` this rule's capture
    /// positions, kept from series to series.
    fn apply<L: LabelPair>(
        &self,
        b: &mut Builder<L>,
        text: &mut RuleText,
        captures: &mut Option<CaptureLocations>,
    ) -> bool {
        let RuleText {
            joined,
            mapped,
            ends,
        } = text;
        joined.clear();
        for (i, name) in self.source_labels.iter().enumerate() {
            if i > 0 {
                joined.push_str(&self.separator);
            }
            joined.push_str(b.get(name));
        }
        let val = joined.as_str();

        match self.action {
            Action::Drop => return !self.matches(val),
            Action::Keep => return self.matches(val),
            Action::DropEqual => return b.get(&self.target_label) != val,
            Action::KeepEqual => return b.get(&self.target_label) == val,
            Action::Replace => self.replace(b, val, mapped, captures),
            Action::Lowercase => {
                let mut value = b.string();
                push_lower(&mut value, val);
                b.set(&self.target_label, value);
            }
            Action::Uppercase => {
                let mut value = b.string();
                push_upper(&mut value, val);
                b.set(&self.target_label, value);
            }
            Action::HashMod => {
                if let Some(m) = hashmod(val, self.modulus) {
                    let mut value = b.string();
                    // Writing to a String cannot fail.
                    let _ = write!(value, "{m}");
                    b.set(&self.target_label, value);
                }
            }
            Action::LabelMap => {
                // Map every label first (Range iterates a snapshot), into
                // `mapped`, then set them.
                let locs = captures.get_or_insert_with(|| self.regex.capture_locations());
                mapped.clear();
                ends.clear();
                for (name, value) in b.range() {
                    if self.regex.is_match(name) {
                        push_replace_all(mapped, &self.regex, name, &self.replacement, locs);
                        let name_end = mapped.len();
                        mapped.push_str(value);
                        ends.push((name_end, mapped.len()));
                    }
                }
                let mut start = 0;
                for &(name_end, value_end) in ends.iter() {
                    let value = b.string_of(&mapped[name_end..value_end]);
                    b.set(&mapped[start..name_end], value);
                    start = value_end;
                }
            }
            Action::LabelDrop | Action::LabelKeep => {
                let drop_matching = self.action == Action::LabelDrop;
                b.retain_names(|name| self.matches(name) != drop_matching);
            }
        }
        true
    }

    /// Whether the (anchored) regex matches all of `s`.
    fn matches(&self, s: &str) -> bool {
        match &self.literals {
            Some(literals) => {
                literals.words.iter().any(|w| w == s)
                    || literals.prefixes.iter().any(|p| s.starts_with(p.as_str()))
            }
            None => self.regex.is_match(s),
        }
    }

    /// `replace`; `target` is a buffer for an expanded target name.
    fn replace<L: LabelPair>(
        &self,
        b: &mut Builder<L>,
        val: &str,
        target: &mut String,
        captures: &mut Option<CaptureLocations>,
    ) {
        // Prometheus' fast path; same result as the general path below.
        if val.is_empty() && self.default_regex && !self.needs_captures {
            let value = b.string_of(&self.replacement);
            b.set(&self.target_label, value);
            return;
        }
        // `(.*)` always matches and `$1` is all of `val`.
        if self.copies_source {
            let value = b.string_of(val);
            b.set(&self.target_label, value);
            return;
        }
        // Without `$` references both templates expand to themselves, so
        // whether the regex matches is all we need: no capture groups.
        // (A `$`-free target was validated as a label name at compile time.)
        if !self.needs_captures {
            if self.matches(val) {
                let value = b.string_of(&self.replacement);
                b.set(&self.target_label, value);
            }
            return;
        }
        let caps = captures.get_or_insert_with(|| self.regex.capture_locations());
        // No match: no replacement.
        if self.regex.captures_read(caps, val).is_none() {
            return;
        }
        let group = |i: usize| caps.get(i).and_then(|(start, end)| val.get(start..end));
        let target = if self.target_is_template {
            target.clear();
            expand(target, &self.target_label, &self.regex, group);
            target.as_str()
        } else {
            self.target_label.as_str()
        };
        // An invalid expanded target name skips the rule.
        if !self.names.is_valid(target) {
            return;
        }
        let mut value = b.string();
        expand(&mut value, &self.replacement, &self.regex, group);
        // An empty value deletes the target.
        b.set(target, value);
    }
}

/// MD5 of `val`, last 8 bytes of the 16-byte sum read as big-endian u64, mod
/// `modulus` (Prometheus keeps the last 8 bytes for backward compatibility).
/// None only for modulus 0, which validation rejects.
fn hashmod(val: &str, modulus: u64) -> Option<u64> {
    let sum = Md5::digest(val.as_bytes());
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&sum[8..16]);
    u64::from_be_bytes(tail).checked_rem(modulus)
}
