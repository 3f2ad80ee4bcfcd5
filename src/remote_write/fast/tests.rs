//! The fast reader against prost: hand-written non-canonical encodings, a
//! property test over arbitrary valid requests written in arbitrary valid
//! (non-canonical) forms, and arbitrary bytes.

use proptest::prelude::*;
use prost::Message;
use rand::{Rng, SeedableRng};

use super::wire::{FIXED32, FIXED64, VARINT};
use super::*;
use crate::remote_write::proto::v1::{histogram, Label, Sample, TimeSeries, WriteRequest};
use crate::remote_write::validate_v1;

/// Asserts that `raw` reads like prost's decode, `validate_v1` and prost's
/// re-encoding say it should. Returns whether the fast reader accepted it.
pub(crate) fn agrees_with_prost(raw: &[u8]) -> bool {
    let limits = Limits::default();
    let fast = parse(raw, &limits);
    let prost = WriteRequest::decode(raw);
    let Some(fast) = fast else {
        return false;
    };
    let decoded = prost.expect("the fast reader accepted what prost refuses");
    let stats =
        validate_v1(&decoded, &limits).expect("the fast reader accepted an invalid request");
    assert_eq!(fast.stats(), stats);
    assert!(decoded.metadata.is_empty());
    assert_eq!(fast.series.len(), decoded.timeseries.len());
    for (mine, theirs) in fast.series.iter().zip(&decoded.timeseries) {
        let labels: Vec<Label> = fast.labels[mine.labels.clone()]
            .iter()
            .map(|(n, v)| Label::new(*n, *v))
            .collect();
        assert_eq!(labels, theirs.labels);
        // The run, when there is one, is label entries of exactly these
        // labels (the relabel cache's key).
        if let Some(run) = mine.label_run {
            let from_run = TimeSeries::decode(run).expect("a run of label entries");
            assert_eq!(from_run.labels, theirs.labels);
            assert!(from_run.samples.is_empty() && from_run.histograms.is_empty());
        }
        let rest = TimeSeries {
            labels: Vec::new(),
            ..theirs.clone()
        }
        .encode_to_vec();
        assert_eq!(fast.rest(mine), rest.as_slice());
    }
    true
}

fn up() -> Vec<Label> {
    vec![Label::new("__name__", "up"), Label::new("job", "a")]
}

