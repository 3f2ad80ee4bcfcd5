//! A durable producer: idempotent, acks=all, answering only once the
//! brokers have the record.
//!
//! `send` never blocks without bound: a full local queue or a record the
//! brokers did not acknowledge within `timeout` is an error the caller
//! turns into "retry later". A producer that librdkafka declares fatally
//! broken, or that has had no record acknowledged for [`STUCK_AFTER`]
//! while sends keep failing, is replaced by a fresh one, so the process
//! recovers on its own.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::ClientConfig;
use tracing::{error, warn};

use super::polled::PolledProducer;
use super::KafkaConfig;

/// Why a record was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Temporary: the queue is full, a broker is away, or the ack came too late.
    #[error("kafka did not acknowledge the record: {0}")]
    Retryable(String),
    /// The brokers will never take this record (e.g. too large for the topic).
    #[error("kafka refused the record: {0}")]
    Refused(String),
}

/// Why a topic does not count as reachable.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// The metadata request failed (brokers away, timeout, auth).
    #[error(transparent)]
    Metadata(KafkaError),
    /// The cluster answers with an error for the topic.
    #[error("topic {topic} is not available: {code}")]
    Topic {
        /// The topic.
        topic: String,
        /// The cluster's error.
        code: RDKafkaErrorCode,
    },
    /// The cluster knows the topic but reports no partitions.
    #[error("topic {0} is not available: it has no partitions")]
    NoPartitions(String),
    /// The answer names no topic.
    #[error("topic {0} is missing")]
    Missing(String),
}

/// How long sends may fail without one success before the producer is
/// replaced (by default). librdkafka has been seen to keep a partition leaderless in its
/// metadata cache, timing out every record, long after the broker came
/// back from a graceful stop; a fresh producer reads fresh metadata. During
/// a real outage the replacement is harmless: the new producer connects
/// when the brokers return.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// A producer for one role that acknowledges only durable records.
pub struct DurableProducer {
    config: ClientConfig,
    /// Names the producer in the statistics metrics (the role).
    role: String,
    inner: RwLock<Arc<PolledProducer>>,
    timeout: Duration,
    /// Since when every send failed (none since the last success), if so.
    failing_since: Mutex<Option<Instant>>,
    /// [`STUCK_AFTER`], shorter in tests.
    stuck_after: Duration,
}

