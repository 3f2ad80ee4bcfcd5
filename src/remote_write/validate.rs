//! Structural validation of decoded remote-write requests.
//!
//! Checks what the remote-write spec requires of labels (at least one per
//! series, legacy Prometheus label names, names sorted strictly ascending,
//! hence unique) plus configurable size [`Limits`]. Empty label values are
//! allowed, as in the spec. 2.0 requests are validated after conversion to
//! 1.0, so both protocols obey the same rules.
//!
//! The happy path does no allocation; series labels are only rendered into a
//! string when building an error.

use serde::{Deserialize, Serialize};

use super::codec::truncate;
use super::proto::v1::{Label, WriteRequest};
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_labels_per_series: 64,
            max_label_name_len: 1024,
            max_label_value_len: 4096,
            max_series_per_request: 100_000,
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
        if !is_valid_label_name(name.as_bytes()) {
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
        prev = Some(name);
    }
    Ok(())
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

    #[test]
    fn invalid_label_names() {
        for bad in ["", "1abc", "a-b", "a.b", "é", "a b"] {
            let req = request(vec![series(&[("__name__", "up"), (bad, "v")])]);
            // Sorting would be violated too for some; validity is checked first.
            assert_eq!(reason(&req), "invalid_label_name", "{bad:?}");
        }
        for good in ["_", "a", "A_1", "__meta", "z9"] {
            assert!(is_valid_label_name(good.as_bytes()), "{good}");
        }
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
