//! Delay and gap windows of one partition, without I/O: samples go in per
//! series, come out per series in timestamp order once the partition's
//! watermark passes them, with late samples sorted out and gaps recorded
//! and repaired. The egress worker feeds it decoded records and stores its
//! changes in sled with the partition position (`store.rs`).
//!
//! Invariants:
//! - per series, what leaves (real, interpolated and staleness markers) is
//!   in timestamp order, except late samples under `on_late = "send"`;
//! - a sample at or before what its series already sent is late and never
//!   held; every other sample is held until the watermark passes it and
//!   then sent exactly once;
//! - the lowest offset of a record with a held sample ([`Windows::holds_from`])
//!   bounds the stored position, so held samples are never lost with the
//!   state folder: their records are read again;
//! - interpolated samples lie on the line between two real samples (see
//!   `gap.rs`); they are made when the sample closing the gap is taken in
//!   and held under their own timestamps (`fill.rs`); they are not marked in the request (remote write 1.0 has
//!   no field for it, and a label would make them another series): they are
//!   counted, and each gap is recorded with how many samples filled it;
//! - one call releases at most [`RELEASE_MIN`] series, or twice the series
//!   taken in since the last call if more: the changes of one store, and so
//!   sled's memory for its transaction, stay bounded when a round of a
//!   million series passes the watermark at once, and releasing still
//!   keeps up with intake; what is left is released by the next calls.

pub mod codec;
pub mod config;
pub mod delay;
pub mod fill;
pub mod gap;
pub mod series;
pub mod store;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub use config::{OnGap, OnLate, WindowsConfig};
use delay::{Due, HeldOffsets, Watermark};
use fill::Queues;
pub use gap::Gap;
pub use series::{Held, Point, Series};

/// Series one [`Windows::release`] releases at least, if due (see the
/// module's invariants).
pub const RELEASE_MIN: usize = 4_096;

/// The settings in the units the windows work in (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Hold time.
    pub delay: i64,
    /// Late policy.
    pub on_late: OnLate,
    /// Gap threshold in intervals.
    pub gap_factor: f64,
    /// Interval of a series before one is learned.
    pub default_interval: i64,
    /// Gap policy.
    pub on_gap: OnGap,
    /// Event time after which a quiet series is forgotten.
    pub expire_after: i64,
}

impl From<&WindowsConfig> for Settings {
    fn from(c: &WindowsConfig) -> Settings {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Settings {
            delay: ms(c.delay),
            on_late: c.on_late,
            gap_factor: c.gap_factor,
            default_interval: ms(c.default_interval).max(1),
            on_gap: c.on_gap,
            expire_after: ms(c.expire_after),
        }
    }
}

/// Samples of one series leaving together.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesOut {
    /// Label hash.
    pub hash: u64,
    /// Labels (protobuf field-1 entries).
    pub labels: Arc<[u8]>,
    /// Samples in the order they leave.
    pub points: Vec<Point>,
}

/// What the windows let out.
#[derive(Debug, Default)]
pub struct Emit {
    /// Samples to send now.
    pub send: Vec<SeriesOut>,
    /// Late samples for the late topic (`on_late = "topic"`).
    pub late: Vec<SeriesOut>,
}

impl Emit {
    fn push(list: &mut Vec<SeriesOut>, hash: u64, labels: &Arc<[u8]>, point: Point) {
        match list.last_mut() {
            Some(last) if last.hash == hash => last.points.push(point),
            _ => list.push(SeriesOut {
                hash,
                labels: labels.clone(),
                points: vec![point],
            }),
        }
    }

    /// Samples to send.
    pub fn samples(&self) -> usize {
        self.send.iter().map(|s| s.points.len()).sum()
    }

    /// Whether nothing left.
    pub fn is_empty(&self) -> bool {
        self.send.is_empty() && self.late.is_empty()
    }
}

/// Counts since the last [`Windows::take_stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Late samples (whatever the policy did with them).
    pub late: u64,
    /// Gaps detected.
    pub gaps: u64,
    /// Staleness markers sent.
    pub stale_markers: u64,
    /// Interpolated samples sent.
    pub synthesized: u64,
    /// Series forgotten after `expire_after`.
    pub expired: u64,
}

/// The windows of one partition.
pub struct Windows {
    settings: Settings,
    series: HashMap<u64, Series>,
    watermark: Watermark,
    /// Held samples by timestamp.
    due: Due,
    /// Series whose staleness deadline (last sent + gap_factor × interval) may pass.
    stale_due: Due,
    held: HeldOffsets,
    /// Series changed or removed since the last [`Windows::take_changes`].
    dirty: HashSet<u64>,
    gaps: Vec<Gap>,
    stats: Stats,
    /// Series taken in since the last release (its budget).
    ingested: usize,
}

