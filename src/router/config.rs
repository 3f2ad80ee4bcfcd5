//! Router settings: the consumer group, transactions, batching and routes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};
use crate::relabel::{load_configs, RelabelConfig, RelabelError, Rules};
use crate::remote_write::{Encoding, Limits, NameValidation};
use crate::router::aggregation::{Aggregation, AggregationError};
use crate::router::task_id::{TaskIdConfig, DEFAULT_TASK_LABEL};

/// The router role: ingress topic in, per-task partitioned topics out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Address of `/metrics` and the health endpoints of `streamroute router`.
    pub listen: SocketAddr,
    /// Consumer group shared by all router instances.
    pub group_id: String,
    /// This instance's stable name, unique in the group. The transactional
    /// id is `<group_id>-<instance_id>`: a restarted instance with the same
    /// name fences its predecessor's open transaction.
    pub instance_id: String,
    /// How long one transaction collects records before it commits. Shorter
    /// means lower latency, longer means fewer, bigger commits. The default,
    /// 200 ms, with egress' 50 ms flush keeps the end-to-end p99 under
    /// 500 ms at 20,000 samples/s (323 ms measured; 100 ms: 223 ms, +31%
    /// streamroute and +73% broker CPU; README, Performance).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// A batch (one output record) is flushed at this many samples...
    pub batch_max_samples: usize,
    /// ...or at this many bytes of encoded series.
    pub batch_max_bytes: usize,
    /// How long Kafka may take for transaction operations before the
    /// transaction is aborted and retried. Also how long the open
    /// transaction of a router that died holds back read_committed readers
    /// of the task topics (egress) before the broker aborts it, so keep it
    /// short: well above `commit_interval` plus a commit's duration.
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Largest decoded ingress payload accepted; larger ones are dead-lettered.
    pub max_decoded_bytes: usize,
    /// Routes with `record_format = "series_ids"`: how often a series'
    /// labels are written again (else its samples name it by number). A
    /// reader starting anywhere reads twice this far back to learn the
    /// numbers (egress does, once per router writer), so longer means less
    /// storage but a longer look back on an egress restart.
    #[serde(with = "humantime_serde")]
    pub series_refresh: Duration,
    /// Bytes per route a router worker may keep to remember what the route
    /// made of each series it saw (relabeled labels, task id), so that a
    /// series seen again is not relabeled again (`relabel_cache.rs`). About
    /// twice a series' encoded labels plus about 100 bytes each; when full, it
    /// forgets everything and starts over. 0 turns it off.
    pub relabel_cache_bytes: usize,
    /// Limits every ingress payload is validated against (a payload over
    /// them is dead-lettered) and the label-name rule the relabel rules are
    /// checked under. Absent, the gateway's (`gateway.limits`), so what the
    /// gateway accepted the router takes.
    pub limits: Option<Limits>,
    /// The routes. A series may match several (fan-out); each works on its own copy.
    pub routes: Vec<RouteConfig>,
}

/// One route: relabel rules, an output topic and how series map to tasks
/// and partitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name, used in metrics and headers.
    pub name: String,
    /// Output topic (declare it in topics/).
    pub topic: String,
    /// Number of stream tasks; the task label takes values `0..task_count`.
    pub task_count: u32,
    /// Labels the task id is computed from; empty means all labels.
    #[serde(default)]
    pub task_labels: Vec<String>,
    /// Labels left out of the task id's hash, every other label is hashed
    /// (vmagent's `shardByURL.ignoreLabels`). Not together with `task_labels`.
    #[serde(default)]
    pub task_labels_without: Vec<String>,
    /// The stream aggregation file the downstream vmagents run: series a
    /// rule matches are routed by the labels every matching rule groups by
    /// (see `router::aggregation`); the others by `task_labels` /
    /// `task_labels_without` / all labels.
    #[serde(default)]
    pub stream_aggr_file: Option<PathBuf>,
    /// Name of the injected task label: a legacy Prometheus name
    /// (`^[a-zA-Z_][a-zA-Z0-9_]*$`) even when `gateway.limits.name_validation`
    /// is `"utf8"`, so that every receiver takes it.
    #[serde(default = "default_task_label")]
    pub task_label_name: String,
    /// Labels whose hash picks the partition (so every series of one
    /// aggregation group shares a partition); empty means "by task id".
    #[serde(default)]
    pub partition_labels: Vec<String>,
    /// Relabel rules in Prometheus' `relabel_configs` format.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// A YAML file holding a list of relabel rules, applied after the inline ones.
    #[serde(default)]
    pub relabel_file: Option<PathBuf>,
    /// Encoding of the task records' values, named in their
    /// `content-encoding` header: `"identity"` (plain protobuf, the default:
    /// the broker's zstd batch compression already shrinks it), `"snappy"`
    /// or `"zstd"` for downstream consumers that expect a compressed
    /// remote-write body (vmagent's Kafka consumer). Egress reads all three.
    #[serde(default = "default_record_encoding")]
    pub record_encoding: String,
    /// How series are written in the task records: `"write_request"` (the
    /// default: plain remote-write requests, every sample with its labels,
    /// what any consumer reads) or `"series_ids"` (a series' labels once per
    /// `router.series_refresh`, its other samples by a number; about a
    /// tenth of the broker storage. Egress reads both; other consumers need
    /// the format in `kafka/record/series.rs`).
    #[serde(default = "default_record_format")]
    pub record_format: String,
}

