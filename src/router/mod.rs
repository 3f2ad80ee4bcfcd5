//! The router role: ingress topic → relabel → stream_task_id → task topics.
//!
//! Guarantee: consume-transform-produce runs in Kafka transactions. Output
//! records, dead-lettered records and the input offsets ("next offset to
//! read") commit together, so a router killed at any moment neither loses
//! nor duplicates a series in the task topics (read with
//! `isolation.level=read_committed`). Order: one ingress partition is
//! processed in order, and a series always goes to the same output
//! partition, so its samples keep their order.

pub mod aggregation;
mod batches;
pub mod config;
mod consumer;
mod drain;
mod events;
pub mod metadata;
pub mod metrics;
mod process;
mod producer;
mod progress;
pub mod relabel_cache;
pub mod route;
pub mod task_id;
mod txn;
mod worker;

#[cfg(test)]
mod proptests;

use std::sync::Arc;

use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::RouterConfig;
use progress::{watch, Progress};
use route::{Route, RouteError};
use worker::Worker;

use crate::live::Live;
use crate::shared::Shared;

/// Errors that stop the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A route could not be compiled (config validation normally catches this).
    #[error("route {route}: {reason}")]
    Route { route: String, reason: RouteError },
    /// A Kafka client could not be created.
    #[error("cannot create a kafka client: {0}")]
    Client(KafkaError),
    /// The worker thread failed.
    #[error("router thread failed: {0}")]
    Thread(String),
    /// The ingress consumer failed fatally (for example fenced after its
    /// session expired); the role must be started again.
    #[error("the ingress consumer failed fatally: {0}")]
    ConsumerFailed(String),
}

/// The router role.
pub struct Router {
    config: Arc<RouterConfig>,
    shared: Shared,
    routes: Vec<Route>,
    hard_stop: Option<CancellationToken>,
    live: Option<Live<Rules>>,
}

impl Router {
    /// Compiles the routes of `config` (the `[router]` section) and
    /// registers readiness.
    pub fn new(config: Arc<RouterConfig>, shared: Shared) -> Result<Router, RouterError> {
        let routes = config
            .routes
            .iter()
            .map(|r| {
                Route::compile(r, config.limits().name_validation).map_err(|reason| {
                    RouterError::Route {
                        route: r.name.clone(),
                        reason,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for route in &routes {
            for finding in route.aggregation().map(|a| a.report()).unwrap_or_default() {
                if finding.warning {
                    warn!(route = %route.name, "stream aggregation routing: {}", finding.text);
                } else {
                    info!(route = %route.name, "stream aggregation routing: {}", finding.text);
                }
            }
        }
        shared.readiness.register("router");
        Ok(Router {
            config,
            shared,
            routes,
            hard_stop: None,
            live: None,
        })
    }

    /// Takes its routes and limits from `live` (hot reload) from now on,
    /// swapping them between transactions.
    pub fn with_live(mut self, live: Live<Rules>) -> Router {
        self.live = Some(live);
        self
    }

    /// On shutdown the router drains (`drain.rs`) until `hard_stop` is
    /// cancelled; without one, for at most `run.shutdown_grace`.
    pub fn with_hard_stop(mut self, hard_stop: CancellationToken) -> Router {
        self.hard_stop = Some(hard_stop);
        self
    }

    /// Runs until `shutdown`, then reads the ingress partitions to their
    /// ends as of then (until the hard stop), commits and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RouterError> {
        let progress = Arc::new(Progress::new());
        let readiness = self.shared.readiness.clone();
        let watchdog = tokio::spawn(watch(progress.clone(), readiness.clone()));
        let hard_stop = self
            .hard_stop
            .clone()
            .unwrap_or_else(|| self.shared.hard_stop_after_grace(&shutdown));
        let live = self.live.clone().unwrap_or_else(|| {
            Live::new(Rules {
                routes: Arc::new(self.routes),
                limits: self.config.limits(),
            })
        });
        let (config, shared) = (self.config, self.shared);
        let result = tokio::task::spawn_blocking(move || {
            let mut worker = Worker::new(config, &shared, live, progress)?;
            worker.run(&shutdown, &hard_stop)
        })
        .await
        .map_err(|e| RouterError::Thread(e.to_string()))?;
        watchdog.abort();
        readiness.set("router", false);
        result
    }
}

/// What hot reload (`src/reload.rs`) may replace in a running router: the
/// compiled routes and the limits records are validated with. The worker
/// takes a new one between transactions, so a transaction never mixes old
/// and new rules.
pub struct Rules {
    pub routes: std::sync::Arc<Vec<route::Route>>,
    pub limits: crate::remote_write::Limits,
}
