//! Gap filling at intake (`on_gap = "interpolate"`). When a real sample is
//! taken in, the gaps on either side of it among the series' real samples
//! are filled with synthesized samples held under their own timestamps, so
//! they leave as the watermark passes them, like real samples would have,
//! and not together with the sample that closed the gap (by then a
//! downstream aggregator may have flushed their window).
//!
//! Invariants: synthesized samples lie on the line between the two real
//! samples around them (the newest real one sent counts as one); a real
//! sample taken in between two real ones drops the fills drawn without it
//! and the gaps on both sides are filled again; once a gap's fills began to
//! leave, a real sample inside that gap is late (a fill already stands for
//! a time before it, and a lower real value after it would look like a
//! counter reset).

use super::delay::{Due, HeldOffsets};
use super::gap;
use super::series::{Held, Point, Series};
use super::Settings;

/// The partition's queues a held sample is entered in.
pub struct Queues<'a> {
    /// Held samples by timestamp.
    pub due: &'a mut Due,
    /// Held samples per record offset.
    pub held: &'a mut HeldOffsets,
}

impl Queues<'_> {
    /// Holds `h` at `ts`; a sample already held there is replaced.
    pub fn hold(&mut self, hash: u64, s: &mut Series, ts: i64, h: Held) {
        if let Some(old) = s.held.insert(ts, h) {
            self.held.remove(old.offset);
        }
        self.held.add(h.offset);
        self.due.push(ts, hash);
    }
}

fn point(ts: i64, h: &Held) -> Point {
    Point { ts, value: h.value }
}

/// Whether `ts` lies inside a filled gap whose fills began to leave: the
/// gap's closing sample is the first real one held.
pub fn inside_leaving_fill(s: &Series, ts: i64) -> bool {
    s.filled > 0
        && s.held
            .iter()
            .find(|(_, h)| !h.synthesized)
            .is_some_and(|(end, _)| ts < *end)
}

/// Fills the gaps before and after the real sample held at `ts`.
/// `arrived_at` is the watermark before its record: only a gap whose first
/// missing sample is still ahead of it closed within the delay window.
pub fn refill(st: &Settings, q: &mut Queues, hash: u64, s: &mut Series, ts: i64, arrived_at: i64) {
    let Some(this) = s.held.get(&ts).copied() else {
        return;
    };
    let lower = s
        .held
        .range(..ts)
        .rev()
        .find(|(_, h)| !h.synthesized)
        .map(|(t, h)| point(*t, h))
        .or(s.sent.filter(|_| !s.stale_sent && s.filled == 0));
    let upper = s
        .held
        .range(ts + 1..)
        .find(|(_, h)| !h.synthesized)
        .map(|(t, h)| (point(*t, h), h.offset));
    let lo = lower.map_or(i64::MIN, |p| p.ts);
    let hi = upper.map_or(i64::MAX, |(p, _)| p.ts);
    let drawn_without: Vec<i64> = s
        .held
        .range(lo.saturating_add(1)..hi)
        .filter(|(_, h)| h.synthesized)
        .map(|(t, _)| *t)
        .collect();
    for t in drawn_without {
        if let Some(h) = s.held.remove(&t) {
            q.held.remove(h.offset);
        }
    }
    let interval = s.interval(st.default_interval);
    let this_point = point(ts, &this);
    if let Some(a) = lower {
        fill(
            st,
            q,
            hash,
            s,
            (a, this_point, this.offset),
            interval,
            arrived_at,
        );
    }
    if let Some((b, offset)) = upper {
        fill(
            st,
            q,
            hash,
            s,
            (this_point, b, offset),
            interval,
            arrived_at,
        );
    }
}

/// Holds the samples interpolated between `a` and `b` when that is a gap
/// that closed within the delay window; `offset` is the record of `b`.
fn fill(
    st: &Settings,
    q: &mut Queues,
    hash: u64,
    s: &mut Series,
    (a, b, offset): (Point, Point, i64),
    interval: i64,
    arrived_at: i64,
) {
    let Some(missing) = gap::missing(a, b, interval, st.gap_factor) else {
        return;
    };
    if a.ts.saturating_add(interval) <= arrived_at {
        return;
    }
    for f in gap::interpolate(a, b, interval, missing) {
        let h = Held {
            value: f.value,
            offset,
            synthesized: true,
        };
        q.hold(hash, s, f.ts, h);
    }
}
