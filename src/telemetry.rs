//! Logs (tracing) and metrics (the Prometheus exporter), set up once per
//! process, and the `[log]` config section.
//!
//! May depend on: `metrics` (names and descriptions), `problem`. Not on
//! `config`, which holds a [`LogConfig`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::problem::Problem;

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `streamroute=debug,rdkafka=warn`.
    /// `RUST_LOG` wins when set.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogConfig {
    /// Problems, keys relative to `log.`.
    pub fn problems(&self) -> Vec<Problem> {
        match EnvFilter::try_new(&self.level) {
            Ok(_) => Vec::new(),
            Err(e) => vec![Problem::new(
                "level",
                format!("not a valid log filter: {e}"),
            )],
        }
    }
}

/// Installs the log subscriber. `RUST_LOG` wins over `log.level`.
pub fn init_logging(config: &LogConfig) {
    let from_env = EnvFilter::try_from_default_env().is_ok();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or a log pipeline gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    // try_init: a second call (tests) keeps the first subscriber.
    let installed = match config.format {
        LogFormat::Text => registry.with(lines).try_init(),
        LogFormat::Json => registry.with(lines.json()).try_init(),
    };
    // RUST_LOG wins over log.level, on reload too.
    if installed.is_ok() && !from_env {
        let _ = LOG_FILTER.set(Box::new(move |level: &str| {
            let filter = EnvFilter::try_new(level)?;
            Ok(handle.reload(filter)?)
        }));
    }
}

/// Why a reloaded `log.level` could not be applied.
#[derive(Debug, thiserror::Error)]
enum LogLevelError {
    #[error("not a tracing filter: {0}")]
    Parse(#[from] tracing_subscriber::filter::ParseError),
    #[error("{0}")]
    Reload(#[from] tracing_subscriber::reload::Error),
}

type SetFilter = Box<dyn Fn(&str) -> Result<(), LogLevelError> + Send + Sync>;
static LOG_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Replaces the log filter with `level` (hot reload of `log.level`);
/// nothing when `RUST_LOG` set the filter.
pub fn set_log_level(level: &str) {
    if let Some(set) = LOG_FILTER.get() {
        if let Err(e) = set(level) {
            tracing::warn!(level, error = %e, "cannot apply log.level");
        }
    }
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Reads the process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_threads`, ... as Prometheus' client libraries name them) from
/// /proc into the recorder; called before each render of `/metrics`.
pub fn collect_process_metrics() {
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
}

/// The process-wide metrics recorder; installed on first use. Roles running
/// in one process (or tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed, then ours stays unread.
            let _ = metrics::set_global_recorder(recorder);
            crate::metrics::describe();
            collect_process_metrics();
            handle
        })
        .clone()
}
