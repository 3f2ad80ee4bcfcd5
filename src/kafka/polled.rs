//! A producer whose delivery reports a thread of ours serves: what
//! rdkafka's `FutureProducer` does, without its polling thread's cost.
//!
//! `FutureProducer` polls its queue in a thread calling
//! `BaseProducer::poll(100 ms)`. That call waits for the remaining time
//! rounded down to whole milliseconds and then loops until its deadline, so
//! every 100 ms it spins for up to a millisecond: about 1% of a core per
//! producer, idle or not (measured: an idle `streamroute run` spent 1.8% of
//! a core in its two "producer polling" threads, 3.2% in all; README
//! "Performance"). [`PolledProducer`] polls with [`POLL_WINDOW`] instead,
//! so the same round-down costs at most a millisecond per second.
//!
//! May depend on: rdkafka and [`super::stats`] only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::oneshot;

use super::stats::StatsContext;

/// How long one `poll` of the polling thread lasts. Delivery reports are
/// served as they arrive whatever its length; it bounds only the spin at
/// its end (at most 1 ms) and how long the thread outlives its producer.
pub const POLL_WINDOW: Duration = Duration::from_secs(1);

/// How long to wait before offering a record again to a full queue (as
/// `FutureProducer` does).
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(100);

/// The outcome of one record: delivered, or librdkafka's error.
type Delivered = oneshot::Sender<KafkaResult<()>>;

/// Statistics as [`StatsContext`] exports them, and each delivery report
/// handed to the sender waiting for it.
pub struct DeliveryContext {
    stats: StatsContext,
}

impl ClientContext for DeliveryContext {
    fn stats(&self, statistics: Statistics) {
        self.stats.stats(statistics);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivered>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivered: Box<Delivered>) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        // The sender may have stopped waiting; nothing else to tell.
        let _ = delivered.send(outcome);
    }
}

/// A `BaseProducer` and the thread that polls it; the thread ends within
/// [`POLL_WINDOW`] once this is dropped.
pub struct PolledProducer {
    producer: Arc<BaseProducer<DeliveryContext>>,
    stop: Arc<AtomicBool>,
}

impl PolledProducer {
    /// Creates the producer from `config`, its statistics labelled `client`.
    pub fn new(config: &ClientConfig, client: &str) -> KafkaResult<PolledProducer> {
        let context = DeliveryContext {
            stats: StatsContext::new(client),
        };
        let producer = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            // `top -H` shows "poll gateway" (the kernel keeps 15 bytes).
            .name(format!("poll {client}"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL_WINDOW);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("polling thread: {e}")))?;
        Ok(PolledProducer { producer, stop })
    }

    /// The librdkafka client (metadata, fatal errors).
    pub fn client(&self) -> &rdkafka::client::Client<DeliveryContext> {
        self.producer.client()
    }

    /// Queues one record and waits for its delivery report. A full queue
    /// is offered the record again until `queue_timeout` has passed; once
    /// queued, `message.timeout.ms` bounds the wait.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        queue_timeout: Duration,
    ) -> KafkaResult<()> {
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(tx))
            .payload(value)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if start.elapsed() < queue_timeout =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        // The report comes from the polling thread, or from the purge of a
        // producer being destroyed; a dropped sender means neither came.
        rx.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer.flush(timeout)
    }
}

impl Drop for PolledProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;

    fn config(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("message.timeout.ms", "2000");
        config
    }

    /// CPU time (utime + stime, clock ticks) of this process' thread named
    /// `name` (the kernel keeps 15 bytes of it); there must be one.
    fn thread_ticks(name: &str) -> u64 {
        let (mut threads, mut ticks) = (0, 0);
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            ticks += super::super::stat_ticks(
                &std::fs::read_to_string(task.path().join("stat")).unwrap_or_default(),
            );
            threads += 1;
        }
        assert_eq!(threads, 1, "threads named {name:?}");
        ticks
    }

    #[tokio::test]
    async fn records_are_acknowledged_and_refusals_reported() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let mut config = config(&mock);
        config.set("message.max.bytes", "10000");
        let producer = PolledProducer::new(&config, "test").unwrap();
        let timeout = Duration::from_secs(5);
        producer
            .send("t", Some(b"k"), b"v", OwnedHeaders::new(), timeout)
            .await
            .unwrap();
        let too_large = vec![0u8; 20_000];
        let refused = producer
            .send("t", None, &too_large, OwnedHeaders::new(), timeout)
            .await;
        assert_eq!(
            refused.unwrap_err().rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        // Unreachable brokers: the report is message.timeout.ms's error.
        mock.broker_down(1).unwrap();
        let late = producer
            .send("t", None, b"v", OwnedHeaders::new(), timeout)
            .await;
        assert!(late.is_err(), "{late:?}");
    }

    /// rdkafka's `FutureProducer` spins about 1 ms of every 100 ms in its
    /// polling thread (1% of a core): 4 s of it took 4–5 ticks (10 ms
    /// each). Ours may take at most one.
    #[tokio::test]
    async fn an_idle_producer_costs_no_cpu() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let producer = PolledProducer::new(&config(&mock), "idle-test").unwrap();
        producer
            .send("t", None, b"v", OwnedHeaders::new(), Duration::from_secs(5))
            .await
            .unwrap();
        let before = thread_ticks("poll idle-test");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let spent = thread_ticks("poll idle-test") - before;
        assert!(spent <= 1, "the polling thread took {spent} ticks in 4 s");
    }
}
