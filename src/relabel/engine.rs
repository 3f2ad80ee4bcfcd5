//! Compiled relabel rules and their application to a label set, following
//! Prometheus' `relabel.Process` step for step.
//!
//! Compilation validates each [`RelabelConfig`] like Prometheus does when it
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
use regex::{Regex, RegexBuilder};

use super::builder::{Builder, LabelPair};
use super::case::{go_to_lower, go_to_upper};
use super::config::{
    parse_configs, Action, RelabelConfig, DEFAULT_REGEX, DEFAULT_REPLACEMENT, DEFAULT_SEPARATOR,
};
use super::goregex::{self, SyntaxError};
use super::template::{expand, is_valid_target_template, replace_all};
use super::RelabelError;
use crate::remote_write::NameValidation;

/// Compiled-size limit per regex (the `regex` default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 128 << 20;

/// Why one relabel config does not compile, worded like Prometheus' own
/// errors (`Config.Validate()` and the YAML checks before it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleError {
    /// A `source_labels` entry is not a label name.
    #[error("{0:?} is not a valid label name")]
    SourceLabel(String),
    /// `action` is empty.
    #[error("relabel action cannot be empty")]
    EmptyAction,
    /// `action` names no relabel action.
    #[error("unknown relabel action {0:?}")]
    UnknownAction(String),
    /// `regex` does not compile.
    #[error("invalid regex {pattern:?}: {error}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// Why it does not compile.
        error: RegexError,
    },
    /// `hashmod` with `modulus: 0`.
    #[error("relabel configuration for hashmod requires non-zero modulus")]
    ZeroModulus,
    /// The action writes a label but `target_label` is empty.
    #[error("relabel configuration for {0} action requires 'target_label' value")]
    MissingTarget(Action),
    /// `target_label` is not a valid name (or template) for the action.
    #[error("{target:?} is invalid 'target_label' for {action} action")]
    InvalidTarget {
        /// The target as written.
        target: String,
        /// The rule's action.
        action: Action,
    },
    /// `replacement` set on an action that takes none.
    #[error("'replacement' can not be set for {0} action")]
    ReplacementSet(Action),
    /// A `labelmap` replacement that is not a valid name template.
    #[error("{replacement:?} is invalid 'replacement' for {action} action")]
    InvalidReplacement {
        /// The replacement as written.
        replacement: String,
        /// The rule's action.
        action: Action,
    },
    /// `keepequal`/`dropequal` with fields beyond source and target.
    #[error("{0} action requires only 'source_labels' and `target_label`, and no other fields")]
    EqualExtraFields(Action),
    /// `labeldrop`/`labelkeep` with fields beyond `regex`.
    #[error("{0} action requires only 'regex', and no other fields")]
    LabelExtraFields(Action),
}

/// Why a (Go syntax) regex does not compile.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegexError {
    /// Go itself refuses the pattern.
    #[error(transparent)]
    Go(#[from] SyntaxError),
    /// The translated pattern is refused by the `regex` crate: its message,
    /// without the echoed pattern.
    #[error("{0}")]
    Syntax(String),
    /// The `regex` crate refuses it for another reason (compiled size).
    #[error(transparent)]
    Build(regex::Error),
}

/// One compiled, validated relabel rule.
#[derive(Debug, Clone)]
pub struct Rule {
    action: Action,
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    /// Set when the regex is only words joined by `|` (like `container` or
    /// `tmp|debug`): it then matches exactly those strings, and comparing
    /// them is much cheaper than running the regex on every label name.
    words: Option<Vec<String>>,
    /// The config left `regex` unset, so `regex` is Prometheus' default.
    default_regex: bool,
    /// `target_label` contains `$`, so it is a template to expand.
    target_is_template: bool,
    /// `target_label` or `replacement` contains `$`: `replace` needs the
    /// capture groups, not just whether the regex matches.
    needs_captures: bool,
    modulus: u64,
    target_label: String,
    replacement: String,
    /// Which expanded `replace` targets are valid label names.
    names: NameValidation,
}

