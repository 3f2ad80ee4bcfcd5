//! Records in and requests out: a task-topic record (a plain protobuf
//! `WriteRequest`) is read by the zero-copy reader ([`ingest_fast`]; prost
//! decodes one it declines, [`ingest`]), its float samples go through the
//! windows, and what they let out is written as a `WriteRequest` again.
//! Histograms, exemplars and metadata are not windowed: they pass through
//! at once.

use std::sync::Arc;

use prost::Message;

use super::{Emit, Point, SeriesOut, Windows};
use crate::remote_write::fast::FastRequest;
use crate::remote_write::{entry, Label, Limits, NameValidation, TimeSeries, WriteRequest};
use crate::router::task_id::labels_hash_iter;

/// The labels as `TimeSeries` field-1 entries.
pub fn encode_labels(labels: &[Label]) -> Arc<[u8]> {
    let mut b = Vec::with_capacity(labels.iter().map(|l| l.encoded_len() + 2).sum());
    for l in labels {
        prost::encoding::message::encode(1, l, &mut b);
    }
    Arc::from(b)
}

/// The labels back from [`encode_labels`]' form.
pub fn decode_labels(bytes: &[u8]) -> Vec<Label> {
    TimeSeries::decode(bytes)
        .map(|t| t.labels)
        .unwrap_or_default()
}

