//! `streamroute check config FILE [--offline]` and `streamroute check rules
//! FILE`, like `promtool check config|rules`: every problem at once, each
//! naming its dotted key (or the rule's position), exit 0 or 1.
//!
//! `check config` loads the file as the roles do (defaults, the file,
//! `STREAMROUTE_*` variables), runs the start-up validation (which parses
//! every relabel file, stream aggregation file and TLS file) and reports
//! every relabel rule that does not compile, not only the first. Unless
//! `--offline`, it then asks the cluster: every topic the config names
//! must exist, and `egress.partitions` and `egress.target` must cover the
//! partitions of `egress.topic`. A cluster that does not answer is a
//! problem (`kafka.bootstrap_servers`); `--offline` skips these checks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::{Config, ConfigError, Problem};
use crate::egress::config::{PartitionSet, Target};
use crate::relabel::{load_configs, RelabelConfig, RelabelError, Rules};
use crate::remote_write::NameValidation;

/// The longest the cluster checks wait for metadata.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);

/// `streamroute check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// What to check.
    #[command(subcommand)]
    pub what: CheckWhat,
}

/// `streamroute check …`.
#[derive(Debug, Subcommand)]
pub enum CheckWhat {
    /// Check a streamroute config file (and the files it names); exit 1 on any problem.
    Config {
        /// The TOML config file.
        file: PathBuf,
        /// Skip the checks that ask the Kafka cluster (topics, partitions).
        #[arg(long)]
        offline: bool,
    },
    /// Check a relabel rules file (a YAML list of Prometheus relabel_configs).
    Rules {
        /// The YAML file.
        file: PathBuf,
        /// Label-name rule the rules are checked under (`gateway.limits.name_validation`).
        #[arg(long, value_enum, default_value = "utf8")]
        name_validation: NameValidationArg,
    },
}

/// `--name-validation`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NameValidationArg {
    /// Any non-empty UTF-8 name (Prometheus 3).
    Utf8,
    /// `[a-zA-Z_][a-zA-Z0-9_]*` (Prometheus 2).
    Legacy,
}

impl From<NameValidationArg> for NameValidation {
    fn from(arg: NameValidationArg) -> Self {
        match arg {
            NameValidationArg::Utf8 => NameValidation::Utf8,
            NameValidationArg::Legacy => NameValidation::Legacy,
        }
    }
}

/// Runs the check and prints the report (stdout for success, stderr for problems).
pub fn run(args: &CheckArgs) -> ExitCode {
    let (file, report) = match &args.what {
        CheckWhat::Config { file, offline } => (file, check_config(file, *offline)),
        CheckWhat::Rules {
            file,
            name_validation,
        } => (file, check_rules(file, (*name_validation).into())),
    };
    println!("Checking {}", file.display());
    for warning in &report.warnings {
        println!("  WARNING: {warning}");
    }
    if report.problems.is_empty() {
        println!("  SUCCESS: {}", report.summary);
        return ExitCode::SUCCESS;
    }
    eprintln!("  FAILED: {} problem(s)", report.problems.len());
    for p in &report.problems {
        eprintln!("  {}: {}", p.key, p.reason);
    }
    ExitCode::FAILURE
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems; none means the check passed.
    pub problems: Vec<Problem>,
    /// Things that work but are likely not meant.
    pub warnings: Vec<String>,
    /// One line describing what was checked.
    pub summary: String,
}

