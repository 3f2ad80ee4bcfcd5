//! Hand-written prost messages for Prometheus remote write 1.0 and 2.0.
//!
//! The structs are written by hand (no build.rs, no protoc) and mirror the
//! upstream field numbers exactly:
//! - [`v1`]: `prometheus.WriteRequest` from prometheus/prompb `types.proto`
//!   and `remote.proto`.
//! - [`v2`]: `io.prometheus.write.v2.Request` from prometheus/prompb
//!   `io/prometheus/write/v2/types.proto`, plus the v2 → v1 conversion.
//!
//! Unknown fields are skipped by prost, so newer senders adding fields do not
//! break decoding.

pub mod v1;
pub mod v2;

pub use v1::{
    BucketSpan, Exemplar, Histogram, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};