/// Takes one decoded record into `w`; returns the bytes of what does not go
/// through the windows (histograms, exemplars, metadata).
pub fn ingest(w: &mut Windows, offset: i64, req: WriteRequest, out: &mut Emit) -> Vec<u8> {
    let mut passthrough = WriteRequest::default();
    for mut ts in req.timeseries {
        let labels = &ts.labels;
        let hash = labels_hash_iter(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        let samples = std::mem::take(&mut ts.samples);
        if !samples.is_empty() {
            w.ingest(
                offset,
                hash,
                || encode_labels(labels),
                samples.iter().map(|s| Point {
                    ts: s.timestamp,
                    value: s.value,
                }),
                out,
            );
        }
        if !ts.histograms.is_empty() || !ts.exemplars.is_empty() {
            passthrough.timeseries.push(ts);
        }
    }
    passthrough.metadata = req.metadata;
    if passthrough.timeseries.is_empty() && passthrough.metadata.is_empty() {
        return Vec::new();
    }
    passthrough.encode_to_vec()
}

/// What the zero-copy reader checks of a task record for the windows: only
/// what it must (the router validated the record already; one it declines
/// goes to [`ingest`] instead).
pub const READ_LIMITS: Limits = Limits {
    max_labels_per_series: usize::MAX,
    max_label_name_len: usize::MAX,
    max_label_value_len: usize::MAX,
    max_series_per_request: usize::MAX,
    name_validation: NameValidation::Utf8,
};

/// [`ingest`] for a record read by
/// [`crate::remote_write::fast::parse`]: the same windows and
/// passthrough bytes, without a `String` per label. (The reader declines
/// metadata, so there is none here.)
pub fn ingest_fast(w: &mut Windows, offset: i64, req: &FastRequest<'_>, out: &mut Emit) -> Vec<u8> {
    let mut passthrough = Vec::new();
    let mut rest = Vec::new();
    for series in &req.series {
        let labels = req.labels.get(series.labels.clone()).unwrap_or_default();
        let hash = labels_hash_iter(labels.iter().copied());
        if series.samples > 0 {
            w.ingest(
                offset,
                hash,
                || Arc::from(entry::labels(labels.iter().copied())),
                req.samples(series).map(|(value, ts)| Point { ts, value }),
                out,
            );
        }
        if series.histograms > 0 || series.exemplars > 0 {
            rest.clear();
            req.put_without_samples(series, &mut rest);
            entry::put_entry(labels.iter().copied(), &rest, &mut passthrough);
        }
    }
    passthrough
}

/// Appends `series` to `buf` as `WriteRequest` field-1 entries.
pub fn encode(series: &[SeriesOut], buf: &mut Vec<u8>) {
    let mut inner = Vec::new();
    for s in series {
        inner.clear();
        inner.extend_from_slice(&s.labels);
        for p in &s.points {
            // Sample { double value = 1; int64 timestamp = 2; }
            let len = 9 + 1 + prost::encoding::encoded_len_varint(p.ts as u64);
            inner.push(0x12);
            prost::encoding::encode_varint(len as u64, &mut inner);
            inner.push(0x09);
            inner.extend_from_slice(&p.value.to_bits().to_le_bytes());
            inner.push(0x10);
            prost::encoding::encode_varint(p.ts as u64, &mut inner);
        }
        buf.push(0x0a);
        prost::encoding::encode_varint(inner.len() as u64, buf);
        buf.extend_from_slice(&inner);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::super::{OnGap, OnLate, Settings};
    use super::*;
    use crate::remote_write::fast;
    use crate::remote_write::proto::v1::{histogram, Exemplar, Histogram, Sample};

    /// A record as the router writes one: sorted labels, samples out of
    /// order and late, now and then an exemplar, a histogram, a zero value.
    fn record(rng: &mut rand::rngs::StdRng) -> WriteRequest {
        let timeseries = (0..rng.gen_range(1..6))
            .map(|_| {
                let mut labels = vec![Label::new("__name__", format!("m{}", rng.gen_range(0..3)))];
                for name in ["instance", "job", "stream_task_id"] {
                    if rng.gen_bool(0.7) {
                        labels.push(Label::new(name, format!("{}", rng.gen_range(0..3))));
                    }
                }
                let samples = (0..rng.gen_range(0..4))
                    .map(|_| Sample {
                        value: if rng.gen_bool(0.2) {
                            0.0
                        } else {
                            rng.gen_range(-5.0..5.0)
                        },
                        timestamp: rng.gen_range(0..200) * 1_000,
                    })
                    .collect();
                let exemplars = if rng.gen_bool(0.2) {
                    vec![Exemplar {
                        labels: vec![Label::new("trace_id", "t")],
                        value: 1.0,
                        timestamp: 5,
                    }]
                } else {
                    vec![]
                };
                let histograms = if rng.gen_bool(0.2) {
                    vec![Histogram {
                        count: Some(histogram::Count::CountInt(1)),
                        zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
                        sum: 0.5,
                        timestamp: 7,
                        ..Default::default()
                    }]
                } else {
                    vec![]
                };
                TimeSeries {
                    labels,
                    samples,
                    exemplars,
                    histograms,
                }
            })
            .collect();
        WriteRequest {
            timeseries,
            metadata: vec![],
        }
    }

    /// What a run of records lets out: (sent, late, passthrough) bytes.
    fn run(records: &[Vec<u8>], zero_copy: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut w = Windows::new(Settings {
            delay: 20_000,
            on_late: OnLate::Topic,
            gap_factor: 2.0,
            default_interval: 10_000,
            on_gap: OnGap::StaleMarker,
            expire_after: 600_000,
        });
        let mut out = Emit::default();
        let mut passthrough = Vec::new();
        for (offset, raw) in records.iter().enumerate() {
            let offset = offset as i64;
            let bytes = if zero_copy {
                let req = fast::parse(raw, &READ_LIMITS).expect("the reader reads a task record");
                ingest_fast(&mut w, offset, &req, &mut out)
            } else {
                ingest(
                    &mut w,
                    offset,
                    WriteRequest::decode(raw.as_slice()).unwrap(),
                    &mut out,
                )
            };
            passthrough.extend(bytes);
            w.release(&mut out);
        }
        w.release_all(&mut out);
        let (mut sent, mut late) = (Vec::new(), Vec::new());
        encode(&out.send, &mut sent);
        encode(&out.late, &mut late);
        (sent, late, passthrough)
    }

    #[test]
    fn zero_copy_ingest_lets_out_what_the_prost_path_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen = [0; 3];
        for _ in 0..200 {
            let records: Vec<Vec<u8>> = (0..rng.gen_range(1..8))
                .map(|_| record(&mut rng).encode_to_vec())
                .collect();
            let want = run(&records, false);
            assert_eq!(run(&records, true), want);
            for (n, bytes) in seen.iter_mut().zip([&want.0, &want.1, &want.2]) {
                *n += usize::from(!bytes.is_empty());
            }
        }
        // Runs with something sent, something late, something passed through.
        assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
    }

    #[test]
    fn what_leaves_decodes_as_the_same_series_and_samples() {
        let labels = vec![Label::new("__name__", "up"), Label::new("job", "x")];
        let out = [SeriesOut {
            hash: 1,
            labels: encode_labels(&labels),
            points: vec![
                Point { ts: -5, value: 1.5 },
                Point {
                    ts: 1_700_000_000_000,
                    value: f64::from_bits(super::super::gap::STALE_NAN),
                },
            ],
        }];
        let mut buf = Vec::new();
        encode(&out, &mut buf);
        let req = WriteRequest::decode(buf.as_slice()).expect("decodes");
        assert_eq!(req.timeseries.len(), 1);
        assert_eq!(req.timeseries[0].labels, labels);
        let s: Vec<(i64, u64)> = req.timeseries[0]
            .samples
            .iter()
            .map(|s: &Sample| (s.timestamp, s.value.to_bits()))
            .collect();
        assert_eq!(
            s,
            [
                (-5, 1.5f64.to_bits()),
                (1_700_000_000_000, 0x7ff0000000000002)
            ]
        );
        assert_eq!(decode_labels(&encode_labels(&labels)), labels);
    }
}
