//! One partition's loop: read task-topic records, concatenate them into a
//! request, send it, and only then move the stored position.
//!
//! Invariants:
//! - one request in flight per partition (or, with `max_in_flight` above
//!   1, one per lane, each lane a fixed share of the series: `lanes.rs`),
//!   so every series' samples keep their order;
//! - the position in sled (next offset to read) moves past a record only
//!   after the receiver acknowledged it (2xx) or it is in the dead-letter
//!   topic, and every record before it too; retryable failures keep the
//!   request and retry it forever;
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
//!
//! This file holds the loop (collect, deliver, store); the rest of the
//! worker is split by concern: `position.rs` (start, store, markers,
//! stalls), `read.rs` (a record into the batch), `series.rs` (`series_ids`
//! records into plain ones), `deliver.rs` (requests,
//! dead letters), `lanes.rs` (several in flight), `windowed.rs` (the
//! windows). The request itself is pure state in `egress/batch.rs`, what
//! gets logged and counted in `egress/events.rs`. Depends on those, `send`,
//! `state` and `kafka::producer`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::batch::{Batch, BatchLimits, Pending, Record};
use super::config::EgressConfig;
use super::EgressError;
use crate::kafka::producer::DurableProducer;
use crate::state::{next_offset_after, State};

mod deliver;
mod lanes;
mod position;
mod read;
mod series;
mod windowed;

use deliver::Delivery;
use lanes::Lanes;
pub use position::watermarks;
use position::Stall;

/// How often an idle partition (nothing read and not yet delivered) checks
/// whether its consumer moved past transaction markers.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// What a partition worker shares with the role.
pub struct Shared {
    pub config: Arc<EgressConfig>,
    pub kafka: crate::kafka::KafkaConfig,
    pub dead_letter_topic: String,
    pub state: State,
    pub sender: super::targets::Targets,
    pub dead_letter: Arc<DurableProducer>,
}

pub struct PartitionWorker {
    shared: Arc<Shared>,
    pub partition: i32,
    url: String,
    pub consumer: Arc<StreamConsumer>,
    /// Sends its requests (with one request in flight; lanes have their own).
    delivery: Delivery,
    /// The stored position, for the lag gauge.
    pub position: Arc<AtomicI64>,
    label: String,
    /// The role's shutdown, once running: ends a wait for the state.
    stop: CancellationToken,
    /// The delay and gap windows, when `egress.windows.delay` > 0s.
    windows: Option<std::sync::Mutex<windowed::PartitionWindows>>,
    /// The series definitions of `series_ids` records (`series.rs`).
    series: tokio::sync::Mutex<series::Series>,
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
        let delivery = Delivery {
            shared: shared.clone(),
            partition,
            url: url.clone(),
            label: partition.to_string(),
            encoding: shared.config.encoding,
        };
        let mut worker = PartitionWorker {
            delivery,
            shared,
            partition,
            url,
            consumer,
            position: Arc::new(AtomicI64::new(-1)),
            label: partition.to_string(),
            stop: CancellationToken::new(),
            windows: None,
            series: Default::default(),
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

    /// Runs until `shutdown`. A request already sent is finished (and its
    /// position stored) before returning; records only collected are read
    /// again after a restart.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), EgressError> {
        self.stop = shutdown.clone();
        let in_flight = self.shared.config.max_in_flight;
        let mut lanes = (in_flight > 1).then(|| Lanes::start(in_flight, &self.delivery, &shutdown));
        let mut pending: Option<Pending> = None;
        let mut stall = Stall::default();
        loop {
            let mut batch = Batch::default();
            let stopped = self
                .collect(&mut batch, &mut pending, &mut stall, &shutdown, &mut lanes)
                .await?;
            if stopped {
                break;
            }
            let Some(lanes) = &mut lanes else {
                if !self.delivery.deliver(&batch, &shutdown).await? {
                    break;
                }
                self.send_late(&batch).await;
                if let Some(last) = batch.last_offset {
                    if !self.store(next_offset_after(last)).await {
                        break;
                    }
                }
                continue;
            };
            if !self.submit(lanes, batch, &shutdown).await? {
                break;
            }
        }
        if let Some(lanes) = lanes {
            // What the lanes delivered until they stopped is stored.
            if let Some(next) = lanes.stop().await? {
                self.store(next).await;
            }
        }
        // The role flushes the state and commits to Kafka once every partition stopped.
        debug!(partition = self.partition, "egress partition stopped");
        Ok(())
    }

    /// Hands `batch` to the lanes, then waits while as many requests wait
    /// for them as may, storing the position as they are delivered. False
    /// on shutdown.
    async fn submit(
        &self,
        lanes: &mut Lanes,
        batch: Batch,
        shutdown: &CancellationToken,
    ) -> Result<bool, EgressError> {
        let mut next = lanes.submit(batch)?;
        loop {
            if let Some(next) = next.take() {
                if !self.store(next).await {
                    return Ok(false);
                }
            }
            if !lanes.full() {
                return Ok(true);
            }
            next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                delivered = lanes.delivered() => delivered?,
            };
        }
    }

    /// Fills `batch` until it is full, its flush interval passed, or
    /// shutdown (returns true then). With lanes, stores the position as
    /// they deliver meanwhile.
    async fn collect(
        &self,
        batch: &mut Batch,
        pending: &mut Option<Pending>,
        stall: &mut Stall,
        shutdown: &CancellationToken,
        lanes: &mut Option<Lanes>,
    ) -> Result<bool, EgressError> {
        let config = &self.shared.config;
        let limits = BatchLimits::from(config.as_ref());
        loop {
            if let Some(p) = pending.take() {
                if !batch.fits(&p, &limits) {
                    *pending = Some(p);
                    return Ok(false);
                }
                self.add(batch, p);
                if batch.full(&limits) {
                    return Ok(false);
                }
            }
            // A dead-lettered record alone: its turn comes after what the lanes hold.
            if lanes.is_some() && batch.records.is_empty() && batch.last_offset.is_some() {
                return Ok(false);
            }
            let deadline = batch
                .first_at
                .map(|t| tokio::time::Instant::from_std(t + config.flush_interval));
            // Everything read so far is delivered (or dead-lettered) and stored.
            let idle = batch.records.is_empty()
                && batch.last_offset.is_none()
                && pending.is_none()
                && lanes.as_ref().map_or(true, Lanes::idle);
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(true),
                _ = sleep_until(deadline) => return Ok(false),
                delivered = lanes_delivered(lanes) => {
                    if let Some(next) = delivered? {
                        if !self.store(next).await {
                            return Ok(true);
                        }
                    }
                    continue;
                }
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
                    stall.moved();
                    *pending = self.read(&message, batch, lanes.is_some()).await?;
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

    /// Adds `p` to `batch`, through the windows when they are on.
    fn add(&self, batch: &mut Batch, p: Pending) {
        let Some(w) = &self.windows else {
            return batch.push(p);
        };
        batch.joined(p.tenant);
        let start = batch.body.len();
        let record = Record {
            offset: p.offset,
            start,
            end: start,
            key: p.key,
            headers: p.headers,
        };
        self.windowed_add(w, batch, (&p.value, p.decoded), record);
    }
}

/// The next delivery of the lanes, if there are lanes (else never).
async fn lanes_delivered(lanes: &mut Option<Lanes>) -> Result<Option<i64>, EgressError> {
    match lanes {
        Some(lanes) if !lanes.idle() => lanes.delivered().await,
        _ => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
