//! The router's transactional producer: its librdkafka settings and the
//! transaction calls, each run in short resumable steps.
//!
//! Outages of any length: every call runs in steps of at most
//! [`KAFKA_STEP`] that librdkafka lets us resume, with the producer polled
//! between them (a `BaseProducer` only serves the delivery reports that an
//! abort waits for when polled). A commit is retried, never aborted (a
//! timeout may hide a commit that happened). [`TxnProducer::replace`]
//! starts over with a new producer of the same transactional id, whose
//! `init_transactions` fences the old epoch.
//!
//! Depends on rdkafka, `progress` (heartbeat, health), the router's config
//! and routes (their topics), and `kafka` (client config, statistics).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::config::RouterConfig;
use super::progress::Progress;
use super::route::Route;
use crate::kafka::stats::StatsContext;
use crate::kafka::KafkaConfig;

/// The router producer's name in the librdkafka statistics metrics.
const PRODUCER_CLIENT: &str = "router-producer";

/// How long one Kafka call may block before the worker looks up again
/// (polls, checks shutdown, reports readiness). librdkafka resumes a
/// transactional call that timed out when it is called again.
const KAFKA_STEP: Duration = Duration::from_secs(1);

/// How soon a commit first looks again whether the transaction's records
/// are delivered; each look waits twice as long, up to [`DELIVERY_CHECK_MAX`].
const DELIVERY_CHECK: Duration = Duration::from_millis(1);
const DELIVERY_CHECK_MAX: Duration = Duration::from_millis(16);

/// A transactional call still unconfirmed after this long means Kafka is
/// unwell: the router reports not ready until a transaction commits again.
/// Longer than a healthy commit of a full transaction takes on a loaded
/// broker, so that readiness does not flap under load.
const UNCONFIRMED_NOT_READY: Duration = Duration::from_secs(3);

/// The producer's settings: transactional, idempotent, acks=all.
pub fn producer_config(kafka: &KafkaConfig, router: &RouterConfig) -> rdkafka::ClientConfig {
    let mut config = kafka.client_config("router");
    config
        // Stable per instance: a restarted instance fences its predecessor.
        .set(
            "transactional.id",
            format!("{}-{}", router.group_id, router.instance_id),
        )
        // Transactions need idempotence; acks=all comes with it.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The broker aborts a transaction this router left open for longer.
        .set(
            "transaction.timeout.ms",
            router.transaction_timeout.as_millis().to_string(),
        )
        .set(
            "message.timeout.ms",
            router.transaction_timeout.as_millis().to_string(),
        )
        // The largest batch plus record overhead.
        .set(
            "message.max.bytes",
            (router.batch_max_bytes + (1 << 20)).to_string(),
        );
    // Producer queue and broker round-trip metrics (kafka/stats.rs).
    crate::kafka::stats::enable(&mut config);
    // Measured side by side (scripts/bench-vs-vmagent.sh, 40,000 samples/s,
    // BENCH_KAFKA_VARIANTS, two rounds, README "Kafka settings"), each against
    // these defaults (23.5 task-topic bytes per sample):
    // - compression.type=lz4: streamroute -10% CPU, broker -19%, but 41.2
    //   bytes per sample on the broker; zstd stays.
    // - compression.level=6 (zstd): 17.4 bytes per sample, +28% CPU; level 3
    //   (librdkafka's default) stays.
    // - linger.ms=50: no change in storage (batches end at every commit,
    //   router.commit_interval), broker -16% within its noise; 20 stays.
    // - with record_format = "series_ids" (4.43 bytes per sample with
    //   zstd), compression.type=lz4 (every client, BENCH_KAFKA_VARIANTS
    //   "ids-lz4:compression.type=lz4", prost form, two rounds): own CPU
    //   -2%, broker -21%, both within the noise between turns, but 8.48
    //   bytes per sample, over the 8 of issue 12; zstd stays.
    for (key, value) in [("compression.type", "zstd"), ("linger.ms", "20")] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
}

