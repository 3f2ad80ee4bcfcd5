//! A durable producer: idempotent, acks=all, answering only once the
//! brokers have the record.
//!
//! `send` never blocks without bound: a full local queue or a record the
//! brokers did not acknowledge within `timeout` is an error the caller
//! turns into "retry later". A producer that librdkafka declares fatally
//! broken is replaced by a fresh one, so the process recovers on its own.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use tracing::{error, warn};

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

/// A producer for one role that acknowledges only durable records.
pub struct DurableProducer {
    config: ClientConfig,
    inner: RwLock<Arc<FutureProducer>>,
    timeout: Duration,
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
            ("compression.type", "zstd"),
            // Senders wait for our answer: batch briefly, not for long.
            ("linger.ms", "5"),
        ] {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        let producer: FutureProducer = config.create()?;
        Ok(DurableProducer {
            config,
            inner: RwLock::new(Arc::new(producer)),
            timeout,
        })
    }

    fn current(&self) -> Arc<FutureProducer> {
        match self.inner.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces a producer librdkafka declared fatally failed.
    fn replace_if_fatal(&self, failed: &Arc<FutureProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        error!(?code, %reason, "kafka producer failed fatally; creating a new one");
        match self.config.create::<FutureProducer>() {
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

    /// Sends one record and waits until Kafka acknowledged it.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), SendError> {
        let producer = self.current();
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(value)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        // send() waits for queue space up to the timeout, then fails: never unbounded.
        let result = producer.send(record, self.timeout).await;
        match result {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                self.replace_if_fatal(&producer);
                Err(classify(e))
            }
        }
    }

    /// Whether the cluster answers a metadata request for `topic` within `timeout`.
    pub fn topic_reachable(&self, topic: &str, timeout: Duration) -> Result<(), String> {
        let producer = self.current();
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| e.to_string())?;
        match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            Some(t) => Err(format!("topic {topic} is not available: {:?}", t.error())),
            None => Err(format!("topic {topic} is missing")),
        }
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.current().flush(timeout) {
            warn!(error = %e, "kafka producer did not flush every record before shutdown");
        }
    }
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
