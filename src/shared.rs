//! What every role gets besides its own config section: the Kafka cluster,
//! the topic names, readiness and the shutdown grace. Built once in
//! `app.rs`, so no role reads another role's section or the whole config.
//!
//! Depends on: `kafka` (its section), `topics` (its section), `http`
//! (readiness). Not on `config`.

use std::time::Duration;

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
