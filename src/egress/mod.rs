//! The egress role: task-topic partitions → remote-write receivers (vmagent).
//!
//! Guarantee: no acknowledged sample is lost on the way out. Each owned
//! partition has its own consumer (manual assignment, no consumer group,
//! `read_committed`) and its own loop with one request in flight, so a
//! partition's samples arrive in order. Positions live in sled
//! (`src/state/`) and mean "next offset to read": a position moves past a
//! record only once the receiver acknowledged it (2xx) or it was written to
//! the dead-letter topic (other 4xx). Connection errors, timeouts, 5xx and
//! 429 are retried forever with backoff; a crash resends at most what was
//! acknowledged since sled's last flush (`egress.state_flush_every`).
//! Positions on disk are also committed to the Kafka consumer group
//! `egress.group_id` (`keeper.rs`), never ahead of sled, so a lost state
//! folder resumes from Kafka. A failing sled (full disk) makes egress not
//! ready and holds the partitions until it works again; it never stops
//! the role.

mod batch;
pub mod config;
mod drain;
mod events;
pub mod gaps;
mod in_order;
mod keeper;
pub mod metrics;
mod send;
mod targets;
pub mod windows;
mod worker;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::EgressConfig;
use config::PartitionSet;

use crate::kafka::producer::DurableProducer;
use crate::live::Live;
use crate::state::{State, StateError};
use keeper::Keeper;
use worker::{PartitionWorker, Shared};

/// How often the lag gauge is refreshed; the same query tells whether
/// Kafka answers, so an outage shows in readiness within about this long
/// plus `PROBE_TIMEOUT`.
const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// How long the end-offset query may take before Kafka counts as
/// unreachable (kafka.request_timeout would hide an outage for 30 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors that stop the egress role.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The sled state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A Kafka client failed.
    #[error("kafka: {0}")]
    Client(KafkaError),
    /// The task topic or an owned partition is not there (yet).
    #[error("{0}")]
    Topic(String),
    /// `egress.partitions` does not parse (validation refuses it first).
    #[error("egress config: {0}")]
    Partitions(#[from] config::PartitionsError),
    /// The receivers' client cannot be built (validation refuses it first).
    #[error("egress config: {0}")]
    Sender(#[from] send::SenderError),
    /// A target list that is not one URL per partition of the topic, which
    /// validation cannot check: it does not know the topic.
    #[error("egress config: egress.target lists {urls} URL(s) but {topic} has {count} partition(s): give one URL per partition, or a template with {{partition}}")]
    TargetCount {
        /// URLs in the list.
        urls: usize,
        /// The task topic.
        topic: String,
        /// Its partitions.
        count: i32,
    },
    /// The target list has no URL for an owned partition.
    #[error("egress config: target lists no URL for partition {0}")]
    NoTarget(i32),
    /// A request body could not be compressed.
    #[error("cannot encode a request: {0}")]
    Encode(String),
    /// A blocking task failed.
    #[error("egress task failed: {0}")]
    Thread(String),
    /// A partition's consumer stopped fetching (see `worker/position.rs`, `STALL_AFTER`);
    /// the role is restarted with fresh clients.
    #[error("consumer of partition {partition} is wedged: {reason}")]
    Stalled { partition: i32, reason: String },
}

impl EgressError {
    /// Errors worth waiting out at start-up (Kafka not there yet).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            EgressError::Client(_) | EgressError::Topic(_) | EgressError::State(_)
        )
    }
}

/// The egress role.
pub struct Egress {
    config: Arc<EgressConfig>,
    /// Kafka, topics, readiness and grace, as every role gets them.
    common: crate::shared::Shared,
    gaps: Option<gaps::GapsSource>,
    hard_stop: Option<CancellationToken>,
    live: Option<Live<EgressConfig>>,
}

impl Egress {
    /// Registers readiness; the role is ready once every owned partition
    /// is assigned and the state is open, and not ready while the periodic
    /// end-of-partition fetch (the lag gauge) fails for every partition,
    /// i.e. while Kafka is unreachable, or while the state cannot be
    /// written (a full disk).
    pub fn new(config: Arc<EgressConfig>, common: crate::shared::Shared) -> Egress {
        common.readiness.register("egress");
        Egress {
            config,
            common,
            gaps: None,
            hard_stop: None,
            live: None,
        }
    }

