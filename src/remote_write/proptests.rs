//! Property tests: whatever bytes arrive, decoding returns Ok or a clear
//! error, never panics and never yields more than `max_decoded` bytes; valid
//! requests survive every encoding unchanged; misordered labels are refused.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use prost::Message;

use super::proto::v1::{Exemplar, Sample};
use super::proto::v2;
use super::*;

const ENCODINGS: [Encoding; 3] = [Encoding::Snappy, Encoding::Zstd, Encoding::Identity];
const PROTOCOLS: [Protocol; 2] = [Protocol::V1, Protocol::V2];

/// `cases` runs, no regression files written into the source tree.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A label name valid under the default (UTF-8) rule: legacy-looking
/// ones, OpenTelemetry-style dotted ones and any non-empty text.
fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z_][a-zA-Z0-9_]{0,10}",
        1 => prop::sample::select(vec!["__name__", "job", "instance", "le", "_", "a", "A", "Z9", "service.name", "é"])
            .prop_map(str::to_owned),
        1 => ".{1,8}",
    ]
}

/// Any value, empty and non-ASCII included.
fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![3 => ".{0,16}", 1 => Just(String::new())]
}

/// Sorted, unique, valid labels (a BTreeMap orders names by bytes, as the
/// spec requires).
fn labels(max: usize) -> impl Strategy<Value = Vec<Label>> {
    prop::collection::btree_map(label_name(), label_value(), 1..=max)
        .prop_map(|m: BTreeMap<_, _>| m.into_iter().map(|(n, v)| Label::new(n, v)).collect())
}

/// Any non-NaN float (NaN != NaN would break the equality checks, not the code).
fn value() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN", |v| !v.is_nan())
}

/// [`labels`] of a series: always with a non-empty `__name__`.
fn series_labels(max: usize) -> impl Strategy<Value = Vec<Label>> {
    (
        prop::collection::btree_map(label_name(), label_value(), 0..max),
        ".{1,16}",
    )
        .prop_map(|(mut m, name): (BTreeMap<_, _>, String)| {
            m.insert("__name__".to_owned(), name);
            m.into_iter().map(|(n, v)| Label::new(n, v)).collect()
        })
}

fn series() -> impl Strategy<Value = TimeSeries> {
    (
        series_labels(8),
        prop::collection::vec((value(), any::<i64>()), 0..4),
        prop::collection::vec((labels(2), value(), any::<i64>()), 0..2),
    )
        .prop_map(|(labels, samples, exemplars)| TimeSeries {
            labels,
            samples: samples
                .into_iter()
                .map(|(value, timestamp)| Sample { value, timestamp })
                .collect(),
            exemplars: exemplars
                .into_iter()
                .map(|(labels, value, timestamp)| Exemplar {
                    labels,
                    value,
                    timestamp,
                })
                .collect(),
            histograms: vec![],
        })
}

