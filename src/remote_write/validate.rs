//! Structural validation of decoded remote-write requests.
//!
//! Checks what the remote-write spec requires of labels (at least one per
//! series, a non-empty `__name__`, label names valid under
//! [`Limits::name_validation`], names sorted strictly ascending, hence
//! unique), that an integer native histogram's count equals its zero bucket
//! plus its buckets (2.0 spec, Prometheus' `Histogram.Validate`), plus
//! configurable size [`Limits`]. Empty values of other labels are allowed.
//! 2.0 requests are validated after conversion to 1.0, so both protocols
//! obey the same rules.
//!
//! The happy path does no allocation; series labels are only rendered into a
//! string when building an error.

use serde::{Deserialize, Serialize};

use super::codec::truncate;
use super::proto::v1::histogram::{Count, ZeroCount};
use super::proto::v1::{Histogram, Label, WriteRequest};
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
        // Float histograms are not checked.
        let mut float = histogram(None, 0, &[], &[], 1.0);
        float.count = Some(Count::CountFloat(7.5));
        assert!(check(float).is_ok());
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
