//! Sending a partition's request until the receiver takes it (2xx) or
//! refuses it for good (its records go to the dead-letter topic), and
//! writing dead letters, which are never dropped while Kafka is away.
//!
//! A [`Delivery`] is what sending needs of a partition worker: the worker
//! has one, and with `max_in_flight` above 1 each of its lanes has its own
//! (`lanes.rs`).
//!
//! Depends on the worker's `Shared`, `send`, `batch`, `events` and the
//! dead-letter record format.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Shared;
use crate::egress::batch::{Batch, Record};
use crate::egress::config::SendEncoding;
use crate::egress::events::{EncodingRefused, RequestDelivered, RequestRejected, RequestRetried};
use crate::egress::send::{encoding_name, Outcome};
use crate::egress::EgressError;
use crate::kafka::producer::SendError;
use crate::kafka::record::{DeadLetter, Source};
use crate::remote_write::{compress, Encoding};

/// Sends one partition's requests to its receiver.
#[derive(Clone)]
pub struct Delivery {
    pub shared: Arc<Shared>,
    pub partition: i32,
    pub url: String,
    /// The partition number as a metric label.
    pub label: String,
    /// `egress.encoding` until the receiver refuses zstd, then snappy.
    pub encoding: SendEncoding,
}

impl Delivery {
    fn topic(&self) -> &str {
        &self.shared.config.topic
    }

    /// Sends `batch` until it is delivered or dead-lettered (true), or
    /// shutdown interrupts a wait between retries (false).
    pub(super) async fn deliver(
        &mut self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<bool, EgressError> {
        if batch.is_empty() {
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
            let elapsed = started.elapsed();
            let wait = match outcome {
                Outcome::Delivered => {
                    RequestDelivered {
                        label: &self.label,
                        counts: batch.counts,
                        bytes: body.len(),
                        elapsed,
                    }
                    .emit();
                    return Ok(true);
                }
                Outcome::EncodingRefused { status, body } => {
                    EncodingRefused {
                        partition: self.partition,
                        status,
                        body: &body,
                        elapsed,
                    }
                    .emit();
                    self.encoding = SendEncoding::Snappy;
                    continue;
                }
                Outcome::Rejected { status, body } => {
                    RequestRejected {
                        partition: self.partition,
                        label: &self.label,
                        status,
                        body: &body,
                        records: batch.records.len(),
                        elapsed,
                    }
                    .emit();
                    self.dead_letter_records(
                        &batch.body,
                        &batch.records,
                        "rejected_by_receiver",
                        &body,
                        Some(status),
                    )
                    .await;
                    return Ok(true);
                }
                Outcome::Retry {
                    reason,
                    after,
                    detail,
                } => {
                    let wait = after.unwrap_or_else(|| jitter(backoff));
                    backoff = (backoff * 2).min(config.retry_max_backoff);
                    RequestRetried {
                        partition: self.partition,
                        label: &self.label,
                        reason,
                        detail: &detail,
                        attempts,
                        wait,
                        encoding: encoding_name(self.encoding),
                        elapsed,
                    }
                    .emit();
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Writes records to the dead-letter topic, retrying while Kafka is
    /// unavailable (they must not be dropped). Only a record Kafka itself
    /// refuses (too large) is given up, loudly.
    pub(super) async fn dead_letter_records(
        &self,
        body: &[u8],
        records: &[Record],
        reason: &str,
        detail: &str,
        status: Option<u16>,
    ) {
        let mut dead = DeadLetter {
            http_status: status,
            target_url: Some(self.url.clone()),
            ..DeadLetter::new(
                reason,
                detail,
                Source {
                    topic: self.topic().to_string(),
                    partition: self.partition,
                    offset: 0,
                },
            )
        };
        for record in records {
            dead.source.offset = record.offset;
            let headers = dead.to_headers(Some(&record.headers));
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

/// A wait between `d/2` and `d`, so workers that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}
