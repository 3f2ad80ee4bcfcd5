//! Command-line interface (clap). `main.rs` parses it and hands over to `app`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    Topics(crate::commands::topics::TopicsArgs),
    /// Show what a relabel rule set does to series read as JSON lines on stdin.
    Relabel(crate::commands::relabel::RelabelArgs),
    /// Push remote-write payload files or synthetic load into the ingress topic.
    Produce(crate::commands::produce::ProduceArgs),
    /// Look into streamroute's state.
    Inspect(crate::commands::inspect::InspectArgs),
    /// Check a config file or a relabel rules file, like promtool check; exit 0 or 1.
    Check(crate::commands::check::CheckArgs),
    /// Print the version.
    Version,
}
