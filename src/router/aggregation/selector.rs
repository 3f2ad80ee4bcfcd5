//! PromQL series selectors, as stream aggregation's `match` uses them:
//! parsing and matching against one label set.
//!
//! Grammar: `metric`, `metric{matchers}`, `{matchers}`, where matchers are
//! `name op "value"` separated by commas (a trailing comma is allowed), op
//! one of `=`, `!=`, `=~`, `!~`. Names are PromQL identifiers or, as
//! Prometheus 3 allows, quoted strings (`{"service.name"="x"}`); a quoted
//! string standing alone in the braces is the metric name
//! (`{"http.requests"}`). Values are double- or single-quoted strings with
//! Go escapes, or backquoted raw strings. VictoriaMetrics' `or` between
//! matcher groups (`{a="1" or b="2"}`) is accepted: the selector matches
//! when any group does.
//!
//! Semantics (PromQL): a label the series lacks has the value `""`, so
//! `{x=""}` and `{x!~".+"}` match series without `x`; regexes are fully
//! anchored (`^(?s:re)$`, Go RE2 syntax).
//!
//! The parser itself (`Selector::parse`) is `selector_parser.rs`, which
//! depends on this module, not the other way round; this module holds the
//! selector types and matching.

use regex::Regex;

use crate::relabel::engine::compile_regex;
use crate::relabel::{LabelPair, RegexError};

/// Why a selector does not parse.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SelectorError {
    /// The text is not a selector: what was expected and where.
    #[error("{what} at offset {offset} of {text:?}")]
    Syntax {
        /// What is wrong, e.g. `missing '}'`.
        what: &'static str,
        /// Byte offset into `text`.
        offset: usize,
        /// The whole selector.
        text: String,
    },
    /// `metric{__name__=...}`.
    #[error("metric name {name:?} given twice (before the braces and as __name__) in {text:?}")]
    NameTwice {
        /// The name before the braces.
        name: String,
        /// The whole selector.
        text: String,
    },
    /// A `=~` or `!~` value that does not compile.
    #[error("label {label:?}: bad regex {pattern:?}: {error}")]
    Regex {
        /// The matcher's label.
        label: String,
        /// The pattern as written.
        pattern: String,
        /// Why it does not compile.
        error: RegexError,
    },
}

/// How a matcher compares a label value.
#[derive(Debug, Clone)]
pub enum Op {
    /// `=`
    Eq(String),
    /// `!=`
    Ne(String),
    /// `=~`, with the source pattern kept for messages.
    Re(Pattern, String),
    /// `!~`
    NotRe(Pattern, String),
}

/// A compiled `=~` / `!~` pattern. Alternations of plain literals, each
/// optionally followed by `.*` (`a|b`, `process_.*|node_.*`, the common
/// metric-name matchers), are compared as strings; everything else goes
/// to the regex engine. Both full-match, as PromQL does.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `(literal, is_prefix)` alternatives.
    Literals(Vec<(String, bool)>),
    /// Anything else.
    Regex(Regex),
}

impl Pattern {
    /// Compiles `pattern` (Go RE2 syntax).
    pub fn new(pattern: &str) -> Result<Pattern, RegexError> {
        // Compiled in every case, so a pattern is refused exactly when the
        // regex engine refuses it.
        let regex = compile_regex(pattern)?;
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let literals: Option<Vec<(String, bool)>> = pattern
            .split('|')
            .map(|alt| match alt.strip_suffix(".*") {
                Some(prefix) if prefix.chars().all(plain) => Some((prefix.to_owned(), true)),
                _ if alt.chars().all(plain) => Some((alt.to_owned(), false)),
                _ => None,
            })
            .collect();
        Ok(match literals {
            Some(l) => Pattern::Literals(l),
            None => Pattern::Regex(regex),
        })
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Pattern::Literals(alts) => alts.iter().any(|(lit, prefix)| match prefix {
                true => value.starts_with(lit.as_str()),
                false => value == lit,
            }),
            Pattern::Regex(re) => re.is_match(value),
        }
    }
}

/// One `name op value` matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: Op,
}

impl Matcher {
    /// Whether `value` (`""` for an absent label) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            Op::Eq(v) => value == v,
            Op::Ne(v) => value != v,
            Op::Re(re, _) => re.is_match(value),
            Op::NotRe(re, _) => !re.is_match(value),
        }
    }

    /// The value this matcher requires exactly, if it is an `=`.
    pub fn equal_value(&self) -> Option<&str> {
        match &self.op {
            Op::Eq(v) => Some(v),
            _ => None,
        }
    }
}

/// A parsed selector: matcher groups, any of which may match (one group
/// unless VictoriaMetrics' `or` is used).
#[derive(Debug, Clone)]
pub struct Selector {
    /// Each group matches when all its matchers do.
    pub groups: Vec<Vec<Matcher>>,
}

impl Selector {
    /// Whether the series with `labels` (sorted by name) is selected.
    pub fn matches<L: LabelPair>(&self, labels: &[L]) -> bool {
        self.groups
            .iter()
            .any(|group| group.iter().all(|m| m.matches(value_of(labels, &m.name))))
    }
}

/// The value of label `name` in `labels` (sorted by name), `""` when absent.
pub fn value_of<'a, L: LabelPair>(labels: &'a [L], name: &str) -> &'a str {
    match labels.binary_search_by(|l| crate::remote_write::cmp_names(l.name(), name)) {
        Ok(i) => labels[i].value(),
        Err(_) => "",
    }
}
