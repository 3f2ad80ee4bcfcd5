//! Topics as code. `topics/` holds one TOML file per topic; `streamroute
//! topics apply` makes the cluster match them as far as is safe, `check`
//! only reports.
//!
//! Invariants: apply creates missing topics and raises partition counts;
//! every other difference (fewer partitions wanted, another replication
//! factor, a different config value) is reported as drift and left alone.
//! Nothing is ever deleted. The comparison ([`plan`]) is pure so it can be
//! tested without a broker; [`admin`] reads the cluster and carries it out.
//!
//! Also the `[topics]` config section ([`TopicsConfig`]): the folder and
//! the names of the ingress and dead-letter topics.
//!
//! May depend on: `kafka` (the admin client's config), `problem`. Not on
//! `config`, which holds a [`TopicsConfig`].

pub mod admin;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};

/// Topic names used by the roles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Folder with one TOML file per topic, read by `streamroute topics`.
    pub dir: PathBuf,
    /// The ingress topic: raw remote-write payloads from the gateway or any producer.
    pub ingress: String,
    /// Where records that can never be processed go, with the reason in headers.
    pub dead_letter: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            dir: PathBuf::from("topics"),
            ingress: "streamroute.ingress".into(),
            dead_letter: "streamroute.dead-letter".into(),
        }
    }
}

impl TopicsConfig {
    /// Problems, keys relative to `topics.`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        for (key, value) in [
            ("ingress", &self.ingress),
            ("dead_letter", &self.dead_letter),
        ] {
            if let Err(e) = check_topic_name(value) {
                out.push(key, e.to_string());
            }
        }
        out.check(
            self.ingress != self.dead_letter,
            "dead_letter",
            "must differ from topics.ingress",
        );
        out.into_vec()
    }
}

/// One topic file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count. apply raises it; it never lowers it (Kafka cannot).
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Topic-level configs, e.g. `"retention.ms" = "86400000"`. Only the
    /// keys listed here are compared with the cluster.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Errors reading topic files or talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// The folder or a file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not a valid topic spec.
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: SpecError },
    /// Two files name the same topic.
    #[error("topic {name} is declared twice: {first} and {second}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// A Kafka admin request failed.
    #[error("kafka admin request failed: {0}")]
    Kafka(String),
}

/// Why Kafka would refuse a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The name is empty.
    #[error("topic name must not be empty")]
    Empty,
    /// `.` or `..`.
    #[error("'{0}' is not a legal topic name")]
    Dots(String),
    /// Longer than Kafka's 249 characters.
    #[error("topic name is {0} characters long; Kafka allows 249")]
    TooLong(usize),
    /// A character Kafka does not allow.
    #[error("topic name '{name}' holds '{c}'; Kafka allows a-z, A-Z, 0-9, '.', '_' and '-'")]
    Character { name: String, c: char },
}

/// Why a topic file is not a valid topic spec; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not TOML of the expected shape.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// `name` is not a legal topic name.
    #[error("name: {0}")]
    Name(#[from] TopicNameError),
    /// `partitions = 0`.
    #[error("partitions: must be at least 1")]
    NoPartitions,
    /// `replication_factor = 0`.
    #[error("replication_factor: must be at least 1")]
    NoReplicas,
}

/// Checks a topic name the way Kafka does (legal characters, length).
pub fn check_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots(name.to_string()));
    }
    if name.len() > 249 {
        return Err(TopicNameError::TooLong(name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicNameError::Character {
            name: name.to_string(),
            c,
        });
    }
    Ok(())
}

/// Reads every `*.toml` file in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<TopicSpec>, TopicsError> {
    let read_err = |source| TopicsError::Read {
        // Absolute, so a relative folder read from the wrong working
        // directory says where it looked.
        path: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut specs: Vec<(PathBuf, TopicSpec)> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| TopicsError::Read {
            path: path.clone(),
            source,
        })?;
        let spec = parse_spec(&text).map_err(|source| TopicsError::Invalid {
            path: path.clone(),
            source,
        })?;
        if let Some((first, _)) = specs.iter().find(|(_, s)| s.name == spec.name) {
            return Err(TopicsError::Duplicate {
                name: spec.name,
                first: first.clone(),
                second: path,
            });
        }
        specs.push((path, spec));
    }
    Ok(specs.into_iter().map(|(_, s)| s).collect())
}

/// Parses and checks one topic file.
pub fn parse_spec(text: &str) -> Result<TopicSpec, SpecError> {
    let spec: TopicSpec = toml::from_str(text)?;
    check_topic_name(&spec.name)?;
    if spec.partitions == 0 {
        return Err(SpecError::NoPartitions);
    }
    if spec.replication_factor == 0 {
        return Err(SpecError::NoReplicas);
    }
    Ok(spec)
}

/// What the cluster has for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTopic {
    /// Partition count.
    pub partitions: u32,
    /// Replicas of partition 0.
    pub replication_factor: u16,
    /// Current values of the configs the spec names.
    pub config: BTreeMap<String, Option<String>>,
}

/// A change apply makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create the topic as specified.
    Create(TopicSpec),
    /// Raise the partition count.
    AddPartitions { topic: String, from: u32, to: u32 },
}

/// A difference apply does not fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The topic.
    pub topic: String,
    /// What differs.
    pub what: String,
}

/// The outcome of comparing specs with the cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Changes apply will make.
    pub changes: Vec<Change>,
    /// Differences that are only reported.
    pub drift: Vec<Drift>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create(s) => write!(
                f,
                "create topic {} (partitions={}, replication_factor={}{})",
                s.name,
                s.partitions,
                s.replication_factor,
                s.config
                    .iter()
                    .map(|(k, v)| format!(", {k}={v}"))
                    .collect::<String>()
            ),
            Change::AddPartitions { topic, from, to } => {
                write!(f, "raise partitions of topic {topic} from {from} to {to}")
            }
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "drift: topic {}: {}", self.topic, self.what)
    }
}

