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
use super::proto::v1::{Label, WriteRequest};
use super::{render_labels, ValidationError};

mod histogram;

pub(crate) use histogram::{float_histogram_problem, histogram_count_mismatch};

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
mod tests;