/// An ordered list of compiled relabel rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
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
        Ok(Rules { rules })
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
        if labels.windows(2).any(|w| w[0].name() > w[1].name()) {
            labels.sort_by(|a, b| a.name().cmp(b.name()));
        }
        let mut builder = Builder::new(std::mem::take(labels));
        let mut joined = String::new();
        for rule in &self.rules {
            if !rule.apply(&mut builder, &mut joined) {
                return false;
            }
        }
        *labels = builder.into_labels();
        !labels.is_empty()
    }
}

impl Rule {
    /// Compiles and validates one config; the error is Prometheus' message.
    fn compile(cfg: &RelabelConfig, names: NameValidation) -> Result<Rule, RuleError> {
        // Checks Prometheus makes while unmarshalling the YAML.
        for name in cfg.source_labels.iter().flatten() {
            if !names.is_valid(name) {
                return Err(RuleError::SourceLabel(name.clone()));
            }
        }
        if cfg.action.is_empty() {
            return Err(RuleError::EmptyAction);
        }
        let action = Action::parse(&cfg.action)
            .ok_or_else(|| RuleError::UnknownAction(cfg.action.clone()))?;
        let pattern = cfg.regex.as_deref().unwrap_or(DEFAULT_REGEX);
        let regex = compile_regex(pattern).map_err(|error| RuleError::Regex {
            pattern: pattern.to_owned(),
            error,
        })?;
        validate(cfg, action, names)?;

        Ok(Rule {
            action,
            source_labels: cfg.source_labels.clone().unwrap_or_default(),
            separator: cfg.separator.clone(),
            regex,
            words: plain_words(pattern),
            default_regex: cfg.regex.is_none(),
            target_is_template: cfg.target_label.contains('$'),
            needs_captures: cfg.target_label.contains('$') || cfg.replacement.contains('$'),
            modulus: cfg.modulus,
            target_label: cfg.target_label.clone(),
            replacement: cfg.replacement.clone(),
            names,
        })
    }

    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Applies the rule; false means the series is dropped. `joined` is a
    /// scratch buffer reused across rules.
    fn apply<L: LabelPair>(&self, b: &mut Builder<L>, joined: &mut String) -> bool {
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
            Action::Replace => self.replace(b, val),
            Action::Lowercase => b.set(&self.target_label, go_to_lower(val)),
            Action::Uppercase => b.set(&self.target_label, go_to_upper(val)),
            Action::HashMod => {
                if let Some(m) = hashmod(val, self.modulus) {
                    b.set(&self.target_label, m.to_string());
                }
            }
            Action::LabelMap => {
                // Compute every mapping first: Range iterates a snapshot.
                let mapped: Vec<(String, String)> = b
                    .range()
                    .filter(|(name, _)| self.regex.is_match(name))
                    .map(|(name, value)| {
                        (
                            replace_all(&self.regex, name, &self.replacement),
                            value.to_owned(),
                        )
                    })
                    .collect();
                for (name, value) in mapped {
                    b.set(&name, value);
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
        match &self.words {
            Some(words) => words.iter().any(|w| w == s),
            None => self.regex.is_match(s),
        }
    }

    fn replace<L: LabelPair>(&self, b: &mut Builder<L>, val: &str) {
        // Prometheus' fast path; same result as the general path below.
        if val.is_empty() && self.default_regex && !self.needs_captures {
            b.set(&self.target_label, self.replacement.clone());
            return;
        }
        // Without `$` references both templates expand to themselves, so
        // whether the regex matches is all we need: no capture groups.
        // (A `$`-free target was validated as a label name at compile time.)
        if !self.needs_captures {
            if self.matches(val) {
                b.set(&self.target_label, self.replacement.clone());
            }
            return;
        }
        // No match: no replacement.
        let Some(caps) = self.regex.captures(val) else {
            return;
        };
        let expanded_target;
        let target = if self.target_is_template {
            let mut target = String::new();
            expand(&mut target, &self.target_label, &self.regex, &caps);
            expanded_target = target;
            expanded_target.as_str()
        } else {
            self.target_label.as_str()
        };
        // An invalid expanded target name skips the rule.
        if !self.names.is_valid(target) {
            return;
        }
        let mut value = String::new();
        expand(&mut value, &self.replacement, &self.regex, &caps);
        // An empty value deletes the target.
        b.set(target, value);
    }
}

/// Compiles a Go regex anchored like Prometheus' `NewRegexp`: `^(?s:…)$`
/// (also the full-match anchoring of PromQL label matchers).
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, RegexError> {
    let translated = goregex::translate(pattern)?;
    RegexBuilder::new(&format!("^(?s:{translated})$"))
        // Go has no compiled-size limit worth the name; allow big
        // alternations of metric names.
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            // Keep only the "error: …" line, not the echoed pattern.
            regex::Error::Syntax(text) => RegexError::Syntax(
                text.lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .trim_start_matches("error: ")
                    .to_owned(),
            ),
            other => RegexError::Build(other),
        })
}

