//! Where a partition stands: its start (sled, else the offset committed
//! to Kafka, else `start_from`), storing the position after each delivery,
//! moving it past transaction markers, retention skips, and the stall
//! check that restarts a wedged consumer.
//!
//! Depends on the worker, `state` and rdkafka's consumer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::PartitionWorker;
use crate::egress::config::StartFrom;
use crate::egress::events::{RecordsSkipped, ResumedFromKafka};
use crate::egress::EgressError;
use crate::state::Position;

/// Longest wait between two attempts to store a position.
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// How long an idle partition may go without its consumer handing over a
/// record while the partition holds committed records past its position
/// (or while the partition's end cannot be read) before the consumer
/// counts as wedged and the role restarts with fresh clients. librdkafka
/// has been seen to keep a partition leaderless in its metadata cache
/// long after a broker came back from a graceful stop.
const STALL_AFTER: Duration = Duration::from_secs(30);

/// How long the stall check waits for the partition's end.
const STALL_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Since when an idle partition's consumer has not moved, and from where.
#[derive(Default)]
pub struct Stall {
    since: Option<(Instant, i64)>,
}

impl Stall {
    /// The consumer handed over a record: not stalled.
    pub fn moved(&mut self) {
        self.since = None;
    }
}

impl PartitionWorker {
    pub(super) async fn watermarks(&self) -> Result<(i64, i64), EgressError> {
        watermarks(
            &self.consumer,
            self.topic(),
            self.partition,
            self.shared.kafka.request_timeout,
        )
        .await
    }

    /// The stored position, checked against what the log still holds; with
    /// none in sled, the offset committed to Kafka (a lost state folder),
    /// else earliest or latest; stored at once so a restart before the
    /// first delivery starts at the same place.
    pub(super) async fn start_offset(&mut self) -> Result<i64, EgressError> {
        let (low, high) = self.watermarks().await?;
        let mut stored = self.shared.state.get(self.topic(), self.partition)?;
        let in_sled = stored.is_some();
        if !in_sled {
            stored = self.committed_offset().await?;
            if let Some(committed) = stored {
                ResumedFromKafka {
                    topic: self.topic(),
                    partition: self.partition,
                    label: &self.label,
                    committed,
                    group: &self.shared.config.group_id(),
                    state_dir: self.shared.state.dir(),
                }
                .emit();
            }
        }
        let start = match stored {
            Some(pos) if pos < low => {
                self.retention_skip(pos, low);
                low
            }
            Some(pos) if pos > high => {
                error!(
                    topic = self.topic(), partition = self.partition, stored = pos, high,
                    "stored position is beyond the end of the partition (was the topic recreated?); starting at its earliest offset"
                );
                low
            }
            Some(pos) if in_sled => return Ok(pos),
            Some(pos) => pos,
            None => {
                let start = match self.shared.config.start_from {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                };
                info!(topic = self.topic(), partition = self.partition, start, start_from = ?self.shared.config.start_from, "no stored or committed position; starting at start_from");
                start
            }
        };
        let position = Position {
            topic: self.topic().to_string(),
            partition: self.partition,
            next_offset: start,
        };
        self.shared.state.set_batch(&[position]).await?;
        self.position.store(start, Ordering::Release);
        Ok(start)
    }

