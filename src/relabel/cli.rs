//! `streamroute relabel`: shows what a rule set does, like the relabel
//! debug pages of Prometheus and vmagent.
//!
//! Reads JSON lines on stdin, each an object of label name to value, and
//! writes exactly one JSON line per input line, in order: the resulting
//! label object (keys sorted), or `null` when the series is dropped. With
//! `--task-count` the task label is injected; with `--partitions` each
//! result becomes `{"labels": {...}, "partition": p}`.
//!
//! On stderr, after the last line: the load, series per partition (with
//! `--partitions`) and per task, so an uneven spread shows before it runs.
//! With a route that has a `stream_aggr_file`, stderr also starts with the
//! rules' start-up findings (rules routed together, keys they cannot
//! share) and ends with how many series were routed by the rules and how
//! many by an empty label set.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use crate::cli::RelabelArgs;
use crate::config::Config;
use crate::router::aggregation::Routed;
use crate::router::route::Route;
use crate::router::task_id::{
    inject_task_label, jump_hash, labels_hash, labels_hash_iter, partition_for_task, task_id,
    TaskIdConfig,
};

use super::{load_configs, Rules};
use crate::remote_write::NameValidation;

/// Errors of `streamroute relabel`.
#[derive(Debug, thiserror::Error)]
pub enum RelabelCliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The rules could not be loaded.
    #[error(transparent)]
    Rules(#[from] super::RelabelError),
    /// An input line is not a JSON object of strings.
    #[error("stdin line {line}: {reason}")]
    Input { line: usize, reason: String },
    /// Reading stdin or writing stdout failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What to do with each series, built from the arguments.
pub struct Pipeline {
    rules: Rules,
    task: Option<TaskIdConfig>,
    partitions: Option<u32>,
    /// `--partition-labels`: these labels' hash picks the partition.
    partition_labels: Vec<String>,
    /// With `--route`: the configured route does relabeling, task and partition.
    route: Option<Route>,
}

impl Pipeline {
    /// Builds the pipeline from `--rules` and the task options.
    pub fn from_args(
        args: &RelabelArgs,
        config: Option<&Path>,
    ) -> Result<Pipeline, RelabelCliError> {
        if args.partitions == Some(0) {
            return Err(RelabelCliError::Usage(
                "--partitions must be at least 1".into(),
            ));
        }
        if let Some(name) = &args.route {
            let config = Config::load(config).map_err(|e| RelabelCliError::Usage(e.to_string()))?;
            let Some(route) = config.router.routes.iter().find(|r| &r.name == name) else {
                let names: Vec<&str> = config
                    .router
                    .routes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect();
                return Err(RelabelCliError::Usage(format!(
                    "no route {name:?} in the config (routes: {})",
                    names.join(", ")
                )));
            };
            let route = Route::compile(route, config.gateway.limits.name_validation)
                .map_err(RelabelCliError::Usage)?;
            return Ok(Pipeline {
                rules: Rules::compile(&[])?,
                task: None,
                partitions: args.partitions,
                partition_labels: Vec::new(),
                route: Some(route),
            });
        }
        let Some(path) = &args.rules else {
            return Err(RelabelCliError::Usage(
                "give --rules FILE, or --config FILE --route NAME".into(),
            ));
        };
        // Without a config, names are validated as the router does by default.
        let rules = Rules::compile_with(&load_configs(path)?, NameValidation::default())?;
        let task = match args.task_count {
            Some(0) => {
                return Err(RelabelCliError::Usage(
                    "--task-count must be at least 1".into(),
                ))
            }
            Some(n) => Some(TaskIdConfig {
                task_count: n,
                task_labels: args.task_labels.clone(),
                task_labels_without: args.task_labels_without.clone().unwrap_or_default(),
                label_name: args.task_label_name.clone(),
            }),
            None => None,
        };
        Ok(Pipeline {
            rules,
            task,
            partitions: args.partitions,
            partition_labels: args.partition_labels.clone().unwrap_or_default(),
            route: None,
        })
    }

    /// Injects the task label when asked; returns the partition when asked:
    /// by `--partition-labels`' hash, else the task's, else all labels' (as
    /// `Route::apply` does).
    fn stamp(&self, labels: &mut Vec<(String, String)>) -> Option<u32> {
        let task = self.task.as_ref().map(|task| {
            let id = task_id(labels, task);
            inject_task_label(labels, &task.label_name, id);
            id
        });
        let partitions = self.partitions?;
        Some(if !self.partition_labels.is_empty() {
            let selected = labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .filter(|(n, _)| self.partition_labels.iter().any(|w| w == n));
            jump_hash(labels_hash_iter(selected), partitions)
        } else if let Some(id) = task {
            partition_for_task(id, partitions)
        } else {
            jump_hash(labels_hash(labels), partitions)
        })
    }

    /// Applies the pipeline to one JSON line; returns the output JSON line.
    pub fn apply_line(&self, line: &str) -> Result<String, String> {
        self.apply(line, &mut Load::default())
    }

    /// The start-up findings of the route's aggregation rules, if any.
    pub fn findings(&self) -> Vec<String> {
        let findings = self
            .route
            .as_ref()
            .and_then(Route::aggregation)
            .map(|a| a.report())
            .unwrap_or_default();
        findings
            .into_iter()
            .map(|f| match f.warning {
                true => format!("warning: {}", f.text),
                false => f.text,
            })
            .collect()
    }

    /// [`Pipeline::apply_line`], counting the result into `load`.
    pub fn apply(&self, line: &str, load: &mut Load) -> Result<String, String> {
        let input: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
        let mut labels = Vec::with_capacity(input.len() + 1);
        for (name, value) in input {
            match value {
                serde_json::Value::String(v) => labels.push((name, v)),
                other => return Err(format!("label {name:?} has value {other}, want a string")),
            }
        }
        let partition_key = if let Some(route) = &self.route {
            // Without --partitions the partition is not printed; 1 keeps apply() happy.
            match route.apply_routed(&mut labels, self.partitions.unwrap_or(1)) {
                None => {
                    load.dropped += 1;
                    return Ok("null".into());
                }
                Some((task, partition, routed)) => {
                    let partition = self.partitions.map(|_| partition);
                    load.add(Some(task), partition, routed);
                    partition
                }
            }
        } else if !self.rules.process(&mut labels) {
            load.dropped += 1;
            return Ok("null".into());
        } else {
            let partition = self.stamp(&mut labels);
            let task = self.task.as_ref().and_then(|t| {
                labels
                    .iter()
                    .find(|(n, _)| *n == t.label_name)
                    .and_then(|(_, v)| v.parse().ok())
            });
            load.add(task, partition, Routed::Unmatched);
            partition
        };
        let object: BTreeMap<String, String> = labels.into_iter().collect();
        let out = match partition_key {
            None => serde_json::to_string(&object),
            Some(partition) => serde_json::to_string(
                &serde_json::json!({ "labels": object, "partition": partition }),
            ),
        };
        out.map_err(|e| e.to_string())
    }
}

/// Series counted by [`Pipeline::apply`]: the load per partition and task.
#[derive(Debug, Default)]
pub struct Load {
    /// Series kept.
    pub series: u64,
    /// Series dropped by relabeling.
    pub dropped: u64,
    /// Series per partition (with `--partitions`).
    pub partitions: BTreeMap<u32, u64>,
    /// Series per task (with a task label).
    pub tasks: BTreeMap<u32, u64>,
    /// Series routed by the aggregation rules.
    pub grouped: u64,
    /// Of those, series routed by an empty label set (one task for all).
    pub conflicts: u64,
}

impl Load {
    fn add(&mut self, task: Option<u32>, partition: Option<u32>, routed: Routed) {
        self.series += 1;
        if let Some(t) = task {
            *self.tasks.entry(t).or_default() += 1;
        }
        if let Some(p) = partition {
            *self.partitions.entry(p).or_default() += 1;
        }
        self.grouped += u64::from(routed != Routed::Unmatched);
        self.conflicts += u64::from(routed == Routed::Conflict);
    }

    /// The summary lines written to stderr. `partitions` is the partition
    /// count (partitions without series are listed too).
    pub fn summary(&self, partitions: Option<u32>, aggregation: bool) -> Vec<String> {
        let share = |n: u64| 100.0 * n as f64 / self.series.max(1) as f64;
        let mut out = vec![format!(
            "load: {} series kept, {} dropped",
            self.series, self.dropped
        )];
        if let Some(count) = partitions {
            let cells: Vec<String> = (0..count)
                .map(|p| {
                    let n = self.partitions.get(&p).copied().unwrap_or(0);
                    format!("p{p} {n} ({:.1}%)", share(n))
                })
                .collect();
            out.push(format!("load: series per partition: {}", cells.join(", ")));
        }
        if !self.tasks.is_empty() {
            let (max_task, max) = self
                .tasks
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(t, n)| (*t, *n))
                .unwrap_or_default();
            out.push(format!(
                "load: {} tasks used; the busiest, task {max_task}, holds {max} series ({:.1}%)",
                self.tasks.len(),
                share(max)
            ));
        }
        if aggregation {
            out.push(format!(
                "aggregation: {} series routed by the rules' grouping labels, {} as without the file",
                self.grouped,
                self.series - self.grouped
            ));
            if self.conflicts > 0 {
                out.push(format!(
                    "aggregation: {} series matched rules whose grouping keys share no label: routed by an empty label set, all to one task",
                    self.conflicts
                ));
            }
        }
        out
    }
}

