//! One partition's loop: read task-topic records, concatenate them into a
//! request, send it, and only then move the stored position.
//!
//! Invariants:
//! - one request in flight per partition, so samples keep their order;
//! - the position in sled (next offset to read) moves past a record only
//!   after the receiver acknowledged it (2xx) or it is in the dead-letter
//!   topic; retryable failures keep the request and retry it forever;
//! - a position below the log start (retention removed records) is never
//!   skipped silently: it is logged as an error and counted;
//! - transaction markers (the router writes task topics transactionally)
//!   take offsets but are no records: when nothing is pending, the position
//!   moves past them to the consumer's, so a caught-up partition's stored
//!   position is the partition's end and its lag is 0;
//! - a position sled cannot take (full disk) stops the partition: nothing
//!   more is read or sent until a later write succeeds;
//! - where a partition starts: its sled position, else the offset committed
//!   to the Kafka consumer group (`egress.group_id`, a lost `state_dir`:
//!   warned and counted), else `start_from`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::config::{EgressConfig, SendEncoding, StartFrom};
use super::metrics as m;
use super::scan::{count, Counts};
use super::send::{encoding_name, Outcome};
use super::EgressError;

mod windowed;
use crate::kafka::producer::{DurableProducer, SendError};
use crate::kafka::record::{copy_headers, task_value, HEADER_ENCODING, HEADER_TENANT};
use crate::remote_write::{compress, Encoding};
use crate::state::{next_offset_after, Position, State};

/// Longest wait between two attempts to store a position.
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// How often an idle partition (nothing read and not yet delivered) checks
/// whether its consumer moved past transaction markers.
const IDLE_CHECK: Duration = Duration::from_millis(500);

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
struct Stall {
    since: Option<(Instant, i64)>,
}

/// What a partition worker shares with the role.
pub struct Shared {
    pub config: Arc<EgressConfig>,
    pub kafka: crate::kafka::KafkaConfig,
    pub dead_letter_topic: String,
    pub state: State,
    pub sender: super::targets::Targets,
    pub dead_letter: Arc<DurableProducer>,
}

/// One record's place in a batch, kept for dead-lettering.
struct Record {
    offset: i64,
    start: usize,
    end: usize,
    key: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

/// The request being assembled.
#[derive(Default)]
struct Batch {
    body: Vec<u8>,
    counts: Counts,
    records: Vec<Record>,
    tenant: Option<String>,
    first_at: Option<Instant>,
    /// Offset of the last record read into this batch (sent or not).
    last_offset: Option<i64>,
    /// Late samples for the late topic: (record offset, WriteRequest).
    late: Vec<(i64, Vec<u8>)>,
}

/// A record read but not yet placed in a batch.
struct Pending {
    offset: i64,
    value: Vec<u8>,
    counts: Counts,
    key: Option<Vec<u8>>,
    headers: OwnedHeaders,
    tenant: Option<String>,
    /// The record decoded, when the windows are on.
    decoded: Option<crate::remote_write::WriteRequest>,
}

pub struct PartitionWorker {
    shared: Arc<Shared>,
    pub partition: i32,
    url: String,
    pub consumer: Arc<StreamConsumer>,
    encoding: SendEncoding,
    /// The stored position, for the lag gauge.
    pub position: Arc<AtomicI64>,
    label: String,
    /// The role's shutdown, once running: ends a wait for the state.
    stop: CancellationToken,
    /// The delay and gap windows, when `egress.windows.delay` > 0s.
    windows: Option<std::sync::Mutex<windowed::PartitionWindows>>,
}

/// librdkafka settings of a partition's consumer: a group that is never
/// joined, no automatic commits, committed transactions only, and no
/// silent offset reset.
pub fn consumer_config(kafka: &crate::kafka::KafkaConfig, group_id: &str) -> rdkafka::ClientConfig {
    let mut config = kafka.client_config("egress");
    config
        // Never joined (assign, no subscribe): the group only holds the
        // positions the role commits after sled has them on disk.
        .set("group.id", group_id)
        // Positions are committed explicitly, after sled, never by librdkafka.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The router writes task topics in transactions.
        .set("isolation.level", "read_committed")
        // An out-of-range position is an error we handle loudly, not a skip.
        .set("auto.offset.reset", "error");
    // One consumer per partition: librdkafka's default prefetch (64 MB each)
    // would add up; a few requests' worth keeps the pipe full.
    if config.get("queued.max.messages.kbytes").is_none() {
        config.set("queued.max.messages.kbytes", "16384");
    }
    config
}

impl PartitionWorker {
    /// Creates the consumer and decides where the partition starts.
    pub async fn start(
        shared: Arc<Shared>,
        partition: i32,
        url: String,
    ) -> Result<PartitionWorker, EgressError> {
        let group_id = shared.config.group_id();
        let consumer: Arc<StreamConsumer> = Arc::new(
            consumer_config(&shared.kafka, &group_id)
                .create()
                .map_err(EgressError::Client)?,
        );
        let mut worker = PartitionWorker {
            encoding: shared.config.encoding,
            shared,
            partition,
            url,
            consumer,
            position: Arc::new(AtomicI64::new(-1)),
            label: partition.to_string(),
            stop: CancellationToken::new(),
            windows: None,
        };
        worker.windows = windowed::open(&worker.shared, partition)?;
        let start = worker.start_offset().await?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &worker.shared.config.topic,
            partition,
            Offset::Offset(start),
        )
        .map_err(EgressError::Client)?;
        worker.consumer.assign(&tpl).map_err(EgressError::Client)?;
        worker.position.store(start, Ordering::Release);
        info!(partition, start, url = %worker.url, "egress partition assigned");
        Ok(worker)
    }