    /// The offset committed to the consumer group for this partition, if
    /// any. Blocks on Kafka, so it runs off the async threads.
    async fn committed_offset(&self) -> Result<Option<i64>, EgressError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.topic(), self.partition);
        let (consumer, timeout) = (self.consumer.clone(), self.shared.kafka.request_timeout);
        let (topic, partition) = (self.topic().to_string(), self.partition);
        let committed =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, timeout))
                .await
                .map_err(|e| EgressError::Thread(e.to_string()))?
                .map_err(EgressError::Client)?;
        let entry = committed.find_partition(&topic, partition);
        Ok(entry.and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0))
    }

    fn retention_skip(&self, from: i64, to: i64) {
        RecordsSkipped {
            topic: self.topic(),
            partition: self.partition,
            label: &self.label,
            from,
            to,
        }
        .emit();
    }

    /// Stores the position, retrying until sled takes it (a full disk
    /// waits here, so nothing past an unsaved position is read or sent).
    /// False when shutdown interrupted the wait: the position is then
    /// unsaved and its records are sent again after a restart.
    pub(super) async fn store(&self, next_offset: i64) -> bool {
        let position = Position {
            topic: self.topic().to_string(),
            partition: self.partition,
            next_offset,
        };
        let mut wait = Duration::from_millis(100);
        let mut next_offset = next_offset;
        loop {
            let stored = match &self.windows {
                Some(w) => self
                    .windowed_store(w, position.next_offset)
                    .await
                    .map(|n| next_offset = n),
                None => self
                    .shared
                    .state
                    .set_batch(std::slice::from_ref(&position))
                    .await
                    .map_err(EgressError::from),
            };
            match stored {
                Ok(()) => break,
                // The state logged and counted the error; the role reopens it.
                Err(e) => {
                    debug!(partition = self.partition, next_offset, error = %e, "position not stored yet; waiting")
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(STORE_RETRY_MAX);
        }
        self.position.store(next_offset, Ordering::Release);
        true
    }

    /// The consumer's position: the offset after the last record it handed
    /// over, moved past transaction markers and aborted records, which
    /// read_committed never hands over.
    pub(super) fn consumer_position(&self) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        tpl.find_partition(self.topic(), self.partition)
            .and_then(|e| e.offset().to_raw())
            .filter(|p| *p >= 0)
    }

    /// Called while the partition is idle: fails with
    /// [`EgressError::Stalled`] once the consumer has not moved for
    /// [`STALL_AFTER`] although the partition's end lies past it (or cannot
    /// be read), so the role restarts with a fresh consumer. Nothing is
    /// pending then, so nothing read is lost; the stored position is where
    /// the new consumer starts.
    pub(super) async fn check_stall(&self, stall: &mut Stall) -> Result<(), EgressError> {
        let now = Instant::now();
        let position = self
            .consumer_position()
            .unwrap_or_else(|| self.position.load(Ordering::Acquire));
        let since = match stall.since {
            Some((since, at)) if at == position => since,
            _ => {
                stall.since = Some((now, position));
                return Ok(());
            }
        };
        if now.duration_since(since) < STALL_AFTER {
            return Ok(());
        }
        let timeout = self.shared.kafka.request_timeout.min(STALL_PROBE_TIMEOUT);
        let end = watermarks(&self.consumer, self.topic(), self.partition, timeout).await;
        let reason = match end {
            Ok((_, end)) if end <= position => {
                // Caught up: nothing to fetch, nothing wedged.
                stall.since = Some((now, position));
                return Ok(());
            }
            Ok((_, end)) => format!(
                "no record handed over for {} s although the partition holds offsets {position}..{end}",
                STALL_AFTER.as_secs()
            ),
            Err(e) => format!(
                "no record handed over and the partition's end unreadable for {} s: {e}",
                STALL_AFTER.as_secs()
            ),
        };
        Err(EgressError::Stalled {
            partition: self.partition,
            reason,
        })
    }

    /// With nothing pending, every offset between the stored position and
    /// the consumer's is a transaction marker or an aborted record: moving
    /// the position past them loses nothing.
    pub(super) async fn skip_markers(&self) -> Result<(), EgressError> {
        let stored = self.position.load(Ordering::Acquire);
        match self.consumer_position() {
            Some(consumer) if consumer > stored => {
                debug!(
                    partition = self.partition,
                    from = stored,
                    to = consumer,
                    "position moves past transaction markers"
                );
                self.store(consumer).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Handles a consumer error: an out-of-range position means retention
    /// removed records we had not sent; anything else is logged and librdkafka retries.
    pub(super) async fn consumer_error(&self, e: KafkaError) -> Result<(), EgressError> {
        let out_of_range = matches!(
            &e,
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset
            )
        );
        if !out_of_range {
            warn!(partition = self.partition, error = %e, "task topic consumer error");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        }
        let (low, _) = self.watermarks().await?;
        // Records from the stored position up to the consumer's position
        // were read and are in the open batch (or pending): not lost. Only
        // what lies between the consumer's position and the log start is.
        let stored = self.position.load(Ordering::Acquire);
        let consumer = self.consumer_position().unwrap_or(stored);
        let from = consumer.max(stored);
        if low > from {
            self.retention_skip(from, low);
        }
        self.consumer
            .seek(
                self.topic(),
                self.partition,
                Offset::Offset(low.max(from)),
                Duration::from_secs(10),
            )
            .map_err(EgressError::Client)?;
        Ok(())
    }
}

/// The partition's (low, high) watermarks. fetch_watermarks blocks, so it
/// runs off the async threads.
pub async fn watermarks(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), EgressError> {
    let (consumer, topic) = (consumer.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, timeout))
        .await
        .map_err(|e| EgressError::Thread(e.to_string()))?
        .map_err(EgressError::Client)
}
