//! Limits applied while reading a decompressed body, before prost builds
//! anything from it.
//!
//! prost turns every label into a 48-byte struct plus two strings, so a
//! 2 KB zstd body expanding to 30 MB of empty labels becomes ~1 GB of heap
//! before [`super::validate_v1`] could count them. [`check`] walks the
//! protobuf wire format without allocating (a 2.0 symbol table is the one
//! exception: one slice per symbol, less than prost itself would take) and
//! stops at the first of:
//! - more series than `max_series_per_request`,
//! - a series with more labels than `max_labels_per_series`,
//! - an estimate of the heap the decoded request (and its 1.0 conversion)
//!   would take above `max_heap`.
//!
//! Invariants: the estimate is never below the size of the structs and
//! strings prost and [`super::proto::v2::Request::into_v1`] build (allocator
//! slack aside); errors are the same [`ValidationError`]s `validate_v1`
//! reports for the same request; input this walker cannot read is a
//! [`DecodeError::BadProtobuf`] (prost would refuse it as well, except
//! deprecated group fields, which no remote-write sender writes).

use std::mem::size_of;

use super::proto::v1;
use super::{render_labels, DecodeError, Label, Limits, Protocol, ValidationError};

mod v2_walk;
mod wire;

use v2_walk::check_v2;
use wire::{Reader, Wire};

/// Labels kept for rendering an error: enough to fill the ~200 bytes
/// [`render_labels`] prints (each label renders to at least 5 bytes).
const RENDERED_LABELS: usize = 48;
/// Bytes of a name or value kept for rendering.
const RENDERED_BYTES: usize = 256;

/// Checks `raw` (a decompressed body of `protocol`) against `limits` and
/// the heap budget `max_heap`; see the module docs.
pub fn check(
    raw: &[u8],
    protocol: Protocol,
    limits: &Limits,
    max_heap: usize,
) -> Result<(), Refusal> {
    let mut heap = Heap {
        used: size_of::<v1::WriteRequest>(),
        max: max_heap,
    };
    match protocol {
        Protocol::V1 => check_v1(raw, limits, &mut heap),
        Protocol::V2 => check_v2(raw, limits, &mut heap),
    }
}

/// Why [`check`] refused a body.
#[derive(Debug)]
pub enum Refusal {
    /// Malformed, or too large to decode.
    Decode(DecodeError),
    /// Over a series or label limit.
    Invalid(ValidationError),
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Refusal::Decode(e)
    }
}

/// The running heap estimate.
struct Heap {
    used: usize,
    max: usize,
}

impl Heap {
    fn add(&mut self, bytes: usize) -> Result<(), Refusal> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            return Err(DecodeError::DecodeMemory { max: self.max }.into());
        }
        Ok(())
    }
}

fn check_v1(raw: &[u8], limits: &Limits, heap: &mut Heap) -> Result<(), Refusal> {
    let mut series = 0usize;
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.field()? {
        match (field, wire) {
            (1, Wire::Len(body)) => {
                if series == limits.max_series_per_request {
                    let count = series + 1 + r.count(1)?;
                    return Err(Refusal::Invalid(ValidationError::TooManySeries {
                        count,
                        max: limits.max_series_per_request,
                    }));
                }
                heap.add(size_of::<v1::TimeSeries>())?;
                check_v1_series(body, series, limits, heap)?;
                series += 1;
            }
            // Metadata: the struct plus at most its body in strings.
            (3, Wire::Len(body)) => heap.add(size_of::<v1::MetricMetadata>() + body.len())?,
            _ => {}
        }
    }
    Ok(())
}

