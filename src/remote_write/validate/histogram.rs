//! Native histogram checks: an integer histogram's count against its
//! zero bucket and buckets (`Histogram.Validate`), and the rules of
//! Prometheus' `FloatHistogram.Validate` for float histograms. Shared by
//! [`validate_v1`](super::validate_v1) and the zero-copy reader.
//!
//! May depend on: the `remote_write` proto types only.

use crate::remote_write::proto::v1::histogram::{Count, ZeroCount};
use crate::remote_write::proto::v1::{BucketSpan, Histogram};

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
