//! Keeps the egress positions safe while the workers run: flushes sled
//! every `state_flush_every`, reopens it after an error (a full disk) until
//! it works again, and commits the positions that are on disk to the Kafka
//! consumer group `egress.group_id`.
//!
//! Invariants:
//! - a position is committed to Kafka only once sled has it on disk
//!   ([`State::durable`]), so the Kafka offset is never ahead of sled: a
//!   lost `state_dir` resumes from Kafka at worst a commit interval behind
//!   (sent again), never ahead (lost);
//! - one commit at a time, on a blocking thread, so an unreachable Kafka
//!   never delays a flush or a reopen;
//! - [`Keeper::healthy`] is false from the first failed sled operation
//!   until a reopen succeeded: egress is then not ready;
//! - a state folder deleted while egress runs is noticed within a second
//!   and recreated with the positions in memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::config::EgressConfig;
use super::metrics as m;
use crate::state::State;

/// Time between two attempts to reopen a failed state.
const REOPEN_EVERY: Duration = Duration::from_secs(2);

/// How often the keeper checks that the state folder still exists.
const LOST_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How often [`Keeper::tick`] should be called.
pub const TICK: Duration = Duration::from_millis(250);

/// The positions of one topic: partition → next offset to read.
type Offsets = BTreeMap<i32, i64>;

/// Flushes, reopens and commits the positions of one egress role.
pub struct Keeper {
    state: State,
    topic: String,
    group_id: String,
    flush_every: Duration,
    commit_every: Duration,
    /// A consumer of the group, used only to commit (never assigned).
    committer: std::sync::Arc<BaseConsumer>,
    committed: Offsets,
    commit: Option<JoinHandle<(Offsets, Result<(), KafkaError>)>>,
    last_flush: Instant,
    last_commit: Instant,
    last_reopen: Option<Instant>,
    last_lost_check: Instant,
}

impl Keeper {
    /// A keeper of `state` for `config`'s topic and group.
    pub fn new(
        state: State,
        config: &EgressConfig,
        kafka: &crate::kafka::KafkaConfig,
    ) -> Result<Keeper, KafkaError> {
        let group_id = config.group_id();
        let committer: BaseConsumer = super::worker::consumer_config(kafka, &group_id).create()?;
        Ok(Keeper {
            state,
            topic: config.topic.clone(),
            group_id,
            flush_every: config.state_flush_every,
            commit_every: config.commit_interval,
            committer: std::sync::Arc::new(committer),
            committed: Offsets::new(),
            commit: None,
            last_flush: Instant::now(),
            last_commit: Instant::now(),
            last_reopen: None,
            last_lost_check: Instant::now(),
        })
    }

    /// Whether the state takes writes (no error since the last open).
    pub fn healthy(&self) -> bool {
        self.state.is_open()
    }

    /// Opens the state, retrying every [`REOPEN_EVERY`] until it opens or
    /// `stop` is cancelled (false then).
    pub async fn open(&mut self, stop: &tokio_util::sync::CancellationToken) -> bool {
        loop {
            if self.reopen().await {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(REOPEN_EVERY) => {}
            }
        }
    }

    async fn reopen(&mut self) -> bool {
        self.last_reopen = Some(Instant::now());
        let state = self.state.clone();
        matches!(
            tokio::task::spawn_blocking(move || state.reopen()).await,
            Ok(Ok(()))
        )
    }

    /// One round: reopen a failed state (at most every [`REOPEN_EVERY`]),
    /// flush when due, commit when due. Returns [`Keeper::healthy`].
    pub async fn tick(&mut self) -> bool {
        if self.last_lost_check.elapsed() >= LOST_CHECK_EVERY {
            self.last_lost_check = Instant::now();
            // Reopened at once below: nothing waits for REOPEN_EVERY.
            if self.state.close_if_lost() {
                self.last_reopen = None;
            }
        }
        if !self.state.is_open() {
            if self.last_reopen.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return false;
            }
            if !self.reopen().await {
                return false;
            }
        }
        if !self.flush_every.is_zero() && self.last_flush.elapsed() >= self.flush_every {
            self.last_flush = Instant::now();
            if self.state.flush().await.is_err() {
                return false;
            }
        }
        if self.last_commit.elapsed() >= self.commit_every {
            self.last_commit = Instant::now();
            self.start_commit();
        }
        self.state.is_open()
    }

    /// Starts a commit of what is on disk and not yet committed, unless
    /// one is still running.
    fn start_commit(&mut self) {
        if let Some(running) = &self.commit {
            if !running.is_finished() {
                return;
            }
        }
        if let Some(done) = self.commit.take() {
            // Finished: now_or_never cannot miss it.
            if let Some(Ok((offsets, result))) = futures::FutureExt::now_or_never(done) {
                self.committed_result(offsets, result);
            }
        }
        let due = self.due();
        if due.is_empty() {
            return;
        }
        let (committer, topic) = (self.committer.clone(), self.topic.clone());
        self.commit = Some(tokio::task::spawn_blocking(move || {
            let result = commit(&committer, &topic, &due);
            (due, result)
        }));
    }

    /// Durable positions of this topic that differ from what was committed.
    fn due(&self) -> Offsets {
        self.state
            .durable()
            .into_iter()
            .filter(|((topic, _), _)| *topic == self.topic)
            .map(|((_, partition), offset)| (partition, offset))
            .filter(|(partition, offset)| self.committed.get(partition) != Some(offset))
            .collect()
    }

    fn committed_result(&mut self, offsets: Offsets, result: Result<(), KafkaError>) {
        match result {
            Ok(()) => {
                debug!(group = %self.group_id, ?offsets, "egress positions committed to kafka");
                self.committed.extend(offsets);
            }
            Err(e) => {
                warn!(group = %self.group_id, error = %e, "cannot commit egress positions to kafka; retrying");
                metrics::counter!(m::COMMIT_ERRORS).increment(1);
            }
        }
    }

    /// At shutdown, once every worker stopped: flushes and commits what is
    /// on disk, waiting at most `within` for Kafka.
    pub async fn finish(mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        if self.state.is_open() {
            let _ = self.state.flush().await;
        }
        if let Some(running) = self.commit.take() {
            if let Ok(Ok((offsets, result))) = tokio::time::timeout_at(deadline, running).await {
                self.committed_result(offsets, result);
            }
        }
        let due = self.due();
        if due.is_empty() {
            return;
        }
        let (committer, topic, offsets) = (self.committer.clone(), self.topic.clone(), due.clone());
        let running = tokio::task::spawn_blocking(move || commit(&committer, &topic, &offsets));
        match tokio::time::timeout_at(deadline, running).await {
            Ok(Ok(result)) => {
                if result.is_ok() {
                    info!(group = %self.group_id, partitions = due.len(), "final egress positions committed to kafka");
                }
                self.committed_result(due, result);
            }
            _ => {
                warn!(group = %self.group_id, "final commit of egress positions to kafka did not finish in time")
            }
        }
    }
}

/// Commits `offsets` (next offset to read, as Kafka means it too) for
/// manually assigned partitions: no group membership is needed.
fn commit(consumer: &BaseConsumer, topic: &str, offsets: &Offsets) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)
}
