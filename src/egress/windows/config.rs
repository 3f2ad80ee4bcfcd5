//! `[egress.windows]`: the delay window (hold and reorder samples per
//! series), late-sample policy and gap repair. `delay = "0s"` (the default)
//! turns the windows off: egress then passes records through as bytes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};

/// Delay and gap windows of one egress worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// How much event time samples are held so that each series leaves in
    /// timestamp order: a sample is sent once the partition's watermark
    /// (its newest timestamp minus `delay`) passes it. `0s` turns the
    /// windows off (records pass through unchanged).
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// A sample at or before what its series already sent: `drop` it,
    /// `send` it anyway (out of order), or write it to `late_topic`.
    pub on_late: OnLate,
    /// Topic of late samples when `on_late = "topic"` (one WriteRequest per
    /// record, headers say why).
    pub late_topic: Option<String>,
    /// A series' next sample more than `gap_factor` × its interval after
    /// the previous one is a gap (more than 1).
    pub gap_factor: f64,
    /// A series' interval before it is learned from its own samples (the
    /// lower median of its last five deltas).
    #[serde(with = "humantime_serde")]
    pub default_interval: Duration,
    /// What to do about a gap: `none` (record it only), `stale_marker`
    /// (send a staleness marker one interval after the last sample) or
    /// `interpolate` (fill the missing intervals linearly when the gap
    /// closes within the delay window).
    pub on_gap: OnGap,
    /// State of a series not seen for this much event time is removed.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
}

/// What happens to a late sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLate {
    /// Counted and dropped.
    Drop,
    /// Counted and sent anyway.
    Send,
    /// Counted and written to `late_topic`.
    Topic,
}

/// What happens at a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnGap {
    /// Recorded and counted only.
    None,
    /// A Prometheus staleness marker one interval after the last sample.
    StaleMarker,
    /// Linearly interpolated samples in the missing intervals.
    Interpolate,
}

impl OnLate {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            OnLate::Drop => "drop",
            OnLate::Send => "send",
            OnLate::Topic => "topic",
        }
    }
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            delay: Duration::ZERO,
            on_late: OnLate::Drop,
            late_topic: None,
            gap_factor: 2.0,
            default_interval: Duration::from_secs(30),
            on_gap: OnGap::None,
            expire_after: Duration::from_secs(3600),
        }
    }
}

/// Longest delay: samples held longer than this are a typo.
const MAX_DELAY: Duration = Duration::from_secs(3600);

impl WindowsConfig {
    /// Whether the windows are on.
    pub fn enabled(&self) -> bool {
        !self.delay.is_zero()
    }

    /// Problems, keys relative to `egress.windows.`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        out.check(
            self.delay <= MAX_DELAY,
            "delay",
            format!("must be at most {}", fmt(MAX_DELAY)),
        );
        out.check(
            self.gap_factor.is_finite() && self.gap_factor > 1.0,
            "gap_factor",
            "must be a number greater than 1",
        );
        out.check(
            self.default_interval >= Duration::from_millis(1),
            "default_interval",
            "must be at least 1ms",
        );
        out.check(
            self.default_interval <= MAX_DELAY,
            "default_interval",
            format!("must be at most {}", fmt(MAX_DELAY)),
        );
        out.check(
            self.expire_after > self.delay,
            "expire_after",
            "must be longer than delay",
        );
        match (&self.late_topic, self.on_late) {
            (None, OnLate::Topic) => {
                out.check(false, "late_topic", "must be set when on_late = \"topic\"")
            }
            (Some(topic), _) => {
                if let Err(e) = crate::topics::check_topic_name(topic) {
                    out.push("late_topic", e.to_string());
                }
            }
            (None, _) => {}
        }
        if !self.enabled() {
            out.check(
                self.on_gap == OnGap::None,
                "on_gap",
                "needs delay > 0s (the windows are off)",
            );
        }
        out.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &WindowsConfig) -> Vec<String> {
        c.problems().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn the_default_is_off_and_valid() {
        let c = WindowsConfig::default();
        assert!(!c.enabled());
        assert!(keys(&c).is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = WindowsConfig {
            delay: Duration::from_secs(7200),
            gap_factor: 1.0,
            default_interval: Duration::ZERO,
            expire_after: Duration::from_secs(1),
            on_late: OnLate::Topic,
            ..WindowsConfig::default()
        };
        assert_eq!(
            keys(&c),
            [
                "delay",
                "gap_factor",
                "default_interval",
                "expire_after",
                "late_topic"
            ]
        );
        let c = WindowsConfig {
            on_gap: OnGap::Interpolate,
            late_topic: Some("bad topic".into()),
            ..WindowsConfig::default()
        };
        assert_eq!(keys(&c), ["late_topic", "on_gap"]);
    }

    /// config/example.toml documents every windows key with its default.
    #[test]
    fn the_example_windows_section_is_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = crate::config::Config::load(Some(&path)).expect("example loads");
        assert_eq!(config.egress.windows, WindowsConfig::default());
    }

    #[test]
    fn policies_parse_from_toml() {
        let c: WindowsConfig = toml::from_str(
            "delay = \"10s\"\non_late = \"topic\"\nlate_topic = \"late\"\non_gap = \"stale_marker\"\ngap_factor = 1.5",
        )
        .expect("parse");
        assert_eq!(c.delay, Duration::from_secs(10));
        assert_eq!(c.on_late, OnLate::Topic);
        assert_eq!(c.on_gap, OnGap::StaleMarker);
        assert!(toml::from_str::<WindowsConfig>("on_gap = \"fill\"").is_err());
    }
}
