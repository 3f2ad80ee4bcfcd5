//! Compiling one relabel config into a [`Rule`]: the checks Prometheus
//! makes while unmarshalling the YAML (source label names, action name,
//! regex), then `Config.Validate()` in its order and with its messages, and
//! the Go-regex compilation shared with the router's PromQL selectors
//! ([`compile_regex`]). Applying rules lives in [`super::engine`].
//!
//! Depends on [`super::config`] (the YAML model and its defaults),
//! [`super::goregex`] (Go to Rust regex syntax), [`super::template`] (target
//! templates) and [`super::engine`] only for the [`Rule`] it builds.

use regex::{Regex, RegexBuilder};

use super::config::{Action, RelabelConfig, DEFAULT_REGEX, DEFAULT_REPLACEMENT, DEFAULT_SEPARATOR};
use super::engine::{Literals, Rule};
use super::goregex::{self, SyntaxError};
use super::template::is_valid_target_template;
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

impl Rule {
    /// Compiles and validates one config; the error is Prometheus' message.
    pub(super) fn compile(cfg: &RelabelConfig, names: NameValidation) -> Result<Rule, RuleError> {
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
            literals: literals(pattern),
            default_regex: cfg.regex.is_none(),
            copies_source: pattern == DEFAULT_REGEX
                && cfg.replacement == DEFAULT_REPLACEMENT
                && !cfg.target_label.contains('$'),
            target_is_template: cfg.target_label.contains('$'),
            needs_captures: cfg.target_label.contains('$') || cfg.replacement.contains('$'),
            modulus: cfg.modulus,
            target_label: cfg.target_label.clone(),
            replacement: cfg.replacement.clone(),
            names,
        })
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

/// The alternatives of `pattern` when each is a plain word (ASCII letters,
/// digits and `_`), optionally followed by `.*`, like `container`,
/// `tmp|debug` or `go_.*|process_.*`. Anchored as `^(?s:…)$`, such a regex
/// matches exactly the words and the strings that start with a prefix
/// (`.` matches any character under `s`), so comparing strings gives the
/// regex's answer without running it on every label.
fn literals(pattern: &str) -> Option<Literals> {
    let mut literals = Literals::default();
    for alternative in pattern.split('|') {
        let (word, prefix) = match alternative.strip_suffix(".*") {
            Some(word) => (word, true),
            None => (alternative, false),
        };
        if !word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let list = if prefix {
            &mut literals.prefixes
        } else {
            &mut literals.words
        };
        list.push(word.to_owned());
    }
    Some(literals)
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