/// What changed since the last store.
#[derive(Debug, Default)]
pub struct Changes {
    /// Series to write (hash, state) and to delete (hash, None).
    pub series: Vec<(u64, Option<Vec<u8>>)>,
    /// Labels of series new since the last store (written once).
    pub labels: Vec<(u64, Arc<[u8]>)>,
    /// Gaps found.
    pub gaps: Vec<Gap>,
}

impl Windows {
    /// Empty windows.
    pub fn new(settings: Settings) -> Windows {
        Windows {
            settings,
            series: HashMap::new(),
            watermark: Watermark::new(settings.delay),
            due: Due::default(),
            stale_due: Due::default(),
            held: HeldOffsets::default(),
            dirty: HashSet::new(),
            gaps: Vec::new(),
            stats: Stats::default(),
            ingested: 0,
        }
    }

    /// Windows continuing from stored state.
    pub fn restore(
        settings: Settings,
        watermark: Watermark,
        series: impl IntoIterator<Item = (u64, Series)>,
    ) -> Windows {
        let mut w = Windows::new(settings);
        w.watermark = Watermark {
            delay: settings.delay,
            ..watermark
        };
        for (hash, s) in series {
            for (ts, h) in s.held.iter() {
                w.due.push(*ts, hash);
                w.held.add(h.offset);
            }
            w.schedule_stale(hash, &s);
            w.series.insert(hash, s);
        }
        w
    }

    /// The watermark now.
    pub fn watermark(&self) -> Watermark {
        self.watermark
    }

    /// Series with state.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Samples held.
    pub fn held_samples(&self) -> u64 {
        self.held.samples()
    }

    /// The lowest record offset that still has a held sample.
    pub fn holds_from(&self) -> Option<i64> {
        self.held.lowest()
    }

    /// Takes one series' samples from the record at `offset`. `labels` is
    /// called only for a series never seen before.
    pub fn ingest(
        &mut self,
        offset: i64,
        hash: u64,
        labels: impl FnOnce() -> Arc<[u8]>,
        samples: impl IntoIterator<Item = Point>,
        out: &mut Emit,
    ) {
        let arrived_at = self.watermark.at();
        let st = self.settings;
        let series = self
            .series
            .entry(hash)
            .or_insert_with(|| Series::new(labels()));
        for p in samples {
            self.watermark.see(p.ts);
            if p.ts <= series.last_out || fill::inside_leaving_fill(series, p.ts) {
                self.stats.late += 1;
                match st.on_late {
                    OnLate::Drop => {}
                    OnLate::Send => Emit::push(&mut out.send, hash, &series.labels, p),
                    OnLate::Topic => Emit::push(&mut out.late, hash, &series.labels, p),
                }
                continue;
            }
            let held = Held {
                value: p.value,
                offset,
                synthesized: false,
            };
            // A second sample at the same time: the newer one wins, as in a
            // receiver.
            let mut q = Queues {
                due: &mut self.due,
                held: &mut self.held,
            };
            q.hold(hash, series, p.ts, held);
            if st.on_gap == OnGap::Interpolate {
                fill::refill(&st, &mut q, hash, series, p.ts, arrived_at);
            }
        }
        self.dirty.insert(hash);
        self.ingested += 1;
    }

    /// Sends what the watermark passed: held samples, and staleness
    /// markers of series that went quiet, at most [`RELEASE_MIN`] series
    /// (or twice those taken in since the last call) per call.
    pub fn release(&mut self, out: &mut Emit) {
        let at = self.watermark.at();
        let mut budget = RELEASE_MIN.max(2 * std::mem::take(&mut self.ingested));
        while budget > 0 {
            let Some((_, hash)) = self.due.pop_due(at) else {
                break;
            };
            if self.release_series(hash, at, out) {
                budget -= 1;
            }
        }
        if self.settings.on_gap == OnGap::StaleMarker {
            while budget > 0 {
                let Some((deadline, hash)) = self.stale_due.pop_due(at) else {
                    break;
                };
                if self.quiet(hash, deadline, out) {
                    budget -= 1;
                }
            }
        }
    }

    /// Whether something the watermark passed is still to be released
    /// (one call's budget was used up).
    pub fn backlog(&self) -> bool {
        let at = self.watermark.at();
        self.due.next().is_some_and(|ts| ts <= at)
            || (self.settings.on_gap == OnGap::StaleMarker
                && self.stale_due.next().is_some_and(|ts| ts <= at))
    }

    /// Releases everything held (the partition was idle for `delay`).
    pub fn release_all(&mut self, out: &mut Emit) {
        self.watermark.release_all();
        self.release(out);
    }