fn check_v1_series(
    body: &[u8],
    series: usize,
    limits: &Limits,
    heap: &mut Heap,
) -> Result<(), Refusal> {
    let mut labels = 0usize;
    let mut r = Reader(body);
    while let Some((field, wire)) = r.field()? {
        let Wire::Len(msg) = wire else { continue };
        match field {
            1 => {
                if labels == limits.max_labels_per_series {
                    let count = labels + 1 + r.count(1)?;
                    return Err(Refusal::Invalid(ValidationError::TooManyLabels {
                        series,
                        labels: render_labels(&v1_labels(body)?),
                        count,
                        max: limits.max_labels_per_series,
                    }));
                }
                labels += 1;
                // The struct plus at most its body in name and value bytes.
                heap.add(size_of::<Label>() + msg.len())?;
            }
            2 => heap.add(size_of::<v1::Sample>())?,
            3 => {
                heap.add(size_of::<v1::Exemplar>())?;
                let mut e = Reader(msg);
                while let Some((field, wire)) = e.field()? {
                    if let (1, Wire::Len(label)) = (field, wire) {
                        heap.add(size_of::<Label>() + label.len())?;
                    }
                }
            }
            // Every repeated element of a histogram (spans, deltas, counts)
            // takes at least one wire byte and at most 8 bytes decoded.
            4 => heap.add(size_of::<v1::Histogram>() + 8 * msg.len())?,
            _ => {}
        }
    }
    Ok(())
}

