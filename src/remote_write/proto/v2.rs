//! Remote write 2.0 messages (`io.prometheus.write.v2.Request`) and their
//! conversion to 1.0.
//!
//! In 2.0 every string lives once in `Request.symbols` and the rest of the
//! message refers to it by index. [`Request::into_v1`] resolves those
//! references so the rest of the pipeline only ever sees 1.0 messages.
//! A reference outside the table is a [`DecodeError`], never a panic.
//!
//! The messages follow the spec's version 2.0-rc.4 (upstream
//! `prompb/io/prometheus/write/v2/types.proto`): the start timestamp is per
//! sample (`Sample.start_timestamp`, field 3) and per histogram
//! (`Histogram.start_timestamp`, field 17), and `TimeSeries` field 6 (rc.3's
//! per-series `created_timestamp`) is reserved. Bodies from rc.3 senders
//! still decode: field 6 is skipped like any unknown field.
//!
//! Information 1.0 cannot carry is dropped by the conversion: the start
//! timestamps. The gateway stores 2.0 bodies as received, so the ingress
//! topic keeps them; the router's task records are 1.0 and do not.

use std::collections::HashSet;

use super::v1;
use crate::remote_write::DecodeError;

/// Native histograms have identical field numbers in 1.0 and 2.0 (upstream
/// `io/prometheus/write/v2/types.proto` fields 1–16), so one type serves both;
/// its field 17, `start_timestamp`, exists only in 2.0.
pub use super::v1::{histogram, BucketSpan, Histogram};

/// A batch of series as sent by a remote-write 2.0 client.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// De-duplicated string table; must start with the empty string.
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    /// The series in this request.
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

/// One series, with labels given as symbol references.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Alternating name/value references into `Request.symbols`.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Float samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Native histogram samples, oldest first.
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    /// Optional exemplars.
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    /// Metadata of this series' metric.
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
    // Field 6 is reserved (rc.3's `created_timestamp`, now per sample).
}

/// A float sample: 1.0's, plus a start timestamp.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    /// Sample value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Timestamp in milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    /// When the counter (or cumulative series) started counting, in ms;
    /// 0 means unset.
    #[prost(int64, tag = "3")]
    pub start_timestamp: i64,
}

/// An exemplar with labels given as symbol references.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Alternating name/value references into `Request.symbols`.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// The exemplar's value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Timestamp in ms; 0 means unset.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// Per-series metric metadata.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Metadata {
    /// Metric type, see [`metadata::MetricType`].
    #[prost(enumeration = "metadata::MetricType", tag = "1")]
    pub r#type: i32,
    /// Reference to the HELP text (0 = the empty string).
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    /// Reference to the unit (0 = the empty string).
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// Nested types of [`Metadata`].
pub mod metadata {
    /// Metric type; numbers match 1.0's `MetricMetadata.MetricType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// Unspecified.
        Unspecified = 0,
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

impl Request {
    /// Converts to a 1.0 `WriteRequest`, resolving every symbol reference.
    ///
    /// Per-series metadata becomes 1.0 `MetricMetadata` keyed by the series'
    /// `__name__` (first occurrence wins; series without metadata or without a
    /// name contribute none). Errors on an out-of-range reference, an odd
    /// number of label references, or a symbol table whose first entry is not
    /// the empty string (the spec requires it, and unset `help_ref`/`unit_ref`
    /// would otherwise resolve to a real string). Start timestamps of
    /// samples and histograms are dropped: 1.0 has no field for them.
    pub fn into_v1(self) -> Result<v1::WriteRequest, DecodeError> {
        let symbols = Symbols::new(&self.symbols)?;
        let mut timeseries = Vec::with_capacity(self.timeseries.len());
        let mut metadata = Vec::new();
        let mut seen_families: HashSet<String> = HashSet::new();

        for (index, ts) in self.timeseries.into_iter().enumerate() {
            let labels = symbols.labels(&ts.labels_refs, index)?;
            let exemplars = ts
                .exemplars
                .iter()
                .map(|e| {
                    Ok(v1::Exemplar {
                        labels: symbols.labels(&e.labels_refs, index)?,
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                })
                .collect::<Result<Vec<_>, DecodeError>>()?;

            if let Some(md) = ts.metadata.filter(|m| *m != Metadata::default()) {
                let help = symbols.get(md.help_ref, index)?;
                let unit = symbols.get(md.unit_ref, index)?;
                let name = labels.iter().find(|l| l.name == "__name__");
                if let Some(name) = name {
                    if seen_families.insert(name.value.clone()) {
                        metadata.push(v1::MetricMetadata {
                            // Both enums use the same numbers; unknown future
                            // values pass through unchanged.
                            r#type: md.r#type,
                            metric_family_name: name.value.clone(),
                            help: help.to_owned(),
                            unit: unit.to_owned(),
                        });
                    }
                }
            }

            timeseries.push(v1::TimeSeries {
                labels,
                samples: ts
                    .samples
                    .iter()
                    .map(|s| v1::Sample {
                        value: s.value,
                        timestamp: s.timestamp,
                    })
                    .collect(),
                exemplars,
                histograms: ts
                    .histograms
                    .into_iter()
                    .map(|h| Histogram {
                        start_timestamp: 0,
                        ..h
                    })
                    .collect(),
            });
        }
        Ok(v1::WriteRequest {
            timeseries,
            metadata,
        })
    }
}

/// Checked access to the symbol table.
struct Symbols<'a> {
    table: &'a [String],
}

impl<'a> Symbols<'a> {
    fn new(table: &'a [String]) -> Result<Self, DecodeError> {
        match table.first() {
            Some(first) if !first.is_empty() => Err(DecodeError::BadSymbolTable),
            _ => Ok(Symbols { table }),
        }
    }