#[test]
fn canonical_series_are_borrowed() {
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: up(),
            samples: vec![
                Sample {
                    value: 1.0,
                    timestamp: 5,
                },
                Sample {
                    value: 2.0,
                    timestamp: 1_700_000_000_000,
                },
            ],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let raw = req.encode_to_vec();
    let fast = parse(&raw, &Limits::default()).unwrap();
    assert!(matches!(fast.series[0].rest, Rest::Raw(_)));
    let labels_on_the_wire = TimeSeries {
        labels: up(),
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(fast.series[0].label_run, Some(&labels_on_the_wire[..]));
    assert_eq!(fast.series[0].samples, 2);
    assert!(fast.arena.is_empty());
    assert!(agrees_with_prost(&raw));
}

#[test]
fn explicit_zeros_interleaving_and_unknown_fields_are_read() {
    // {__name__="up"}: key 0x0a, len 14, name, value.
    let label = |name: &[u8], value: &[u8]| {
        let mut l = vec![0x0a, name.len() as u8];
        l.extend_from_slice(name);
        l.extend_from_slice(&[0x12, value.len() as u8]);
        l.extend_from_slice(value);
        let mut out = vec![0x0a, l.len() as u8];
        out.extend_from_slice(&l);
        out
    };
    let series = |parts: &[&[u8]]| {
        let ts: Vec<u8> = parts.concat();
        let mut raw = vec![0x0a, ts.len() as u8];
        raw.extend_from_slice(&ts);
        raw
    };
    let name = label(b"__name__", b"up");
    let job = label(b"job", b"a");
    let zero_value = [0x12, 11, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 5];
    for raw in [
        series(&[&name, &zero_value]),                  // explicit value 0.0
        series(&[&name, &[0x12, 2, 0x10, 0]]),          // explicit timestamp 0
        series(&[&[0x12, 2, 0x10, 5], &name]),          // sample before the label
        series(&[&name, &[0x12, 2, 0x10, 5], &job]),    // label after a sample
        series(&[&name, &[0x12, 3, 0x10, 0x85, 0x00]]), // non-minimal varint
        series(&[&name, &[0x12, 0x82, 0x00, 0x10, 5]]), // non-minimal length
        series(&[&name, &[0x92, 0x00, 2, 0x10, 5]]),    // non-minimal key
        series(&[&name, &[0x12, 4, 0x10, 6, 0x10, 5]]), // repeated field: last wins
        series(&[&name, &[0x12, 4, 0x10, 5, 0x18, 1]]), // unknown field in a sample
        series(&[&name, &[0x2a, 0, 0x30, 7, 0x12, 2, 0x10, 5]]), // unknown series fields
        series(&[&name, &[0x1a, 0, 0x12, 2, 0x10, 5]]), // exemplar before sample
        series(&[&label(b"__name__", b"up")[..], &[0x12, 0]]), // an empty sample
        [series(&[&name]), vec![0x10, 1, 0x15, 1, 2, 3, 4]].concat(), // unknown top-level fields
    ] {
        assert!(agrees_with_prost(&raw), "{raw:x?}");
    }
}

/// The one-check run of labels (`wire::leading_labels`) at its edges: a
/// length of 127 and 128, empty names and values, labels in other forms
/// before and after it, and invalid UTF-8 inside it.
#[test]
fn the_leading_label_run_reads_like_prost_at_its_edges() {
    let entry = |body: &[u8]| [&[0x0a, body.len() as u8][..], body].concat();
    let field = |key: u8, text: &[u8]| [&[key, text.len() as u8][..], text].concat();
    let label =
        |name: &[u8], value: &[u8]| entry(&[field(0x0a, name), field(0x12, value)].concat());
    let series = |labels: &[Vec<u8>]| {
        let mut body = labels.concat();
        body.extend_from_slice(&[0x12, 2, 0x10, 5]);
        let mut raw = vec![0x0a];
        prost::encoding::encode_varint(body.len() as u64, &mut raw);
        raw.extend_from_slice(&body);
        raw
    };
    let name = label(b"__name__", b"up");
    let long = |n: usize| label(b"a", "x".repeat(n).as_bytes());
    // A value of 128 bytes has a two-byte length: the run ends before it.
    let long_128 = |name: &[u8]| {
        let value = "x".repeat(128);
        let mut body = field(0x0a, name);
        body.extend_from_slice(&[0x12, 0x80, 0x01]);
        body.extend_from_slice(value.as_bytes());
        let mut out = vec![0x0a];
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(&body);
        out
    };
    let accepted = [
        series(std::slice::from_ref(&name)),
        series(&[name.clone(), long(121)]), // a label entry of 127 bytes
        series(&[name.clone(), long(122)]), // 128: a two-byte length
        series(&[name.clone(), long_128(b"b")]),
        // An entry of 1,280 bytes: its length's second byte is 0x0a.
        series(&[name.clone(), long_128(b"b"), {
            let value = "y".repeat(1274);
            [
                &[0x0a, 0x80, 0x0a, 0x0a, 1, b'c', 0x12, 0xfa, 0x09][..],
                value.as_bytes(),
            ]
            .concat()
        }]),
        series(&[long_128(b"A"), name.clone()]), // "A" sorts before "__name__"
        series(&[name.clone(), entry(&field(0x0a, b"job"))]), // empty value left out
        series(&[name.clone(), label(b"job", b"")]), // empty value written
        series(&[name.clone(), label(b"job", "ü".as_bytes())]),
        series(&[
            name.clone(),
            entry(&[field(0x12, b"b"), field(0x0a, b"a")].concat()),
        ]),
    ];
    for raw in accepted {
        assert!(agrees_with_prost(&raw), "{raw:x?}");
    }
    let a_at = label(b"a", b"1");
    // Where the fast reader declines, prost refuses too (`agrees_with_prost`
    // asserts it), or validation does.
    let declined = [
        series(&[entry(&[]), name.clone()]), // an empty label: empty name
        series(&[entry(&field(0x12, b"v")), name.clone()]), // a value without a name
        series(&[name.clone(), label(b"a", &[0xff])]),
        series(&[name.clone(), label(b"b", &[0xc3]), a_at.clone()]), // a cut-off character
        series(&[name.clone(), label(&[0xc3], b"1")]),
        series(&[a_at.clone(), name.clone()]), // not sorted
    ];
    for raw in declined {
        assert!(!agrees_with_prost(&raw), "{raw:x?}");
    }
}

#[test]
fn declines_what_prost_or_validation_refuses() {
    let limits = Limits::default();
    let ok = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: up(),
            ..Default::default()
        }],
        metadata: vec![],
    }
    .encode_to_vec();
    assert!(parse(&ok, &limits).is_some());
    assert!(parse(&[], &limits).is_some_and(|r| r.series.is_empty()));
    let with = |extra: &[u8]| {
        let mut ts = WriteRequest::decode(ok.as_slice()).unwrap().timeseries[0].encode_to_vec();
        ts.extend_from_slice(extra);
        let mut raw = vec![0x0a, ts.len() as u8];
        raw.extend_from_slice(&ts);
        raw
    };
    for bad in [
        &[0x12, 9, 0x09][..],    // truncated
        &[0x10, 5][..],          // samples with a varint wire type
        &[0x12, 2, 0x08, 5][..], // sample value as a varint
        &[0x2b, 0x2c][..],       // a group: prost skips it, the prost path does
        &[0x07][..],             // wire type 7
        &[0x02, 0][..],          // field 0
        &[0x12, 1, 0x80][..],    // truncated varint
    ] {
        let raw = with(bad);
        assert!(parse(&raw, &limits).is_none(), "{bad:x?}");
    }
    // Metadata, invalid UTF-8, unsorted labels, over a limit.
    let mut meta = ok.clone();
    meta.extend_from_slice(&[0x1a, 0]);
    assert!(parse(&meta, &limits).is_none());
    let utf8 = vec![0x0a, 5, 0x0a, 3, 0x0a, 1, 0xff];
    assert!(parse(&utf8, &limits).is_none());
    assert!(WriteRequest::decode(utf8.as_slice()).is_err());
    let unsorted = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("job", "1"), Label::new("__name__", "up")],
            ..Default::default()
        }],
        metadata: vec![],
    };
    assert!(parse(&unsorted.encode_to_vec(), &limits).is_none());
    let small = Limits {
        max_series_per_request: 0,
        ..Limits::default()
    };
    assert!(parse(&ok, &small).is_none());
}