/// How a route writes series into its task records (`record_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    WriteRequest,
    SeriesIds,
}

impl RecordFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::WriteRequest => "write_request",
            RecordFormat::SeriesIds => "series_ids",
        }
    }
}

/// A `record_format` that names no format the router writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of \"write_request\", \"series_ids\"")]
pub struct UnknownFormat(pub String);

fn default_record_format() -> String {
    RecordFormat::WriteRequest.as_str().to_string()
}

fn default_record_encoding() -> String {
    Encoding::Identity.as_str().to_string()
}

fn default_task_label() -> String {
    DEFAULT_TASK_LABEL.to_string()
}

impl RouteConfig {
    /// A route with every optional key at its default.
    pub fn new(name: &str, topic: &str, task_count: u32) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            topic: topic.into(),
            task_count,
            task_labels: Vec::new(),
            task_labels_without: Vec::new(),
            stream_aggr_file: None,
            task_label_name: default_task_label(),
            partition_labels: Vec::new(),
            relabel_configs: Vec::new(),
            relabel_file: None,
            record_encoding: default_record_encoding(),
            record_format: default_record_format(),
        }
    }

    /// The parsed `record_format`.
    pub fn record_format(&self) -> Result<RecordFormat, UnknownFormat> {
        [RecordFormat::WriteRequest, RecordFormat::SeriesIds]
            .into_iter()
            .find(|f| f.as_str() == self.record_format)
            .ok_or_else(|| UnknownFormat(self.record_format.clone()))
    }

    /// The parsed `record_encoding`.
    pub fn record_encoding(&self) -> Result<Encoding, UnknownEncoding> {
        Encoding::parse(&self.record_encoding)
            .map_err(|_| UnknownEncoding(self.record_encoding.clone()))
    }
}

/// A `record_encoding` that names no encoding the router writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of \"identity\", \"snappy\", \"zstd\"")]
pub struct UnknownEncoding(pub String);

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9202)),
            group_id: "streamroute-router".into(),
            instance_id: "0".into(),
            commit_interval: Duration::from_millis(200),
            batch_max_samples: 10_000,
            batch_max_bytes: 4 << 20,
            transaction_timeout: Duration::from_secs(10),
            max_decoded_bytes: 64 << 20,
            series_refresh: Duration::from_secs(300),
            // 64 MiB: about 100,000 series of 12-15 labels per route.
            relabel_cache_bytes: 64 << 20,
            // Filled in with gateway.limits by Config::load when absent.
            limits: None,
            // No route runs unless one is configured (a route nobody asked
            // for would write somewhere nobody reads).
            routes: Vec::new(),
        }
    }
}

impl RouteConfig {
    /// All of this route's rules: inline ones, then the file's, validated
    /// under `names`.
    pub fn rules(&self, names: NameValidation) -> Result<Rules, RelabelError> {
        let mut configs = self.relabel_configs.clone();
        if let Some(path) = &self.relabel_file {
            configs.extend(load_configs(path)?);
        }
        Rules::compile_with(&configs, names)
    }

