//! `streamroute relabel`: shows what a rule set does, like the relabel
//! debug pages of Prometheus and vmagent.
//!
//! Reads JSON lines on stdin, each an object of label name to value, and
//! writes exactly one JSON line per input line, in order: the resulting
//! label object (keys sorted), or `null` when the series is dropped. With
//! `--task-count` the task label is injected; with `--partitions` each
//! result becomes `{"labels": {...}, "partition": p}`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use crate::cli::RelabelArgs;
use crate::config::Config;
use crate::router::route::Route;
use crate::router::task_id::{
    inject_task_label, jump_hash, labels_hash, partition_for_task, task_id, TaskIdConfig,
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
                label_name: args.task_label_name.clone(),
            }),
            None => None,
        };
        Ok(Pipeline {
            rules,
            task,
            partitions: args.partitions,
            route: None,
        })
    }

    /// Injects the task label when asked; returns the partition when asked.
    fn stamp(&self, labels: &mut Vec<(String, String)>) -> Option<u32> {
        match &self.task {
            Some(task) => {
                let id = task_id(labels, task);
                inject_task_label(labels, &task.label_name, id);
                self.partitions.map(|p| partition_for_task(id, p))
            }
            None => self.partitions.map(|p| jump_hash(labels_hash(labels), p)),
        }
    }

    /// Applies the pipeline to one JSON line; returns the output JSON line.
    pub fn apply_line(&self, line: &str) -> Result<String, String> {
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
            match route.apply(&mut labels, self.partitions.unwrap_or(1)) {
                None => return Ok("null".into()),
                Some((_, partition)) => self.partitions.map(|_| partition),
            }
        } else if !self.rules.process(&mut labels) {
            return Ok("null".into());
        } else {
            self.stamp(&mut labels)
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

/// Runs the command over stdin and stdout.
pub fn run(args: &RelabelArgs, config: Option<&Path>) -> Result<(), RelabelCliError> {
    let pipeline = Pipeline::from_args(args, config)?;
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, line) in stdin.lines().enumerate() {
        let line = line?;
        let out = pipeline
            .apply_line(&line)
            .map_err(|reason| RelabelCliError::Input {
                line: i + 1,
                reason,
            })?;
        writeln!(stdout, "{out}")?;
    }
    stdout.flush()?;
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
            route: None,
        }
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
    fn non_string_values_are_refused() {
        let p = pipeline("[]", None, None);
        assert!(p
            .apply_line(r#"{"a":1}"#)
            .unwrap_err()
            .contains("want a string"));
        assert!(p.apply_line("[").unwrap_err().contains("not a JSON object"));
    }
}