/// Runs the command over stdin and stdout; findings and load on stderr.
pub fn run(args: &RelabelArgs, config: Option<&Path>) -> Result<(), RelabelCliError> {
    let pipeline = Pipeline::from_args(args, config)?;
    let mut stderr = std::io::stderr().lock();
    for finding in pipeline.findings() {
        writeln!(stderr, "aggregation: {finding}")?;
    }
    let mut load = Load::default();
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, line) in stdin.lines().enumerate() {
        let line = line?;
        let out = pipeline
            .apply(&line, &mut load)
            .map_err(|reason| RelabelCliError::Input {
                line: i + 1,
                reason,
            })?;
        writeln!(stdout, "{out}")?;
    }
    stdout.flush()?;
    let aggregation = pipeline
        .route
        .as_ref()
        .is_some_and(|r| r.aggregation().is_some());
    for line in load.summary(pipeline.partitions, aggregation) {
        writeln!(stderr, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(rules: &str, task: Option<u32>, partitions: Option<u32>) -> Pipeline {
        Pipeline {
            rules: Rules::from_yaml(rules).expect("rules"),
            task: task.map(TaskIdConfig::new),
            partitions,
            partition_labels: Vec::new(),
            route: None,
        }
    }

    #[test]
    fn partition_labels_pick_the_partition_as_the_router_does() {
        let cli = Pipeline {
            partition_labels: vec!["job".into()],
            ..pipeline("[]", Some(64), Some(7))
        };
        let route = Route::compile(
            &crate::router::config::RouteConfig {
                partition_labels: vec!["job".into()],
                ..crate::router::config::RouteConfig::new("r", "t", 64)
            },
            NameValidation::default(),
        )
        .unwrap();
        let mut partitions = std::collections::BTreeMap::new();
        for (job, instance) in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "9"), ("c", "8")] {
            let line = format!(r#"{{"__name__":"up","job":"{job}","instance":"{instance}"}}"#);
            let got: serde_json::Value =
                serde_json::from_str(&cli.apply_line(&line).unwrap()).unwrap();
            let mut labels = vec![
                ("__name__".to_string(), "up".to_string()),
                ("instance".to_string(), instance.to_string()),
                ("job".to_string(), job.to_string()),
            ];
            let (_, want) = route.apply(&mut labels, 7).unwrap();
            assert_eq!(got["partition"], want, "{line}");
            partitions.entry(job).or_insert_with(Vec::new).push(want);
        }
        // One job, one partition, whatever the instance.
        assert!(partitions.values().all(|p| p.iter().all(|x| *x == p[0])));
    }

    #[test]
    fn relabels_and_drops() {
        let p = pipeline("- action: drop\n  source_labels: [job]\n  regex: skip\n- target_label: env\n  replacement: prod\n", None, None);
        assert_eq!(
            p.apply_line(r#"{"job":"api","__name__":"up"}"#).unwrap(),
            r#"{"__name__":"up","env":"prod","job":"api"}"#
        );
        assert_eq!(p.apply_line(r#"{"job":"skip"}"#).unwrap(), "null");
    }

    #[test]
    fn injects_the_task_label_and_partition() {
        let p = pipeline("[]", Some(8), Some(3));
        let labels = vec![
            ("__name__".to_string(), "up".to_string()),
            ("job".to_string(), "a".to_string()),
        ];
        let id = task_id(&labels, &TaskIdConfig::new(8));
        let want = serde_json::json!({
            "labels": {"__name__": "up", "job": "a", "stream_task_id": id.to_string()},
            "partition": partition_for_task(id, 3),
        });
        let got: serde_json::Value =
            serde_json::from_str(&p.apply_line(r#"{"job":"a","__name__":"up"}"#).unwrap()).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn task_labels_without_hashes_every_other_label() {
        let p = Pipeline {
            task: Some(TaskIdConfig {
                task_labels_without: vec!["instance".into()],
                ..TaskIdConfig::new(64)
            }),
            ..pipeline("[]", None, Some(3))
        };
        let task = |line: &str| -> serde_json::Value {
            let v: serde_json::Value = serde_json::from_str(&p.apply_line(line).unwrap()).unwrap();
            v["labels"]["stream_task_id"].clone()
        };
        let a = task(r#"{"__name__":"up","job":"a","instance":"1"}"#);
        assert_eq!(a, task(r#"{"__name__":"up","job":"a","instance":"2"}"#));
        let want = labels_hash(&[
            ("__name__".to_string(), "up".to_string()),
            ("job".to_string(), "a".to_string()),
        ]) % 64;
        assert_eq!(a, serde_json::json!(want.to_string()));
    }

    #[test]
    fn the_load_lists_every_partition() {
        let p = pipeline(
            "- action: drop\n  source_labels: [job]\n  regex: skip\n",
            Some(8),
            Some(3),
        );
        let mut load = Load::default();
        for line in [
            r#"{"__name__":"up","job":"a"}"#,
            r#"{"__name__":"up","job":"a"}"#,
            r#"{"job":"skip"}"#,
        ] {
            p.apply(line, &mut load).unwrap();
        }
        let summary = load.summary(Some(3), false);
        assert_eq!(summary[0], "load: 2 series kept, 1 dropped");
        let id = task_id(
            &[
                ("__name__".to_string(), "up".to_string()),
                ("job".to_string(), "a".to_string()),
            ],
            &TaskIdConfig::new(8),
        );
        let busy = partition_for_task(id, 3);
        assert!(
            summary[1].contains(&format!("p{busy} 2 (100.0%)")),
            "{summary:?}"
        );
        assert_eq!(summary[1].matches("0 (0.0%)").count(), 2, "{summary:?}");
        assert!(summary[2].starts_with("load: 1 tasks used"), "{summary:?}");
    }

    #[test]
    fn non_string_values_are_refused() {
        let p = pipeline("[]", None, None);
        assert!(p
            .apply_line(r#"{"a":1}"#)
            .unwrap_err()
            .contains("want a string"));
        assert!(p.apply_line("[").unwrap_err().contains("not a JSON object"));
    }
}