    /// The task settings of this route.
    pub fn task(&self) -> TaskIdConfig {
        TaskIdConfig {
            task_count: self.task_count,
            task_labels: (!self.task_labels.is_empty()).then(|| self.task_labels.clone()),
            task_labels_without: self.task_labels_without.clone(),
            label_name: self.task_label_name.clone(),
        }
    }
}

impl RouteConfig {
    /// The compiled `stream_aggr_file`, when set.
    pub fn aggregation(&self) -> Result<Option<Aggregation>, AggregationError> {
        self.stream_aggr_file
            .as_ref()
            .map(|path| Aggregation::load(path, &self.task_label_name))
            .transpose()
    }
}

impl RouterConfig {
    /// The limits ingress payloads are validated against: `limits`, which
    /// `Config::load` sets to the gateway's when absent.
    pub fn limits(&self) -> Limits {
        self.limits.clone().unwrap_or_default()
    }

    /// Problems, keys relative to `router.`; relabel rules are checked
    /// under `name_validation` (that of `router.limits`). The limits
    /// themselves are checked by `Config::validate`, which knows whether
    /// they are the gateway's.
    pub fn problems(&self, name_validation: NameValidation) -> Vec<Problem> {
        let mut out = Problems::default();
        let positive = "must be greater than zero".to_string();
        out.check(!self.group_id.is_empty(), "group_id", "must not be empty");
        out.check(
            !self.instance_id.is_empty(),
            "instance_id",
            "must not be empty",
        );
        out.check(
            !self.commit_interval.is_zero(),
            "commit_interval",
            positive.clone(),
        );
        out.check(
            self.batch_max_samples > 0,
            "batch_max_samples",
            positive.clone(),
        );
        out.check(self.batch_max_bytes > 0, "batch_max_bytes", positive);
        out.check(
            self.transaction_timeout > self.commit_interval,
            "transaction_timeout",
            "must be longer than commit_interval",
        );
        // Brokers refuse longer transactions (transaction.max.timeout.ms,
        // 15 minutes by default) at init_transactions, long after start-up.
        out.check(
            self.transaction_timeout <= Duration::from_secs(15 * 60),
            "transaction_timeout",
            "must be at most 15m (the brokers' default transaction.max.timeout.ms)",
        );
        out.check(
            self.batch_max_bytes <= 256 << 20,
            "batch_max_bytes",
            "must be at most 256 MiB (one Kafka record)",
        );
        // A record is sent up to a commit interval after its series were
        // put in it; the reader's look back (2 x series_refresh) covers
        // that only while it is shorter than the refresh.
        out.check(
            self.series_refresh > self.commit_interval,
            "series_refresh",
            "must be longer than commit_interval",
        );
        // No route is fine for the other roles; the router role refuses to
        // start without one (app.rs).
        let mut names = BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            out.check(!route.name.is_empty(), key("name"), "must not be empty");
            out.check(
                names.insert(route.name.clone()),
                key("name"),
                format!("{:?} is used by another route", route.name),
            );
            if let Err(e) = crate::topics::check_topic_name(&route.topic) {
                out.push(key("topic"), e.to_string());
            }
            out.check(
                route.task_count > 0,
                key("task_count"),
                "must be at least 1",
            );
            // Legacy even in UTF-8 mode: the operator picks this name, not a
            // sender, and every series egress sends carries it, so it must
            // suit any receiver (VictoriaMetrics, Prometheus 2).
            out.check(
                crate::relabel::is_valid_label_name(&route.task_label_name),
                key("task_label_name"),
                format!("{:?} is not a valid label name", route.task_label_name),
            );
            out.check(
                route.task_labels.is_empty() || route.task_labels_without.is_empty(),
                key("task_labels_without"),
                format!("cannot be combined with routes[{i}].task_labels: give one of them"),
            );
            out.check(
                route.stream_aggr_file.is_none() || route.partition_labels.is_empty(),
                key("partition_labels"),
                format!("cannot be combined with routes[{i}].stream_aggr_file: the partition must follow the aggregation groups' task id"),
            );
            if let Err(e) = route.record_encoding() {
                out.push(key("record_encoding"), e.to_string());
            }
            if let Err(e) = route.record_format() {
                out.push(key("record_format"), e.to_string());
            }
            if let Err(e) = route.aggregation() {
                out.push(key("stream_aggr_file"), e.to_string());
            }
            // Inline rules and the file's apart, each under its own key.
            let inline = Rules::compile_with(&route.relabel_configs, name_validation);
            if let Err(e) = &inline {
                out.push(key("relabel_configs"), e.to_string());
            }
            if let (Ok(_), Some(_)) = (&inline, &route.relabel_file) {
                if let Err(e) = route.rules(name_validation) {
                    out.push(key("relabel_file"), e.to_string());
                }
            }
        }
        out.into_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use std::path::Path;

