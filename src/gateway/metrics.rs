//! Gateway metrics, declared once. Recording happens in `handler.rs`, next
//! to the log line for the same event.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Requests answered, by HTTP status code.
pub const REQUESTS: &str = "streamroute_gateway_requests_total";
/// Body bytes received, by stage (`compressed` as sent, `decoded`).
pub const RECEIVED_BYTES: &str = "streamroute_gateway_received_bytes_total";
/// Float samples accepted into the ingress topic.
pub const SAMPLES: &str = "streamroute_gateway_samples_total";
/// Series accepted.
pub const SERIES: &str = "streamroute_gateway_series_total";
/// Native histogram samples accepted.
pub const HISTOGRAMS: &str = "streamroute_gateway_histograms_total";
/// Exemplars accepted.
pub const EXEMPLARS: &str = "streamroute_gateway_exemplars_total";
/// Metadata entries accepted.
pub const METADATA: &str = "streamroute_gateway_metadata_total";
/// Requests refused, by reason.
pub const REJECTED: &str = "streamroute_gateway_rejected_requests_total";
/// Time from handing a payload to Kafka until its acknowledgement.
pub const PRODUCE_DURATION: &str = "streamroute_gateway_kafka_produce_duration_seconds";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "streamroute_gateway_in_flight_requests";

/// Registers the gateway's metric descriptions.
pub fn describe() {
    describe_counter!(REQUESTS, "remote-write requests answered, by status code");
    describe_counter!(
        RECEIVED_BYTES,
        Unit::Bytes,
        "request body bytes, by stage (compressed, decoded)"
    );
    describe_counter!(SAMPLES, "float samples acknowledged by kafka");
    describe_counter!(SERIES, "series acknowledged by kafka");
    describe_counter!(HISTOGRAMS, "native histogram samples acknowledged by kafka");
    describe_counter!(EXEMPLARS, "exemplars acknowledged by kafka");
    describe_counter!(METADATA, "metadata entries acknowledged by kafka");
    describe_counter!(REJECTED, "requests refused, by reason");
    describe_histogram!(
        PRODUCE_DURATION,
        Unit::Seconds,
        "kafka produce latency of one payload, until acks=all"
    );
    describe_gauge!(IN_FLIGHT, "remote-write requests being handled");
}