    fn topic(&self) -> &str {
        &self.shared.config.topic
    }

    async fn watermarks(&self) -> Result<(i64, i64), EgressError> {
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
    async fn start_offset(&mut self) -> Result<i64, EgressError> {
        let (low, high) = self.watermarks().await?;
        let mut stored = self.shared.state.get(self.topic(), self.partition)?;
        let in_sled = stored.is_some();
        if !in_sled {
            stored = self.committed_offset().await?;
            if let Some(committed) = stored {
                warn!(
                    topic = self.topic(), partition = self.partition, committed, group = %self.shared.config.group_id(), state_dir = self.shared.state.dir(),
                    "no position in the egress state (state_dir lost or replaced?); resuming from the offset committed to kafka"
                );
                metrics::counter!(m::RESUMED_FROM_KAFKA, "partition" => self.label.clone())
                    .increment(1);
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
        error!(
            topic = self.topic(), partition = self.partition, position = from, log_start = to, skipped = to - from,
            "records were removed by retention before egress sent them; they are LOST for this receiver, continuing at the log start"
        );
        metrics::counter!(m::SKIPPED, "partition" => self.label.clone())
            .increment(u64::try_from(to - from).unwrap_or(0));
    }

    /// Stores the position, retrying until sled takes it (a full disk
    /// waits here, so nothing past an unsaved position is read or sent).
    /// False when shutdown interrupted the wait: the position is then
    /// unsaved and its records are sent again after a restart.
    async fn store(&self, next_offset: i64) -> bool {
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

    /// Runs until `shutdown`. A request already sent is finished (and its
    /// position stored) before returning; records only collected are read
    /// again after a restart.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), EgressError> {
        self.stop = shutdown.clone();
        let mut pending: Option<Pending> = None;
        let mut stall = Stall::default();
        loop {
            let mut batch = Batch::default();
            let stopped = self
                .collect(&mut batch, &mut pending, &mut stall, &shutdown)
                .await?;
            if stopped {
                break;
            }
            if !self.deliver(&batch, &shutdown).await? {
                break;
            }
            self.send_late(&batch).await;
            if let Some(last) = batch.last_offset {
                if !self.store(next_offset_after(last)).await {
                    break;
                }
            }
        }
        // The role flushes the state and commits to Kafka once every partition stopped.
        debug!(partition = self.partition, "egress partition stopped");
        Ok(())
    }

    /// Fills `batch` until it is full, its flush interval passed, or
    /// shutdown (returns true then).
    async fn collect(
        &self,
        batch: &mut Batch,
        pending: &mut Option<Pending>,
        stall: &mut Stall,
        shutdown: &CancellationToken,
    ) -> Result<bool, EgressError> {
        let config = &self.shared.config;
        loop {
            if let Some(p) = pending.take() {
                if !self.fits(batch, &p) {
                    *pending = Some(p);
                    return Ok(false);
                }
                self.add(batch, p);
                if batch.counts.samples >= config.max_samples_per_send as u64
                    || batch.body.len() >= config.max_bytes_per_send
                {
                    return Ok(false);
                }
            }
            let deadline = batch
                .first_at
                .map(|t| tokio::time::Instant::from_std(t + config.flush_interval));
            // Everything read so far is delivered (or dead-lettered) and stored.
            let idle = batch.records.is_empty() && batch.last_offset.is_none() && pending.is_none();
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(true),
                _ = sleep_until(deadline) => return Ok(false),
                received = self.consumer.recv() => received,
                _ = tokio::time::sleep(IDLE_CHECK), if idle => {
                    if let Some(w) = &self.windows {
                        if self.windowed_idle(w, batch) {
                            continue;
                        }
                    }
                    self.skip_markers().await?;
                    self.check_stall(stall).await?;
                    continue;
                }
            };
            match received {
                Ok(message) => {
                    stall.since = None;
                    *pending = self.read(&message, batch).await?;
                }
                Err(e) => {
                    self.consumer_error(e).await?;
                    if idle {
                        self.check_stall(stall).await?;
                    }
                }
            }
        }
    }

    /// The consumer's position: the offset after the last record it handed
    /// over, moved past transaction markers and aborted records, which
    /// read_committed never hands over.
    fn consumer_position(&self) -> Option<i64> {
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
    async fn check_stall(&self, stall: &mut Stall) -> Result<(), EgressError> {
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
    async fn skip_markers(&self) -> Result<(), EgressError> {
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

    /// Whether `p` may join `batch` (a request never mixes tenants and
    /// stays under the sample and byte limits unless it is a single record).
    fn fits(&self, batch: &Batch, p: &Pending) -> bool {
        if batch.records.is_empty() {
            return true;
        }
        let tenant_ok =
            self.shared.config.forward_tenant_header.is_none() || batch.tenant == p.tenant;
        let config = &self.shared.config;
        tenant_ok
            && batch.body.len() + p.value.len() <= config.max_bytes_per_send
            && batch.counts.samples + p.counts.samples <= config.max_samples_per_send as u64
    }

    fn add(&self, batch: &mut Batch, p: Pending) {
        if batch.records.is_empty() {
            batch.tenant = p.tenant;
        }
        batch.first_at.get_or_insert_with(Instant::now);
        let start = batch.body.len();
        if let Some(w) = &self.windows {
            let record = Record {
                offset: p.offset,
                start,
                end: start,
                key: p.key,
                headers: p.headers,
            };
            return self.windowed_add(w, batch, p.decoded, record);
        }
        batch.body.extend_from_slice(&p.value);
        batch.counts.add(p.counts);
        batch.records.push(Record {
            offset: p.offset,
            start,
            end: batch.body.len(),
            key: p.key,
            headers: p.headers,
        });
        batch.last_offset = Some(p.offset);
    }

    /// Turns a message into a pending record. Records that cannot be
    /// counted (not a WriteRequest) are dead-lettered alone.
    async fn read(
        &self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<Option<Pending>, EgressError> {
        let raw = message.payload().unwrap_or_default();
        // The record's headers as read, and as they are once the value is
        // decompressed (content-encoding identity), for dead-lettering.
        let mut original = OwnedHeaders::new();
        let mut headers = OwnedHeaders::new();
        let mut tenant = None;
        let mut encoding = None;
        // Copied through the guard against rdkafka's panic on a header key
        // that is not UTF-8 (another producer may write one): such a record
        // is dead-lettered below instead of crashing the partition.
        let copied = copy_headers(message.headers());
        if let Ok(Some(h)) = &copied {
            for header in h.iter() {
                if header.key == HEADER_TENANT {
                    tenant = header
                        .value
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                }
                original = original.insert(Header {
                    key: header.key,
                    value: header.value,
                });
                if header.key == HEADER_ENCODING {
                    encoding = header.value;
                    continue;
                }
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let headers = headers.insert(Header {
            key: HEADER_ENCODING,
            value: Some(Encoding::Identity.as_str()),
        });
        let key = message.key().map(<[u8]>::to_vec);
        // Decompressed first: counting and the windows see plain protobuf.
        let decoded_value = match &copied {
            Err(reason) => Err(reason.clone()),
            Ok(_) => task_value(raw, encoding),
        };
        let checked = decoded_value.and_then(|value| {
            let c = count(&value).map_err(str::to_string)?;
            let decoded = match self.windows {
                // The windows need the samples; count() accepted the
                // structure, prost also checks the strings.
                Some(_) => Some(
                    <crate::remote_write::WriteRequest as prost::Message>::decode(value.as_ref())
                        .map_err(|_| "not a valid protobuf WriteRequest".to_string())?,
                ),
                None => None,
            };
            Ok((value.into_owned(), c, decoded))
        });
        let (value, counts, decoded) = match checked {
            Ok(c) => c,
            Err(reason) => {
                warn!(
                    partition = self.partition,
                    offset = message.offset(),
                    reason,
                    "task record is not a WriteRequest; dead-lettering it"
                );
                // As it was read: its own headers still describe it.
                let record = Record {
                    offset: message.offset(),
                    start: 0,
                    end: raw.len(),
                    key,
                    headers: original,
                };
                self.dead_letter_records(raw, &[record], "malformed_record", &reason, None)
                    .await;
                // The batch now ends past it, so the position moves over it.
                if batch.records.is_empty() {
                    self.store(next_offset_after(message.offset())).await;
                } else {
                    batch.last_offset = Some(message.offset());
                }
                return Ok(None);
            }
        };
        Ok(Some(Pending {
            offset: message.offset(),
            value,
            counts,
            key,
            headers,
            tenant,
            decoded,
        }))
    }

    /// Handles a consumer error: an out-of-range position means retention
    /// removed records we had not sent; anything else is logged and librdkafka retries.
    async fn consumer_error(&self, e: KafkaError) -> Result<(), EgressError> {
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

    /// Sends `batch` until it is delivered or dead-lettered (true), or
    /// shutdown interrupts a wait between retries (false).
    async fn deliver(
        &mut self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<bool, EgressError> {
        if batch.counts.series == 0 && batch.body.is_empty() {
            return Ok(true);
        }
        let config = self.shared.config.clone();
        let mut backoff = config.retry_initial_backoff;
        let mut attempts = 0u32;
        let mut encoded: Option<(SendEncoding, Bytes)> = None;
        loop {
            let body = match &encoded {
                Some((enc, body)) if *enc == self.encoding => body.clone(),
                _ => {
                    let codec = match self.encoding {
                        SendEncoding::Snappy => Encoding::Snappy,
                        SendEncoding::Zstd => Encoding::Zstd,
                    };
                    let body = Bytes::from(
                        compress(&batch.body, codec)
                            .map_err(|e| EgressError::Encode(e.to_string()))?,
                    );
                    encoded = Some((self.encoding, body.clone()));
                    body
                }
            };
            let started = Instant::now();
            attempts += 1;
            // Not raced against shutdown: a request in flight is finished.
            let outcome = self
                .shared
                .sender
                .send(
                    self.partition,
                    &self.url,
                    body.clone(),
                    self.encoding,
                    batch.tenant.as_deref(),
                )
                .await;
            let elapsed = started.elapsed().as_secs_f64();
            let wait = match outcome {
                Outcome::Delivered => {
                    metrics::histogram!(m::REQUEST_DURATION, "outcome" => "ok").record(elapsed);
                    self.delivered(batch, body.len());
                    return Ok(true);
                }
                Outcome::EncodingRefused { status, body } => {
                    metrics::histogram!(m::REQUEST_DURATION, "outcome" => "retry").record(elapsed);
                    metrics::counter!(m::RETRIES, "reason" => "encoding").increment(1);
                    warn!(
                        partition = self.partition,
                        status, body, "receiver refuses zstd; falling back to snappy"
                    );
                    self.encoding = SendEncoding::Snappy;
                    continue;
                }
                Outcome::Rejected { status, body } => {
                    metrics::histogram!(m::REQUEST_DURATION, "outcome" => "rejected")
                        .record(elapsed);
                    error!(
                        partition = self.partition,
                        status,
                        body,
                        records = batch.records.len(),
                        "receiver refused the request; dead-lettering its records"
                    );
                    self.dead_letter_records(
                        &batch.body,
                        &batch.records,
                        "rejected_by_receiver",
                        &body,
                        Some(status),
                    )
                    .await;
                    metrics::counter!(m::DEAD_LETTERED, "partition" => self.label.clone())
                        .increment(1);
                    return Ok(true);
                }
                Outcome::Retry {
                    reason,
                    after,
                    detail,
                } => {
                    metrics::histogram!(m::REQUEST_DURATION, "outcome" => "retry").record(elapsed);
                    metrics::counter!(m::RETRIES, "reason" => reason).increment(1);
                    if reason == "429" {
                        metrics::counter!(m::TOO_MANY_REQUESTS, "partition" => self.label.clone())
                            .increment(1);
                    }
                    let wait = after.unwrap_or_else(|| jitter(backoff));
                    backoff = (backoff * 2).min(config.retry_max_backoff);
                    warn!(partition = self.partition, reason, detail, attempts, wait = ?wait, encoding = encoding_name(self.encoding), "request failed; retrying");
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn delivered(&self, batch: &Batch, bytes: usize) {
        let p = self.label.clone();
        metrics::counter!(m::SAMPLES, "partition" => p.clone()).increment(batch.counts.samples);
        metrics::counter!(m::SERIES, "partition" => p.clone()).increment(batch.counts.series);
        metrics::counter!(m::BYTES, "partition" => p.clone()).increment(bytes as u64);
        if let Some(ts) = batch.counts.max_timestamp {
            metrics::gauge!(m::LAST_ACKED_SAMPLE, "partition" => p).set(ts as f64 / 1000.0);
        }
    }

    /// Writes records to the dead-letter topic, retrying while Kafka is
    /// unavailable (they must not be dropped). Only a record Kafka itself
    /// refuses (too large) is given up, loudly.
    async fn dead_letter_records(
        &self,
        body: &[u8],
        records: &[Record],
        reason: &str,
        detail: &str,
        status: Option<u16>,
    ) {
        let (status, partition) = (status.map(|s| s.to_string()), self.partition.to_string());
        for record in records {
            let offset = record.offset.to_string();
            let mut headers = record.headers.clone();
            for (key, value) in [
                ("dead-letter-reason", Some(reason)),
                ("dead-letter-detail", Some(detail)),
                ("http-status", status.as_deref()),
                ("http-response-body", status.as_ref().map(|_| detail)),
                ("target-url", Some(self.url.as_str())),
                ("source-topic", Some(self.topic())),
                ("source-partition", Some(partition.as_str())),
                ("source-offset", Some(offset.as_str())),
            ] {
                if let Some(value) = value {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
            }
            let value = &body[record.start..record.end];
            let mut wait = Duration::from_millis(200);
            loop {
                match self
                    .shared
                    .dead_letter
                    .send(
                        &self.shared.dead_letter_topic,
                        record.key.as_deref(),
                        value,
                        headers.clone(),
                    )
                    .await
                {
                    Ok(()) => break,
                    Err(SendError::Refused(e)) => {
                        error!(partition = self.partition, offset = record.offset, error = %e, "the dead-letter topic refuses the record; it is LOST");
                        break;
                    }
                    Err(SendError::Retryable(e)) => {
                        warn!(partition = self.partition, error = %e, "cannot write to the dead-letter topic; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
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

/// A wait between `d/2` and `d`, so workers that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
