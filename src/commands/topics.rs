//! `streamroute topics apply|check`: holds the topic files (`topics.dir`)
//! against the cluster. `apply` creates missing topics and raises partition
//! counts and never deletes; `check` reports drift and fails on any.
//!
//! May depend on: `topics` (files and the admin client), `kafka`
//! (`KafkaConfig`). Nothing depends on it but `app`/`cli`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::kafka::KafkaConfig;
use crate::topics::admin::TopicAdmin;
use crate::topics::TopicsError;

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

/// Errors of `streamroute topics`.
#[derive(Debug, thiserror::Error)]
pub enum TopicsCommandError {
    /// Topic files or the admin API failed.
    #[error(transparent)]
    Topics(#[from] TopicsError),
    /// The folder holds no topic file.
    #[error("no topic files (*.toml) in {}", .0.display())]
    NoFiles(PathBuf),
    /// `topics check` found drift.
    #[error("the cluster differs from the topic files")]
    Drift,
}

/// Runs `streamroute topics`: the files of `--dir`, else of `configured_dir`.
pub async fn run(
    kafka: &KafkaConfig,
    configured_dir: &Path,
    args: &TopicsArgs,
) -> Result<(), TopicsCommandError> {
    let dir = args.dir.as_deref().unwrap_or(configured_dir);
    let specs = crate::topics::load_dir(dir)?;
    if specs.is_empty() {
        return Err(TopicsCommandError::NoFiles(dir.to_path_buf()));
    }
    let admin = TopicAdmin::new(kafka)?;
    let plan = admin.plan(&specs).await?;
    for drift in &plan.drift {
        println!("{drift}");
    }
    match args.action {
        TopicsAction::Check => {
            for change in &plan.changes {
                println!("drift: {change} is needed");
            }
            if plan.changes.is_empty() && plan.drift.is_empty() {
                println!("no drift: {} topic(s) match {}", specs.len(), dir.display());
                Ok(())
            } else {
                Err(TopicsCommandError::Drift)
            }
        }
        TopicsAction::Apply => {
            for change in &plan.changes {
                admin.apply(change).await?;
                println!("{change}");
            }
            if plan.changes.is_empty() {
                println!("no change: {} topic(s) up to date", specs.len());
            } else {
                admin.wait_until_visible(&specs).await?;
            }
            Ok(())
        }
    }
}
