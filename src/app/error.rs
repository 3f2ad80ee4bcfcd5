//! The error that ends a command ([`AppError`]), one variant per role or
//! command, and the exit code each maps to.
//!
//! May depend on: the roles' and commands' error types, `crate::config`.

use std::net::SocketAddr;
use std::process::ExitCode;

/// Errors that end a command.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A role this build does not have yet.
    #[error("{0} is not yet implemented")]
    NotImplemented(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The gateway failed.
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    /// The router failed.
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
    /// The egress role failed.
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
    /// `topics` failed or found drift.
    #[error(transparent)]
    Topics(#[from] crate::commands::topics::TopicsCommandError),
    /// `inspect` failed.
    #[error(transparent)]
    Inspect(#[from] crate::commands::inspect::InspectError),
    /// `relabel` failed.
    #[error(transparent)]
    Relabel(#[from] crate::commands::relabel::RelabelCliError),
    /// `produce` failed.
    #[error(transparent)]
    Produce(#[from] crate::commands::produce::ProduceError),
    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

impl AppError {
    pub(super) fn exit_code(&self) -> ExitCode {
        match self {
            AppError::Config(_) | AppError::NotImplemented(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}
