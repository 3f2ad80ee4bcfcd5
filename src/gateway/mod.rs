//! The gateway role: Prometheus remote write in, durable in the ingress topic.
//!
//! Guarantee: a sender gets 2xx only after Kafka acknowledged its payload
//! with acks=all. Invalid requests get a 4xx naming the problem (senders
//! drop those); anything that may succeed later (Kafka away, queue full,
//! too busy) gets 503 with Retry-After (senders retry those).
//!
//! Every resource a client controls is bounded: time (header and body read
//! timeouts), buffered body bytes (one byte budget shared by all requests,
//! counted as bytes arrive), in-flight requests (taken only once the body
//! is in, so trickling clients cannot hold them), decode CPU (a fixed
//! number of decodes at once, on blocking threads, small bodies queued
//! apart from large ones) and decode memory (the
//! limits and a heap budget applied while walking the bytes, before prost
//! builds anything; see `remote_write::bounds`).
//!
//! May depend on: `kafka` (config, producer, record format),
//! `remote_write`, `http`, `tls`, `problem`. It gets its own section, the
//! Kafka section and the ingress topic, never the whole `Config`.

mod auth;
mod body;
pub mod config;
mod handler;
pub mod metrics;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Credential, GatewayConfig};

use crate::http::Readiness;
use crate::kafka::producer::DurableProducer;
use crate::kafka::KafkaConfig;
use crate::live::Live;

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The Kafka producer could not be created.
    #[error("cannot create the kafka producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
}

/// The gateway: an HTTP handler plus its producer.
pub struct Gateway {
    config: GatewayConfig,
    /// The same section as reloaded: auth and limits are read from here
    /// per request (`src/reload.rs`).
    live: Live<GatewayConfig>,
    topic: String,
    producer: DurableProducer,
    in_flight: Semaphore,
    /// Decodes of bodies claiming more than 1 MiB decoded running now
    /// (`max_concurrent_decodes`); waiters queue first come first served.
    decodes: Arc<Semaphore>,
    /// The same for bodies claiming at most 1 MiB.
    small_decodes: Arc<Semaphore>,
    /// Body bytes held by requests being read or handled.
    body_bytes: Arc<AtomicUsize>,
    readiness: Readiness,
    metadata_timeout: Duration,
}

impl Gateway {
    /// Builds the gateway, writing to `ingress_topic` of the cluster
    /// `kafka`, and registers its readiness.
    pub fn new(
        gateway: &GatewayConfig,
        kafka: &KafkaConfig,
        ingress_topic: &str,
        readiness: Readiness,
    ) -> Result<Gateway, GatewayError> {
        let producer = DurableProducer::new(
            kafka,
            "gateway",
            gateway.produce_timeout,
            gateway.max_decoded_bytes,
        )?;
        readiness.register("gateway");
        Ok(Gateway {
            config: gateway.clone(),
            live: Live::new(gateway.clone()),
            topic: ingress_topic.to_string(),
            producer,
            in_flight: Semaphore::new(gateway.max_in_flight),
            decodes: Arc::new(Semaphore::new(gateway.max_concurrent_decodes)),
            small_decodes: Arc::new(Semaphore::new(gateway.max_concurrent_decodes)),
            body_bytes: Arc::new(AtomicUsize::new(0)),
            readiness,
            metadata_timeout: kafka.request_timeout.min(Duration::from_secs(5)),
        })
    }

    /// Reads auth and limits from `live` (hot reload) from now on.
    pub fn with_live(mut self, live: Live<GatewayConfig>) -> Gateway {
        self.live = live;
        self
    }

    /// Keeps readiness current (ready while the ingress topic answers
    /// metadata requests) until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let mut was_ready = None;
        loop {
            let this = self.clone();
            let probe = tokio::task::spawn_blocking(move || {
                this.producer
                    .topic_reachable(&this.topic, this.metadata_timeout)
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            let ready = probe.is_ok();
            if was_ready != Some(ready) {
                match &probe {
                    Ok(()) => info!(topic = %self.topic, "gateway ready: ingress topic reachable"),
                    Err(reason) => warn!(topic = %self.topic, %reason, "gateway not ready"),
                }
                was_ready = Some(ready);
            }
            self.readiness
                .set("gateway", ready && !shutdown.is_cancelled());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(if ready { 10 } else { 1 })) => {}
            }
        }
        self.readiness.set("gateway", false);
        Ok(())
    }

    /// Flushes whatever the producer still holds.
    pub fn close(&self, grace: Duration) {
        self.producer.flush(grace);
    }
}