/// Each label and histogram check of `validate_v1` on its own: a request
/// that breaks one of them is refused by the prost path, and declined here.
#[test]
fn declines_each_invalid_label_and_histogram() {
    let series = |labels: Vec<Label>, histograms: Vec<Histogram>| {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels,
                histograms,
                ..Default::default()
            }],
            metadata: vec![],
        }
        .encode_to_vec()
    };
    let with = |name: &str, value: &str| {
        let mut labels = up();
        labels.push(Label::new(name, value));
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        series(labels, vec![])
    };
    let limits = Limits {
        max_label_name_len: 8,
        max_label_value_len: 8,
        ..Limits::default()
    };
    assert!(parse(&with("zone", "eu"), &limits).is_some());
    let span = crate::remote_write::proto::v1::BucketSpan {
        offset: 0,
        length: 1,
    };
    // Count 5, but the one bucket holds 3.
    let int = Histogram {
        count: Some(histogram::Count::CountInt(5)),
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
    for raw in [
        with("job", "b"),               // a name twice
        with("", "x"),                  // an empty name
        with("a_longer_name", "x"),     // a name over 8 bytes
        with("zone", "a longer value"), // a value over 8 bytes
        series(up(), vec![int]),        // counts that do not add up
        series(up(), vec![float]),      // an invalid float histogram
    ] {
        let decoded = WriteRequest::decode(raw.as_slice()).unwrap();
        assert!(validate_v1(&decoded, &limits).is_err(), "{decoded:?}");
        assert!(parse(&raw, &limits).is_none(), "{decoded:?}");
    }
}

