//! [`parse_v2`] against prost's 2.0 path (decode, `into_v1`,
//! `validate_v1`, re-encode each series): arbitrary valid requests written
//! in arbitrary valid forms, and mutated bodies.

use proptest::prelude::*;
use prost::Message;
use rand::{Rng, SeedableRng};

use super::{arb_request, Writer};
use crate::remote_write::fast::parse_v2;
use crate::remote_write::fast::wire::{FIXED32, FIXED64, LEN, VARINT};
use crate::remote_write::proto::v1::{Label, TimeSeries, WriteRequest};
use crate::remote_write::proto::v2;
use crate::remote_write::{validate_v1, DecodeError, Limits};

/// prost's 2.0 path: decode, convert, validate.
fn prost_path(raw: &[u8], limits: &Limits) -> Option<(v2::Request, WriteRequest)> {
    let req = v2::Request::decode(raw).ok()?;
    let v1 = req.clone().into_v1().map_err(|_: DecodeError| ()).ok()?;
    validate_v1(&v1, limits).ok()?;
    Some((req, v1))
}

/// Asserts that `parse_v2` reads `raw` as prost's path does, or declines
/// it where that path fails. Returns whether it read it.
pub(crate) fn agrees_v2(raw: &[u8]) -> bool {
    let limits = Limits::default();
    let want = prost_path(raw, &limits);
    let Some(fast) = parse_v2(raw, &limits) else {
        if let Some((req, _)) = want {
            // Declined a valid body: only allowed for a group (which prost's
            // own encoding never writes).
            assert!(
                parse_v2(&req.encode_to_vec(), &limits).is_some(),
                "declined prost's own form of a valid request"
            );
        }
        return false;
    };
    let (_, v1) = want.expect("parse_v2 accepted what prost's path refuses");
    assert_eq!(fast.stats(), validate_v1(&v1, &limits).unwrap());
    assert_eq!(fast.metadata, v1.metadata);
    assert_eq!(fast.series.len(), v1.timeseries.len());
    for (mine, theirs) in fast.series.iter().zip(&v1.timeseries) {
        let labels: Vec<Label> = fast.labels[mine.labels.clone()]
            .iter()
            .map(|(n, v)| Label::new(*n, *v))
            .collect();
        assert_eq!(labels, theirs.labels);
        let rest = TimeSeries {
            labels: Vec::new(),
            ..theirs.clone()
        }
        .encode_to_vec();
        assert_eq!(fast.rest(mine), rest.as_slice());
    }
    true
}

