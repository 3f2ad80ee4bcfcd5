//! Structural validation of decoded remote-write requests.
//!
//! Checks what the remote-write spec requires of labels (at least one per
//! series, a non-empty `__name__`, label names valid under
//! [`Limits::name_validation`], names sorted strictly ascending, hence
//! unique), that an integer native histogram's count equals its zero bucket
//! plus its buckets (2.0 spec, Prometheus' `Histogram.Validate`), that a
//! float native histogram passes Prometheus' `FloatHistogram.Validate` (see
//! [`float_histogram_problem`]), plus configurable size [`Limits`]. Empty
//! values of other labels are allowed.
//! 2.0 requests are validated after conversion to 1.0, so both protocols
//! obey the same rules.
//!
//! The happy path does no allocation; series labels are only rendered into a
//! string when building an error.

use serde::{Deserialize, Serialize};

use super::codec::truncate;
use super::proto::v1::histogram::{Count, ZeroCount};
use super::proto::v1::{BucketSpan, Histogram, Label, WriteRequest};
use super::{render_labels, ValidationError};

/// Label name bytes kept in error messages.
const MAX_NAME_IN_ERROR: usize = 100;

/// Per-request limits applied by [`validate_v1`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum number of labels on one series, `__name__` included.
    pub max_labels_per_series: usize,
    /// Maximum length of a label name, in bytes.
    pub max_label_name_len: usize,
    /// Maximum length of a label value, in bytes.
    pub max_label_value_len: usize,
    /// Maximum number of series in one request.
    pub max_series_per_request: usize,
    /// Which label names are valid: `"utf8"` (any non-empty UTF-8 name, as
    /// Prometheus 3 accepts by default, e.g. OpenTelemetry's
    /// `service.name`) or `"legacy"` (`^[a-zA-Z_][a-zA-Z0-9_]*$`, for
    /// receivers downstream that refuse anything else). The router's
    /// relabel rules follow the same choice.
    pub name_validation: NameValidation,
}

/// Which label names [`validate_v1`] and relabeling accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameValidation {
    /// Any non-empty name (names are UTF-8 once decoded): Prometheus 3's
    /// default.
    #[default]
    Utf8,
    /// `^[a-zA-Z_][a-zA-Z0-9_]*$`: Prometheus 2's rule.
    Legacy,
}

impl NameValidation {
    /// Whether `name` is a valid label name under this scheme.
    pub fn is_valid(self, name: &str) -> bool {
        match self {
            NameValidation::Utf8 => !name.is_empty(),
            NameValidation::Legacy => is_valid_label_name(name.as_bytes()),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_labels_per_series: 64,
            max_label_name_len: 1024,
            max_label_value_len: 4096,
            max_series_per_request: 100_000,
            name_validation: NameValidation::default(),
        }
    }
}

/// What a valid request contains, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of series.
    pub series: usize,
    /// Number of float samples.
    pub samples: usize,
    /// Number of native histogram samples.
    pub histograms: usize,
    /// Number of exemplars.
    pub exemplars: usize,
    /// Number of metadata entries.
    pub metadata: usize,
}

/// Validates a 1.0 request (or a converted 2.0 one) against the spec's label
/// rules and `limits`, returning its [`Stats`]. Stops at the first problem.
pub fn validate_v1(req: &WriteRequest, limits: &Limits) -> Result<Stats, ValidationError> {
    if req.timeseries.len() > limits.max_series_per_request {
        return Err(ValidationError::TooManySeries {
            count: req.timeseries.len(),
            max: limits.max_series_per_request,
        });
    }
    let mut stats = Stats {
        series: req.timeseries.len(),
        metadata: req.metadata.len(),
        ..Stats::default()
    };
    for (index, ts) in req.timeseries.iter().enumerate() {
        check_labels(index, &ts.labels, limits)?;
        for (histogram, h) in ts.histograms.iter().enumerate() {
            if let Some((count, buckets)) = histogram_count_mismatch(h) {
                return Err(ValidationError::HistogramCountMismatch {
                    series: index,
                    labels: render_labels(&ts.labels),
                    histogram,
                    count,
                    buckets,
                });
            }
            if let Some(problem) = float_histogram_problem(h) {
                return Err(ValidationError::InvalidFloatHistogram {
                    series: index,
                    labels: render_labels(&ts.labels),
                    histogram,
                    problem,
                });
            }
        }
        stats.samples += ts.samples.len();
        stats.histograms += ts.histograms.len();
        stats.exemplars += ts.exemplars.len();
    }
    Ok(stats)
}

