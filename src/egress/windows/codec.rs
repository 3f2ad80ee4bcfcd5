//! Records in and requests out: a task-topic record (a plain protobuf
//! `WriteRequest`) is decoded, its float samples go through the windows,
//! and what they let out is written as a `WriteRequest` again. Histograms,
//! exemplars and metadata are not windowed: they pass through at once.

use std::sync::Arc;

use prost::Message;

use super::{Emit, Point, SeriesOut, Windows};
use crate::remote_write::{Label, TimeSeries, WriteRequest};
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
    use super::*;
    use crate::remote_write::proto::v1::Sample;

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
