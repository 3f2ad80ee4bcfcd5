//! The stream aggregation file vmagent runs (`-streamAggr.config`,
//! `-remoteWrite.streamAggr.config`), read for what decides an aggregation
//! group: `match`, `by`, `without` and `drop_input_labels`. `name`,
//! `interval` and `outputs` are read for messages and checks; every other
//! key is accepted and ignored.
//!
//! Grouping as vmagent builds it (`lib/streamaggr`): `by` is sorted,
//! deduplicated and gets `__name__` added, so `by: [job]` groups by metric
//! name and job; `without` keeps every label but the listed ones (the
//! metric name too, unless listed); neither means one group per series.
//! `drop_input_labels` removes labels before grouping, so they never
//! belong to a group's key. `input_relabel_configs` may rewrite labels
//! before grouping, which routing cannot see: such rules are flagged.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::selector::{Selector, SelectorError};

/// Why a stream aggregation file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read stream aggregation file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's rules do not compile.
    #[error("stream aggregation file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (boxed: a rule's error is large and rare).
        source: Box<ParseError>,
    },
}

/// Why a stream aggregation document does not compile.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The document is not a YAML list.
    #[error("not a YAML list of rules: {0}")]
    NotAList(serde_yaml::Error),
    /// One rule is wrong; `rule` is `rule #2 (name)` or `rule #2`.
    #[error("{rule}: {error}")]
    Rule {
        /// Which rule, for messages.
        rule: String,
        /// What is wrong with it.
        error: RuleError,
    },
}

/// What is wrong with one rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A key has the wrong type.
    #[error("{0}")]
    Yaml(serde_yaml::Error),
    /// `interval` is missing or empty.
    #[error("missing interval (vmagent refuses the rule)")]
    MissingInterval,
    /// `outputs` is missing or empty.
    #[error("outputs lists nothing (vmagent refuses the rule)")]
    NoOutputs,
    /// A `match` selector does not parse.
    #[error("match: {0}")]
    Match(SelectorError),
    /// Both `by` and `without`.
    #[error("by and without cannot both be set")]
    ByAndWithout,
}

/// What identifies a rule's output group, as a predicate on label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// Only these labels (sorted, `__name__` included).
    By(Vec<String>),
    /// Every label but these (sorted).
    Without(Vec<String>),
    /// Every label: one group per series.
    Series,
}

impl Grouping {
    /// Whether a label named `name` is part of the group's key.
    pub fn keeps(&self, name: &str) -> bool {
        match self {
            Grouping::By(keep) => keep.binary_search_by(|k| k.as_str().cmp(name)).is_ok(),
            Grouping::Without(drop) => drop.binary_search_by(|k| k.as_str().cmp(name)).is_err(),
            Grouping::Series => true,
        }
    }

    /// Short description for messages, e.g. `by [__name__, job]`.
    pub fn describe(&self) -> String {
        match self {
            Grouping::By(l) => format!("by [{}]", l.join(", ")),
            Grouping::Without(l) => format!("without [{}]", l.join(", ")),
            Grouping::Series => "per series (no by/without)".into(),
        }
    }
}

/// One compiled aggregation rule.
#[derive(Debug, Clone)]
pub struct AggrRule {
    /// Position in the file, from 0.
    pub index: usize,
    /// The rule's `name`, if any.
    pub name: Option<String>,
    /// `match`; empty means every series.
    pub selectors: Vec<Selector>,
    /// How its groups are formed.
    pub grouping: Grouping,
    /// The rule has `input_relabel_configs`, which routing does not apply.
    pub input_relabeling: bool,
}

impl AggrRule {
    /// `#2 (name)` or `#2`, for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("#{} ({n})", self.index),
            None => format!("#{}", self.index),
        }
    }

    /// Whether the rule's `match` selects the series.
    pub fn matches<L: crate::relabel::LabelPair>(&self, labels: &[L]) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(labels))
    }
}

/// `match`: one selector or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum MatchYaml {
    One(String),
    Many(Vec<String>),
}

/// One rule as written. Unknown keys are ignored (serde's default).
#[derive(Deserialize)]
struct RuleYaml {
    name: Option<String>,
    #[serde(rename = "match")]
    selectors: Option<MatchYaml>,
    #[serde(default)]
    by: Vec<String>,
    #[serde(default)]
    without: Vec<String>,
    interval: Option<String>,
    #[serde(default)]
    outputs: Vec<String>,
    drop_input_labels: Option<Vec<String>>,
    input_relabel_configs: Option<serde_yaml::Value>,
}

/// Reads and compiles the file; errors name the file and the rule.
pub fn load(path: &Path) -> Result<Vec<AggrRule>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|source| LoadError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Compiles the rules of a stream aggregation YAML document.
pub fn parse(text: &str) -> Result<Vec<AggrRule>, ParseError> {
    // An empty file is an empty list, as vmagent reads it.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<serde_yaml::Value> = serde_yaml::from_str(text).map_err(ParseError::NotAList)?;
    raw.into_iter()
        .enumerate()
        .map(|(index, value)| {
            let name = value
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_owned);
            compile(index, value).map_err(|error| ParseError::Rule {
                rule: match &name {
                    Some(n) => format!("rule #{index} ({n})"),
                    None => format!("rule #{index}"),
                },
                error,
            })
        })
        .collect()
}

fn compile(index: usize, value: serde_yaml::Value) -> Result<AggrRule, RuleError> {
    let rule: RuleYaml = serde_yaml::from_value(value).map_err(RuleError::Yaml)?;
    if rule.interval.as_deref().map_or(true, str::is_empty) {
        return Err(RuleError::MissingInterval);
    }
    if rule.outputs.is_empty() {
        return Err(RuleError::NoOutputs);
    }
    let texts = match rule.selectors {
        None => Vec::new(),
        Some(MatchYaml::One(s)) => vec![s],
        Some(MatchYaml::Many(v)) => v,
    };
    let selectors = texts
        .iter()
        .map(|t| Selector::parse(t).map_err(RuleError::Match))
        .collect::<Result<Vec<_>, _>>()?;
    let dropped = rule.drop_input_labels.unwrap_or_default();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let grouping = match (rule.by.is_empty(), rule.without.is_empty()) {
        (false, false) => return Err(RuleError::ByAndWithout),
        (false, true) => {
            let mut by = rule.by;
            by.push("__name__".into());
            by.retain(|l| !dropped.contains(l));
            Grouping::By(sorted(by))
        }
        (true, false) => {
            let mut without = rule.without;
            without.extend(dropped);
            Grouping::Without(sorted(without))
        }
        (true, true) if dropped.is_empty() => Grouping::Series,
        (true, true) => Grouping::Without(sorted(dropped)),
    };
    Ok(AggrRule {
        index,
        name: rule.name,
        selectors,
        grouping,
        input_relabeling: rule
            .input_relabel_configs
            .is_some_and(|v| v.as_sequence().is_some_and(|s| !s.is_empty())),
    })
}
