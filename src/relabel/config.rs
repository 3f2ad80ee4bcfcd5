//! The YAML model of one relabel rule, field for field Prometheus'
//! `relabel.Config`, plus loaders for a YAML list of rules.
//!
//! Defaults follow Prometheus' `UnmarshalYAML`: an absent field gets
//! Prometheus' default (separator `;`, regex `(.*)`, replacement `$1`, action
//! `replace`), while an explicit YAML `null` gives Go's zero value (empty
//! string, 0, no list) — e.g. `regex:` with no value is the empty regex, which
//! only matches the empty string. Nothing is validated here; validation
//! happens in [`crate::relabel::Rules::compile`].

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use super::case::go_to_lower;
use super::RelabelError;

/// Default `separator`.
pub const DEFAULT_SEPARATOR: &str = ";";
/// Default `regex` (used when the field is absent).
pub const DEFAULT_REGEX: &str = "(.*)";
/// Default `replacement`.
pub const DEFAULT_REPLACEMENT: &str = "$1";
/// Default `action`.
pub const DEFAULT_ACTION: &str = "replace";

/// One relabel rule as written in `relabel_configs` / `write_relabel_configs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator`. `None` when absent or
    /// null; `Some(vec![])` for an explicit `[]` (Prometheus tells the two
    /// apart for `labeldrop`/`labelkeep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Vec<String>>,
    /// String placed between the source label values.
    #[serde(default = "default_separator", deserialize_with = "null_as_default")]
    pub separator: String,
    /// Go (RE2) regex, anchored at both ends when compiled. `None` means "not
    /// set", i.e. the default `(.*)`; Prometheus treats an explicitly set
    /// regex differently from the default in validation, even if equal.
    #[serde(
        default,
        deserialize_with = "explicit_regex",
        skip_serializing_if = "Option::is_none"
    )]
    pub regex: Option<String>,
    /// Modulus for `hashmod`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub modulus: u64,
    /// Label written by `replace`, `hashmod`, `lowercase`, `uppercase`, or
    /// compared by `keepequal`/`dropequal`. May contain `$` templates for
    /// `replace`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_label: String,
    /// Go `Regexp.Expand` template for `replace` and `labelmap`.
    #[serde(default = "default_replacement", deserialize_with = "null_as_default")]
    pub replacement: String,
    /// Action name; matched case-insensitively like Prometheus.
    #[serde(default = "default_action", deserialize_with = "null_as_default")]
    pub action: String,
}

impl Default for RelabelConfig {
    /// Prometheus' `DefaultRelabelConfig`.
    fn default() -> Self {
        RelabelConfig {
            source_labels: None,
            separator: default_separator(),
            regex: None,
            modulus: 0,
            target_label: String::new(),
            replacement: default_replacement(),
            action: default_action(),
        }
    }
}

/// A relabel action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Regex replacement into `target_label`.
    Replace,
    /// Drop the series unless the joined value matches.
    Keep,
    /// Drop the series if the joined value matches.
    Drop,
    /// Drop the series unless the joined value equals `target_label`'s value.
    KeepEqual,
    /// Drop the series if the joined value equals `target_label`'s value.
    DropEqual,
    /// Set `target_label` to MD5(joined value) mod `modulus`.
    HashMod,
    /// Copy labels whose name matches to the name given by `replacement`.
    LabelMap,
    /// Remove labels whose name matches.
    LabelDrop,
    /// Remove labels whose name does not match.
    LabelKeep,
    /// Set `target_label` to the lowercased joined value.
    Lowercase,
    /// Set `target_label` to the uppercased joined value.
    Uppercase,
}

impl Action {
    /// Every action, in Prometheus' declaration order.
    pub const ALL: [Action; 11] = [
        Action::Replace,
        Action::Keep,
        Action::Drop,
        Action::KeepEqual,
        Action::DropEqual,
        Action::HashMod,
        Action::LabelMap,
        Action::LabelDrop,
        Action::LabelKeep,
        Action::Lowercase,
        Action::Uppercase,
    ];

    /// Parses an action name case-insensitively (Prometheus lowercases it
    /// with Go's `strings.ToLower` before matching).
    pub fn parse(name: &str) -> Option<Action> {
        let lower = go_to_lower(name);
        Action::ALL.into_iter().find(|a| a.as_str() == lower)
    }

    /// The canonical (lowercase) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a YAML list of relabel rules. An empty document is an empty list.
pub fn parse_configs(yaml: &str) -> Result<Vec<RelabelConfig>, RelabelError> {
    let parsed: Option<Vec<RelabelConfig>> = serde_yaml::from_str(yaml)?;
    Ok(parsed.unwrap_or_default())
}

/// Reads and parses a YAML file holding a list of relabel rules.
pub fn load_configs(path: impl AsRef<Path>) -> Result<Vec<RelabelConfig>, RelabelError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| RelabelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_configs(&text)
}

fn default_separator() -> String {
    DEFAULT_SEPARATOR.to_owned()
}

fn default_replacement() -> String {
    DEFAULT_REPLACEMENT.to_owned()
}

