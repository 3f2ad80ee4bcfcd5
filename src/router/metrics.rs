//! Router metrics, declared once. Labels: route (configured, bounded),
//! task (bounded by task_count), partition (bounded by the topic).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Series by route and outcome (`in`, `out`, `dropped`).
pub const SERIES: &str = "streamroute_router_series_total";
/// Samples (float and histogram) by route and outcome (`in`, `out`, `dropped`).
pub const SAMPLES: &str = "streamroute_router_samples_total";
/// Samples written per route and task id.
pub const TASK_SAMPLES: &str = "streamroute_router_task_samples_total";
/// Samples written per route and output partition (the load each
/// partition's egress worker and vmagent receives).
pub const PARTITION_SAMPLES: &str = "streamroute_router_partition_samples_total";
/// Series whose matching stream aggregation rules share no grouping label,
/// routed by the empty label set (all to one task), per route.
pub const AGGREGATION_CONFLICTS: &str = "streamroute_router_aggregation_conflict_series_total";
/// Series of the zero-copy path by route and whether the route's relabel
/// cache knew them (`outcome`: `hit`, `miss`).
pub const RELABEL_CACHE: &str = "streamroute_router_relabel_cache_series_total";
/// Times a route's relabel cache reached `router.relabel_cache_bytes` and
/// forgot everything, per route.
pub const RELABEL_CACHE_CLEARS: &str = "streamroute_router_relabel_cache_clears_total";
/// Series entries of `series_ids` routes committed, per route and `kind`
/// (`definition`: with labels, `reference`: by number only).
pub const SERIES_ID_ENTRIES: &str = "streamroute_router_series_id_entries_total";
/// Ingress record timestamp to committed output, per route.
pub const DISTRIBUTION_LATENCY: &str = "streamroute_router_distribution_latency_seconds";
/// Records (batches) buffered in the open transaction, per route.
pub const BUFFERED: &str = "streamroute_router_buffered_series";
/// Consumer lag per ingress partition, from librdkafka statistics.
pub const CONSUMER_LAG: &str = "streamroute_router_consumer_lag_records";
/// Transactions by outcome (`committed`, `aborted`).
pub const TRANSACTIONS: &str = "streamroute_router_transactions_total";
/// Ingress records sent to the dead-letter topic, by reason.
pub const DEAD_LETTERED: &str = "streamroute_router_dead_letter_records_total";
/// Metadata entries (type, help, unit of one family) written into task
/// records, per route: one per family and partition it goes to.
pub const METADATA_FORWARDED: &str = "streamroute_router_metadata_forwarded_total";
/// Output records (batches) written, per route.
pub const OUTPUT_RECORDS: &str = "streamroute_router_output_records_total";
/// Output record value bytes written, per route.
pub const OUTPUT_BYTES: &str = "streamroute_router_output_bytes_total";

/// Registers the router's metric descriptions.
pub fn describe() {
    describe_counter!(
        SERIES,
        "series by route and outcome (in, out, dropped by relabeling)"
    );
    describe_counter!(
        SAMPLES,
        "samples by route and outcome (in, out, dropped by relabeling)"
    );
    describe_counter!(TASK_SAMPLES, "samples written per route and stream_task_id");
    describe_counter!(
        PARTITION_SAMPLES,
        "samples written per route and output partition"
    );
    describe_counter!(
        AGGREGATION_CONFLICTS,
        "series whose matching stream aggregation rules share no grouping label (all routed to one task), per route"
    );
    describe_counter!(
        RELABEL_CACHE,
        "series of the zero-copy path by route and outcome (hit: relabeled before, miss)"
    );
    describe_counter!(
        RELABEL_CACHE_CLEARS,
        "times a route's relabel cache reached router.relabel_cache_bytes and started over"
    );
    describe_counter!(
        SERIES_ID_ENTRIES,
        "series entries of series_ids routes committed, per route and kind (definition, reference)"
    );
    describe_histogram!(
        DISTRIBUTION_LATENCY,
        Unit::Seconds,
        "ingress record timestamp to committed output"
    );
    describe_gauge!(
        BUFFERED,
        "series buffered in the open transaction, per route"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "records behind the ingress partition's end, per partition"
    );
    describe_counter!(TRANSACTIONS, "kafka transactions by outcome");
    describe_counter!(
        DEAD_LETTERED,
        "ingress records sent to the dead-letter topic, by reason"
    );
    describe_counter!(
        METADATA_FORWARDED,
        "metadata entries written into task records (one per family and partition), per route"
    );
    describe_counter!(OUTPUT_RECORDS, "task-topic records written, per route");
    describe_counter!(
        OUTPUT_BYTES,
        Unit::Bytes,
        "task-topic record value bytes written, per route"
    );
}