    /// Releases what `hash` holds up to `at`; whether it released any.
    fn release_series(&mut self, hash: u64, at: i64, out: &mut Emit) -> bool {
        let Some(mut s) = self.series.remove(&hash) else {
            return false;
        };
        let mut released = false;
        while let Some((&ts, _)) = s.held.first_key_value() {
            if ts > at {
                break;
            }
            let Some((ts, h)) = s.held.pop_first() else {
                break;
            };
            self.held.remove(h.offset);
            let p = Point { ts, value: h.value };
            if h.synthesized {
                Emit::push(&mut out.send, hash, &s.labels, p);
                s.last_out = ts;
                s.filled += 1;
                self.stats.synthesized += 1;
            } else {
                self.send(hash, &mut s, p, out);
            }
            released = true;
        }
        s.held.shrink();
        if released {
            self.schedule_stale(hash, &s);
            self.dirty.insert(hash);
        }
        self.series.insert(hash, s);
        released
    }

    /// Sends one real sample of `s`, recording the gap before it if any
    /// (with the fills sent into it) and marking it under `stale_marker`.
    fn send(&mut self, hash: u64, s: &mut Series, p: Point, out: &mut Emit) {
        let st = self.settings;
        if let Some(prev) = s.sent {
            let interval = s.interval(st.default_interval);
            let missing = gap::missing(prev, p, interval, st.gap_factor)
                .or((s.filled > 0).then_some(u64::from(s.filled)));
            if let Some(missing) = missing {
                self.stats.gaps += 1;
                if st.on_gap == OnGap::StaleMarker && !s.stale_sent {
                    let marker = Point {
                        ts: prev.ts + interval,
                        value: gap::stale_nan(),
                    };
                    Emit::push(&mut out.send, hash, &s.labels, marker);
                    self.stats.stale_markers += 1;
                }
                self.gaps.push(Gap {
                    hash,
                    labels: s.labels.clone(),
                    start: prev.ts,
                    end: p.ts,
                    missing,
                    synthesized: u64::from(s.filled),
                });
            }
            s.learn(p.ts - prev.ts);
        }
        Emit::push(&mut out.send, hash, &s.labels, p);
        s.sent = Some(p);
        s.filled = 0;
        s.last_out = p.ts;
        s.stale_sent = false;
    }

    fn stale_deadline(&self, s: &Series) -> Option<i64> {
        let sent = s.sent?;
        let interval = s.interval(self.settings.default_interval) as f64;
        Some(sent.ts + (self.settings.gap_factor * interval).ceil() as i64)
    }

    fn schedule_stale(&mut self, hash: u64, s: &Series) {
        if self.settings.on_gap != OnGap::StaleMarker || s.stale_sent {
            return;
        }
        if let Some(deadline) = self.stale_deadline(s) {
            self.stale_due.push(deadline, hash);
        }
    }

    /// A series' staleness deadline passed: unless a newer sample is
    /// waiting (its release handles the gap) or the entry is outdated,
    /// the series went quiet and gets its marker now (true then).
    fn quiet(&mut self, hash: u64, deadline: i64, out: &mut Emit) -> bool {
        let st = self.settings;
        let Some(s) = self.series.get(&hash) else {
            return false;
        };
        if s.stale_sent || !s.held.is_empty() || self.stale_deadline(s) != Some(deadline) {
            return false;
        }
        let Some(sent) = s.sent else {
            return false;
        };
        let interval = s.interval(st.default_interval);
        let marker = Point {
            ts: sent.ts + interval,
            value: gap::stale_nan(),
        };
        if let Some(s) = self.series.get_mut(&hash) {
            Emit::push(&mut out.send, hash, &s.labels, marker);
            s.stale_sent = true;
            s.last_out = marker.ts;
            self.stats.stale_markers += 1;
            self.dirty.insert(hash);
        }
        true
    }

    /// Forgets series with nothing held whose newest sample is more than
    /// `expire_after` behind the watermark; returns how many.
    pub fn expire(&mut self) -> usize {
        let limit = self
            .watermark
            .at()
            .saturating_sub(self.settings.expire_after);
        let old: Vec<u64> = self
            .series
            .iter()
            .filter(|(_, s)| s.held.is_empty() && s.newest() < limit)
            .map(|(h, _)| *h)
            .collect();
        for h in &old {
            self.series.remove(h);
            self.dirty.insert(*h);
        }
        self.stats.expired += old.len() as u64;
        old.len()
    }

    /// What changed since the last call, for the store.
    pub fn take_changes(&mut self) -> Changes {
        let mut labels = Vec::new();
        let series = self
            .dirty
            .drain()
            .map(|h| match self.series.get_mut(&h) {
                Some(s) => {
                    if !s.labels_stored {
                        s.labels_stored = true;
                        labels.push((h, s.labels.clone()));
                    }
                    (h, Some(s.encode()))
                }
                None => (h, None),
            })
            .collect();
        Changes {
            series,
            labels,
            gaps: std::mem::take(&mut self.gaps),
        }
    }

    /// The counts since the last call.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }

    /// One series' state, for inspection and tests.
    pub fn series(&self, hash: u64) -> Option<&Series> {
        self.series.get(&hash)
    }
}