impl Report {
    fn problem(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

/// `check config`.
pub fn check_config(file: &Path, offline: bool) -> Report {
    let mut report = Report::default();
    let config = match Config::load_unvalidated(Some(file)) {
        Ok(config) => config,
        Err(e) => {
            // figment joins its errors with "; ", each naming its key.
            let text = match e {
                ConfigError::Load(text) => text,
                other => other.to_string(),
            };
            for part in text.split("; ") {
                match part.split_once(": ") {
                    Some((key, reason)) if !key.contains(' ') => report.problem(key, reason),
                    _ => report.problem("(file)", part),
                }
            }
            return report;
        }
    };
    if let Err(ConfigError::Invalid(problems)) = config.validate() {
        for p in problems {
            // A route's rules are reported one by one below.
            if !is_route_rules_key(&p.key) {
                report.problems.push(p);
            }
        }
    }
    let names = config.router_names();
    let mut rule_count = 0;
    for (i, route) in config.router.routes.iter().enumerate() {
        let key = format!("router.routes[{i}]");
        rule_count += route.relabel_configs.len();
        for (j, reason) in rule_problems(&route.relabel_configs, names) {
            report.problem(format!("{key}.relabel_configs[{j}]"), reason);
        }
        if let Some(path) = &route.relabel_file {
            match load_configs(path) {
                Ok(configs) => {
                    rule_count += configs.len();
                    for (j, reason) in rule_problems(&configs, names) {
                        report.problem(
                            format!("{key}.relabel_file"),
                            format!("{} rule #{j}: {reason}", path.display()),
                        );
                    }
                }
                Err(e) => report.problem(format!("{key}.relabel_file"), e.to_string()),
            }
        }
    }
    if !offline {
        check_cluster(&config, &mut report);
    }
    let aggregation_files = config
        .router
        .routes
        .iter()
        .filter(|r| r.stream_aggr_file.is_some())
        .count();
    report.summary = format!(
        "{} route(s), {rule_count} relabel rule(s), {aggregation_files} stream aggregation file(s){}",
        config.router.routes.len(),
        if offline {
            "; cluster not asked (--offline)"
        } else {
            "; topics and partitions match the cluster"
        }
    );
    report
}

/// The keys validation gives a route's rule errors
/// (`router.routes[i].relabel_configs`, `router.routes[i].relabel_file`),
/// which this check reports rule by rule instead.
fn is_route_rules_key(key: &str) -> bool {
    key.starts_with("router.routes[")
        && (key.ends_with("].relabel_configs") || key.ends_with("].relabel_file"))
}

/// Every rule of `configs` that does not compile, as (position, reason).
fn rule_problems(configs: &[RelabelConfig], names: NameValidation) -> Vec<(usize, String)> {
    configs
        .iter()
        .enumerate()
        .filter_map(
            |(j, c)| match Rules::compile_with(std::slice::from_ref(c), names) {
                Ok(_) => None,
                Err(RelabelError::InvalidRule { error, .. }) => Some((j, error.to_string())),
                Err(e) => Some((j, e.to_string())),
            },
        )
        .collect()
}

/// `check rules`.
pub fn check_rules(file: &Path, names: NameValidation) -> Report {
    let mut report = Report::default();
    match load_configs(file) {
        Ok(configs) => {
            for (j, reason) in rule_problems(&configs, names) {
                report.problem(format!("rule #{j}"), reason);
            }
            report.summary = format!("{} rule(s) found", configs.len());
        }
        Err(e) => report.problem("(file)", e.to_string()),
    }
    report
}

/// Partition counts of the topics the config names, then the egress checks.
fn check_cluster(config: &Config, report: &mut Report) {
    let consumer: BaseConsumer = match config.kafka.client_config("check").create() {
        Ok(c) => c,
        Err(e) => {
            report.problem("kafka", format!("cannot create a kafka client: {e}"));
            return;
        }
    };
    let timeout = config.kafka.request_timeout.min(CLUSTER_TIMEOUT);
    let metadata = match consumer.fetch_metadata(None, timeout) {
        Ok(m) => m,
        Err(e) => {
            report.problem(
                "kafka.bootstrap_servers",
                format!(
                    "the cluster at {} did not answer within {timeout:?} ({e}); use --offline to skip the cluster checks",
                    config.kafka.bootstrap_servers
                ),
            );
            return;
        }
    };
    let partitions = |topic: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
    };
    let mut topics = vec![
        ("topics.ingress".to_string(), config.topics.ingress.clone()),
        (
            "topics.dead_letter".to_string(),
            config.topics.dead_letter.clone(),
        ),
    ];
    for (i, route) in config.router.routes.iter().enumerate() {
        topics.push((format!("router.routes[{i}].topic"), route.topic.clone()));
    }
    topics.push(("egress.topic".into(), config.egress.topic.clone()));
    for (key, topic) in &topics {
        if partitions(topic).is_none() {
            report.problem(
                key.clone(),
                format!("topic {topic} does not exist on the cluster (streamroute topics apply)"),
            );
        }
    }
    if let Some(count) = partitions(&config.egress.topic) {
        check_egress(config, count, report);
    }
}

/// `egress.partitions` and `egress.target` against the topic's `count` partitions.
fn check_egress(config: &Config, count: i32, report: &mut Report) {
    let egress = &config.egress;
    let topic = &egress.topic;
    let owned: Vec<i32> = match egress.partitions.parse() {
        Ok(PartitionSet::All) => (0..count).collect(),
        Ok(PartitionSet::Some(set)) => {
            let missing: Vec<String> = set
                .iter()
                .filter(|p| **p >= count)
                .map(i32::to_string)
                .collect();
            if !missing.is_empty() {
                report.problem(
                    "egress.partitions",
                    format!(
                        "partition(s) {} do not exist: {topic} has {count} partition(s), 0 to {}",
                        missing.join(", "),
                        count - 1
                    ),
                );
            }
            set.into_iter().filter(|p| *p < count).collect()
        }
        Err(_) => return, // already reported by validation
    };
    let unserved: Vec<String> = owned
        .iter()
        .filter(|p| egress.target.url(**p).is_none())
        .map(i32::to_string)
        .collect();
    match &egress.target {
        Target::List(urls) => {
            // Validation already names a list too short for explicit partitions.
            let reported = report.problems.iter().any(|p| p.key == "egress.target");
            if !unserved.is_empty() && !reported {
                report.problem(
                    "egress.target",
                    format!(
                        "lists {} URL(s) but {topic} has {count} partition(s): no URL for partition(s) {}",
                        urls.len(),
                        unserved.join(", ")
                    ),
                );
            }
            if urls.len() > count as usize {
                report.warnings.push(format!(
                    "egress.target lists {} URLs but {topic} has only {count} partition(s); URLs past {} are never used",
                    urls.len(),
                    count - 1
                ));
            }
        }
        Target::Template(url) => {
            if owned.len() > 1 && !url.contains("{partition}") {
                report.warnings.push(format!(
                    "egress.target has no {{partition}}: all {} owned partitions go to one receiver",
                    owned.len()
                ));
            }
        }
    }
}