fn default_action() -> String {
    DEFAULT_ACTION.to_owned()
}

/// A present-but-null field becomes Go's zero value, as with `yaml.v2`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Only called when `regex` is present: null means the empty regex
/// (Prometheus' `MustNewRegexp("")`), not the default.
fn explicit_regex<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Some(
        Option::<String>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn absent_fields_get_prometheus_defaults() {
        let cfgs = parse_configs("- target_label: x\n").unwrap();
        assert_eq!(
            cfgs,
            vec![RelabelConfig {
                target_label: "x".into(),
                ..RelabelConfig::default()
            }]
        );
        assert_eq!(cfgs[0].separator, ";");
        assert_eq!(cfgs[0].replacement, "$1");
        assert_eq!(cfgs[0].action, "replace");
        assert_eq!(cfgs[0].regex, None);
        assert_eq!(cfgs[0].source_labels, None);
    }

    #[test]
    fn null_fields_get_go_zero_values() {
        let yaml = "- source_labels:\n  separator:\n  regex:\n  modulus:\n  target_label:\n  replacement:\n  action:\n";
        let cfgs = parse_configs(yaml).unwrap();
        assert_eq!(
            cfgs,
            vec![RelabelConfig {
                source_labels: None,
                separator: String::new(),
                regex: Some(String::new()),
                modulus: 0,
                target_label: String::new(),
                replacement: String::new(),
                action: String::new(),
            }]
        );
    }

    #[test]
    fn all_fields_parse() {
        let yaml = r#"
- source_labels: [a, b]
  separator: "/"
  regex: "f(.*)"
  modulus: 8
  target_label: t
  replacement: "x$1"
  action: HashMod
"#;
        let cfgs = parse_configs(yaml).unwrap();
        assert_eq!(
            cfgs,
            vec![RelabelConfig {
                source_labels: Some(vec!["a".into(), "b".into()]),
                separator: "/".into(),
                regex: Some("f(.*)".into()),
                modulus: 8,
                target_label: "t".into(),
                replacement: "x$1".into(),
                action: "HashMod".into(),
            }]
        );
    }

    #[test]
    fn explicit_empty_source_labels_is_kept_apart_from_absent() {
        let cfgs = parse_configs("- source_labels: []\n  action: labeldrop\n").unwrap();
        assert_eq!(cfgs[0].source_labels, Some(vec![]));
    }

    #[test]
    fn unquoted_scalars_are_read_as_their_text() {
        // yaml.v2 decodes any scalar into a string field verbatim.
        let cfgs = parse_configs("- regex: 1.0\n  replacement: 010\n  target_label: x\n").unwrap();
        assert_eq!(cfgs[0].regex.as_deref(), Some("1.0"));
        assert_eq!(cfgs[0].replacement, "010");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse_configs("- target_label: x\n  regexp: foo\n").unwrap_err();
        assert!(matches!(err, RelabelError::Parse(_)));
        assert!(err.to_string().contains("unknown field `regexp`"), "{err}");
    }

    #[test]
    fn empty_document_is_an_empty_list() {
        assert_eq!(parse_configs("").unwrap(), vec![]);
        assert_eq!(parse_configs("# nothing\n").unwrap(), vec![]);
        assert_eq!(parse_configs("[]").unwrap(), vec![]);
    }

    #[test]
    fn a_mapping_instead_of_a_list_is_an_error() {
        assert!(matches!(
            parse_configs("target_label: x\n"),
            Err(RelabelError::Parse(_))
        ));
    }

    #[test]
    fn load_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, "- action: labeldrop\n  regex: tmp_.*\n").unwrap();
        let cfgs = load_configs(&path).unwrap();
        assert_eq!(cfgs.len(), 1);
        assert_eq!(cfgs[0].action, "labeldrop");
        assert_eq!(cfgs[0].regex.as_deref(), Some("tmp_.*"));

        let missing = load_configs(dir.path().join("missing.yaml")).unwrap_err();
        assert!(matches!(missing, RelabelError::Io { .. }));
    }

    #[test]
    fn action_names_parse_case_insensitively() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            assert_eq!(Action::parse(&action.as_str().to_uppercase()), Some(action));
        }
        assert_eq!(Action::parse("LabelMap"), Some(Action::LabelMap));
        // Go's strings.ToLower maps the Kelvin sign to 'k'.
        assert_eq!(Action::parse("\u{212A}eep"), Some(Action::Keep));
        assert_eq!(Action::parse("label_map"), None);
        assert_eq!(Action::parse(""), None);
        assert_eq!(Action::HashMod.to_string(), "hashmod");
    }

    #[test]
    fn serializes_back_to_the_same_yaml_shape() {
        let cfg = RelabelConfig {
            source_labels: Some(vec!["a".into()]),
            regex: Some("x".into()),
            target_label: "t".into(),
            ..RelabelConfig::default()
        };
        let yaml = serde_yaml::to_string(&vec![cfg.clone()]).unwrap();
        assert_eq!(parse_configs(&yaml).unwrap(), vec![cfg]);
    }
}
