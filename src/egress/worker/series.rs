//! `series_ids` task records (`kafka::record::series`) back into plain
//! WriteRequests: the partition's [`SeriesBook`] learns each definition as
//! records go by and fills in the labels of each reference.
//!
//! A reference the book does not know (egress started after its
//! definition: a restart, a lost `state_dir`, a new partition owner) makes
//! the partition read back once per writer: from twice the writer's
//! refresh interval before the record, by timestamp, up to the record,
//! learning every definition on the way (`replay`). The writer promises a
//! definition within that window, so a reference still unknown after that
//! is a broken record: it is dead-lettered with the reason. A Kafka error
//! during the replay is retried (the record waits, nothing is skipped)
//! until it works or the worker stops.
//!
//! Depends on the worker (its Kafka settings and partition), the task and
//! series record formats.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{consumer_config, PartitionWorker};
use crate::egress::metrics as m;
use crate::kafka::record::series::{SeriesBook, SeriesError, SeriesOrigin, SeriesRecord};
use crate::kafka::record::TaskHeaders;

/// How long a replay may see no record before it fails (and is retried).
const REPLAY_STALL: Duration = Duration::from_secs(30);

/// The partition's definitions, and the writers it has read back for.
#[derive(Debug, Default)]
pub(super) struct Series {
    book: SeriesBook,
    replayed: HashSet<u64>,
}

/// Why a record has no plain value.
pub(super) enum Unresolved<E> {
    /// The record is broken (dead-lettered with this reason).
    Broken(E),
    /// The worker stops first: the record is read again after the restart.
    Stopped,
}

impl<E> Unresolved<E> {
    pub(super) fn map<F>(self, f: impl FnOnce(E) -> F) -> Unresolved<F> {
        match self {
            Unresolved::Broken(e) => Unresolved::Broken(f(e)),
            Unresolved::Stopped => Unresolved::Stopped,
        }
    }
}

impl<E> From<E> for Unresolved<E> {
    fn from(e: E) -> Self {
        Unresolved::Broken(e)
    }
}

impl PartitionWorker {
    /// `value` (decompressed) of the `series_ids` record `message` as a
    /// plain WriteRequest.
    pub(super) async fn resolve(
        &self,
        message: &BorrowedMessage<'_>,
        origin: SeriesOrigin,
        value: &[u8],
    ) -> Result<Vec<u8>, Unresolved<SeriesError>> {
        let record = SeriesRecord {
            writer: origin.writer,
            refresh_ms: origin.refresh_ms,
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            value,
        };
        let mut series = self.series.lock().await;
        let mut out = Vec::with_capacity(value.len() * 4);
        let resolved = series.book.resolve(&record, &mut out);
        self.count_definitions(&series.book);
        match resolved {
            Ok(()) => return Ok(out),
            Err(e @ SeriesError::Undefined { .. }) if series.replayed.contains(&origin.writer) => {
                return Err(Unresolved::Broken(e))
            }
            Err(SeriesError::Undefined { .. }) => {}
            Err(e) => return Err(Unresolved::Broken(e)),
        }
        series.replayed.insert(origin.writer);
        // Never negative: offsets_for_times would read it as a logical offset.
        let since_ms = (record.timestamp_ms - record.lookback().as_millis() as i64).max(0);
        let mut book = std::mem::take(&mut series.book);
        loop {
            let (topic, partition, offset) = (self.topic(), self.partition, message.offset());
            let config = consumer_config(&self.shared.kafka, &self.shared.config.group_id());
            let (topic_owned, started) = (topic.to_string(), Instant::now());
            let replay = tokio::task::spawn_blocking(move || {
                let learned = replay(
                    &config,
                    &topic_owned,
                    partition,
                    since_ms,
                    offset,
                    &mut book,
                );
                (book, learned)
            });
            let learned;
            (book, learned) = tokio::select! {
                // A read-back that panicked took the book with it: start
                // again from none, the retry learns it all again.
                joined = replay => joined.unwrap_or_else(|e| {
                    (SeriesBook::default(), Err(format!("the read-back stopped: {e}")))
                }),
                // The blocking replay ends on its own (REPLAY_STALL at most).
                _ = self.stop.cancelled() => return Err(Unresolved::Stopped),
            };
            let outcome = if learned.is_ok() { "done" } else { "failed" };
            metrics::counter!(m::SERIES_READBACKS, "partition" => self.partition.to_string(), "outcome" => outcome)
                .increment(1);
            match learned {
                Ok(records) => {
                    info!(partition, offset, writer = %origin.writer_hex(), records,
                        seconds = started.elapsed().as_secs_f64(),
                        "egress read the partition back for a series_ids writer's definitions");
                    break;
                }
                Err(e) => {
                    warn!(partition, offset, error = %e, "cannot read the partition back for series definitions; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.stop.cancelled() => return Err(Unresolved::Stopped),
                    }
                }
            }
        }
        series.book = book;
        out.clear();
        let resolved = series.book.resolve(&record, &mut out);
        self.count_definitions(&series.book);
        resolved.map_err(Unresolved::Broken)?;
        Ok(out)
    }