/// The alternatives of `pattern` if it is only ASCII letters, digits and
/// `_` joined by `|`: anchored, such a regex matches exactly those strings.
fn plain_words(pattern: &str) -> Option<Vec<String>> {
    let plain = pattern
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'|');
    plain.then(|| pattern.split('|').map(str::to_owned).collect())
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

/// Prometheus' `Config.Validate()`, in its order and with its messages.
fn validate(cfg: &RelabelConfig, action: Action, names: NameValidation) -> Result<(), RuleError> {
    use Action::*;
    let target = cfg.target_label.as_str();
    let invalid_target = || RuleError::InvalidTarget {
        target: target.to_owned(),
        action,
    };

    if cfg.modulus == 0 && action == HashMod {
        return Err(RuleError::ZeroModulus);
    }
    let needs_target = matches!(
        action,
        Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
    );
    if needs_target && target.is_empty() {
        return Err(RuleError::MissingTarget(action));
    }
    // A name in which `$` references may appear: under UTF-8 `$` is just
    // another character, so any valid name will do.
    let valid_template = |s: &str| match names {
        NameValidation::Utf8 => names.is_valid(s),
        NameValidation::Legacy => is_valid_target_template(s),
    };
    if action == Replace {
        let valid = if target.contains('$') {
            valid_template(target)
        } else {
            names.is_valid(target)
        };
        if !valid {
            return Err(invalid_target());
        }
    }
    let case_or_equal = matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual);
    if case_or_equal && !names.is_valid(target) {
        return Err(invalid_target());
    }
    if case_or_equal && cfg.replacement != DEFAULT_REPLACEMENT {
        return Err(RuleError::ReplacementSet(action));
    }
    if action == LabelMap && !valid_template(&cfg.replacement) {
        return Err(RuleError::InvalidReplacement {
            replacement: cfg.replacement.clone(),
            action,
        });
    }
    if action == HashMod && !names.is_valid(target) {
        return Err(invalid_target());
    }
    if matches!(action, KeepEqual | DropEqual)
        && (cfg.regex.is_some()
            || cfg.modulus != 0
            || cfg.separator != DEFAULT_SEPARATOR
            || cfg.replacement != DEFAULT_REPLACEMENT)
    {
        return Err(RuleError::EqualExtraFields(action));
    }
    if matches!(action, LabelDrop | LabelKeep)
        && (cfg.source_labels.is_some()
            || !target.is_empty()
            || cfg.modulus != 0
            || cfg.separator != DEFAULT_SEPARATOR
            || cfg.replacement != DEFAULT_REPLACEMENT)
    {
        return Err(RuleError::LabelExtraFields(action));
    }
    Ok(())
}