    /// Resolves one reference. Reference 0 is the empty string even when the
    /// table is empty, so a request with no strings at all stays valid.
    fn get(&self, reference: u32, series: usize) -> Result<&'a str, DecodeError> {
        if reference == 0 && self.table.is_empty() {
            return Ok("");
        }
        self.table
            .get(reference as usize)
            .map(String::as_str)
            .ok_or(DecodeError::BadSymbolRef {
                series,
                reference,
                symbols: self.table.len(),
            })
    }

    fn labels(&self, refs: &[u32], series: usize) -> Result<Vec<v1::Label>, DecodeError> {
        let pairs = refs.chunks_exact(2);
        if !pairs.remainder().is_empty() {
            return Err(DecodeError::OddLabelRefs {
                series,
                len: refs.len(),
            });
        }
        pairs
            .map(|pair| {
                Ok(v1::Label {
                    name: self.get(pair[0], series)?.to_owned(),
                    value: self.get(pair[1], series)?.to_owned(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use prost::Message;

    fn syms(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn sample_request() -> Request {
        Request {
            symbols: syms(&[
                "",
                "__name__",
                "rpc_latency_seconds",
                "job",
                "api",
                "trace_id",
                "abc",
                "Latency of RPCs.",
                "seconds",
            ]),
            timeseries: vec![TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![Sample {
                    value: 0.25,
                    timestamp: 1000,
                    start_timestamp: 500,
                }],
                histograms: vec![Histogram {
                    count: Some(histogram::Count::CountInt(4)),
                    sum: 1.5,
                    schema: 3,
                    zero_threshold: 1e-128,
                    zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
                    negative_spans: vec![BucketSpan {
                        offset: 0,
                        length: 1,
                    }],
                    negative_deltas: vec![1],
                    positive_spans: vec![BucketSpan {
                        offset: -3,
                        length: 2,
                    }],
                    positive_deltas: vec![1, 0],
                    reset_hint: histogram::ResetHint::No as i32,
                    timestamp: 2000,
                    start_timestamp: 500,
                    ..Default::default()
                }],
                exemplars: vec![Exemplar {
                    labels_refs: vec![5, 6],
                    value: 0.3,
                    timestamp: 1000,
                }],
                metadata: Some(Metadata {
                    r#type: metadata::MetricType::Histogram as i32,
                    help_ref: 7,
                    unit_ref: 8,
                }),
            }],
        }
    }

    /// An rc.4 body written byte by byte from upstream `types.proto`:
    /// symbols ["", "__name__", "up"], one series `up` with a sample
    /// (1.5 at 1000, start 500) and an integer histogram (count 2, one
    /// bucket of 2, at 1000, start 400).
    const RC4_BODY: &[u8] = &[
        0x22, 0x00, // symbols = 4: ""
        0x22, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', // "__name__"
        0x22, 0x02, b'u', b'p', // "up"
        0x2a, 39, // timeseries = 5
        0x0a, 0x02, 0x01, 0x02, // labels_refs = 1, packed [1, 2]
        0x12, 15, // samples = 2
        0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // value = 1 (double 1.5)
        0x10, 0xe8, 0x07, // timestamp = 2: 1000
        0x18, 0xf4, 0x03, // start_timestamp = 3: 500
        0x1a, 16, // histograms = 3
        0x08, 0x02, // count_int = 1: 2
        0x5a, 0x02, 0x10, 0x01, // positive_spans = 11: {length: 1}
        0x62, 0x01, 0x04, // positive_deltas = 12, packed sint64: [2]
        0x78, 0xe8, 0x07, // timestamp = 15: 1000
        0x88, 0x01, 0x90, 0x03, // start_timestamp = 17: 400
    ];

    #[test]
    fn rc4_body_decodes_with_start_timestamps_and_converts_without_them() {
        let req = Request::decode(RC4_BODY).unwrap();
        assert_eq!(req.symbols, syms(&["", "__name__", "up"]));
        let ts = &req.timeseries[0];
        assert_eq!(ts.labels_refs, vec![1, 2]);
        assert_eq!(
            ts.samples,
            vec![Sample {
                value: 1.5,
                timestamp: 1000,
                start_timestamp: 500
            }]
        );
        let h = &ts.histograms[0];
        assert_eq!(h.count, Some(histogram::Count::CountInt(2)));
        assert_eq!(h.positive_deltas, vec![2]);
        assert_eq!((h.timestamp, h.start_timestamp), (1000, 400));
        // Our encoding writes the same bytes: the field numbers are upstream's.
        assert_eq!(req.encode_to_vec(), RC4_BODY);

        let v1 = req.into_v1().unwrap();
        let ts = &v1.timeseries[0];
        assert_eq!(ts.labels, vec![v1::Label::new("__name__", "up")]);
        assert_eq!(
            ts.samples,
            vec![v1::Sample {
                value: 1.5,
                timestamp: 1000
            }]
        );
        // 1.0 has no start timestamp: field 17's four bytes are gone.
        assert_eq!(ts.histograms[0].start_timestamp, 0);
        assert_eq!(ts.histograms[0].timestamp, 1000);
        assert_eq!(ts.histograms[0].encoded_len(), 16 - 4);
    }

    #[test]
    fn rc3_body_with_series_created_timestamp_still_decodes() {
        // rc.3 wrote `created_timestamp` as TimeSeries field 6 (reserved in
        // rc.4): it is skipped, the rest is read.
        let head = [
            0x22, 0x00, // symbols: ""
            0x22, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', // "__name__"
            0x22, 0x01, b'x', // "x"
        ];
        let series = [
            0x0a, 0x02, 0x01, 0x02, // labels_refs [1, 2]
            0x12, 11, // samples
            0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // value 1.0
            0x10, 0x07, // timestamp 7
            0x30, 0x09, // field 6 (rc.3 created_timestamp) = 9
        ];
        let mut body = head.to_vec();
        body.extend([0x2a, series.len() as u8]);
        body.extend(series);
        let req = Request::decode(body.as_slice()).unwrap();
        let v1 = req.clone().into_v1().unwrap();
        assert_eq!(
            v1.timeseries[0].labels,
            vec![v1::Label::new("__name__", "x")]
        );
        assert_eq!(
            v1.timeseries[0].samples,
            vec![v1::Sample {
                value: 1.0,
                timestamp: 7
            }]
        );
        // Re-encoded, the request is the same less field 6.
        let mut want = head.to_vec();
        want.extend([0x2a, series.len() as u8 - 2]);
        want.extend(&series[..series.len() - 2]);
        assert_eq!(req.encode_to_vec(), want);
    }

    #[test]
    fn request_field_numbers() {
        // symbols = 4 (0x22), timeseries = 5 (0x2a); 1..=3 are reserved.
        let r = Request {
            symbols: syms(&[""]),
            timeseries: vec![TimeSeries {
                labels_refs: vec![1, 2],
                ..Default::default()
            }],
        };
        let want = vec![
            0x22, 0, // symbols[0] = ""
            0x2a, 4, // timeseries
            0x0a, 2, 1, 2, // labels_refs = 1, packed
        ];
        assert_eq!(r.encode_to_vec(), want);
        let md = Metadata {
            r#type: 1,
            help_ref: 2,
            unit_ref: 3,
        };
        assert_eq!(md.encode_to_vec(), vec![0x08, 1, 0x18, 2, 0x20, 3]);
    }

    #[test]
    fn converts_labels_samples_exemplars_metadata() {
        let v1 = sample_request().into_v1().unwrap();
        assert_eq!(v1.timeseries.len(), 1);
        let ts = &v1.timeseries[0];
        assert_eq!(
            ts.labels,
            vec![
                v1::Label::new("__name__", "rpc_latency_seconds"),
                v1::Label::new("job", "api")
            ]
        );
        assert_eq!(ts.samples[0].value, 0.25);
        assert_eq!(ts.samples[0].timestamp, 1000);
        assert_eq!(
            ts.exemplars[0].labels,
            vec![v1::Label::new("trace_id", "abc")]
        );
        assert_eq!(ts.exemplars[0].value, 0.3);
        assert_eq!(
            v1.metadata,
            vec![v1::MetricMetadata {
                r#type: v1::metric_metadata::MetricType::Histogram as i32,
                metric_family_name: "rpc_latency_seconds".into(),
                help: "Latency of RPCs.".into(),
                unit: "seconds".into(),
            }]
        );
    }

    #[test]
    fn histograms_preserved_through_wire_and_conversion() {
        let req = sample_request();
        let mut want = req.timeseries[0].histograms.clone();
        // Go through the wire, as a receiver would.
        let decoded = Request::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.timeseries[0].histograms, want);
        let v1 = decoded.into_v1().unwrap();
        // Everything but the start timestamp, which 1.0 has no field for.
        want[0].start_timestamp = 0;
        assert_eq!(v1.timeseries[0].histograms, want);
        // And the 1.0 encoding of it decodes back identically.
        let again = v1::WriteRequest::decode(v1.encode_to_vec().as_slice()).unwrap();
        assert_eq!(again.timeseries[0].histograms, want);
    }

    #[test]
    fn bad_symbol_reference_is_an_error() {
        let mut req = sample_request();
        req.timeseries[0].labels_refs = vec![1, 99];
        let err = req.into_v1().unwrap_err();
        assert!(matches!(
            err,
            DecodeError::BadSymbolRef {
                series: 0,
                reference: 99,
                symbols: 9
            }
        ));
        assert_eq!(err.reason(), "bad_symbol_ref");

        let mut req = sample_request();
        req.timeseries[0].exemplars[0].labels_refs = vec![5, 1000];
        assert_eq!(req.into_v1().unwrap_err().reason(), "bad_symbol_ref");

        let mut req = sample_request();
        req.timeseries[0].metadata = Some(Metadata {
            r#type: 1,
            help_ref: 42,
            unit_ref: 0,
        });
        assert_eq!(req.into_v1().unwrap_err().reason(), "bad_symbol_ref");
    }

    #[test]
    fn odd_label_refs_and_bad_table_are_errors() {
        let mut req = sample_request();
        req.timeseries[0].labels_refs = vec![1, 2, 3];
        assert_eq!(req.into_v1().unwrap_err().reason(), "odd_label_refs");

        let mut req = sample_request();
        req.symbols[0] = "oops".into();
        assert_eq!(req.into_v1().unwrap_err().reason(), "bad_symbol_table");
    }

    #[test]
    fn empty_table_and_default_metadata_are_fine() {
        let req = Request {
            symbols: vec![],
            timeseries: vec![TimeSeries {
                metadata: Some(Metadata::default()),
                ..Default::default()
            }],
        };
        let v1 = req.into_v1().unwrap();
        assert_eq!(v1.timeseries.len(), 1);
        assert!(v1.metadata.is_empty());
    }

    #[test]
    fn metadata_deduplicated_per_family() {
        let mut req = sample_request();
        let copy = req.timeseries[0].clone();
        req.timeseries.push(copy);
        let v1 = req.into_v1().unwrap();
        assert_eq!(v1.timeseries.len(), 2);
        assert_eq!(v1.metadata.len(), 1);
    }
}
