//! Prometheus relabeling (`relabel_configs` / `write_relabel_configs`) with
//! the semantics of Prometheus' `model/relabel/relabel.go`.
//!
//! * [`config`] holds the YAML model ([`RelabelConfig`]) and its loaders.
//! * [`engine`] compiles configs into [`Rules`] (validated exactly like
//!   Prometheus' `Config.Validate()`, with legacy label-name validation) and
//!   applies them to a label set.
//!
//! Invariants: label sets are `Vec<(name, value)>` sorted by name with unique
//! names; [`Rules::process`] keeps them sorted. Regexes are written in Go (RE2)
//! syntax and translated to the `regex` crate once, at compile time, so that
//! `\d`, `\w`, `\s` and `\b` stay ASCII-only as in Go.

pub mod config;
pub mod engine;

mod builder;
mod case;
mod compile;
mod goregex;
mod goregex_class;
mod template;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests;

#[cfg(test)]
mod proptests;

use std::path::PathBuf;

pub use builder::{LabelPair, Scratch};
pub use config::{load_configs, parse_configs, Action, RelabelConfig};
pub use engine::{RegexError, Rule, RuleError, Rules};
pub use goregex::SyntaxError;
pub use template::is_valid_label_name;

/// Errors from loading or compiling relabel rules.
#[derive(Debug, thiserror::Error)]
pub enum RelabelError {
    /// A rule failed validation; `index` is its 0-based position in the list.
    #[error("relabel rule {index}: {error}")]
    InvalidRule {
        /// 0-based position of the rule in its list.
        index: usize,
        /// What is wrong, worded like Prometheus' own error.
        error: RuleError,
    },
    /// The YAML text is not a list of relabel configs.
    #[error("parsing relabel configs: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// The relabel config file could not be read.
    #[error("reading relabel configs from {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}