    /// Reads targets, auth and headers from `live` (hot reload) before
    /// every request.
    pub fn with_live(mut self, live: Live<EgressConfig>) -> Egress {
        self.live = Some(live);
        self
    }

    /// On shutdown egress drains (`drain.rs`) until `hard_stop` is
    /// cancelled; without one, for at most `run.shutdown_grace`.
    pub fn with_hard_stop(mut self, hard_stop: CancellationToken) -> Egress {
        self.hard_stop = Some(hard_stop);
        self
    }

    /// Hands the state to `source` once it is open (`GET /api/v1/gaps`).
    pub fn with_gaps(mut self, source: Option<gaps::GapsSource>) -> Egress {
        self.gaps = source;
        self
    }

    /// Runs every owned partition until `shutdown` or a failure.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EgressError> {
        let egress = self.config.clone();
        let state = State::closed(&egress.state_dir, egress.state_flush_every);
        if let Some(source) = &self.gaps {
            source.set(state.clone());
        }
        let mut keeper =
            Keeper::new(state.clone(), &egress, &self.common.kafka).map_err(EgressError::Client)?;
        // A state that cannot open (full disk, corrupt files) is logged,
        // counted and retried; egress stays not ready meanwhile.
        if !keeper.open(&shutdown).await {
            return Ok(());
        }
        let live = self
            .live
            .clone()
            .unwrap_or_else(|| Live::new((*self.config).clone()));
        let sender = send::Sender::new(&live.get())?;
        let dead_letter = DurableProducer::new(
            &self.common.kafka,
            "egress",
            Duration::from_secs(30),
            egress.max_bytes_per_send,
        )
        .map_err(EgressError::Client)?;
        let shared = Arc::new(Shared {
            config: egress.clone(),
            kafka: self.common.kafka.clone(),
            dead_letter_topic: self.common.topics.dead_letter.clone(),
            state,
            sender: targets::Targets::new(live, sender),
            dead_letter: Arc::new(dead_letter),
        });
        let workers = loop {
            match start_workers(&shared).await {
                Ok(w) => break w,
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "egress cannot start yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                    if !keeper.healthy() {
                        keeper.open(&shutdown).await;
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let lag: Vec<_> = workers
            .iter()
            .map(|w| (w.partition, w.consumer.clone(), w.position.clone()))
            .collect();
        // Not a child of `shutdown`: on shutdown the partitions first drain.
        let stop = CancellationToken::new();
        let hard_stop = self
            .hard_stop
            .clone()
            .unwrap_or_else(|| self.common.hard_stop_after_grace(&shutdown));
        let mut draining = false;
        let mut tasks = JoinSet::new();
        for w in workers {
            tasks.spawn(w.run(stop.clone()));
        }
        self.common.readiness.set("egress", true);
        info!(topic = %egress.topic, partitions = lag.len(), "egress running");
        let mut result = Ok(());
        let mut tick = tokio::time::interval(LAG_INTERVAL);
        let mut keep = tokio::time::interval(keeper::TICK);
        keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut kafka_reachable, mut state_ok) = (true, true);
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    None => break,
                    Some(done) => {
                        let failed = match done {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e),
                            Err(e) => Some(EgressError::Thread(e.to_string())),
                        };
                        if let Some(e) = failed {
                            // One partition failing (sled) stops them all: the state is shared.
                            stop.cancel();
                            if result.is_ok() {
                                result = Err(e);
                            }
                        }
                    }
                },
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    let done = if egress.windows.enabled() {
                        drain::Done::Read { settle: egress.flush_interval * 2 }
                    } else {
                        drain::Done::Stored
                    };
                    let (topic, partitions, stop, hard_stop) =
                        (egress.topic.clone(), lag.clone(), stop.clone(), hard_stop.clone());
                    let probe = shared.kafka.request_timeout.min(PROBE_TIMEOUT);
                    tokio::spawn(async move {
                        drain::until_caught_up(&topic, &partitions, done, probe, &hard_stop).await;
                        stop.cancel();
                    });
                }
                _ = tick.tick(), if !stop.is_cancelled() => {
                    let reachable = update_lag(&egress.topic, &lag, shared.kafka.request_timeout.min(PROBE_TIMEOUT)).await;
                    if reachable != kafka_reachable {
                        kafka_reachable = reachable;
                        if reachable {
                            info!("Kafka reachable again; egress ready");
                        } else {
                            warn!("cannot read the end of any owned partition (Kafka unreachable?); egress not ready");
                        }
                        self.common.readiness.set("egress", reachable && state_ok);
                    }
                }
                _ = keep.tick(), if !stop.is_cancelled() => {
                    let ok = keeper.tick().await;
                    if ok != state_ok {
                        state_ok = ok;
                        if ok {
                            info!(state_dir = %egress.state_dir.display(), "egress state writable again; egress ready");
                        } else {
                            warn!(state_dir = %egress.state_dir.display(), "egress state cannot be written; egress not ready, partitions wait");
                        }
                        self.common.readiness.set("egress", kafka_reachable && state_ok);
                    }
                }
            }
        }
        self.common.readiness.set("egress", false);
        keeper.finish(Duration::from_secs(3)).await;
        shared.dead_letter.flush(Duration::from_secs(5));
        info!("egress stopped");
        result
    }
}