/// A dropped request leaves its label and series vectors to the next one on
/// its thread, unless together they hold more than `MAX_KEPT_BYTES`.
#[test]
fn vectors_are_kept_for_the_next_request_unless_outsized() {
    let label = std::mem::size_of::<(&str, &str)>();
    let series = std::mem::size_of::<FastSeries<'_>>();
    // capacities (labels, series) -> kept
    let cases = [
        ((1000, 100), true),
        ((MAX_KEPT_BYTES / label, 0), true),
        ((MAX_KEPT_BYTES / label + 1, 0), false),
        ((0, MAX_KEPT_BYTES / series + 1), false),
        (
            (
                MAX_KEPT_BYTES / label / 2 + 1,
                MAX_KEPT_BYTES / series / 2 + 1,
            ),
            false,
        ),
    ];
    // A thread of its own, so that other tests' requests do not share its pool.
    std::thread::spawn(move || {
        for ((labels, series), kept) in cases {
            let mut req = FastRequest::new();
            req.labels = Vec::with_capacity(labels);
            req.series = Vec::with_capacity(series);
            let want = (req.labels.capacity(), req.series.capacity());
            drop(req);
            let next = FastRequest::new();
            let got = (next.labels.capacity(), next.series.capacity());
            assert_eq!(got == want, kept, "{want:?} gave {got:?}");
            // Start the next case with an empty pool.
            drop(next);
            SPARE.with(|s| s.borrow_mut().take());
        }
    })
    .join()
    .unwrap();
}

// ------------------------------------------------------------ the encoder

/// Writes protobuf in a random one of its valid forms.
struct Writer {
    rng: rand::rngs::StdRng,
    out: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, v: u64) {
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(v, &mut bytes);
        // Pad to up to 10 bytes now and then: continuation bytes of zero.
        if bytes.len() < 10 && self.rng.gen_ratio(1, 8) {
            let pad = self.rng.gen_range(1..=10 - bytes.len());
            let last = bytes.len() - 1;
            bytes[last] |= 0x80;
            bytes.extend(std::iter::repeat(0x80).take(pad - 1));
            bytes.push(0);
        }
        self.out.extend_from_slice(&bytes);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, body: &[u8]) {
        self.key(field, LEN);
        self.varint(body.len() as u64);
        self.out.extend_from_slice(body);
    }

    /// Now and then an unknown field, numbered outside `known`.
    fn maybe_unknown(&mut self, known: &[u32]) {
        if !self.rng.gen_ratio(1, 6) {
            return;
        }
        let field = loop {
            let f = [5, 6, 15, 16, 100, 2047, 536_870_911][self.rng.gen_range(0..7)];
            if !known.contains(&f) {
                break f;
            }
        };
        match self.rng.gen_range(0..4) {
            0 => {
                self.key(field, VARINT);
                let v = self.rng.gen::<u64>() >> self.rng.gen_range(0..64);
                self.varint(v);
            }
            1 => {
                self.key(field, FIXED64);
                let v: [u8; 8] = self.rng.gen();
                self.out.extend_from_slice(&v);
            }
            2 => {
                let body: Vec<u8> = (0..self.rng.gen_range(0..6))
                    .map(|_| self.rng.gen())
                    .collect();
                self.bytes(field, &body);
            }
            _ => {
                self.key(field, FIXED32);
                let v: [u8; 4] = self.rng.gen();
                self.out.extend_from_slice(&v);
            }
        }
    }

    /// A nested message written by `f` into a fresh buffer.
    fn nested(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        let outer = std::mem::take(&mut self.out);
        f(self);
        let body = std::mem::replace(&mut self.out, outer);
        self.bytes(field, &body);
    }

    fn string(&mut self, field: u32, s: &str) {
        // Empty strings are left out by prost; write them now and then.
        if !s.is_empty() || self.rng.gen_bool(0.5) {
            // A repeated field: an earlier junk value is overwritten.
            if self.rng.gen_ratio(1, 8) {
                self.bytes(field, b"junk");
            }
            self.bytes(field, s.as_bytes());
        }
    }

    fn label(&mut self, l: &Label) {
        self.nested(1, |w| {
            let name_first = w.rng.gen_bool(0.7);
            w.maybe_unknown(&[1, 2]);
            if name_first {
                w.string(1, &l.name);
                w.string(2, &l.value);
            } else {
                w.string(2, &l.value);
                w.string(1, &l.name);
            }
            w.maybe_unknown(&[1, 2]);
        });
    }

    fn sample(&mut self, s: &Sample) {
        self.nested(2, |w| {
            let write_value = |w: &mut Writer| {
                if s.value != 0.0 || s.value.is_sign_negative() || w.rng.gen_bool(0.5) {
                    if w.rng.gen_ratio(1, 8) {
                        w.key(1, FIXED64);
                        w.out.extend_from_slice(&7.5f64.to_le_bytes());
                    }
                    w.key(1, FIXED64);
                    w.out.extend_from_slice(&s.value.to_le_bytes());
                }
            };
            let write_ts = |w: &mut Writer| {
                if s.timestamp != 0 || w.rng.gen_bool(0.5) {
                    w.key(2, VARINT);
                    w.varint(s.timestamp as u64);
                }
            };
            w.maybe_unknown(&[1, 2]);
            if w.rng.gen_bool(0.7) {
                write_value(w);
                write_ts(w);
            } else {
                write_ts(w);
                write_value(w);
            }
            w.maybe_unknown(&[1, 2]);
        });
    }

    /// A prost-encoded message, with an unknown field appended now and then.
    fn message(&mut self, field: u32, body: Vec<u8>) {
        self.nested(field, |w| {
            w.out = body;
            w.maybe_unknown(&(1..=20).collect::<Vec<_>>());
        });
    }

    fn series(&mut self, ts: &TimeSeries) {
        self.nested(1, |w| {
            // A random interleaving keeping each repeated field's order.
            let mut queues = [
                ts.labels.len(),
                ts.samples.len(),
                ts.exemplars.len(),
                ts.histograms.len(),
            ];
            let mut next = [0usize; 4];
            while queues.iter().any(|&n| n > 0) {
                w.maybe_unknown(&[1, 2, 3, 4]);
                let kinds: Vec<usize> = (0..4).filter(|&k| queues[k] > 0).collect();
                // Mostly prost's order, sometimes any.
                let kind = if w.rng.gen_bool(0.5) {
                    kinds[0]
                } else {
                    kinds[w.rng.gen_range(0..kinds.len())]
                };
                let i = next[kind];
                match kind {
                    0 => w.label(&ts.labels[i]),
                    1 => w.sample(&ts.samples[i]),
                    2 => w.message(3, ts.exemplars[i].encode_to_vec()),
                    _ => w.message(4, ts.histograms[i].encode_to_vec()),
                }
                next[kind] += 1;
                queues[kind] -= 1;
            }
            w.maybe_unknown(&[1, 2, 3, 4]);
        });
    }
}