fn check_labels(series: usize, labels: &[Label], limits: &Limits) -> Result<(), ValidationError> {
    if labels.is_empty() {
        return Err(ValidationError::NoLabels { series });
    }
    if labels.len() > limits.max_labels_per_series {
        return Err(ValidationError::TooManyLabels {
            series,
            labels: render_labels(labels),
            count: labels.len(),
            max: limits.max_labels_per_series,
        });
    }
    let mut prev: Option<&str> = None;
    let mut named = false;
    for label in labels {
        let name = label.name.as_str();
        // Length first: it bounds the cost of everything else.
        if name.len() > limits.max_label_name_len {
            return Err(ValidationError::LabelNameTooLong {
                series,
                labels: render_labels(labels),
                name: truncate(name, MAX_NAME_IN_ERROR),
                len: name.len(),
                max: limits.max_label_name_len,
            });
        }
        if !limits.name_validation.is_valid(name) {
            return Err(ValidationError::InvalidLabelName {
                series,
                labels: render_labels(labels),
                name: truncate(name, MAX_NAME_IN_ERROR),
            });
        }
        if label.value.len() > limits.max_label_value_len {
            return Err(ValidationError::LabelValueTooLong {
                series,
                labels: render_labels(labels),
                name: name.to_owned(),
                len: label.value.len(),
                max: limits.max_label_value_len,
            });
        }
        if let Some(prev) = prev {
            // Byte order is what Prometheus sorts by.
            match prev.as_bytes().cmp(name.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(ValidationError::DuplicateLabel {
                        series,
                        labels: render_labels(labels),
                        name: name.to_owned(),
                    })
                }
                std::cmp::Ordering::Greater => {
                    return Err(ValidationError::UnsortedLabels {
                        series,
                        labels: render_labels(labels),
                        name: name.to_owned(),
                        previous: prev.to_owned(),
                    })
                }
            }
        }
        if name == METRIC_NAME && !label.value.is_empty() {
            named = true;
        }
        prev = Some(name);
    }
    if !named {
        return Err(ValidationError::MissingMetricName {
            series,
            labels: render_labels(labels),
        });
    }
    Ok(())
}

/// The label holding the metric name, which every series must have.
pub(crate) const METRIC_NAME: &str = "__name__";

/// For an integer native histogram whose zero bucket and buckets do not add
/// up to its count, `(count, observations in buckets)`; None when they do,
/// and for float histograms. With a NaN sum the buckets may hold fewer
/// observations than the count (NaN observations fall in no bucket), as
/// Prometheus' `Histogram.Validate` allows.
pub(crate) fn histogram_count_mismatch(h: &Histogram) -> Option<(u64, i128)> {
    let count = match h.count {
        Some(Count::CountFloat(_)) => return None,
        Some(Count::CountInt(c)) => c,
        None => 0,
    };
    let zero = match h.zero_count {
        Some(ZeroCount::ZeroCountInt(z)) => z,
        _ => 0,
    };
    let buckets = i128::from(zero)
        .saturating_add(delta_sum(&h.positive_deltas))
        .saturating_add(delta_sum(&h.negative_deltas));
    let count_wide = i128::from(count);
    let ok = if h.sum.is_nan() {
        buckets <= count_wide
    } else {
        buckets == count_wide
    };
    (!ok).then_some((count, buckets))
}

/// Schema of custom-bucket (classic-like) native histograms.
const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// Why a float native histogram is invalid, as Prometheus'
/// `FloatHistogram.Validate` (model/histogram) judges it; None when valid,
/// and for integer histograms. The rules, in Prometheus' order:
/// - custom buckets (schema -53): bounds not NaN, strictly increasing, the
///   last not +Inf; span offsets not negative; the spans' lengths add up to
///   the number of positive counts; enough bounds for the spans; no zero
///   bucket (count and threshold 0) and no negative spans or counts;
/// - exponential schemas (-4..=8, and 9..=52, which Prometheus' receiver
///   accepts by reducing the resolution to 8): on each side, no span but the
///   first with a negative offset and the spans' lengths adding up to the
///   number of counts; negative-side counts and the zero bucket count not
///   negative; no custom bounds;
/// - any other schema is invalid;
/// - then: the count and every positive-side count not negative.
///
/// A float histogram's count is not compared with its buckets: Prometheus
/// dropped that check (prometheus/prometheus aa82fe198f, 2023) because
/// float rounding makes any tolerance either too strict or meaningless.
/// Like Prometheus, a float histogram reads `zero_count_float`,
/// `positive_counts` and `negative_counts`; integer fields are ignored
/// (an integer zero count counts as 0). NaN compares as not negative.
pub(crate) fn float_histogram_problem(h: &Histogram) -> Option<String> {
    let Some(Count::CountFloat(count)) = h.count else {
        return None;
    };
    let zero = match h.zero_count {
        Some(ZeroCount::ZeroCountFloat(z)) => z,
        _ => 0.0,
    };
    let positive = &h.positive_counts;
    let negative = &h.negative_counts;
    if h.schema == CUSTOM_BUCKETS_SCHEMA {
        if let Some(problem) = custom_bounds_problem(&h.custom_values, &h.positive_spans, positive)
        {
            return Some(format!("custom buckets: {problem}"));
        }
        if zero != 0.0 {
            return Some(format!(
                "custom buckets: zero bucket count is {zero}, must be 0"
            ));
        }
        if h.zero_threshold != 0.0 {
            return Some(format!(
                "custom buckets: zero threshold is {}, must be 0",
                h.zero_threshold
            ));
        }
        if !h.negative_spans.is_empty() {
            return Some("custom buckets: must not have negative spans".into());
        }
        if !negative.is_empty() {
            return Some("custom buckets: must not have negative buckets".into());
        }
    } else if (-4..=52).contains(&h.schema) {
        if let Some(problem) = spans_problem(&h.positive_spans, positive.len()) {
            return Some(format!("positive side: {problem}"));
        }
        if let Some(problem) = spans_problem(&h.negative_spans, negative.len()) {
            return Some(format!("negative side: {problem}"));
        }
        if let Some(problem) = negative_bucket(negative) {
            return Some(format!("negative side: {problem}"));
        }
        if zero < 0.0 {
            return Some(format!("zero bucket has observation count {zero}"));
        }
        if !h.custom_values.is_empty() {
            return Some("exponential schema must not have custom bounds".into());
        }
    } else {
        return Some(format!(
            "schema {} is invalid (want -4 to 8 for exponential buckets, or -53 for custom buckets)",
            h.schema
        ));
    }
    if count < 0.0 {
        return Some(format!("observation count is {count}"));
    }
    negative_bucket(positive).map(|problem| format!("positive side: {problem}"))
}