/// Resolves the owned partitions against the topic and starts their workers.
async fn start_workers(shared: &Arc<Shared>) -> Result<Vec<PartitionWorker>, EgressError> {
    let config = &shared.config;
    let count = partition_count(&shared.kafka, &config.topic).await?;
    let owned: BTreeSet<i32> = match config.partitions.parse()? {
        PartitionSet::All => (0..count).collect(),
        PartitionSet::Some(set) => set,
    };
    // A list is one URL per partition of the topic: a longer or shorter one
    // means the topic or the list is not what the operator thinks.
    if let config::Target::List(urls) = &config.target {
        if urls.len() != count as usize {
            return Err(EgressError::TargetCount {
                urls: urls.len(),
                topic: config.topic.clone(),
                count,
            });
        }
    }
    if let Some(p) = owned.iter().find(|p| **p >= count) {
        return Err(EgressError::Topic(format!(
            "partition {p} of {} does not exist (it has {count})",
            config.topic
        )));
    }
    let mut workers = Vec::new();
    for p in owned {
        let url = config.target.url(p).ok_or(EgressError::NoTarget(p))?;
        workers.push(PartitionWorker::start(shared.clone(), p, url).await?);
        zero_counters(p);
    }
    Ok(workers)
}

/// Registers the counters alerts take `increase()` of at 0, so that the
/// first dead letter, 429 or retry shows as an increase (a series that is
/// born at 1 has none) and dashboards show 0 rather than no data.
fn zero_counters(partition: i32) {
    let p = partition.to_string();
    ::metrics::counter!(metrics::DEAD_LETTERED, "partition" => p.clone()).increment(0);
    ::metrics::counter!(metrics::TOO_MANY_REQUESTS, "partition" => p).increment(0);
    for reason in ["connect", "timeout", "429", "5xx", "unexpected_status"] {
        ::metrics::counter!(metrics::RETRIES, "reason" => reason).increment(0);
    }
}

async fn partition_count(
    kafka: &crate::kafka::KafkaConfig,
    topic: &str,
) -> Result<i32, EgressError> {
    let (config, topic, timeout) = (
        kafka.client_config("egress"),
        topic.to_string(),
        kafka.request_timeout,
    );
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().map_err(EgressError::Client)?;
        let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some(&topic), timeout)
            .map_err(EgressError::Client)?;
        match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as i32)
            }
            _ => Err(EgressError::Topic(format!(
                "topic {topic} does not exist (streamroute topics apply)"
            ))),
        }
    })
    .await
    .map_err(|e| EgressError::Thread(e.to_string()))?
}

/// Refreshes the lag gauge of every partition (their ends are fetched at
/// once, so an unreachable Kafka costs one timeout, not one per partition).
/// Returns whether any partition's end could be read.
async fn update_lag(
    topic: &str,
    partitions: &[(i32, Arc<StreamConsumer>, Arc<AtomicI64>)],
    timeout: Duration,
) -> bool {
    let ends = futures::future::join_all(
        partitions
            .iter()
            .map(|(p, consumer, _)| worker::watermarks(consumer, topic, *p, timeout)),
    )
    .await;
    let mut any = false;
    for ((partition, _, position), end) in partitions.iter().zip(ends) {
        match end {
            Ok((_, high)) => {
                any = true;
                let lag = (high - position.load(Ordering::Acquire)).max(0);
                ::metrics::gauge!(metrics::LAG, "partition" => partition.to_string())
                    .set(lag as f64);
            }
            Err(e) => {
                warn!(partition, error = %e, "cannot read the partition's end for the lag gauge")
            }
        }
    }
    any || partitions.is_empty()
}
