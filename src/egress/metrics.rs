//! Egress metrics, declared once. Labels: partition (bounded by the topic),
//! reason and status class (fixed sets).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Samples (float and histogram) acknowledged by the receiver, per partition.
pub const SAMPLES: &str = "streamroute_egress_samples_total";
/// Series acknowledged by the receiver, per partition.
pub const SERIES: &str = "streamroute_egress_series_total";
/// Request body bytes (compressed) acknowledged, per partition.
pub const BYTES: &str = "streamroute_egress_bytes_total";
/// Duration of one HTTP request, by outcome (`ok`, `retry`, `rejected`).
pub const REQUEST_DURATION: &str = "streamroute_egress_request_duration_seconds";
/// Retried requests by reason (`connect`, `timeout`, `5xx`, `429`, `encoding`).
pub const RETRIES: &str = "streamroute_egress_retries_total";
/// 429 answers, per partition.
pub const TOO_MANY_REQUESTS: &str = "streamroute_egress_429_total";
/// Batches sent to the dead-letter topic after a 4xx, per partition.
pub const DEAD_LETTERED: &str = "streamroute_egress_dead_letter_batches_total";
/// High watermark minus stored position, per partition.
pub const LAG: &str = "streamroute_egress_lag_records";
/// Newest sample timestamp (seconds) of the last acknowledged request, per partition.
pub const LAST_ACKED_SAMPLE: &str = "streamroute_egress_last_acknowledged_sample_timestamp_seconds";
/// Records skipped because retention removed them before they were sent, per partition.
pub const SKIPPED: &str = "streamroute_egress_skipped_records_total";
/// Latency of one write (and flush, when configured) of the sled state.
pub const STATE_WRITE: &str = "streamroute_egress_state_write_seconds";
/// Failed sled operations by op (`open`, `read`, `write`, `flush`), e.g. a full disk.
pub const STATE_ERRORS: &str = "streamroute_egress_state_errors_total";
/// Partitions that had no position in sled and resumed from the offset
/// committed to Kafka, per partition.
pub const RESUMED_FROM_KAFKA: &str = "streamroute_egress_resumed_from_kafka_total";
/// Failed commits of positions to the Kafka consumer group.
pub const COMMIT_ERRORS: &str = "streamroute_egress_offset_commit_errors_total";
/// Late samples (at or before what their series sent), per partition and
/// `policy` (`drop`, `send`, `topic`: what happened to them).
pub const LATE: &str = "streamroute_egress_late_samples_total";
/// Gaps detected by the windows, per partition.
pub const GAPS: &str = "streamroute_egress_gaps_total";
/// Staleness markers sent by the windows, per partition.
pub const STALE_MARKERS: &str = "streamroute_egress_stale_markers_total";
/// Interpolated samples sent by the windows, per partition.
pub const SYNTHESIZED: &str = "streamroute_egress_synthesized_samples_total";
/// Series whose window state expired, per partition.
pub const EXPIRED: &str = "streamroute_egress_window_series_expired_total";
/// Samples held by the delay window, per partition.
pub const HELD: &str = "streamroute_egress_held_samples";
/// Series with window state, per partition.
pub const WINDOW_SERIES: &str = "streamroute_egress_window_series";
/// Read-backs of a partition for a `series_ids` writer's definitions, per
/// partition and outcome (`done`, `failed`: retried).
pub const SERIES_READBACKS: &str = "streamroute_egress_series_readbacks_total";
/// `series_ids` definitions the partition keeps, per partition.
pub const SERIES_DEFINITIONS: &str = "streamroute_egress_series_definitions";
/// Wall clock minus the partition's watermark, in seconds.
pub const WATERMARK_LAG: &str = "streamroute_egress_watermark_lag_seconds";

/// Registers the egress metric descriptions.
pub fn describe() {
    describe_counter!(
        LATE,
        "late samples (at or before what their series already sent), per partition and policy"
    );
    describe_counter!(GAPS, "gaps detected by the windows, per partition");
    describe_counter!(
        STALE_MARKERS,
        "staleness markers sent by the windows, per partition"
    );
    describe_counter!(
        SYNTHESIZED,
        "interpolated samples sent by the windows, per partition"
    );
    describe_counter!(EXPIRED, "series whose window state expired, per partition");
    describe_gauge!(HELD, "samples held by the delay window, per partition");
    describe_gauge!(WINDOW_SERIES, "series with window state, per partition");
    describe_counter!(
        SERIES_READBACKS,
        "read-backs of the partition for a series_ids writer's definitions, per partition and outcome (done, failed)"
    );
    describe_gauge!(
        SERIES_DEFINITIONS,
        "series_ids definitions kept, per partition"
    );
    describe_gauge!(
        WATERMARK_LAG,
        Unit::Seconds,
        "wall clock minus the partition's watermark"
    );
    describe_counter!(
        SAMPLES,
        "samples acknowledged by the receiver, per partition"
    );
    describe_counter!(SERIES, "series acknowledged by the receiver, per partition");
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "compressed request bytes acknowledged, per partition"
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "remote-write request duration by outcome"
    );
    describe_counter!(RETRIES, "requests retried, by reason");
    describe_counter!(
        TOO_MANY_REQUESTS,
        "429 answers from the receiver, per partition"
    );
    describe_counter!(
        DEAD_LETTERED,
        "batches refused with a 4xx and sent to the dead-letter topic"
    );
    describe_gauge!(
        LAG,
        "records between the stored position and the partition's end"
    );
    describe_gauge!(
        LAST_ACKED_SAMPLE,
        Unit::Seconds,
        "newest sample timestamp of the last acknowledged request"
    );
    describe_counter!(
        SKIPPED,
        "records removed by retention before egress sent them"
    );
    describe_histogram!(
        STATE_WRITE,
        Unit::Seconds,
        "sled write latency of egress positions"
    );
    describe_counter!(
        STATE_ERRORS,
        "failed sled operations on egress positions, by op (a full disk counts here)"
    );
    describe_counter!(
        RESUMED_FROM_KAFKA,
        "partitions with no sled position that resumed from the offset committed to Kafka"
    );
    describe_counter!(
        COMMIT_ERRORS,
        "failed commits of egress positions to the Kafka consumer group"
    );
}