/// A 2.0 request with the series of `req`, its own symbol table (shuffled
/// by `seed`), start timestamps, and metadata on some series.
fn to_v2(req: &WriteRequest, seed: u64) -> v2::Request {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut symbols = vec![String::new()];
    let sym = |s: &str, symbols: &mut Vec<String>| -> u32 {
        match symbols.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                symbols.push(s.to_owned());
                symbols.len() as u32 - 1
            }
        }
    };
    let refs = |labels: &[Label], symbols: &mut Vec<String>| -> Vec<u32> {
        labels
            .iter()
            .flat_map(|l| [sym(&l.name, symbols), sym(&l.value, symbols)])
            .collect()
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| {
            let metadata = match rng.gen_range(0..4) {
                0 => None,
                1 => Some(v2::Metadata::default()),
                _ => Some(v2::Metadata {
                    r#type: rng.gen_range(0..9),
                    help_ref: sym(["", "help me", "other"][rng.gen_range(0..3)], &mut symbols),
                    unit_ref: sym(["", "seconds"][rng.gen_range(0..2)], &mut symbols),
                }),
            };
            v2::TimeSeries {
                labels_refs: refs(&ts.labels, &mut symbols),
                samples: ts
                    .samples
                    .iter()
                    .map(|s| v2::Sample {
                        value: s.value,
                        timestamp: s.timestamp,
                        start_timestamp: [0, 0, 17, i64::MIN][rng.gen_range(0..4)],
                    })
                    .collect(),
                histograms: ts
                    .histograms
                    .iter()
                    .map(|h| v2::Histogram {
                        start_timestamp: rng.gen_range(0..3),
                        ..h.clone()
                    })
                    .collect(),
                exemplars: ts
                    .exemplars
                    .iter()
                    .map(|e| v2::Exemplar {
                        labels_refs: refs(&e.labels, &mut symbols),
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                    .collect(),
                metadata,
            }
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

impl Writer {
    /// labels_refs: packed in random chunks, or one varint each.
    fn refs(&mut self, refs: &[u32]) {
        let mut rest = refs;
        while !rest.is_empty() {
            let n = self.rng.gen_range(1..=rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            if self.rng.gen_bool(0.5) {
                for &r in chunk {
                    self.key(1, VARINT);
                    self.varint(u64::from(r));
                }
            } else {
                self.nested(1, |w| chunk.iter().for_each(|&r| w.varint(u64::from(r))));
            }
        }
        // An empty packed field now and then.
        if self.rng.gen_ratio(1, 8) {
            self.bytes(1, &[]);
        }
    }

    fn sample_v2(&mut self, s: &v2::Sample) {
        self.nested(2, |w| {
            let mut order = [1, 2, 3];
            for i in (1..3).rev() {
                order.swap(i, w.rng.gen_range(0..=i));
            }
            for field in order {
                w.maybe_unknown(&[1, 2, 3]);
                let explicit = w.rng.gen_bool(0.5);
                match field {
                    1 if s.value != 0.0 || s.value.is_sign_negative() || explicit => {
                        w.key(1, FIXED64);
                        w.out.extend_from_slice(&s.value.to_le_bytes());
                    }
                    2 if s.timestamp != 0 || explicit => {
                        w.key(2, VARINT);
                        w.varint(s.timestamp as u64);
                    }
                    3 if s.start_timestamp != 0 || explicit => {
                        w.key(3, VARINT);
                        w.varint(s.start_timestamp as u64);
                    }
                    _ => {}
                }
            }
        });
    }

    fn series_v2(&mut self, ts: &v2::TimeSeries) {
        self.nested(5, |w| {
            let mut queues = [
                usize::from(!ts.labels_refs.is_empty()),
                ts.samples.len(),
                ts.histograms.len(),
                ts.exemplars.len(),
                usize::from(ts.metadata.is_some()),
            ];
            let mut next = [0usize; 5];
            while queues.iter().any(|&n| n > 0) {
                w.maybe_unknown(&[1, 2, 3, 4, 5]);
                let kinds: Vec<usize> = (0..5).filter(|&k| queues[k] > 0).collect();
                let kind = kinds[w.rng.gen_range(0..kinds.len())];
                let i = next[kind];
                match kind {
                    0 => w.refs(&ts.labels_refs),
                    1 => w.sample_v2(&ts.samples[i]),
                    2 => w.message(3, ts.histograms[i].encode_to_vec()),
                    3 => w.message(4, ts.exemplars[i].encode_to_vec()),
                    _ => {
                        let md = ts.metadata.unwrap_or_default();
                        // Merged by prost: a junk first copy is overwritten.
                        if w.rng.gen_ratio(1, 4) {
                            let junk = v2::Metadata {
                                r#type: 3,
                                help_ref: 0,
                                unit_ref: 0,
                            };
                            w.message(5, junk.encode_to_vec());
                            w.nested(5, |w| {
                                w.key(1, VARINT);
                                w.varint(md.r#type as u32 as u64);
                                w.key(3, VARINT);
                                w.varint(u64::from(md.help_ref));
                                w.key(4, VARINT);
                                w.varint(u64::from(md.unit_ref));
                            });
                        } else {
                            w.message(5, md.encode_to_vec());
                        }
                    }
                }
                next[kind] += 1;
                queues[kind] -= 1;
            }
            w.maybe_unknown(&[1, 2, 3, 4, 5]);
        });
    }
}

/// `req` in a random valid form chosen by `seed`: symbols and series
/// interleaved, unknown fields, every form of every field.
fn write_v2(req: &v2::Request, seed: u64) -> Vec<u8> {
    let mut w = Writer {
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        out: Vec::new(),
    };
    let (mut s, mut t) = (0, 0);
    while s < req.symbols.len() || t < req.timeseries.len() {
        w.maybe_unknown(&[4, 5]);
        let symbol = t == req.timeseries.len() || (s < req.symbols.len() && w.rng.gen_bool(0.5));
        if symbol {
            w.bytes(4, req.symbols[s].as_bytes());
            s += 1;
        } else {
            w.series_v2(&req.timeseries[t]);
            t += 1;
        }
    }
    w.maybe_unknown(&[4, 5]);
    w.out
}

fn cases() -> u32 {
    std::env::var("FAST_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Every valid 2.0 request, in any valid form, is read, and read as
    /// prost's path reads it.
    #[test]
    fn reads_every_valid_v2_form_like_prost(req in arb_request(), seed in any::<u64>()) {
        let v2 = to_v2(&req, seed);
        let raw = write_v2(&v2, seed);
        // The writer is right: prost reads the same request back (compared
        // encoded, as NaN is not equal to itself).
        let back = v2::Request::decode(raw.as_slice()).unwrap();
        prop_assert_eq!(back.encode_to_vec(), v2.encode_to_vec());
        prop_assert!(agrees_v2(&raw), "declined a valid request: {:x?}", raw);
    }

    /// Mutated bodies: read as prost's path reads them, or declined exactly
    /// where that path fails.
    #[test]
    fn mutated_v2_bodies_are_read_like_prost_or_declined(
        req in arb_request(),
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut raw = write_v2(&to_v2(&req, seed), seed);
        if !raw.is_empty() {
            for (at, byte) in flips {
                let i = at.index(raw.len());
                raw[i] = byte;
            }
        }
        agrees_v2(&raw);
    }

    #[test]
    fn random_bytes_are_read_like_prost_or_declined(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        agrees_v2(&raw);
    }
}

#[test]
fn hand_written_forms() {
    // symbols "", "__name__", "up" after the series; refs unpacked.
    let series = [0x08, 1, 0x08, 2, 0x12, 2, 0x10, 5];
    let mut raw = vec![0x2a, series.len() as u8];
    raw.extend(series);
    raw.extend([0x22, 0, 0x22, 8]);
    raw.extend(b"__name__");
    raw.extend([0x22, 2, b'u', b'p']);
    assert!(agrees_v2(&raw));
    // An odd number of references, a bad reference, a bad first symbol.
    for bad in [[0x08, 1, 0x08, 1, 0x08, 2], [0x08, 1, 0x08, 9, 0x10, 0]] {
        let mut raw = vec![0x2a, bad.len() as u8];
        raw.extend(bad);
        raw.extend([0x22, 0, 0x22, 1, b'x']);
        assert!(parse_v2(&raw, &Limits::default()).is_none());
        assert!(!agrees_v2(&raw));
    }
    assert!(parse_v2(&[0x22, 1, b'x'], &Limits::default()).is_none());
    assert!(parse_v2(&[], &Limits::default()).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The gateway's check of a 2.0 body (fast reader first) answers what
    /// the prost path answers: the same stats, or the same error.
    #[test]
    fn gateway_v2_check_equals_the_prost_path(
        req in arb_request(),
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        use crate::remote_write::{check_bounded, decode_bounded, Encoding, Protocol};
        let mut raw = write_v2(&to_v2(&req, seed), seed);
        if !raw.is_empty() {
            for (at, byte) in flips {
                let i = at.index(raw.len());
                raw[i] = byte;
            }
        }
        let limits = Limits::default();
        let fast = check_bounded(&raw, Encoding::Identity, Protocol::V2, 1 << 20, &limits, 64 << 20);
        let prost = decode_bounded(&raw, Encoding::Identity, Protocol::V2, 1 << 20, &limits, 64 << 20);
        match (fast, prost) {
            (Ok(checked), Ok((decoded, want))) => {
                prop_assert_eq!(checked.decoded_len, decoded.raw.len());
                prop_assert_eq!(checked.stats, want);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "fast {:?} vs prost {:?}", a.map(|x| x.stats), b.map(|x| x.1)),
        }
    }
}

/// A known field written with a wire type its schema does not have: prost
/// refuses the body ("invalid wire type"), so the reader must decline it
/// rather than skip the field as unknown.
#[test]
fn known_fields_with_another_wire_type_are_declined() {
    // One value per wire type: varint, fixed64, length-delimited, fixed32.
    let values: [(u8, &[u8]); 4] = [
        (VARINT, &[5]),
        (FIXED64, &[0; 8]),
        (LEN, &[0]),
        (FIXED32, &[0; 4]),
    ];
    // The wire types each field takes (`types.proto` of remote write 2.0).
    let request = [(4, vec![LEN]), (5, vec![LEN])];
    let series = [
        (1, vec![VARINT, LEN]), // labels_refs, unpacked or packed
        (2, vec![LEN]),
        (3, vec![LEN]),
        (4, vec![LEN]),
        (5, vec![LEN]),
    ];
    let sample = [(1, vec![FIXED64]), (2, vec![VARINT]), (3, vec![VARINT])];
    let field = |number: u8, wire: u8, value: &[u8]| [&[number << 3 | wire][..], value].concat();
    let message =
        |number: u8, body: &[u8]| [&[number << 3 | LEN, body.len() as u8][..], body].concat();
    // symbols "", "__name__", "up"; one series up{} with one sample.
    let symbols = [message(4, b""), message(4, b"__name__"), message(4, b"up")].concat();
    let body = |series_extra: &[u8], sample_extra: &[u8], request_extra: &[u8]| {
        let sample = [&[0x10, 5][..], sample_extra].concat();
        let series = [&[0x08, 1, 0x08, 2][..], &message(2, &sample), series_extra].concat();
        [&symbols[..], &message(5, &series), request_extra].concat()
    };
    assert!(agrees_v2(&body(b"", b"", b"")), "the base body is valid");
    let mut declined = 0;
    for (fields, place) in [(&request[..], 2), (&series[..], 0), (&sample[..], 1)] {
        for (number, allowed) in fields {
            for (wire, value) in values.iter().filter(|(w, _)| !allowed.contains(w)) {
                let extra = field(*number, *wire, value);
                let mut parts: [&[u8]; 3] = [b"", b"", b""];
                parts[place] = &extra;
                let raw = body(parts[0], parts[1], parts[2]);
                assert!(
                    v2::Request::decode(raw.as_slice()).is_err(),
                    "prost reads {raw:x?}"
                );
                assert!(
                    parse_v2(&raw, &Limits::default()).is_none(),
                    "read {raw:x?}"
                );
                declined += 1;
            }
        }
    }
    // 2 request fields × 3 + 4 series fields × 3 + series field 1 × 2 + 3 sample fields × 3.
    assert_eq!(declined, 6 + 12 + 2 + 9);
}

/// One invalid histogram, of either kind, is enough for the prost path to
/// refuse a request (Prometheus' `Histogram.Validate` and
/// `FloatHistogram.Validate`), so the reader declines it too.
#[test]
fn an_invalid_histogram_of_either_kind_is_declined() {
    use v2::{histogram, BucketSpan, Histogram};
    let span = BucketSpan {
        offset: 0,
        length: 1,
    };
    // count 5, but the zero bucket (1) and the one bucket (3) hold 4.
    let int = Histogram {
        count: Some(histogram::Count::CountInt(5)),
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
        positive_spans: vec![span],
        positive_deltas: vec![3],
        sum: 1.0,
        timestamp: 1,
        ..Default::default()
    };
    // Custom buckets must have a zero threshold of 0.
    let float = Histogram {
        count: Some(histogram::Count::CountFloat(2.0)),
        schema: -53,
        zero_threshold: 0.5,
        positive_spans: vec![span],
        positive_counts: vec![2.0],
        custom_values: vec![1.0],
        sum: 1.0,
        timestamp: 1,
        ..Default::default()
    };
    let request = |histograms: Vec<Histogram>| {
        v2::Request {
            symbols: ["", "__name__", "h"].map(String::from).to_vec(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2],
                histograms,
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    let valid = Histogram {
        count: Some(histogram::Count::CountInt(4)),
        ..int.clone()
    };
    assert!(
        agrees_v2(&request(vec![valid.clone()])),
        "the valid one is read"
    );
    for bad in [int, float] {
        let raw = request(vec![valid.clone(), bad]);
        assert!(prost_path(&raw, &Limits::default()).is_none());
        assert!(parse_v2(&raw, &Limits::default()).is_none(), "{raw:x?}");
    }
}
