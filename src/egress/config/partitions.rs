//! Which task-topic partitions an egress worker owns (`egress.partitions`)
//! and where each is sent (`egress.target`): the settings as written,
//! parsed, and their errors.
//!
//! Depends on: nothing in the crate (serde and hyper's URI parser only).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The owned partitions as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Partitions {
    /// `"all"`, `"0-3"`, `"5"` or `"0,2,4"`.
    Text(String),
    /// `[0, 2, 4]`.
    List(Vec<i32>),
    /// `5`: one partition, as a number (also what
    /// `STREAMROUTE_EGRESS__PARTITIONS=5` reads as, e.g. a pod ordinal).
    One(i32),
}

/// Which partitions, once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSet {
    /// Every partition of the topic.
    All,
    /// These.
    Some(BTreeSet<i32>),
}

/// The receivers as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    /// A URL template; `{partition}` is replaced.
    Template(String),
    /// One URL per partition, index = partition.
    List(Vec<String>),
}

/// Why `egress.partitions` names no set of partitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionsError {
    /// A part that is not a number, e.g. `x` or `1-y`.
    #[error("{0:?} is not a partition number")]
    NotANumber(String),
    /// `3-1`.
    #[error("range {0:?} is empty")]
    EmptyRange(String),
    /// An empty list.
    #[error("names no partition; use \"all\", a range like \"0-3\" or a list")]
    None,
    /// A partition below 0.
    #[error("partition {0} is negative")]
    Negative(i32),
}

impl Partitions {
    /// Parses the setting.
    pub fn parse(&self) -> Result<PartitionSet, PartitionsError> {
        let text = match self {
            Partitions::List(list) => return set_of(list.iter().copied()).map(PartitionSet::Some),
            Partitions::One(p) => return set_of([*p]).map(PartitionSet::Some),
            Partitions::Text(t) => t.trim(),
        };
        if text.eq_ignore_ascii_case("all") {
            return Ok(PartitionSet::All);
        }
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim) {
            let number = |s: &str| {
                s.trim()
                    .parse::<i32>()
                    .map_err(|_| PartitionsError::NotANumber(s.to_owned()))
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b {
                        return Err(PartitionsError::EmptyRange(part.to_owned()));
                    }
                    out.extend(a..=b);
                }
                None => out.push(number(part)?),
            }
        }
        set_of(out).map(PartitionSet::Some)
    }
}

fn set_of(list: impl IntoIterator<Item = i32>) -> Result<BTreeSet<i32>, PartitionsError> {
    let set: BTreeSet<i32> = list.into_iter().collect();
    if set.is_empty() {
        return Err(PartitionsError::None);
    }
    if let Some(p) = set.iter().find(|p| **p < 0) {
        return Err(PartitionsError::Negative(*p));
    }
    Ok(set)
}

impl Target {
    /// The receiver URL of `partition`, or None when a list does not reach it.
    pub fn url(&self, partition: i32) -> Option<String> {
        match self {
            Target::Template(t) => Some(t.replace("{partition}", &partition.to_string())),
            Target::List(list) => usize::try_from(partition)
                .ok()
                .and_then(|i| list.get(i))
                .cloned(),
        }
    }

    /// Whether any receiver is an https:// URL.
    pub fn uses_https(&self) -> bool {
        self.examples().iter().any(|u| {
            u.parse::<hyper::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("https"))
        })
    }

    /// The receiver URLs to check: the template for partition 0, or the list.
    pub(super) fn examples(&self) -> Vec<String> {
        match self {
            Target::Template(t) => vec![t.replace("{partition}", "0")],
            Target::List(list) => list.clone(),
        }
    }
}