    fn count_definitions(&self, book: &SeriesBook) {
        metrics::gauge!(m::SERIES_DEFINITIONS, "partition" => self.partition.to_string())
            .set(book.len() as f64);
    }
}

/// Reads `partition` from the first record at or after `since_ms` up to
/// (not including) `until`, learning every `series_ids` definition into
/// `book`. Returns the records read.
fn replay(
    config: &rdkafka::ClientConfig,
    topic: &str,
    partition: i32,
    since_ms: i64,
    until: i64,
    book: &mut SeriesBook,
) -> Result<u64, String> {
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let mut wanted = TopicPartitionList::new();
    wanted
        .add_partition_offset(topic, partition, Offset::Offset(since_ms))
        .map_err(|e| e.to_string())?;
    let found = consumer
        .offsets_for_times(wanted, Duration::from_secs(10))
        .map_err(|e| format!("offsets_for_times: {e}"))?;
    let from = match found.find_partition(topic, partition).map(|p| p.offset()) {
        Some(Offset::Offset(from)) => from,
        // No record that late: nothing to read before `until` either.
        Some(Offset::End) => return Ok(0),
        other => return Err(format!("offsets_for_times gave {other:?}")),
    };
    if from >= until {
        return Ok(0);
    }
    let mut start = TopicPartitionList::new();
    start
        .add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| e.to_string())?;
    consumer.assign(&start).map_err(|e| e.to_string())?;
    let mut records = 0u64;
    let mut last_seen = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_seen = Instant::now();
                if message.offset() >= until {
                    return Ok(records);
                }
                records += 1;
                learn(&message, book);
                if message.offset() + 1 >= until {
                    return Ok(records);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {
                // Aborted records and markers are skipped silently: the
                // position tells when `until` is reached.
                let position = consumer.position().map_err(|e| e.to_string())?;
                let at = position
                    .find_partition(topic, partition)
                    .map(|p| p.offset());
                if matches!(at, Some(Offset::Offset(at)) if at >= until) {
                    return Ok(records);
                }
                if last_seen.elapsed() > REPLAY_STALL {
                    return Err(format!(
                        "no record for {REPLAY_STALL:?} while reading {from}..{until}"
                    ));
                }
            }
        }
    }
}

/// Learns the definitions of one replayed record; what is not a readable
/// `series_ids` record holds none and is passed over (its own turn in the
/// partition dead-letters it).
fn learn(message: &BorrowedMessage<'_>, book: &mut SeriesBook) {
    let Ok(headers) = TaskHeaders::read(message.headers()) else {
        return;
    };
    let Ok(Some(origin)) = headers.series() else {
        return;
    };
    let Ok(value) = headers.value(message.payload().unwrap_or_default()) else {
        return;
    };
    let record = SeriesRecord {
        writer: origin.writer,
        refresh_ms: origin.refresh_ms,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        value: &value,
    };
    let _ = book.learn(&record);
}