/// A request that passes `validate_v1` with the default limits.
fn valid_request() -> impl Strategy<Value = WriteRequest> {
    prop::collection::vec(series(), 1..5).prop_map(|timeseries| WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

/// The same request as remote write 2.0 (symbol table, references).
fn to_v2(req: &WriteRequest) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut index: BTreeMap<String, u32> = BTreeMap::new();
    index.insert(String::new(), 0);
    let mut sym = |s: &str| -> u32 {
        *index.entry(s.to_owned()).or_insert_with(|| {
            symbols.push(s.to_owned());
            (symbols.len() - 1) as u32
        })
    };
    let mut refs = |labels: &[Label]| -> Vec<u32> {
        labels
            .iter()
            .flat_map(|l| [sym(&l.name), sym(&l.value)])
            .collect()
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| v2::TimeSeries {
            labels_refs: refs(&ts.labels),
            samples: ts
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            exemplars: ts
                .exemplars
                .iter()
                .map(|e| v2::Exemplar {
                    labels_refs: refs(&e.labels),
                    value: e.value,
                    timestamp: e.timestamp,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

/// Arbitrary bytes, some dressed up to get past the first checks: the zstd
/// magic, or a small snappy length header.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let junk = || prop::collection::vec(any::<u8>(), 0..400);
    prop_oneof![
        2 => junk(),
        1 => junk().prop_map(|j| [&[0x28, 0xB5, 0x2F, 0xFD][..], &j].concat()),
        1 => (0u8..0x80, junk()).prop_map(|(len, j)| [&[len][..], &j].concat()),
    ]
}

/// One change to a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Append(Vec<u8>),
    Remove(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..32).prop_map(Mutation::Append),
        1 => any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    if body.is_empty() {
        if let Mutation::Append(extra) = m {
            body.extend_from_slice(extra);
        }
        return;
    }
    match m {
        Mutation::FlipBit(i, bit) => {
            let i = i.index(body.len());
            body[i] ^= 1 << bit;
        }
        Mutation::SetByte(i, b) => {
            let i = i.index(body.len());
            body[i] = *b;
        }
        Mutation::Truncate(i) => body.truncate(i.index(body.len())),
        Mutation::Append(extra) => body.extend_from_slice(extra),
        Mutation::Remove(i) => {
            body.remove(i.index(body.len()));
        }
    }
}

/// Decodes `body` every way; checks the output bound on success.
fn decode_every_way(body: &[u8], max: usize) -> Result<(), TestCaseError> {
    for enc in ENCODINGS {
        for proto in PROTOCOLS {
            match decode_request(body, enc, proto, max) {
                Ok(d) => {
                    prop_assert!(
                        d.raw.len() <= max,
                        "{enc} {proto:?}: decoded {} bytes, limit {max}",
                        d.raw.len()
                    );
                    prop_assert_eq!(d.protocol, proto);
                    if enc == Encoding::Identity {
                        prop_assert_eq!(&d.raw[..], body);
                    }
                }
                Err(e) => {
                    // The error is usable as a metrics label and a message.
                    prop_assert!(!e.reason().is_empty());
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    Ok(())
}

/// `sniff` says snappy exactly when snap itself decodes the body (bodies
/// starting with the zstd magic are zstd whatever follows).
fn sniff_agrees_with_snap(body: &[u8]) -> Result<(), TestCaseError> {
    let sniffed = sniff(body);
    if body.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        prop_assert_eq!(sniffed, Encoding::Zstd);
        return Ok(());
    }
    // snap allocates the claimed size up front; a well-formed block can't
    // claim more than ~32x its own length, so skip snap for absurd claims.
    let plausible = snap::raw::decompress_len(body).is_ok_and(|n| n <= 64 * body.len() + 64);
    let snap_ok =
        plausible && !body.is_empty() && snap::raw::Decoder::new().decompress_vec(body).is_ok();
    prop_assert_eq!(
        sniffed == Encoding::Snappy,
        snap_ok,
        "sniff {} on {:?}",
        sniffed,
        body
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary bytes, every encoding and protocol: Ok within the limit or
    /// an error, never a panic; `sniff` never panics either.
    #[test]
    fn arbitrary_bytes_never_panic(body in hostile_body(), max in 0usize..2048) {
        decode_every_way(&body, max)?;
        sniff_agrees_with_snap(&body)?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Valid snappy/zstd bodies (1.0 and 2.0) with bit flips, overwritten,
    /// removed and appended bytes, truncation: never a panic, never over the
    /// limit.
    #[test]
    fn mutated_valid_bodies_never_panic(
        req in valid_request(),
        v2_body in any::<bool>(),
        zstd in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..4),
        slack in 0usize..64,
    ) {
        let raw = if v2_body { to_v2(&req).encode_to_vec() } else { req.encode_to_vec() };
        let enc = if zstd { Encoding::Zstd } else { Encoding::Snappy };
        let mut body = compress(&raw, enc).unwrap();
        for m in &mutations {
            mutate(&mut body, m);
        }
        // Limits around the true size: just under, exact, a bit over.
        for max in [raw.len().saturating_sub(1), raw.len(), raw.len() + slack] {
            decode_every_way(&body, max)?;
        }
        sniff_agrees_with_snap(&body)?;
    }

    /// A valid request survives protobuf + each encoding unchanged, with the
    /// exact size as the limit, passes `validate_v1`, and is sniffed right.
    /// Its 2.0 form decodes to the same 1.0 request.
    #[test]
    fn valid_requests_round_trip(req in valid_request()) {
        let raw = req.encode_to_vec();
        let stats = validate_v1(&req, &Limits::default()).unwrap();
        prop_assert_eq!(stats.series, req.timeseries.len());
        prop_assert_eq!(stats.samples, req.timeseries.iter().map(|t| t.samples.len()).sum::<usize>());
        for enc in ENCODINGS {
            let body = compress(&raw, enc).unwrap();
            let decoded = decode_request(&body, enc, Protocol::V1, raw.len()).unwrap();
            prop_assert_eq!(&decoded.request, &req, "{}", enc);
            prop_assert_eq!(&decoded.raw, &raw);
            prop_assert_eq!(validate_v1(&decoded.request, &Limits::default()).unwrap(), stats);
            if enc != Encoding::Identity {
                prop_assert_eq!(sniff(&body), enc);
            }

            let raw2 = to_v2(&req).encode_to_vec();
            let body2 = compress(&raw2, enc).unwrap();
            let decoded2 = decode_request(&body2, enc, Protocol::V2, raw2.len()).unwrap();
            prop_assert_eq!(&decoded2.request, &req, "{} v2", enc);
        }
    }

    /// Shuffling a series' labels out of order is refused as unsorted;
    /// repeating one of them is refused as a duplicate (or unsorted), and
    /// the error names the series.
    #[test]
    fn misordered_labels_are_refused(
        req in valid_request(),
        which in any::<Index>(),
        order in any::<Index>(),
        dup in any::<Index>(),
        duplicate in any::<bool>(),
    ) {
        let mut req = req;
        let s = which.index(req.timeseries.len());
        let labels = &mut req.timeseries[s].labels;
        if duplicate {
            let i = dup.index(labels.len());
            let copy = Label::new(labels[i].name.clone(), format!("{}x", labels[i].value));
            labels.insert(order.index(labels.len() + 1), copy);
        } else {
            prop_assume!(labels.len() >= 2);
            // Rotate by at least one place: with unique names that is never sorted.
            let by = 1 + order.index(labels.len() - 1);
            labels.rotate_left(by);
        }
        // Through the wire, as the gateway sees it.
        let body = compress(&req.encode_to_vec(), Encoding::Snappy).unwrap();
        let decoded = decode_request(&body, Encoding::Snappy, Protocol::V1, usize::MAX).unwrap();
        let err = validate_v1(&decoded.request, &Limits::default()).unwrap_err();
        if duplicate {
            prop_assert!(
                ["duplicate_label", "unsorted_labels"].contains(&err.reason()),
                "{err}"
            );
        } else {
            prop_assert_eq!(err.reason(), "unsorted_labels", "{}", err);
        }
        let first_bad = req
            .timeseries
            .iter()
            .position(|t| t.labels.windows(2).any(|w| w[0].name >= w[1].name));
        prop_assert_eq!(first_bad, Some(s));
        let named = match &err {
            ValidationError::DuplicateLabel { series, .. }
            | ValidationError::UnsortedLabels { series, .. } => *series,
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        };
        prop_assert_eq!(named, s);
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// `decode_bounded` (limits applied while walking the bytes) refuses
    /// exactly what `decode_request` then `validate_v1` refuse, under random
    /// series and label limits, for 1.0 and 2.0, and agrees on the stats;
    /// its memory estimate stays within a small multiple of the body.
    #[test]
    fn bounded_decoding_agrees_with_decode_then_validate(
        req in valid_request(),
        v2_body in any::<bool>(),
        max_labels in 1usize..10,
        max_series in 1usize..6,
    ) {
        let limits = Limits { max_labels_per_series: max_labels, max_series_per_request: max_series, ..Limits::default() };
        let (raw, proto) = if v2_body {
            (to_v2(&req).encode_to_vec(), Protocol::V2)
        } else {
            (req.encode_to_vec(), Protocol::V1)
        };
        let body = compress(&raw, Encoding::Snappy).unwrap();
        let reference = decode_request(&body, Encoding::Snappy, proto, 1 << 20)
            .map_err(|e| e.to_string())
            .and_then(|d| validate_v1(&d.request, &limits).map_err(|e| e.to_string()));
        let bounded = decode_bounded(&body, Encoding::Snappy, proto, 1 << 20, &limits, usize::MAX);
        match (&reference, &bounded) {
            (Ok(stats), Ok((decoded, got))) => {
                prop_assert_eq!(stats, got);
                prop_assert_eq!(&decoded.request, &req);
            }
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "reference {:?}, bounded {:?}", reference, bounded.map(|b| b.1)),
        }
        if reference.is_ok() {
            let budget = 64 * raw.len() + 4096;
            prop_assert!(decode_bounded(&body, Encoding::Snappy, proto, 1 << 20, &limits, budget).is_ok());
        }
    }
}