/// `req` in a random valid form chosen by `seed`.
fn write(req: &WriteRequest, seed: u64) -> Vec<u8> {
    let mut w = Writer {
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        out: Vec::new(),
    };
    for ts in &req.timeseries {
        w.maybe_unknown(&[1, 3]);
        w.series(ts);
    }
    w.maybe_unknown(&[1, 3]);
    w.out
}

// ------------------------------------------------------------ strategies

fn arb_labels() -> impl Strategy<Value = Vec<Label>> {
    let names = prop::sample::subsequence(
        vec!["a", "b", "instance", "job", "le", "service.name", "zz", "ü"],
        0..6,
    );
    (
        names,
        prop::collection::vec("[a-z0-9ü]{0,6}", 8),
        "[a-z_]{1,8}",
    )
        .prop_map(|(names, values, metric)| {
            let mut labels = vec![Label::new("__name__", metric)];
            labels.extend(names.iter().zip(values).map(|(n, v)| Label::new(*n, v)));
            labels.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
            labels
        })
}

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        // A Prometheus stale marker.
        Just(f64::from_bits(0x7ff0_0000_0000_0002)),
        any::<f64>(),
    ]
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    (arb_value(), prop_oneof![Just(0i64), any::<i64>()])
        .prop_map(|(value, timestamp)| Sample { value, timestamp })
}

fn arb_exemplar() -> impl Strategy<Value = Exemplar> {
    (
        prop::collection::vec(("[a-z]{1,4}", "[a-z]{0,4}"), 0..3),
        arb_value(),
        any::<i64>(),
    )
        .prop_map(|(labels, value, timestamp)| Exemplar {
            labels: labels.into_iter().map(|(n, v)| Label::new(n, v)).collect(),
            value,
            timestamp,
        })
}

