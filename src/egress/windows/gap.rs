//! Gap detection and repair between two consecutive samples of a series.
//!
//! A gap: the next sample comes more than `gap_factor` × the interval
//! after the previous one, both values are numbers (a staleness marker
//! already ends a series), and the value did not decrease (a counter reset
//! is not a gap and is never interpolated across). Interpolated samples lie
//! on the straight line between the two, one interval apart, so for a
//! counter they are monotone and their increases add up to the real one.

use super::series::Point;

/// Prometheus' staleness marker (`value.StaleNaN`).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN)
}

/// One gap found in a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The series' label hash.
    pub hash: u64,
    /// The series' labels (protobuf field-1 entries).
    pub labels: std::sync::Arc<[u8]>,
    /// Timestamp of the last sample before the gap (ms).
    pub start: i64,
    /// Timestamp of the first sample after it (ms).
    pub end: i64,
    /// Intervals with no sample.
    pub missing: u64,
    /// Samples interpolated into it.
    pub synthesized: u64,
}

/// The number of missing samples when `prev` → `next` is a gap, else None.
pub fn missing(prev: Point, next: Point, interval: i64, gap_factor: f64) -> Option<u64> {
    let delta = next.ts - prev.ts;
    let is_gap = delta as f64 > gap_factor * interval as f64
        && !prev.value.is_nan()
        && !next.value.is_nan()
        && next.value >= prev.value;
    if !is_gap {
        return None;
    }
    // Rounded, so scrape jitter neither adds nor removes a sample; at least
    // one, since the gap is more than one interval long.
    let n = (delta as f64 / interval as f64).round() as u64;
    Some(n.saturating_sub(1).max(1))
}

/// `count` samples one interval apart after `prev`, on the line to `next`.
/// Every one lies strictly between the two (see [`missing`]).
pub fn interpolate(prev: Point, next: Point, interval: i64, count: u64) -> Vec<Point> {
    let delta = (next.ts - prev.ts) as f64;
    let rise = next.value - prev.value;
    (1..=count as i64)
        .map(|k| prev.ts + k * interval)
        .take_while(|ts| *ts < next.ts)
        .map(|ts| Point {
            ts,
            value: prev.value + rise * ((ts - prev.ts) as f64 / delta),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts: i64, value: f64) -> Point {
        Point { ts, value }
    }

    #[test]
    fn a_gap_is_more_than_gap_factor_intervals() {
        assert_eq!(missing(p(0, 1.0), p(30_000, 2.0), 30_000, 2.0), None);
        assert_eq!(missing(p(0, 1.0), p(60_000, 2.0), 30_000, 2.0), None);
        assert_eq!(missing(p(0, 1.0), p(90_000, 2.0), 30_000, 2.0), Some(2));
        assert_eq!(missing(p(0, 1.0), p(121_000, 2.0), 30_000, 2.0), Some(3));
        assert_eq!(missing(p(0, 1.0), p(40_000, 2.0), 30_000, 1.2), Some(1));
    }

    #[test]
    fn a_counter_reset_or_a_marker_is_no_gap() {
        assert_eq!(missing(p(0, 5.0), p(120_000, 1.0), 30_000, 2.0), None);
        assert_eq!(
            missing(p(0, stale_nan()), p(120_000, 9.0), 30_000, 2.0),
            None
        );
    }

    #[test]
    fn interpolated_samples_lie_on_the_line_one_interval_apart() {
        let filled = interpolate(p(0, 10.0), p(120_000, 50.0), 30_000, 3);
        assert_eq!(
            filled,
            [p(30_000, 20.0), p(60_000, 30.0), p(90_000, 40.0)],
            "40 over 4 intervals is 10 each"
        );
    }
}
