//! What every role gets besides its own config section: the Kafka cluster,
//! the topic names, readiness and the shutdown grace. Built once in
//! `app.rs`, so no role reads another role's section or the whole config.
//!
//! Depends on: `kafka` (its section), `topics` (its section), `http`
//! (readiness). Not on `config`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::http::Readiness;
use crate::kafka::KafkaConfig;
use crate::topics::TopicsConfig;

/// What the roles share.
#[derive(Clone)]
pub struct Shared {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub readiness: Readiness,
    /// `run.shutdown_grace`: how long a role may drain after a stop.
    pub shutdown_grace: Duration,
}

impl Shared {
    /// A hard stop for a role run without one: cancelled `shutdown_grace`
    /// after `shutdown` is, so a drain never runs longer than the grace.
    pub fn hard_stop_after_grace(&self, shutdown: &CancellationToken) -> CancellationToken {
        let token = CancellationToken::new();
        let (grace, fire, shutdown) = (self.shutdown_grace, token.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
            fire.cancel();
        });
        token
    }
}