impl DurableProducer {
    /// Builds the producer. `timeout` bounds the wait for an acknowledgement;
    /// `max_record_bytes` is the largest value the caller will send.
    pub fn new(
        kafka: &KafkaConfig,
        role: &str,
        timeout: Duration,
        max_record_bytes: usize,
    ) -> Result<Self, KafkaError> {
        let mut config = kafka.client_config(role);
        config
            // Internal retries must not duplicate or reorder records.
            .set("enable.idempotence", "true")
            // Acknowledged means every in-sync replica has it.
            .set("acks", "all")
            // Give up (and answer "retry") after the caller's timeout.
            .set("message.timeout.ms", timeout.as_millis().to_string())
            // Allow the largest payload plus record overhead.
            .set(
                "message.max.bytes",
                (max_record_bytes + (1 << 20)).to_string(),
            );
        // Tuning defaults that users may override through kafka.properties.
        for (key, value) in [
            // zstd over a batch of records shrinks them most, also when the
            // records are snappy bodies (measured: scripts/bench-ingress.sh).
            // lz4 for the gateway alone (scripts/bench-vs-vmagent.sh 4,
            // 40,000 samples/s, BENCH_KAFKA_VARIANTS with
            // kafka.role_properties.gateway, prost form, medians of 4 rounds):
            // the same CPU (streamroute 2.56 µs/sample with either, broker
            // 1.87 against 1.88) for 18.8 instead of 14.8 ingress bytes per
            // sample; a first 2-round run had shown lz4 11% cheaper, which
            // more rounds did not confirm. none: 28.1 bytes per sample.
            ("compression.type", "zstd"),
            // Senders wait for our answer: batch briefly, not for long.
            // linger.ms=50 (with the router's producer) measured: ingress
            // 13.8 instead of 14.8 bytes per sample, broker CPU -16% within
            // its noise, every 204 up to 45 ms later (scripts/bench-vs-vmagent.sh,
            // README "Kafka settings"); 5 stays for the end-to-end p99.
            ("linger.ms", "5"),
        ] {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        // Producer queue and broker round-trip metrics (kafka/stats.rs).
        super::stats::enable(&mut config);
        let producer = PolledProducer::new(&config, role)?;
        Ok(DurableProducer {
            config,
            role: role.to_string(),
            inner: RwLock::new(Arc::new(producer)),
            timeout,
            failing_since: Mutex::new(None),
            stuck_after: STUCK_AFTER,
        })
    }

    fn current(&self) -> Arc<PolledProducer> {
        match self.inner.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces a producer librdkafka declared fatally failed, or one
    /// whose sends have all failed for [`STUCK_AFTER`] (`retryable`: this
    /// failure was one the brokers, not the record, caused).
    fn replace_if_broken(&self, failed: &Arc<PolledProducer>, retryable: bool) {
        if let Some((code, reason)) = failed.client().fatal_error() {
            error!(?code, %reason, "kafka producer failed fatally; creating a new one");
        } else if retryable && self.stuck() {
            warn!(
                after_s = self.stuck_after.as_secs(),
                "no record acknowledged for a while although sends keep failing; creating a new kafka producer"
            );
        } else {
            return;
        }
        match PolledProducer::new(&self.config, &self.role) {
            Ok(fresh) => {
                let mut slot = match self.inner.write() {
                    Ok(slot) => slot,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if Arc::ptr_eq(&slot, failed) {
                    *slot = Arc::new(fresh);
                }
            }
            Err(e) => error!(error = %e, "cannot create a new kafka producer"),
        }
    }

    /// Notes a failed send; true (and the clock restarted) once sends have
    /// failed without a success for `stuck_after`.
    fn stuck(&self) -> bool {
        let mut since = lock(&self.failing_since);
        let now = Instant::now();
        match *since {
            Some(t) if now.duration_since(t) >= self.stuck_after => {
                *since = Some(now);
                true
            }
            Some(_) => false,
            None => {
                *since = Some(now);
                false
            }
        }
    }

    /// Sends one record and waits until Kafka acknowledged it.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), SendError> {
        let producer = self.current();
        // send() waits for queue space up to the timeout, then fails: never unbounded.
        let result = producer
            .send(topic, key, value, headers, self.timeout)
            .await;
        match result {
            Ok(()) => {
                *lock(&self.failing_since) = None;
                Ok(())
            }
            Err(e) => {
                let error = classify(e);
                self.replace_if_broken(&producer, matches!(error, SendError::Retryable(_)));
                Err(error)
            }
        }
    }

    /// Whether the cluster answers a metadata request for `topic` within `timeout`.
    pub fn topic_reachable(&self, topic: &str, timeout: Duration) -> Result<(), Unreachable> {
        let producer = self.current();
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(Unreachable::Metadata)?;
        let Some(t) = metadata.topics().first() else {
            return Err(Unreachable::Missing(topic.to_owned()));
        };
        if let Some(code) = t.error() {
            return Err(Unreachable::Topic {
                topic: topic.to_owned(),
                code: code.into(),
            });
        }
        if t.partitions().is_empty() {
            return Err(Unreachable::NoPartitions(topic.to_owned()));
        }
        Ok(())
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.current().flush(timeout) {
            warn!(error = %e, "kafka producer did not flush every record before shutdown");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn classify(error: KafkaError) -> SendError {
    match error.rdkafka_error_code() {
        // The payload itself is the problem; sending it again cannot help.
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord) => {
            SendError::Refused(error.to_string())
        }
        // Everything else (brokers away, timeouts, missing topic, ACLs) can be
        // fixed on our side, so the sender must keep the data and retry.
        _ => SendError::Retryable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;

    fn producer(
        mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    ) -> DurableProducer {
        let kafka = KafkaConfig {
            bootstrap_servers: mock.bootstrap_servers(),
            ..KafkaConfig::default()
        };
        let mut producer =
            DurableProducer::new(&kafka, "test", Duration::from_millis(300), 1 << 10).unwrap();
        producer.stuck_after = Duration::from_secs(1);
        producer
    }

    async fn send(producer: &DurableProducer, value: &[u8]) -> Result<(), SendError> {
        producer.send("t", None, value, OwnedHeaders::new()).await
    }

    /// Sends until one is acknowledged (the first needs a connection and a
    /// producer id, longer than the 300 ms timeout), within 10 s.
    async fn delivered(producer: &DurableProducer, value: &[u8]) {
        let until = Instant::now() + Duration::from_secs(10);
        while let Err(e) = send(producer, value).await {
            assert!(Instant::now() < until, "never delivered: {e}");
        }
    }

    /// The gateway's producer waits for every in-sync replica: librdkafka's
    /// effective `acks` is -1 (all) with idempotence, also when
    /// `kafka.properties` asks otherwise (config checks refuse that key,
    /// this holds even past them).
    #[test]
    fn the_producer_is_built_with_acks_all_and_idempotence_whatever_the_properties() {
        for properties in [vec![], vec![("acks", "1"), ("enable.idempotence", "false")]] {
            let kafka = KafkaConfig {
                properties: properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..KafkaConfig::default()
            };
            let producer =
                DurableProducer::new(&kafka, "gateway", Duration::from_secs(5), 1 << 20).unwrap();
            let native = producer.config.create_native_config().unwrap();
            assert_eq!(native.get("acks").unwrap(), "-1", "{properties:?}");
            assert_eq!(native.get("enable.idempotence").unwrap(), "true");
        }
    }

    #[tokio::test]
    async fn a_producer_whose_sends_keep_failing_is_replaced_and_the_new_one_delivers() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let producer = producer(&mock);
        delivered(&producer, b"before").await;
        let first = producer.current();

        mock.broker_down(1).unwrap();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            assert!(send(&producer, b"during").await.is_err());
        }
        assert!(
            !Arc::ptr_eq(&first, &producer.current()),
            "sends failed for longer than stuck_after, so the producer must have been replaced"
        );

        mock.broker_up(1).unwrap();
        delivered(&producer, b"after").await;
    }

    /// A broker answering a produce with an out-of-order sequence makes an
    /// idempotent producer with the gap-less guarantee fail fatally (it
    /// cannot know whether records were lost): the failed send replaces
    /// the producer at once (no `stuck_after` wait), and the new one delivers.
    #[tokio::test]
    async fn a_producer_librdkafka_declares_fatally_failed_is_replaced_at_once() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let kafka = KafkaConfig {
            bootstrap_servers: mock.bootstrap_servers(),
            properties: [("enable.gapless.guarantee".to_string(), "true".to_string())]
                .into_iter()
                .collect(),
            ..KafkaConfig::default()
        };
        let mut producer =
            DurableProducer::new(&kafka, "test", Duration::from_millis(300), 1 << 10).unwrap();
        producer.stuck_after = Duration::from_secs(3600);
        delivered(&producer, b"before").await;
        let first = producer.current();
        mock.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
        );
        let until = Instant::now() + Duration::from_secs(5);
        while first.client().fatal_error().is_none() {
            let _ = send(&producer, b"during").await;
            assert!(Instant::now() < until, "librdkafka raised no fatal error");
        }
        // The error may have turned fatal after the send that saw it.
        let _ = send(&producer, b"during").await;
        assert!(
            !Arc::ptr_eq(&first, &producer.current()),
            "a fatally failed producer must be replaced at its first failed send"
        );
        delivered(&producer, b"after").await;
    }

    #[tokio::test]
    async fn records_the_brokers_refuse_do_not_replace_the_producer() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let producer = producer(&mock);
        delivered(&producer, b"ok").await;
        let first = producer.current();
        let too_large = vec![0u8; 4 << 20];
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            assert!(matches!(
                send(&producer, &too_large).await,
                Err(SendError::Refused(_))
            ));
        }
        assert!(Arc::ptr_eq(&first, &producer.current()));
    }
}