/// The transactional producer and where its transaction stands.
pub struct TxnProducer {
    producer: BaseProducer<StatsContext>,
    /// Kept to create a replacement.
    config: rdkafka::ClientConfig,
    /// `router.transaction_timeout`.
    timeout: Duration,
    /// False after the producer was (re)created until init_transactions succeeds.
    initialized: bool,
    /// True between a successful begin_transaction and its commit or abort.
    open: bool,
    progress: Arc<Progress>,
}

impl TxnProducer {
    pub fn new(
        config: rdkafka::ClientConfig,
        timeout: Duration,
        progress: Arc<Progress>,
    ) -> Result<TxnProducer, KafkaError> {
        Ok(TxnProducer {
            producer: config.create_with_context(StatsContext::new(PRODUCER_CLIENT))?,
            config,
            timeout,
            initialized: false,
            open: false,
            progress,
        })
    }

    /// One step of a blocking Kafka call: short, so that the worker can
    /// poll, notice shutdown and report readiness between steps.
    fn step(&self) -> Duration {
        self.timeout.min(KAFKA_STEP)
    }

    /// Serves delivery reports for up to `timeout`.
    pub fn poll(&self, timeout: Duration) {
        self.producer.poll(timeout);
    }

    /// Whether librdkafka gave up on this producer.
    pub fn failed_fatally(&self) -> bool {
        self.producer.client().fatal_error().is_some()
    }

    /// Each route's task topic partition count; an error names a topic
    /// that does not exist or cannot be read.
    pub fn partition_counts(&self, routes: &[Route]) -> Result<Vec<u32>, StartError> {
        let mut counts = Vec::with_capacity(routes.len());
        for route in routes {
            let md = self
                .producer
                .client()
                .fetch_metadata(Some(&route.topic), Duration::from_secs(10))
                .map_err(|source| StartError::Metadata {
                    topic: route.topic.clone(),
                    source,
                })?;
            let count = md
                .topics()
                .first()
                .filter(|t| t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if count == 0 {
                return Err(StartError::MissingTopic {
                    topic: route.topic.clone(),
                    route: route.name.clone(),
                });
            }
            counts.push(count as u32);
        }
        Ok(counts)
    }

    /// Initialises transactions once per producer; this also fences a
    /// predecessor with the same transactional id and aborts what it left open.
    pub fn init(&mut self) -> Result<(), KafkaError> {
        if !self.initialized {
            self.producer.init_transactions(self.step())?;
            self.initialized = true;
        }
        Ok(())
    }

    pub fn begin(&mut self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()?;
        self.open = true;
        Ok(())
    }

    /// Sends a record, waiting while the local queue is full (bounded by the
    /// transaction timeout).
    pub fn send<K: ToBytes + ?Sized>(
        &self,
        mut record: BaseRecord<'_, K, [u8]>,
    ) -> Result<(), KafkaError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Adds the consumed `offsets` to the open transaction.
    pub fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        shutdown: &CancellationToken,
    ) -> Result<(), KafkaError> {
        self.retry_steps(shutdown, "send offsets", self.timeout, |p| {
            p.producer
                .send_offsets_to_transaction(offsets, group, p.step())
        })
    }

    /// Commits the open transaction. A retriable failure (a timeout) may
    /// hide a commit that happened, so it is retried, never aborted: an
    /// abort after a real commit would make us process the records again.
    /// It is retried for up to ten transaction timeouts, so that a broker
    /// away for minutes finds the commit still waiting; a transaction the
    /// coordinator timed out meanwhile fails for good and is retried whole.
    pub fn commit(&mut self, shutdown: &CancellationToken) -> Result<(), KafkaError> {
        self.retry_steps(shutdown, "commit", self.timeout * 10, |p| {
            p.await_deliveries(p.step());
            p.producer.commit_transaction(p.step())
        })?;
        self.open = false;
        Ok(())
    }

    /// Waits up to `timeout` until every record sent is delivered and its
    /// report served, looking after 1, 2, 4 … 16 ms. `commit_transaction`
    /// waits for them first too, but through rdkafka's `flush`, which polls
    /// in rounds of 100 ms that last their whole 100 ms and then spin for
    /// up to a millisecond (rdkafka rounds the rest down to 0 ms): every
    /// commit with a record still in flight took 100 ms, and spinning cost
    /// 1% of a core at 10 commits a second. After this wait its `flush` finds
    /// nothing left and returns at once; when the brokers are away it
    /// waits as before.
    fn await_deliveries(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // A flush that gives up at once: librdkafka sends what lingers.
        let _ = self.producer.flush(Duration::ZERO);
        let mut wait = DELIVERY_CHECK;
        loop {
            self.producer.poll(Duration::ZERO);
            if self.producer.in_flight_count() == 0 || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(wait);
            // Brokers that take long (an outage) are looked at less often.
            wait = (wait * 2).min(DELIVERY_CHECK_MAX);
        }
    }

