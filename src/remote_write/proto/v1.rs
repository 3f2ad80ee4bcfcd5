//! Remote write 1.0 messages (`prometheus.WriteRequest`).
//!
//! Field numbers follow prometheus/prompb `types.proto` and `remote.proto`.
//! `WriteRequest` field 2 is reserved upstream and deliberately absent.

/// A batch of series as sent by a remote-write 1.0 client.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series in this request.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric family metadata (type, help, unit), independent of the series.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// One series: its labels and the samples, exemplars and histograms for it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, which must be sorted by name and unique.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Optional exemplars attached to the series.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples, oldest first.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// A label name/value pair.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value (may be empty).
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Label {
    /// Builds a label from anything string-like.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A float sample.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    /// Sample value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Timestamp in milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// An exemplar (e.g. a trace id) attached to a series.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Optional exemplar labels, e.g. `trace_id`.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The exemplar's value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Timestamp in milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// A native (sparse) histogram sample, integer or float flavoured.
///
/// The v2 message has the very same field numbers, so [`super::v2`] reuses
/// this type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Count of observations (integer or float histogram).
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    /// Sum of observations.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// Bucket schema: -4..=8 for exponential buckets, -53 for custom buckets.
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// Breadth of the zero bucket.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Count in the zero bucket.
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    /// Negative bucket spans.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Negative bucket count deltas (integer histograms).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative bucket absolute counts (float histograms).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Positive bucket spans.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    /// Positive bucket count deltas (integer histograms).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive bucket absolute counts (float histograms).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// Counter-reset hint, see [`histogram::ResetHint`].
    #[prost(enumeration = "histogram::ResetHint", tag = "14")]
    pub reset_hint: i32,
    /// Timestamp in milliseconds since the Unix epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Upper bounds for custom buckets (schema -53).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
    /// Remote write 2.0 only (rc.4 `Histogram.start_timestamp`): when the
    /// histogram started counting, in ms; 0 means unset. 1.0's `Histogram`
    /// has no field 17: [`super::v2::Request::into_v1`] clears it, so 1.0
    /// messages built here never carry it.
    #[prost(int64, tag = "17")]
    pub start_timestamp: i64,
}

/// Nested types of [`Histogram`].
pub mod histogram {
    /// Count of observations.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Count {
        /// Integer histogram count.
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        /// Float histogram count.
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    /// Count in the zero bucket.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        /// Integer histogram zero count.
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        /// Float histogram zero count.
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }

    /// Whether a counter reset happened before this histogram.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ResetHint {
        /// Unknown: the receiver has to detect resets itself.
        Unknown = 0,
        /// First histogram after a counter reset.
        Yes = 1,
        /// No counter reset since the previous histogram.
        No = 2,
        /// Gauge histogram: counter resets do not apply.
        Gauge = 3,
    }
}

/// A contiguous run of buckets.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct BucketSpan {
    /// Gap to the previous span, or start index of the first span.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Number of consecutive buckets.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// Metadata of a metric family.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetricMetadata {
    /// Metric type, see [`metric_metadata::MetricType`].
    #[prost(enumeration = "metric_metadata::MetricType", tag = "1")]
    pub r#type: i32,
    /// Metric family name, e.g. `http_requests_total`.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit, e.g. `seconds`.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Nested types of [`MetricMetadata`].
pub mod metric_metadata {
    /// Metric type; the numbers match v2's `Metadata.MetricType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// Unknown or untyped.
        Unknown = 0,
        /// Counter.
        Counter = 1,
        /// Gauge.
        Gauge = 2,
        /// Classic histogram.
        Histogram = 3,
        /// Gauge histogram.
        Gaugehistogram = 4,
        /// Summary.
        Summary = 5,
        /// Info.
        Info = 6,
        /// State set.
        Stateset = 7,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use prost::Message;

    // Golden bytes written by hand from the upstream .proto; they fail if a
    // field number or wire type drifts.
    #[test]
    fn sample_wire_format() {
        let s = Sample {
            value: 1.0,
            timestamp: 5,
        };
        let mut want = vec![0x09]; // field 1, fixed64
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0x05]); // field 2, varint 5
        assert_eq!(s.encode_to_vec(), want);
    }

    #[test]
    fn label_and_metadata_wire_format() {
        let l = Label::new("a", "b");
        assert_eq!(l.encode_to_vec(), vec![0x0a, 1, b'a', 0x12, 1, b'b']);
        let m = MetricMetadata {
            r#type: metric_metadata::MetricType::Gauge as i32,
            metric_family_name: "f".into(),
            help: "h".into(),
            unit: "u".into(),
        };
        // type=1 varint, name=2, help=4, unit=5.
        let want = vec![0x08, 2, 0x12, 1, b'f', 0x22, 1, b'h', 0x2a, 1, b'u'];
        assert_eq!(m.encode_to_vec(), want);
        let w = WriteRequest {
            timeseries: vec![],
            metadata: vec![m],
        };
        assert_eq!(w.encode_to_vec()[0], 0x1a); // metadata is field 3
    }

    #[test]
    fn histogram_wire_format() {
        let h = Histogram {
            count: Some(histogram::Count::CountInt(3)),
            schema: -1,
            zero_count: Some(histogram::ZeroCount::ZeroCountFloat(0.0)),
            positive_spans: vec![BucketSpan {
                offset: -2,
                length: 2,
            }],
            positive_deltas: vec![1, -1],
            reset_hint: histogram::ResetHint::Gauge as i32,
            timestamp: 7,
            ..Default::default()
        };
        let mut want = vec![0x08, 3]; // count_int = 1
        want.extend_from_slice(&[0x20, 1]); // schema = 4, sint32 zigzag(-1) = 1
        want.push(0x39); // zero_count_float = 7, fixed64
        want.extend_from_slice(&0.0f64.to_le_bytes());
        // positive_spans = 11: {offset sint32 zigzag(-2)=3, length 2}
        want.extend_from_slice(&[0x5a, 4, 0x08, 3, 0x10, 2]);
        // positive_deltas = 12, packed sint64: zigzag(1)=2, zigzag(-1)=1
        want.extend_from_slice(&[0x62, 2, 2, 1]);
        want.extend_from_slice(&[0x70, 3]); // reset_hint = 14
        want.extend_from_slice(&[0x78, 7]); // timestamp = 15
        assert_eq!(h.encode_to_vec(), want);
        assert_eq!(Histogram::decode(want.as_slice()).unwrap(), h);
    }

    #[test]
    fn write_request_round_trip() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "up"), Label::new("job", "x")],
                samples: vec![Sample {
                    value: 1.5,
                    timestamp: 1_700_000_000_000,
                }],
                exemplars: vec![Exemplar {
                    labels: vec![Label::new("trace_id", "abc")],
                    value: 2.0,
                    timestamp: 3,
                }],
                histograms: vec![Histogram {
                    count: Some(histogram::Count::CountFloat(2.5)),
                    positive_counts: vec![1.0, 1.5],
                    ..Default::default()
                }],
            }],
            metadata: vec![],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(WriteRequest::decode(bytes.as_slice()).unwrap(), req);
    }
}
