//! `streamroute inspect offsets|gaps`: reads a stopped egress' state folder
//! (sled locks it, so this fails while egress runs; the running role serves
//! `GET /api/v1/gaps` instead).
//!
//! May depend on: `state`, `egress::gaps` (the query and its rows). Nothing
//! depends on it but `app`/`cli`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::egress::gaps::{recent, rfc3339, GapQuery, GapQueryError, DEFAULT_LIMIT};
use crate::state::{State, StateError};

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
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
}

/// Errors of `streamroute inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The folder holds no egress state.
    #[error("{} holds no egress state (egress.state_dir)", .0.display())]
    NoState(PathBuf),
    /// The state could not be opened or read.
    #[error(transparent)]
    State(#[from] StateError),
    /// A gap filter is malformed.
    #[error(transparent)]
    Query(#[from] GapQueryError),
}

/// Runs `streamroute inspect`; `configured_state` is `egress.state_dir`.
pub fn run(args: &InspectArgs, configured_state: &Path) -> Result<(), InspectError> {
    match &args.what {
        InspectWhat::Offsets { state } => offsets(state.as_deref().unwrap_or(configured_state)),
        InspectWhat::Gaps(args) => gaps(args, configured_state),
    }
}

/// `streamroute inspect offsets [--state DIR]`: one line per stored position.
fn offsets(dir: &Path) -> Result<(), InspectError> {
    let state = open_state_folder(dir)?;
    println!("topic\tpartition\tnext_offset");
    for p in state.all()? {
        println!("{}\t{}\t{}", p.topic, p.partition, p.next_offset);
    }
    Ok(())
}

/// `streamroute inspect gaps --state DIR [--match SEL] [--since D]`: the
/// recent gaps with their series, newest first.
fn gaps(args: &GapsArgs, configured: &Path) -> Result<(), InspectError> {
    let query = GapQuery::parse(
        args.selector.as_deref(),
        args.since.as_deref(),
        Some(&args.limit.to_string()),
    )?;
    let state = open_state_folder(args.state.as_deref().unwrap_or(configured))?;
    let (rows, bad) = recent(&state, &query)?;
    println!("end\tstart\tmissing\tsynthesized\ttopic\tpartition\tseries");
    for r in &rows {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            rfc3339(r.gap.end),
            rfc3339(r.gap.start),
            r.gap.missing,
            r.gap.synthesized,
            r.topic,
            r.partition,
            r.series()
        );
    }
    if bad > 0 {
        eprintln!("{bad} stored gap(s) do not decode and were skipped");
    }
    Ok(())
}

/// Opens an egress state folder for reading by a command.
fn open_state_folder(dir: &Path) -> Result<State, InspectError> {
    // Opening creates a database: refuse folders that do not hold one.
    if !dir.join("db").is_file() {
        return Err(InspectError::NoState(dir.to_path_buf()));
    }
    // sled locks the folder: this fails while an egress worker has it open.
    Ok(State::open(dir, Duration::ZERO)?)
}