    /// Aborts the open transaction, in steps with the producer polled
    /// between them: the abort purges the queued records and waits for
    /// their delivery reports, which only a poll serves.
    pub fn abort(&mut self, shutdown: &CancellationToken) -> Result<(), KafkaError> {
        if !self.open {
            return Ok(());
        }
        self.retry_steps(shutdown, "abort", self.timeout, |p| {
            p.producer.abort_transaction(p.step())
        })?;
        self.open = false;
        Ok(())
    }

    /// Drops the producer for a new one with the same transactional id.
    /// Its first `init_transactions` (at the next transaction) bumps the
    /// epoch, fencing the old producer, and the coordinator aborts the
    /// transaction the old one left open.
    pub fn replace(&mut self) {
        match self
            .config
            .create_with_context(StatsContext::new(PRODUCER_CLIENT))
        {
            Ok(p) => {
                self.producer = p;
                self.initialized = false;
                self.open = false;
            }
            Err(e) => error!(error = %e, "cannot create a new producer"),
        }
    }

    /// Calls a resumable transactional operation until it succeeds, fails
    /// for good, `within` runs out or shutdown begins. Between steps the
    /// producer is polled and the router reported not ready.
    fn retry_steps(
        &self,
        shutdown: &CancellationToken,
        what: &'static str,
        within: Duration,
        mut call: impl FnMut(&Self) -> Result<(), KafkaError>,
    ) -> Result<(), KafkaError> {
        let started = Instant::now();
        let mut warned = false;
        loop {
            self.progress.beat(what);
            match call(self) {
                Err(KafkaError::Transaction(e))
                    if e.is_retriable()
                        && started.elapsed() < within
                        && !shutdown.is_cancelled() =>
                {
                    if started.elapsed() >= UNCONFIRMED_NOT_READY && !warned {
                        warned = true;
                        self.progress.set_healthy(false);
                        warn!(error = %e, "{what} not confirmed by kafka yet; not ready, retrying");
                    }
                    self.producer.poll(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }
}
/// Why the router cannot start (or refresh its partition counts) yet.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("init transactions: {0}")]
    Init(KafkaError),
    #[error("subscribe: {0}")]
    Subscribe(KafkaError),
    #[error("metadata of {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("topic {topic} of route {route} does not exist (streamroute topics apply)")]
    MissingTopic { topic: String, route: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit waits for its records' delivery, not for rdkafka's flush
    /// rounds: each of these took at least 100 ms through
    /// `commit_transaction`'s own flush (a round lasts its whole 100 ms).
    #[test]
    fn a_commit_waits_for_its_records_not_for_a_flush_round() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("tasks", 1, 1).unwrap();
        let kafka = KafkaConfig {
            bootstrap_servers: mock.bootstrap_servers(),
            ..KafkaConfig::default()
        };
        let router = RouterConfig::default();
        let config = producer_config(&kafka, &router);
        let mut producer =
            TxnProducer::new(config, Duration::from_secs(10), Arc::new(Progress::new())).unwrap();
        producer.init().unwrap();
        let shutdown = CancellationToken::new();
        let mut took = Vec::new();
        for i in 0..6 {
            producer.begin().unwrap();
            let payload = format!("record {i}");
            producer
                .send(BaseRecord::<(), [u8]>::to("tasks").payload(payload.as_bytes()))
                .unwrap();
            let started = Instant::now();
            producer.commit(&shutdown).unwrap();
            took.push(started.elapsed());
            assert_eq!(producer.producer.in_flight_count(), 0);
        }
        // The first commit also finds the partition's leader.
        assert!(
            took[1..].iter().all(|t| *t < Duration::from_millis(60)),
            "commits took {took:?}"
        );
    }
}
