//! Egress's observable events, one struct each: its `emit` writes the log
//! line and the metrics of that event together, so the two stay in step
//! (Vector's `internal_events`). A partition worker says what happened;
//! what that looks like in logs and metrics is decided here.
//!
//! Depends on the egress `metrics` names and `scan::Counts`.

use std::time::Duration;

use tracing::{error, warn};

use super::metrics as m;
use crate::remote_write::scan::Counts;

/// The receiver acknowledged a request (2xx).
pub struct RequestDelivered<'a> {
    pub label: &'a str,
    pub counts: Counts,
    /// The compressed body's size.
    pub bytes: usize,
    pub elapsed: Duration,
}

impl RequestDelivered<'_> {
    pub fn emit(&self) {
        let p = self.label.to_string();
        metrics::histogram!(m::REQUEST_DURATION, "outcome" => "ok")
            .record(self.elapsed.as_secs_f64());
        metrics::counter!(m::SAMPLES, "partition" => p.clone()).increment(self.counts.samples);
        metrics::counter!(m::SERIES, "partition" => p.clone()).increment(self.counts.series);
        metrics::counter!(m::BYTES, "partition" => p.clone()).increment(self.bytes as u64);
        if let Some(ts) = self.counts.max_timestamp {
            metrics::gauge!(m::LAST_ACKED_SAMPLE, "partition" => p).set(ts as f64 / 1000.0);
        }
    }
}

/// The receiver does not take zstd: the partition falls back to snappy.
pub struct EncodingRefused<'a> {
    pub partition: i32,
    pub status: u16,
    pub body: &'a str,
    pub elapsed: Duration,
}

impl EncodingRefused<'_> {
    pub fn emit(&self) {
        metrics::histogram!(m::REQUEST_DURATION, "outcome" => "retry")
            .record(self.elapsed.as_secs_f64());
        metrics::counter!(m::RETRIES, "reason" => "encoding").increment(1);
        warn!(
            partition = self.partition,
            status = self.status,
            body = self.body,
            "receiver refuses zstd; falling back to snappy"
        );
    }
}

/// The receiver refused a request for good (a 4xx other than 429): its
/// records go to the dead-letter topic. Counted as one dead-lettered batch.
pub struct RequestRejected<'a> {
    pub partition: i32,
    pub label: &'a str,
    pub status: u16,
    pub body: &'a str,
    pub records: usize,
    pub elapsed: Duration,
}

impl RequestRejected<'_> {
    pub fn emit(&self) {
        metrics::histogram!(m::REQUEST_DURATION, "outcome" => "rejected")
            .record(self.elapsed.as_secs_f64());
        error!(
            partition = self.partition,
            status = self.status,
            body = self.body,
            records = self.records,
            "receiver refused the request; dead-lettering its records"
        );
        metrics::counter!(m::DEAD_LETTERED, "partition" => self.label.to_string()).increment(1);
    }
}

/// A request failed in a way worth retrying; it is sent again after `wait`.
pub struct RequestRetried<'a> {
    pub partition: i32,
    pub label: &'a str,
    /// `connect`, `timeout`, `5xx`, `429`.
    pub reason: &'static str,
    pub detail: &'a str,
    pub attempts: u32,
    pub wait: Duration,
    pub encoding: &'static str,
    pub elapsed: Duration,
}

impl RequestRetried<'_> {
    pub fn emit(&self) {
        metrics::histogram!(m::REQUEST_DURATION, "outcome" => "retry")
            .record(self.elapsed.as_secs_f64());
        metrics::counter!(m::RETRIES, "reason" => self.reason).increment(1);
        if self.reason == "429" {
            metrics::counter!(m::TOO_MANY_REQUESTS, "partition" => self.label.to_string())
                .increment(1);
        }
        warn!(
            partition = self.partition,
            reason = self.reason,
            detail = self.detail,
            attempts = self.attempts,
            wait = ?self.wait,
            encoding = self.encoding,
            "request failed; retrying"
        );
    }
}

/// A task record is no WriteRequest (or its headers are unreadable): it
/// is dead-lettered alone, as it was read.
pub struct MalformedTaskRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
}

impl MalformedTaskRecord<'_> {
    pub fn emit(&self) {
        warn!(
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "task record is not a WriteRequest; dead-lettering it"
        );
    }
}

/// Retention removed records before egress sent them: reading goes on at
/// the log start, and they are lost for this receiver.
pub struct RecordsSkipped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub label: &'a str,
    /// The first offset lost and the log start.
    pub from: i64,
    pub to: i64,
}

impl RecordsSkipped<'_> {
    pub fn emit(&self) {
        error!(
            topic = self.topic,
            partition = self.partition,
            position = self.from,
            log_start = self.to,
            skipped = self.to - self.from,
            "records were removed by retention before egress sent them; they are LOST for this receiver, continuing at the log start"
        );
        metrics::counter!(m::SKIPPED, "partition" => self.label.to_string())
            .increment(u64::try_from(self.to - self.from).unwrap_or(0));
    }
}

/// A partition had no position in sled and resumes from the offset
/// committed to the Kafka consumer group (a lost or replaced state_dir).
pub struct ResumedFromKafka<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub label: &'a str,
    pub committed: i64,
    pub group: &'a str,
    pub state_dir: &'a str,
}

impl ResumedFromKafka<'_> {
    pub fn emit(&self) {
        warn!(
            topic = self.topic,
            partition = self.partition,
            committed = self.committed,
            group = %self.group,
            state_dir = self.state_dir,
            "no position in the egress state (state_dir lost or replaced?); resuming from the offset committed to kafka"
        );
        metrics::counter!(m::RESUMED_FROM_KAFKA, "partition" => self.label.to_string())
            .increment(1);
    }
}
