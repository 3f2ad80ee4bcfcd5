//! Command-line interface (clap). `main.rs` parses it and hands over to `app`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Kafka-native stream processor for Prometheus remote-write data.
#[derive(Debug, Parser)]
#[command(name = "streamroute", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML config file; defaults, then this file, then STREAMROUTE_* variables.
    #[arg(long, short = 'c', global = true, env = "STREAMROUTE_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role listed in `run.roles` in this process (the one-machine default).
    Run,
    /// Run the gateway alone: remote write in, ingress topic out.
    Gateway,
    /// Run the router alone: ingress topic in, task topics out.
    Router,
    /// Run egress workers alone: task-topic partitions out to vmagent.
    Egress,
    /// Create or check the topics declared in the topics folder.
    Topics(TopicsArgs),
    /// Show what a relabel rule set does to series read as JSON lines on stdin.
    Relabel(crate::commands::relabel::RelabelArgs),
    /// Push remote-write payload files or synthetic load into the ingress topic.
    Produce(crate::produce::ProduceArgs),
    /// Look into streamroute's state.
    Inspect(InspectArgs),
    /// Check a config file or a relabel rules file, like promtool check; exit 0 or 1.
    Check(crate::commands::check::CheckArgs),
    /// Print the version.
    Version,
}

/// `streamroute topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// apply or check.
    #[command(subcommand)]
    pub action: TopicsAction,
    /// Folder of topic files (default: `topics.dir` from the config).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
}

/// `streamroute topics apply|check`.
#[derive(Debug, Subcommand)]
pub enum TopicsAction {
    /// Create missing topics and raise partition counts; report other drift. Never deletes.
    Apply,
    /// Report drift; exit 1 when the cluster differs from the files.
    Check,
}

/// `streamroute inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// What to show.
    #[command(subcommand)]
    pub what: InspectWhat,
}

/// `streamroute inspect …`.
#[derive(Debug, Subcommand)]
pub enum InspectWhat {
    /// Print the egress positions (next offset to read) stored in a state folder.
    Offsets {
        /// The egress state folder (default: `egress.state_dir` of the config).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Print the recent gaps found by the egress windows, with their series.
    Gaps(GapsArgs),
}

/// `streamroute inspect gaps`.
#[derive(Debug, Args)]
pub struct GapsArgs {
    /// The egress state folder (default: `egress.state_dir` of the config);
    /// egress must be stopped (the running role serves GET /api/v1/gaps instead).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Only series this PromQL selector selects, e.g. '{job="x"}'.
    #[arg(long = "match")]
    pub selector: Option<String>,
    /// Only gaps that ended at most this long ago, e.g. 1h.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many gaps, newest first.
    #[arg(long, default_value_t = crate::egress::gaps::DEFAULT_LIMIT)]
    pub limit: usize,
}
