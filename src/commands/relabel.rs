//! `streamroute relabel`: shows what a rule set does, like the relabel
//! debug pages of Prometheus and vmagent.
//!
//! Reads JSON lines on stdin, each an object of label name to value, and
//! writes exactly one JSON line per input line, in order: the resulting
//! label object (keys sorted), or `null` when the series is dropped. With
//! `--task-count` the task label is injected; with `--partitions` each
//! result becomes `{"labels": {...}, "partition": p}`.
//!
//! With `--route`, or with `--rules` and `--task-count`, every series goes
//! through a compiled [`Route`], the router's own code: relabeling, the
//! task label and the partition are the router's by construction. Only
//! `--rules` without `--task-count` (no task, so no route) applies the
//! rules alone; its partition is then the hash of `--partition-labels`, or
//! of all labels.
//!
//! On stderr, after the last line: the load, series per partition (with
//! `--partitions`) and per task, so an uneven spread shows before it runs.
//! With a route that has a `stream_aggr_file`, stderr also starts with the
//! rules' start-up findings (rules routed together, keys they cannot
//! share) and ends with how many series were routed by the rules and how
//! many by an empty label set.
//!
//! May depend on: `config`, `relabel`, `router::{config, route, task_id,
//! aggregation}`, `remote_write`. Nothing depends on it but `app`/`cli`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::Config;
use crate::relabel::{load_configs, RelabelConfig, RelabelError, Rules};
use crate::remote_write::NameValidation;
use crate::router::aggregation::Routed;
use crate::router::config::RouteConfig;
use crate::router::route::{Route, RouteError};
use crate::router::task_id::{jump_hash, labels_hash_iter, DEFAULT_TASK_LABEL};

mod load;
pub use load::Load;

/// `streamroute relabel`.
#[derive(Debug, Args)]
pub struct RelabelArgs {
    /// YAML file holding a list of relabel rules (Prometheus `relabel_configs` format).
    #[arg(long, conflicts_with = "route")]
    pub rules: Option<PathBuf>,
    /// Use this configured route (with --config) instead of --rules.
    #[arg(long)]
    pub route: Option<String>,
    /// Inject the task label computed with this many tasks.
    #[arg(long)]
    pub task_count: Option<u32>,
    /// Labels the task id is computed from (default: all).
    #[arg(long, value_delimiter = ',', requires = "task_count")]
    pub task_labels: Option<Vec<String>>,
    /// Labels left out of the task id's hash (default: none).
    #[arg(
        long,
        value_delimiter = ',',
        requires = "task_count",
        conflicts_with = "task_labels"
    )]
    pub task_labels_without: Option<Vec<String>>,
    /// Name of the injected task label.
    #[arg(long, default_value = DEFAULT_TASK_LABEL, requires = "task_count")]
    pub task_label_name: String,
    /// Also print the partition out of this many each series goes to.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Labels whose hash picks the partition instead of the task id (a
    /// route's `partition_labels`).
    #[arg(long, value_delimiter = ',', requires = "partitions")]
    pub partition_labels: Option<Vec<String>>,
}

/// Errors of `streamroute relabel`.
#[derive(Debug, thiserror::Error)]
pub enum RelabelCliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// `--config` could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The rules could not be loaded.
    #[error(transparent)]
    Rules(#[from] RelabelError),
    /// The route did not compile.
    #[error("route {name:?}: {reason}")]
    Route { name: String, reason: RouteError },
    /// An input line is not a JSON object of strings.
    #[error("stdin line {line}: {source}")]
    Input { line: usize, source: LineError },
    /// Reading stdin or writing stdout failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Why one input line was refused.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotAnObject(serde_json::Error),
    /// A label's value is not a string.
    #[error("label {name:?} has value {value}, want a string")]
    NotAString {
        name: String,
        value: serde_json::Value,
    },
    /// The result could not be written as JSON.
    #[error("{0}")]
    Output(serde_json::Error),
}

/// The task options of `--rules`: everything a route needs but its rules.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// `--task-count`.
    pub task_count: u32,
    /// `--task-labels` (empty: all labels).
    pub task_labels: Vec<String>,
    /// `--task-labels-without`.
    pub task_labels_without: Vec<String>,
    /// `--task-label-name`.
    pub label_name: String,
}