    use super::*;

    /// config/example.toml lists every router and route key with its default.
    #[test]
    fn the_example_router_section_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = crate::config::Config::load(Some(&path)).unwrap();
        // router.limits is absent there, so load fills in gateway.limits
        // (the defaults in the example).
        let defaults = RouterConfig {
            limits: Some(Limits::default()),
            ..RouterConfig::default()
        };
        assert_eq!(config.gateway.limits, Limits::default());
        assert_eq!(
            serde_json::to_value(&config.router).unwrap(),
            serde_json::to_value(defaults).unwrap()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let route = serde_json::to_value(RouteConfig::new("r", "t", 1)).unwrap();
        for key in route.as_object().unwrap().keys() {
            assert!(
                text.contains(&format!("\n{key} =")) || text.contains(&format!("\n# {key} =")),
                "example.toml lacks route key {key}"
            );
        }
    }

    fn route(extra: impl FnOnce(&mut RouteConfig)) -> Vec<Problem> {
        let mut config = RouterConfig::default();
        config
            .routes
            .push(RouteConfig::new("default", "streamroute.tasks.default", 64));
        extra(&mut config.routes[0]);
        config.problems(NameValidation::default())
    }

    #[test]
    fn route_key_problems_name_their_keys() {
        let p = route(|r| {
            r.task_labels = vec!["job".into()];
            r.task_labels_without = vec!["instance".into()];
        });
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "routes[0].task_labels_without");
        assert!(p[0].reason.contains("routes[0].task_labels"), "{p:?}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aggr.yml");
        std::fs::write(
            &file,
            "- name: jobs\n  interval: 1m\n  outputs: [total]\n  match: 'up{job=}'\n",
        )
        .unwrap();
        let p = route(|r| r.stream_aggr_file = Some(file.clone()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "routes[0].stream_aggr_file");
        assert!(
            p[0].reason.contains("aggr.yml") && p[0].reason.contains("rule #0 (jobs)"),
            "{p:?}"
        );

        let p = route(|r| r.stream_aggr_file = Some(dir.path().join("missing.yml")));
        assert_eq!(p[0].key, "routes[0].stream_aggr_file");
        assert!(p[0].reason.contains("missing.yml"), "{p:?}");

        std::fs::write(&file, "- interval: 1m\n  outputs: [total]\n  by: [job]\n").unwrap();
        let p = route(|r| {
            r.stream_aggr_file = Some(file.clone());
            r.partition_labels = vec!["job".into()];
        });
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "routes[0].partition_labels");
        assert!(route(|r| r.stream_aggr_file = Some(file.clone())).is_empty());

        let p = route(|r| r.record_encoding = "gzip".into());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "routes[0].record_encoding");
        assert!(
            p[0].reason.contains("gzip") && p[0].reason.contains("zstd"),
            "{p:?}"
        );
        for ok in ["identity", "snappy", "zstd"] {
            assert!(route(|r| r.record_encoding = ok.into()).is_empty(), "{ok}");
        }

        let p = route(|r| r.record_format = "ids".into());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "routes[0].record_format");
        assert!(p[0].reason.contains("series_ids"), "{p:?}");
        for ok in ["write_request", "series_ids"] {
            assert!(route(|r| r.record_format = ok.into()).is_empty(), "{ok}");
        }
    }

    #[test]
    fn series_refresh_must_outlast_the_commit_interval() {
        let mut config = RouterConfig {
            commit_interval: Duration::from_millis(100),
            series_refresh: Duration::from_millis(100),
            ..RouterConfig::default()
        };
        let p = config.problems(NameValidation::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "series_refresh");
        config.series_refresh = Duration::from_millis(101);
        assert!(config.problems(NameValidation::default()).is_empty());
    }
}