/// The first labels of a 1.0 series, for an error message.
fn v1_labels(series: &[u8]) -> Result<Vec<Label>, Refusal> {
    let mut out = Vec::new();
    let mut r = Reader(series);
    while let Some((field, wire)) = r.field()? {
        if out.len() == RENDERED_LABELS {
            break;
        }
        if let (1, Wire::Len(msg)) = (field, wire) {
            let (mut name, mut value) = (&[][..], &[][..]);
            let mut l = Reader(msg);
            while let Some((field, wire)) = l.field()? {
                match (field, wire) {
                    (1, Wire::Len(b)) => name = b,
                    (2, Wire::Len(b)) => value = b,
                    _ => {}
                }
            }
            out.push(Label {
                name: lossy(name),
                value: lossy(value),
            });
        }
    }
    Ok(out)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(RENDERED_BYTES)]).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use prost::Message;

    use super::*;
    use crate::remote_write::proto::v2;
    use crate::remote_write::{validate_v1, TimeSeries, WriteRequest};

    fn series(labels: usize) -> TimeSeries {
        TimeSeries {
            labels: (0..labels)
                .map(|i| Label {
                    name: format!("l{i:03}"),
                    value: "v".into(),
                })
                .collect(),
            ..TimeSeries::default()
        }
    }

    fn v1(series_count: usize, labels: usize) -> (WriteRequest, Vec<u8>) {
        let req = WriteRequest {
            timeseries: (0..series_count).map(|_| series(labels)).collect(),
            metadata: vec![],
        };
        let raw = req.encode_to_vec();
        (req, raw)
    }

    fn refused(raw: &[u8], protocol: Protocol, limits: &Limits, max_heap: usize) -> Refusal {
        check(raw, protocol, limits, max_heap).unwrap_err()
    }

    #[test]
    fn too_many_labels_is_the_error_validate_reports() {
        let limits = Limits {
            max_labels_per_series: 5,
            ..Limits::default()
        };
        let (req, raw) = v1(3, 9);
        let Refusal::Invalid(early) = refused(&raw, Protocol::V1, &limits, usize::MAX) else {
            panic!()
        };
        assert_eq!(early, validate_v1(&req, &limits).unwrap_err());
        assert!(matches!(
            early,
            ValidationError::TooManyLabels {
                series: 0,
                count: 9,
                max: 5,
                ..
            }
        ));
    }

    #[test]
    fn too_many_series_is_the_error_validate_reports() {
        let limits = Limits {
            max_series_per_request: 4,
            ..Limits::default()
        };
        let (req, raw) = v1(7, 2);
        let Refusal::Invalid(early) = refused(&raw, Protocol::V1, &limits, usize::MAX) else {
            panic!()
        };
        assert_eq!(early, validate_v1(&req, &limits).unwrap_err());
    }

    #[test]
    fn requests_within_limits_pass() {
        let (_, raw) = v1(100, 20);
        check(&raw, Protocol::V1, &Limits::default(), 1 << 20).unwrap();
        check(&[], Protocol::V1, &Limits::default(), 1 << 20).unwrap();
        check(&[], Protocol::V2, &Limits::default(), 1 << 20).unwrap();
    }

    #[test]
    fn the_heap_estimate_covers_what_prost_builds() {
        // 10,000 series of 20 labels: at least 10,000 * 20 * 48 bytes.
        let (_, raw) = v1(10_000, 20);
        let floor = 10_000 * 20 * size_of::<Label>();
        assert!(matches!(
            refused(&raw, Protocol::V1, &Limits::default(), floor),
            Refusal::Decode(DecodeError::DecodeMemory { .. })
        ));
        check(
            &raw,
            Protocol::V1,
            &Limits::default(),
            4 * raw.len() + 2 * floor,
        )
        .unwrap();
    }

    #[test]
    fn empty_labels_are_refused_before_prost_sees_them() {
        // One series of a million empty labels: 2 MB on the wire, ~48 MB
        // in prost. The walk stops at label 65 (its count is still exact).
        let raw_series: Vec<u8> = std::iter::repeat([0x0a, 0x00])
            .take(1_000_000)
            .flatten()
            .collect();
        let mut raw = vec![0x0a];
        prost::encoding::encode_varint(raw_series.len() as u64, &mut raw);
        raw.extend_from_slice(&raw_series);
        let Refusal::Invalid(e) = refused(&raw, Protocol::V1, &Limits::default(), usize::MAX)
        else {
            panic!()
        };
        assert!(
            matches!(
                e,
                ValidationError::TooManyLabels {
                    count: 1_000_000,
                    max: 64,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn v2_references_are_charged_with_the_strings_they_copy() {
        // One 4 KB symbol referenced 32 times per series: 5 KB on the
        // wire, 1.3 MB of copies once converted to 1.0.
        let big = "x".repeat(4096);
        let req = v2::Request {
            symbols: vec![String::new(), "a".into(), big],
            timeseries: (0..10)
                .map(|_| v2::TimeSeries {
                    labels_refs: [1, 2].repeat(32),
                    ..v2::TimeSeries::default()
                })
                .collect(),
        };
        let raw = req.encode_to_vec();
        assert!(raw.len() < 5_000);
        let e = refused(&raw, Protocol::V2, &Limits::default(), 1 << 20);
        assert!(
            matches!(e, Refusal::Decode(DecodeError::DecodeMemory { .. })),
            "{e:?}"
        );
        check(&raw, Protocol::V2, &Limits::default(), 4 << 20).unwrap();
    }

    #[test]
    fn v2_too_many_labels_is_the_error_validate_reports() {
        let limits = Limits {
            max_labels_per_series: 3,
            ..Limits::default()
        };
        let names: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
        let mut symbols = vec![String::new(), "v".into()];
        symbols.extend(names);
        let req = v2::Request {
            symbols,
            timeseries: vec![v2::TimeSeries {
                labels_refs: (0..10).flat_map(|i| [i + 2, 1]).collect(),
                ..v2::TimeSeries::default()
            }],
        };
        let raw = req.encode_to_vec();
        let Refusal::Invalid(early) = refused(&raw, Protocol::V2, &limits, usize::MAX) else {
            panic!()
        };
        let converted = req.into_v1().unwrap();
        assert_eq!(early, validate_v1(&converted, &limits).unwrap_err());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for raw in [&[0x0a, 0x05, 0x01][..], &[0xff; 11], &[0x0b, 0x00], &[0x00]] {
            for protocol in [Protocol::V1, Protocol::V2] {
                assert!(matches!(
                    refused(raw, protocol, &Limits::default(), usize::MAX),
                    Refusal::Decode(DecodeError::BadProtobuf(_))
                ));
            }
        }
    }
}