/// Prometheus' `checkHistogramSpans`: only the first span may have a
/// negative offset, and the spans' lengths add up to `buckets`.
fn spans_problem(spans: &[BucketSpan], buckets: usize) -> Option<String> {
    if let Some((n, span)) = spans.iter().enumerate().skip(1).find(|(_, s)| s.offset < 0) {
        return Some(format!(
            "span {} has negative offset {}",
            n + 1,
            span.offset
        ));
    }
    span_buckets_problem(spans, buckets)
}

/// The spans' lengths do not add up to `buckets`.
fn span_buckets_problem(spans: &[BucketSpan], buckets: usize) -> Option<String> {
    let need: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
    (need != buckets as u64).then(|| format!("spans need {need} buckets, have {buckets}"))
}

/// Prometheus' `checkHistogramCustomBounds`.
fn custom_bounds_problem(bounds: &[f64], spans: &[BucketSpan], counts: &[f64]) -> Option<String> {
    let mut previous = f64::NEG_INFINITY;
    for (i, &bound) in bounds.iter().enumerate() {
        if bound.is_nan() {
            return Some(format!("bound {} is NaN", i + 1));
        }
        if i > 0 && bound <= previous {
            return Some(format!(
                "bounds must increase strictly, {bound} comes after {previous}"
            ));
        }
        previous = bound;
    }
    if previous == f64::INFINITY {
        return Some("the last bound must not be +Inf (the +Inf bucket is implicit)".into());
    }
    if let Some((n, span)) = spans.iter().enumerate().find(|(_, s)| s.offset < 0) {
        return Some(format!(
            "span {} has negative offset {}",
            n + 1,
            span.offset
        ));
    }
    if let Some(problem) = span_buckets_problem(spans, counts.len()) {
        return Some(problem);
    }
    let covered: i64 = spans
        .iter()
        .map(|s| i64::from(s.length) + i64::from(s.offset))
        .sum();
    (bounds.len() as i64 + 1 < covered).then(|| {
        format!(
            "{} bounds are too few for spans covering {covered} buckets",
            bounds.len()
        )
    })
}

/// The first bucket with a negative count (1-based, as Prometheus says).
fn negative_bucket(counts: &[f64]) -> Option<String> {
    let (i, c) = counts.iter().enumerate().find(|(_, &c)| c < 0.0)?;
    Some(format!("bucket {} has observation count {c}", i + 1))
}

/// The sum of delta-encoded bucket counts (each delta is the change from
/// the previous bucket). i128 cannot overflow here for any body we decode.
fn delta_sum(deltas: &[i64]) -> i128 {
    let (mut bucket, mut sum) = (0i128, 0i128);
    for &d in deltas {
        bucket = bucket.saturating_add(i128::from(d));
        sum = sum.saturating_add(bucket);
    }
    sum
}

/// Legacy Prometheus label name: `^[a-zA-Z_][a-zA-Z0-9_]*$`, checked with a
/// byte loop because it runs for every label of every series.
pub fn is_valid_label_name(name: &[u8]) -> bool {
    let Some((&first, rest)) = name.split_first() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'_')
        && rest.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use crate::remote_write::proto::v1::{Sample, TimeSeries};

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
}
