use super::*;
use crate::remote_write::proto::v1::histogram::{Count, ZeroCount};
use crate::remote_write::proto::v1::{BucketSpan, Histogram, Sample, TimeSeries};

fn series(labels: &[(&str, &str)]) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        samples: vec![Sample {
            value: 1.0,
            timestamp: 1,
        }],
        ..Default::default()
    }
}

fn request(ts: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: ts,
        metadata: vec![],
    }
}

fn reason(req: &WriteRequest) -> &'static str {
    validate_v1(req, &Limits::default()).unwrap_err().reason()
}

#[test]
fn valid_request_counts() {
    let mut ts = series(&[("__name__", "up"), ("empty", ""), ("job", "a")]);
    ts.exemplars.push(Default::default());
    ts.histograms.push(Default::default());
    ts.samples.push(Sample::default());
    let req = request(vec![ts, series(&[("__name__", "x")])]);
    let stats = validate_v1(&req, &Limits::default()).unwrap();
    assert_eq!(
        stats,
        Stats {
            series: 2,
            samples: 3,
            histograms: 1,
            exemplars: 1,
            metadata: 0
        }
    );
}

#[test]
fn unsorted_labels() {
    let req = request(vec![
        series(&[("__name__", "ok")]),
        series(&[("__name__", "up"), ("job", "a"), ("instance", "b")]),
    ]);
    let err = validate_v1(&req, &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "unsorted_labels");
    let msg = err.to_string();
    assert!(msg.contains("series 1"), "{msg}");
    assert!(
        msg.contains(r#"{__name__="up", job="a", instance="b"}"#),
        "{msg}"
    );
    assert!(msg.contains("\"instance\""), "{msg}");
}

#[test]
fn duplicate_label() {
    let req = request(vec![series(&[
        ("__name__", "up"),
        ("job", "a"),
        ("job", "b"),
    ])]);
    let err = validate_v1(&req, &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "duplicate_label");
    assert!(err.to_string().contains("\"job\""));
}

const LEGACY: Limits = Limits {
    max_labels_per_series: 64,
    max_label_name_len: 1024,
    max_label_value_len: 4096,
    max_series_per_request: 100_000,
    name_validation: NameValidation::Legacy,
};

#[test]
fn legacy_mode_refuses_names_outside_the_legacy_rule() {
    for bad in ["", "1abc", "a-b", "a.b", "é", "a b", "service.name"] {
        let req = request(vec![series(&[("__name__", "up"), (bad, "v")])]);
        // Sorting would be violated too for some; validity is checked first.
        let err = validate_v1(&req, &LEGACY).unwrap_err();
        assert_eq!(err.reason(), "invalid_label_name", "{bad:?}");
        assert!(err.to_string().contains("series 0"), "{err}");
    }
    for good in ["_", "a", "A_1", "__meta", "z9"] {
        assert!(is_valid_label_name(good.as_bytes()), "{good}");
        assert!(NameValidation::Legacy.is_valid(good), "{good}");
    }
}

#[test]
fn utf8_names_are_accepted_by_default_and_only_empty_ones_refused() {
    // Byte order: "__name__" < "a b" < "service.name" < "é" < "🌍".
    let req = request(vec![series(&[
        ("__name__", "http.server.request.duration"),
        ("a b", "1"),
        ("service.name", "checkout"),
        ("é", "2"),
        ("🌍", "3"),
    ])]);
    assert!(validate_v1(&req, &Limits::default()).is_ok());
    assert!(validate_v1(&req, &LEGACY).is_err());
    let req = request(vec![series(&[("", "v"), ("__name__", "up")])]);
    assert_eq!(reason(&req), "invalid_label_name");
}

#[test]
fn name_validation_deserializes_from_utf8_and_legacy() {
    let l: Limits = serde_json::from_str(r#"{"name_validation": "legacy"}"#).unwrap();
    assert_eq!(l.name_validation, NameValidation::Legacy);
    let l: Limits = serde_json::from_str(r#"{"name_validation": "utf8"}"#).unwrap();
    assert_eq!(l.name_validation, NameValidation::Utf8);
    assert_eq!(Limits::default().name_validation, NameValidation::Utf8);
    assert!(serde_json::from_str::<Limits>(r#"{"name_validation": "UTF-8"}"#).is_err());
}

#[test]
fn missing_or_empty_metric_name_is_refused_naming_the_series() {
    let ok = series(&[("__name__", "up")]);
    for labels in [&[("job", "a")][..], &[("__name__", ""), ("job", "a")][..]] {
        // Whatever the series carries: samples, exemplars or nothing.
        let mut with_exemplar = series(labels);
        with_exemplar.samples.clear();
        with_exemplar.exemplars.push(Default::default());
        for bad in [series(labels), with_exemplar] {
            let req = request(vec![ok.clone(), bad]);
            let err = validate_v1(&req, &Limits::default()).unwrap_err();
            assert_eq!(err.reason(), "missing_metric_name");
            let msg = err.to_string();
            assert!(msg.contains("series 1"), "{msg}");
            assert!(msg.contains(r#"job="a""#), "{msg}");
        }
    }
    // Labels sorting before `__name__` do not hide it.
    assert!(validate_v1(
        &request(vec![series(&[("A", "1"), ("__name__", "x")])]),
        &LEGACY
    )
    .is_ok());
}

fn histogram(count: Option<u64>, zero: u64, pos: &[i64], neg: &[i64], sum: f64) -> Histogram {
    Histogram {
        count: count.map(Count::CountInt),
        zero_count: Some(ZeroCount::ZeroCountInt(zero)),
        sum,
        positive_deltas: pos.to_vec(),
        negative_deltas: neg.to_vec(),
        ..Default::default()
    }
}

#[test]
fn integer_histogram_count_must_equal_zero_bucket_plus_buckets() {
    let check = |h: Histogram| {
        let mut ts = series(&[("__name__", "lat"), ("job", "a")]);
        ts.histograms.push(histogram(Some(0), 0, &[], &[], 0.0));
        ts.histograms.push(h);
        validate_v1(&request(vec![ts]), &Limits::default())
    };
    // The compliance suite's case: deltas 1,2,1,3,1 are buckets
    // 1,3,4,7,8 (23 observations); count 99 is refused.
    assert!(check(histogram(Some(23), 0, &[1, 2, 1, 3, 1], &[], 1.0)).is_ok());
    let err = check(histogram(Some(99), 0, &[1, 2, 1, 3, 1], &[], 1.0)).unwrap_err();
    assert_eq!(err.reason(), "histogram_count_mismatch");
    let msg = err.to_string();
    assert!(msg.contains("series 0"), "{msg}");
    assert!(msg.contains(r#"__name__="lat""#), "{msg}");
    assert!(msg.contains("histogram 1 has count 99"), "{msg}");
    assert!(msg.contains("hold 23"), "{msg}");
    // Zero bucket and negative buckets count too.
    assert!(check(histogram(Some(27), 1, &[1, 2, 1, 3, 1], &[1, 1], 1.0)).is_ok());
    assert!(check(histogram(Some(26), 1, &[1, 2, 1, 3, 1], &[1, 1], 1.0)).is_err());
    // No count at all is a count of 0.
    assert!(check(histogram(None, 0, &[1], &[], 1.0)).is_err());
    // A NaN sum allows more observations than the buckets hold, not fewer.
    assert!(check(histogram(Some(5), 0, &[1], &[], f64::NAN)).is_ok());
    assert!(check(histogram(Some(0), 0, &[1], &[], f64::NAN)).is_err());
    // Extreme deltas neither panic nor pass.
    assert!(check(histogram(
        Some(u64::MAX),
        0,
        &[i64::MAX, i64::MAX, i64::MIN],
        &[],
        1.0
    ))
    .is_err());
    // Float histograms' counts are not compared with their buckets.
    let mut float = histogram(None, 0, &[], &[], 1.0);
    float.count = Some(Count::CountFloat(7.5));
    assert!(check(float).is_ok());
}

fn span(offset: i32, length: u32) -> BucketSpan {
    BucketSpan { offset, length }
}

/// Prometheus' valid example (model/histogram/histogram_test.go "valid
/// histogram", as floats): deltas 1,1,-1,0 are counts 1,2,1,1.
fn float_histogram() -> Histogram {
    Histogram {
        count: Some(Count::CountFloat(12.0)),
        zero_count: Some(ZeroCount::ZeroCountFloat(2.0)),
        zero_threshold: 0.001,
        sum: 19.4,
        schema: 1,
        positive_spans: vec![span(0, 2), span(1, 2)],
        positive_counts: vec![1.0, 2.0, 1.0, 1.0],
        negative_spans: vec![span(0, 2), span(1, 2)],
        negative_counts: vec![1.0, 2.0, 1.0, 1.0],
        ..Default::default()
    }
}

/// Prometheus' custom-buckets example, as floats.
fn custom_histogram() -> Histogram {
    Histogram {
        count: Some(Count::CountFloat(5.0)),
        sum: 19.4,
        schema: -53,
        positive_spans: vec![span(0, 2), span(1, 2)],
        positive_counts: vec![1.0, 2.0, 1.0, 1.0],
        custom_values: vec![1.0, 2.0, 3.0, 4.0],
        ..Default::default()
    }
}

#[test]
fn float_histograms_are_checked_as_prometheus_validates_them() {
    // Expected problems from Prometheus' own tests of
    // `FloatHistogram.Validate` (histogram_test.go, float_histogram_test.go).
    let problem = |h: Histogram| float_histogram_problem(&h);
    assert_eq!(problem(float_histogram()), None);
    assert_eq!(problem(custom_histogram()), None);
    // The count is not compared with the buckets (12 would be right).
    let h = Histogram {
        count: Some(Count::CountFloat(99.5)),
        ..float_histogram()
    };
    assert_eq!(problem(h), None);
    // Integer histograms are judged elsewhere.
    let h = Histogram {
        count: Some(Count::CountInt(12)),
        positive_counts: vec![-1.0],
        ..float_histogram()
    };
    assert_eq!(problem(h), None);

    let cases: Vec<(&str, Histogram, &str)> = vec![
        (
            "too few negative buckets",
            Histogram { negative_spans: vec![span(0, 1)], negative_counts: vec![], ..float_histogram() },
            "negative side: spans need 1 buckets, have 0",
        ),
        (
            "too few positive buckets",
            Histogram { positive_spans: vec![span(0, 1)], positive_counts: vec![], ..float_histogram() },
            "positive side: spans need 1 buckets, have 0",
        ),
        (
            "too many negative buckets",
            Histogram { negative_spans: vec![span(0, 1)], negative_counts: vec![1.0, 2.0], ..float_histogram() },
            "negative side: spans need 1 buckets, have 2",
        ),
        (
            "too many positive buckets",
            Histogram { positive_spans: vec![span(0, 1)], positive_counts: vec![1.0, 2.0], ..float_histogram() },
            "positive side: spans need 1 buckets, have 2",
        ),
        (
            "negative span with a negative offset",
            Histogram { negative_spans: vec![span(-1, 1), span(-1, 1)], negative_counts: vec![1.0, 2.0], ..float_histogram() },
            "negative side: span 2 has negative offset -1",
        ),
        (
            "positive span with a negative offset",
            Histogram { positive_spans: vec![span(-1, 1), span(-1, 1)], positive_counts: vec![1.0, 2.0], ..float_histogram() },
            "positive side: span 2 has negative offset -1",
        ),
        (
            "negative bucket with a negative count",
            Histogram { negative_counts: vec![3.1, -3.0, 1.234e5, 1000.0], ..float_histogram() },
            "negative side: bucket 2 has observation count -3",
        ),
        (
            "positive bucket with a negative count",
            Histogram { positive_counts: vec![1.0, 3.3, -4.2, 0.1], ..float_histogram() },
            "positive side: bucket 3 has observation count -4.2",
        ),
        (
            "negative count",
            Histogram { count: Some(Count::CountFloat(-3493.3)), ..float_histogram() },
            "observation count is -3493.3",
        ),
        (
            "zero bucket with a negative count",
            Histogram { zero_count: Some(ZeroCount::ZeroCountFloat(-5.5)), ..float_histogram() },
            "zero bucket has observation count -5.5",
        ),
        (
            "exponential schema with custom bounds",
            Histogram { custom_values: vec![1.0], ..float_histogram() },
            "exponential schema must not have custom bounds",
        ),
        (
            "schema too low",
            Histogram { schema: -10, ..float_histogram() },
            "schema -10 is invalid (want -4 to 8 for exponential buckets, or -53 for custom buckets)",
        ),
        (
            "schema -5 (reserved, refused by Prometheus too)",
            Histogram { schema: -5, ..float_histogram() },
            "schema -5 is invalid (want -4 to 8 for exponential buckets, or -53 for custom buckets)",
        ),
        (
            "schema 53",
            Histogram { schema: 53, ..float_histogram() },
            "schema 53 is invalid (want -4 to 8 for exponential buckets, or -53 for custom buckets)",
        ),
        (
            "custom buckets without bounds (an exponential histogram marked -53)",
            Histogram { schema: -53, zero_count: None, zero_threshold: 0.0, negative_spans: vec![], negative_counts: vec![], ..float_histogram() },
            "custom buckets: 0 bounds are too few for spans covering 5 buckets",
        ),
        (
            "custom buckets with a zero bucket",
            Histogram { zero_count: Some(ZeroCount::ZeroCountFloat(2.0)), ..custom_histogram() },
            "custom buckets: zero bucket count is 2, must be 0",
        ),
        (
            "custom buckets with a zero threshold",
            Histogram { zero_threshold: 0.001, ..custom_histogram() },
            "custom buckets: zero threshold is 0.001, must be 0",
        ),
        (
            "custom buckets with negative spans",
            Histogram { negative_spans: vec![span(0, 1)], ..custom_histogram() },
            "custom buckets: must not have negative spans",
        ),
        (
            "custom buckets with negative buckets",
            Histogram { negative_counts: vec![1.0], ..custom_histogram() },
            "custom buckets: must not have negative buckets",
        ),
        (
            "custom buckets, negative offset in the first span",
            Histogram { positive_spans: vec![span(-1, 2), span(1, 2)], ..custom_histogram() },
            "custom buckets: span 1 has negative offset -1",
        ),
        (
            "custom buckets, negative offset in a later span",
            Histogram { positive_spans: vec![span(0, 2), span(-1, 2)], ..custom_histogram() },
            "custom buckets: span 2 has negative offset -1",
        ),
        (
            "custom buckets, counts not matching the spans",
            Histogram { positive_counts: vec![1.0, 2.0, 1.0], ..custom_histogram() },
            "custom buckets: spans need 4 buckets, have 3",
        ),
        (
            "custom buckets, too few bounds",
            Histogram { custom_values: vec![1.0, 2.0, 3.0], ..custom_histogram() },
            "custom buckets: 3 bounds are too few for spans covering 5 buckets",
        ),
        (
            "custom buckets, non-increasing bound",
            Histogram { custom_values: vec![0.0, 0.0], positive_spans: vec![], positive_counts: vec![], ..custom_histogram() },
            "custom buckets: bounds must increase strictly, 0 comes after 0",
        ),
        (
            "custom buckets, explicit +Inf bound",
            Histogram { custom_values: vec![1.0, f64::INFINITY], positive_spans: vec![], positive_counts: vec![], ..custom_histogram() },
            "custom buckets: the last bound must not be +Inf (the +Inf bucket is implicit)",
        ),
        (
            "custom buckets, NaN bound",
            Histogram { custom_values: vec![1.0, f64::NAN, 3.0], positive_spans: vec![], positive_counts: vec![], ..custom_histogram() },
            "custom buckets: bound 2 is NaN",
        ),
    ];
    for (what, h, want) in cases {
        assert_eq!(problem(h).as_deref(), Some(want), "{what}");
    }

    // Accepted as Prometheus accepts them: extra custom bounds, a -Inf
    // first bound, schemas 9..=52 (its receiver reduces them to 8), NaN
    // counts, an integer zero count (read as 0).
    let ok = [
        Histogram {
            custom_values: (1..=8).map(f64::from).collect(),
            ..custom_histogram()
        },
        Histogram {
            custom_values: vec![f64::NEG_INFINITY, 1.0],
            positive_spans: vec![],
            positive_counts: vec![],
            ..custom_histogram()
        },
        Histogram {
            schema: 9,
            ..float_histogram()
        },
        Histogram {
            schema: 52,
            ..float_histogram()
        },
        Histogram {
            schema: -4,
            ..float_histogram()
        },
        Histogram {
            count: Some(Count::CountFloat(f64::NAN)),
            positive_counts: vec![f64::NAN, 2.0, 1.0, 1.0],
            ..float_histogram()
        },
        Histogram {
            zero_count: Some(ZeroCount::ZeroCountInt(7)),
            ..custom_histogram()
        },
        // checkHistogramSpans refuses `span.Offset < 0` after the first
        // span: an offset of 0 (adjacent spans) is valid.
        Histogram {
            positive_spans: vec![span(0, 2), span(0, 2)],
            negative_spans: vec![span(-2, 2), span(0, 2)],
            ..float_histogram()
        },
        Histogram {
            positive_spans: vec![span(0, 2), span(0, 2)],
            ..custom_histogram()
        },
    ];
    for h in ok {
        assert_eq!(problem(h.clone()), None, "{h:?}");
    }
}

#[test]
fn invalid_float_histogram_is_refused_naming_series_and_histogram() {
    let mut ts = series(&[("__name__", "lat"), ("job", "a")]);
    ts.histograms.push(float_histogram());
    ts.histograms.push(Histogram {
        count: Some(Count::CountFloat(-1.0)),
        ..float_histogram()
    });
    let req = request(vec![series(&[("__name__", "up")]), ts]);
    let err = validate_v1(&req, &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "invalid_float_histogram");
    assert_eq!(
        err.to_string(),
        r#"series 1 {__name__="lat", job="a"}: float histogram 1 is invalid: observation count is -1"#
    );
}

#[test]
fn no_labels() {
    let req = request(vec![series(&[])]);
    assert_eq!(reason(&req), "no_labels");
}

#[test]
fn limits_each_have_a_reason() {
    let limits = Limits {
        max_labels_per_series: 2,
        max_label_name_len: 8,
        max_label_value_len: 4,
        max_series_per_request: 2,
        ..Limits::default()
    };
    let check = |req: WriteRequest| validate_v1(&req, &limits).unwrap_err().reason();
    assert_eq!(
        check(request(vec![series(&[("a", "1"), ("b", "2"), ("c", "3")])])),
        "too_many_labels"
    );
    assert_eq!(
        check(request(vec![series(&[("__name__x", "1")])])),
        "label_name_too_long"
    );
    assert_eq!(
        check(request(vec![series(&[("a", "12345")])])),
        "label_value_too_long"
    );
    assert_eq!(
        check(request(vec![series(&[("a", "1")]); 3])),
        "too_many_series"
    );
    // Exactly at every limit passes.
    let ok = request(vec![series(&[("__name__", "1234"), ("b", "")]); 2]);
    assert!(validate_v1(&ok, &limits).is_ok());
}

#[test]
fn long_labels_are_truncated_in_errors() {
    let long = "v".repeat(10_000);
    let req = request(vec![series(&[("__name__", &long), ("b", "1"), ("a", "2")])]);
    let msg = validate_v1(&req, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(msg.len() < 400, "{} bytes", msg.len());
}

#[test]
fn limits_deserialize_with_defaults_and_reject_unknown() {
    let l: Limits = serde_json::from_str(r#"{"max_labels_per_series": 10}"#).unwrap();
    assert_eq!(l.max_labels_per_series, 10);
    assert_eq!(
        l.max_series_per_request,
        Limits::default().max_series_per_request
    );
    assert!(serde_json::from_str::<Limits>(r#"{"max_lables": 1}"#).is_err());
}
