//! The task helpers of [`run_roles`](super::run_roles): the shutdown token
//! cancelled on SIGINT/SIGTERM, config reload on SIGHUP, a role's
//! supervision loop (restart with backoff), and draining a stage's task
//! within the shutdown deadline.
//!
//! May depend on: `crate::http::Readiness`, `crate::reload`,
//! `crate::metrics` and [`AppError`]; tokio only otherwise.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::AppError;
use crate::http::Readiness;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the process");
                    let _ = ctrl_c.await;
                    cancel.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => info!("SIGINT received, shutting down"),
                _ = term.recv() => info!("SIGTERM received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        cancel.cancel();
    });
    token
}

/// Reloads the config on every SIGHUP, as Prometheus and vmagent do.
pub(super) async fn reload_on_sighup(reloader: Arc<crate::reload::Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; reload with POST /-/reload");
        return;
    };
    while hangups.recv().await.is_some() {
        info!("SIGHUP received, reloading the config");
        let reloader = reloader.clone();
        // The outcome is logged and counted by the reloader.
        let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
    }
}

/// Runs a role until `stop`, starting it again after a failure with a
/// backoff from 1 s doubling to 60 s (reset after a minute of good run).
/// Returns the role's last error only when it failed during shutdown.
pub(super) async fn supervise<F, Fut>(
    role: &'static str,
    readiness: Readiness,
    stop: CancellationToken,
    mut start: F,
) -> Result<(), AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AppError>>,
{
    let mut backoff = Duration::from_secs(1);
    // At 0 from the start, so that the first restart is an increase.
    metrics::counter!(crate::metrics::ROLE_RESTARTS, "role" => role).increment(0);
    loop {
        let started = tokio::time::Instant::now();
        let error = match start().await {
            Ok(()) => return Ok(()),
            Err(e) if stop.is_cancelled() => return Err(e),
            Err(e) => e,
        };
        readiness.set(role, false);
        metrics::counter!(crate::metrics::ROLE_RESTARTS, "role" => role).increment(1);
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        error!(role, error = %error, ?backoff, "role failed; the other roles keep running, restarting it");
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Waits for a stage's task until `deadline`, keeping its first error.
pub(super) async fn drain(
    role: &str,
    task: Option<tokio::task::JoinHandle<Result<(), AppError>>>,
    deadline: tokio::time::Instant,
    first_error: &mut Option<AppError>,
) {
    let Some(task) = task else { return };
    match tokio::time::timeout_at(deadline, task).await {
        Ok(done) => {
            if let Some(e) = flatten(done) {
                first_error.get_or_insert(e);
            }
        }
        Err(_) => warn!(role, "role did not drain within run.shutdown_grace"),
    }
}

fn flatten(done: Result<Result<(), AppError>, tokio::task::JoinError>) -> Option<AppError> {
    match done {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(AppError::Other(format!("a role task panicked: {e}"))),
    }
}