impl TaskOptions {
    /// `task_count` tasks over all labels, with the default label name.
    pub fn new(task_count: u32) -> TaskOptions {
        TaskOptions {
            task_count,
            task_labels: Vec::new(),
            task_labels_without: Vec::new(),
            label_name: DEFAULT_TASK_LABEL.into(),
        }
    }
}

/// What each series goes through.
enum Stage {
    /// A route: relabeling, task label and partition, as in the router.
    Route(Box<Route>),
    /// Rules alone (`--rules` without `--task-count`): no task label.
    Rules {
        rules: Rules,
        /// `--partition-labels`: these labels' hash picks the partition.
        partition_labels: Vec<String>,
    },
}

/// What to do with each series, built from the arguments.
pub struct Pipeline {
    stage: Stage,
    partitions: Option<u32>,
}

impl Pipeline {
    /// Builds the pipeline from `--route` (with the config file `config`)
    /// or from `--rules` and the task options.
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
            return Pipeline::from_config(&Config::load(config)?, name, args.partitions);
        }
        let Some(path) = &args.rules else {
            return Err(RelabelCliError::Usage(
                "give --rules FILE, or --config FILE --route NAME".into(),
            ));
        };
        let task = match args.task_count {
            Some(0) => {
                return Err(RelabelCliError::Usage(
                    "--task-count must be at least 1".into(),
                ))
            }
            Some(n) => Some(TaskOptions {
                task_count: n,
                task_labels: args.task_labels.clone().unwrap_or_default(),
                task_labels_without: args.task_labels_without.clone().unwrap_or_default(),
                label_name: args.task_label_name.clone(),
            }),
            None => None,
        };
        Pipeline::from_rules(
            load_configs(path)?,
            task,
            args.partitions,
            args.partition_labels.clone().unwrap_or_default(),
        )
    }

    /// The configured route `name` of `config`.
    pub fn from_config(
        config: &Config,
        name: &str,
        partitions: Option<u32>,
    ) -> Result<Pipeline, RelabelCliError> {
        let Some(route) = config.router.routes.iter().find(|r| r.name == name) else {
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
        let route = compile(route, config.router.limits().name_validation)?;
        Ok(Pipeline {
            stage: Stage::Route(Box::new(route)),
            partitions,
        })
    }

    /// `configs` with the task options when given (then as a route), or
    /// alone. Without a config, names are validated as the router does by
    /// default.
    pub fn from_rules(
        configs: Vec<RelabelConfig>,
        task: Option<TaskOptions>,
        partitions: Option<u32>,
        partition_labels: Vec<String>,
    ) -> Result<Pipeline, RelabelCliError> {
        let names = NameValidation::default();
        // Compiled on their own first for the typed error naming the rule.
        let rules = Rules::compile_with(&configs, names)?;
        let stage = match task {
            None => Stage::Rules {
                rules,
                partition_labels,
            },
            Some(task) => Stage::Route(Box::new(compile(
                &RouteConfig {
                    task_labels: task.task_labels,
                    task_labels_without: task.task_labels_without,
                    task_label_name: task.label_name,
                    partition_labels,
                    relabel_configs: configs,
                    ..RouteConfig::new("relabel", "-", task.task_count)
                },
                names,
            )?)),
        };
        Ok(Pipeline { stage, partitions })
    }

    fn route(&self) -> Option<&Route> {
        match &self.stage {
            Stage::Route(route) => Some(route),
            Stage::Rules { .. } => None,
        }
    }

    /// Applies the pipeline to one JSON line; returns the output JSON line.
    pub fn apply_line(&self, line: &str) -> Result<String, LineError> {
        self.apply(line, &mut Load::default())
    }

    /// The start-up findings of the route's aggregation rules, if any.
    pub fn findings(&self) -> Vec<String> {
        let findings = self
            .route()
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
    pub fn apply(&self, line: &str, load: &mut Load) -> Result<String, LineError> {
        let input: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(line).map_err(LineError::NotAnObject)?;
        let mut labels = Vec::with_capacity(input.len() + 1);
        for (name, value) in input {
            match value {
                serde_json::Value::String(v) => labels.push((name, v)),
                value => return Err(LineError::NotAString { name, value }),
            }
        }
        let partition = match &self.stage {
            // Without --partitions the partition is not printed; 1 keeps apply() happy.
            Stage::Route(route) => {
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
            }
            Stage::Rules {
                rules,
                partition_labels,
            } => {
                if !rules.process(&mut labels) {
                    load.dropped += 1;
                    return Ok("null".into());
                }
                let partition =
                    self.partitions.map(|partitions| {
                        let selected = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).filter(
                            |(n, _)| {
                                partition_labels.is_empty()
                                    || partition_labels.iter().any(|w| w == n)
                            },
                        );
                        jump_hash(labels_hash_iter(selected), partitions)
                    });
                load.add(None, partition, Routed::Unmatched);
                partition
            }
        };
        let object: BTreeMap<String, String> = labels.into_iter().collect();
        let out = match partition {
            None => serde_json::to_string(&object),
            Some(partition) => serde_json::to_string(
                &serde_json::json!({ "labels": object, "partition": partition }),
            ),
        };
        out.map_err(LineError::Output)
    }
}