/// Compares specs with what the cluster has. `observed` returns None for a
/// topic that does not exist.
pub fn plan(specs: &[TopicSpec], observed: impl Fn(&str) -> Option<ObservedTopic>) -> Plan {
    let mut plan = Plan::default();
    for spec in specs {
        let Some(have) = observed(&spec.name) else {
            plan.changes.push(Change::Create(spec.clone()));
            continue;
        };
        let drift = |what: String| Drift {
            topic: spec.name.clone(),
            what,
        };
        if have.partitions < spec.partitions {
            plan.changes.push(Change::AddPartitions {
                topic: spec.name.clone(),
                from: have.partitions,
                to: spec.partitions,
            });
        } else if have.partitions > spec.partitions {
            plan.drift.push(drift(format!(
                "has {} partitions, the file says {} (Kafka cannot remove partitions; update the file)",
                have.partitions, spec.partitions
            )));
        }
        if have.replication_factor != spec.replication_factor {
            plan.drift.push(drift(format!(
                "replication factor is {}, the file says {} (change it with a partition reassignment)",
                have.replication_factor, spec.replication_factor
            )));
        }
        for (key, want) in &spec.config {
            match have.config.get(key) {
                Some(Some(value)) if value == want => {}
                Some(Some(value)) => plan.drift.push(drift(format!(
                    "config {key} is {value}, the file says {want}"
                ))),
                _ => plan.drift.push(drift(format!(
                    "config {key} is not set or unknown to the broker, the file says {want}"
                ))),
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `Topic.validate`: "." and ".." are refused by name, other
    /// names made of dots are legal.
    #[test]
    fn dot_names_are_refused_as_kafka_refuses_them() {
        for name in [".", ".."] {
            assert!(
                matches!(check_topic_name(name), Err(TopicNameError::Dots(n)) if n == name),
                "{name}"
            );
        }
        assert!(check_topic_name("...").is_ok());
        assert!(check_topic_name(".a").is_ok());
        // Kafka's limit is 249 characters.
        assert!(check_topic_name(&"a".repeat(249)).is_ok());
        assert!(matches!(
            check_topic_name(&"a".repeat(250)),
            Err(TopicNameError::TooLong(250))
        ));
    }

    /// `*.toml` files only, in file-name order; a name defined twice is an
    /// error naming both files.
    #[test]
    fn load_dir_reads_the_toml_files_in_order_and_refuses_a_name_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |file: &str, name: &str| {
            std::fs::write(
                dir.path().join(file),
                format!("name = \"{name}\"\npartitions = 2\nreplication_factor = 1\n"),
            )
            .expect("write")
        };
        write("b.toml", "second");
        write("a.toml", "first");
        write("c.toml.bak", "ignored");
        write("README", "ignored");
        let names: Vec<String> = load_dir(dir.path())
            .expect("load")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["first", "second"]);
        write("c.toml", "first");
        match load_dir(dir.path()) {
            Err(TopicsError::Duplicate {
                name,
                first,
                second,
            }) => {
                assert_eq!(name, "first");
                assert!(first.ends_with("a.toml") && second.ends_with("c.toml"));
            }
            other => panic!("want a duplicate, got {other:?}"),
        }
    }

    fn spec(partitions: u32) -> TopicSpec {
        parse_spec(&format!(
            "name = \"t\"\npartitions = {partitions}\nreplication_factor = 1\n[config]\n\"retention.ms\" = \"1000\"\n"
        ))
        .unwrap()
    }

    fn observed(partitions: u32, retention: &str) -> ObservedTopic {
        ObservedTopic {
            partitions,
            replication_factor: 1,
            config: [("retention.ms".to_string(), Some(retention.to_string()))].into(),
        }
    }

    #[test]
    fn missing_topic_is_created() {
        let plan = plan(&[spec(3)], |_| None);
        assert_eq!(plan.changes, vec![Change::Create(spec(3))]);
        assert!(plan.drift.is_empty());
    }

    #[test]
    fn matching_topic_needs_nothing() {
        assert_eq!(
            plan(&[spec(3)], |_| Some(observed(3, "1000"))),
            Plan::default()
        );
    }

    #[test]
    fn more_partitions_wanted_are_added_fewer_are_drift() {
        let up = plan(&[spec(4)], |_| Some(observed(2, "1000")));
        assert_eq!(
            up.changes,
            vec![Change::AddPartitions {
                topic: "t".into(),
                from: 2,
                to: 4
            }]
        );
        let down = plan(&[spec(2)], |_| Some(observed(4, "1000")));
        assert!(down.changes.is_empty());
        assert_eq!(down.drift.len(), 1);
        assert!(down.drift[0].what.contains("has 4 partitions"));
    }

    #[test]
    fn config_difference_is_drift() {
        let p = plan(&[spec(1)], |_| Some(observed(1, "5")));
        assert_eq!(
            p.drift[0].to_string(),
            "drift: topic t: config retention.ms is 5, the file says 1000"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_key() {
        assert!(
            parse_spec("name = \"a b\"\npartitions = 1\nreplication_factor = 1")
                .unwrap_err()
                .to_string()
                .starts_with("name:")
        );
        assert!(
            parse_spec("name = \"a\"\npartitions = 0\nreplication_factor = 1")
                .unwrap_err()
                .to_string()
                .starts_with("partitions:")
        );
        assert!(
            parse_spec("name = \"a\"\npartitions = 1\nreplication_factor = 1\nretention = 1")
                .unwrap_err()
                .to_string()
                .contains("retention")
        );
    }
}