/// A native histogram whose counts add up (integer) or a valid float one
/// (absolute counts, as `FloatHistogram.Validate` reads them).
fn arb_histogram() -> impl Strategy<Value = Histogram> {
    (
        prop::collection::vec(0i64..20, 0..5),
        0u64..5,
        any::<bool>(),
        -4i32..8,
    )
        .prop_map(|(buckets, zero, float, schema)| {
            // Deltas from the absolute bucket counts, as the spec encodes them.
            let deltas: Vec<i64> = buckets
                .iter()
                .scan(0, |prev, &b| {
                    let d = b - *prev;
                    *prev = b;
                    Some(d)
                })
                .collect();
            let total = zero + buckets.iter().sum::<i64>() as u64;
            let spans = vec![crate::remote_write::proto::v1::BucketSpan {
                offset: 0,
                length: buckets.len() as u32,
            }];
            if float {
                return Histogram {
                    count: Some(histogram::Count::CountFloat(total as f64)),
                    sum: 1.5,
                    schema,
                    zero_count: Some(histogram::ZeroCount::ZeroCountFloat(zero as f64)),
                    positive_spans: spans,
                    positive_counts: buckets.iter().map(|&b| b as f64).collect(),
                    timestamp: 9,
                    ..Default::default()
                };
            }
            Histogram {
                count: Some(histogram::Count::CountInt(total)),
                sum: 1.5,
                schema,
                zero_count: Some(histogram::ZeroCount::ZeroCountInt(zero)),
                positive_spans: spans,
                positive_deltas: deltas,
                timestamp: 9,
                ..Default::default()
            }
        })
}

fn arb_series() -> impl Strategy<Value = TimeSeries> {
    (
        arb_labels(),
        prop::collection::vec(arb_sample(), 0..4),
        prop::collection::vec(arb_exemplar(), 0..2),
        prop::collection::vec(arb_histogram(), 0..2),
    )
        .prop_map(|(labels, samples, exemplars, histograms)| TimeSeries {
            labels,
            samples,
            exemplars,
            histograms,
        })
}

fn arb_request() -> impl Strategy<Value = WriteRequest> {
    prop::collection::vec(arb_series(), 0..6).prop_map(|timeseries| WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("FAST_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    /// Every valid request, in any valid form, is read, and read as prost
    /// reads it.
    #[test]
    fn reads_every_valid_form_like_prost(req in arb_request(), seed in any::<u64>()) {
        let raw = write(&req, seed);
        // The writer is right: prost reads the same request back.
        let back = WriteRequest::decode(raw.as_slice()).unwrap();
        prop_assert_eq!(back.encode_to_vec(), req.encode_to_vec());
        prop_assert!(agrees_with_prost(&raw), "declined a valid request: {:x?}", raw);
    }

    /// Any bytes: accepted only where prost and validation accept, and then
    /// read the same.
    #[test]
    fn arbitrary_bytes_are_read_like_prost_or_declined(
        req in arb_request(),
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut raw = write(&req, seed);
        if !raw.is_empty() {
            for (at, byte) in flips {
                let i = at.index(raw.len());
                raw[i] = byte;
            }
        }
        agrees_with_prost(&raw);
    }

    #[test]
    fn random_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        agrees_with_prost(&raw);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The gateway's check (fast reader first) answers exactly what the
    /// prost path answers: the same stats, or the same error.
    #[test]
    fn gateway_check_equals_the_prost_path(
        req in arb_request(),
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        use crate::remote_write::{check_bounded, decode_bounded, Encoding, Protocol};
        let mut raw = write(&req, seed);
        if !raw.is_empty() {
            for (at, byte) in flips {
                let i = at.index(raw.len());
                raw[i] = byte;
            }
        }
        let limits = Limits::default();
        let fast = check_bounded(&raw, Encoding::Identity, Protocol::V1, 1 << 20, &limits, 64 << 20);
        let prost = decode_bounded(&raw, Encoding::Identity, Protocol::V1, 1 << 20, &limits, 64 << 20);
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

mod v2;