fn compile(route: &RouteConfig, names: NameValidation) -> Result<Route, RelabelCliError> {
    Route::compile(route, names).map_err(|reason| RelabelCliError::Route {
        name: route.name.clone(),
        reason,
    })
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
            .map_err(|source| RelabelCliError::Input {
                line: i + 1,
                source,
            })?;
        writeln!(stdout, "{out}")?;
    }
    stdout.flush()?;
    let aggregation = pipeline.route().is_some_and(|r| r.aggregation().is_some());
    for line in load.summary(pipeline.partitions, aggregation) {
        writeln!(stderr, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use crate::router::task_id::{labels_hash, partition_for_task, task_id, TaskIdConfig};

    fn pipeline(rules: &str, task: Option<u32>, partitions: Option<u32>) -> Pipeline {
        pipeline_with(rules, task.map(TaskOptions::new), partitions, Vec::new())
    }

    fn pipeline_with(
        rules: &str,
        task: Option<TaskOptions>,
        partitions: Option<u32>,
        partition_labels: Vec<String>,
    ) -> Pipeline {
        let configs = crate::relabel::parse_configs(rules).expect("rules");
        Pipeline::from_rules(configs, task, partitions, partition_labels).expect("pipeline")
    }

    #[test]
    fn partition_labels_pick_the_partition_as_the_router_does() {
        let cli = pipeline_with(
            "[]",
            Some(TaskOptions::new(64)),
            Some(7),
            vec!["job".into()],
        );
        let route = Route::compile(
            &RouteConfig {
                partition_labels: vec!["job".into()],
                ..RouteConfig::new("r", "t", 64)
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
    fn without_a_task_the_partition_hashes_the_partition_labels_or_all() {
        let labels = [("__name__", "up"), ("instance", "1"), ("job", "a")];
        let line = r#"{"__name__":"up","job":"a","instance":"1"}"#;
        let partition = |p: &Pipeline| -> serde_json::Value {
            let v: serde_json::Value = serde_json::from_str(&p.apply_line(line).unwrap()).unwrap();
            assert!(v["labels"].get(DEFAULT_TASK_LABEL).is_none(), "{v}");
            v["partition"].clone()
        };
        let all = jump_hash(labels_hash_iter(labels), 7);
        assert_eq!(partition(&pipeline("[]", None, Some(7))), all);
        let job = jump_hash(labels_hash_iter([("job", "a")]), 7);
        let by_job = pipeline_with("[]", None, Some(7), vec!["job".into()]);
        assert_eq!(partition(&by_job), job);
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
        let p = pipeline_with(
            "[]",
            Some(TaskOptions {
                task_labels_without: vec!["instance".into()],
                ..TaskOptions::new(64)
            }),
            Some(3),
            Vec::new(),
        );
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
            .to_string()
            .contains("want a string"));
        assert!(p
            .apply_line("[")
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
    }

    #[test]
    fn an_invalid_rule_is_a_typed_error_naming_its_position() {
        let configs = crate::relabel::parse_configs(
            "- action: keep\n  source_labels: [a]\n- action: replace\n  regex: '('\n  target_label: x\n",
        )
        .unwrap();
        for task in [None, Some(TaskOptions::new(8))] {
            let Err(RelabelCliError::Rules(RelabelError::InvalidRule { index, .. })) =
                Pipeline::from_rules(configs.clone(), task, None, Vec::new())
            else {
                panic!("expected an invalid rule")
            };
            assert_eq!(index, 1);
        }
    }
}
