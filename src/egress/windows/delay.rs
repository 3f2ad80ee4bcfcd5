//! The partition's watermark and the queues of what becomes due when it
//! moves.
//!
//! The watermark is the newest timestamp seen minus `delay`, never moving
//! back; after an idle period it is raised to the newest timestamp (a
//! partition with no new records releases everything it holds).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Newest timestamp seen and the watermark derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// `delay` in ms.
    pub delay: i64,
    /// Newest sample timestamp seen (ms), if any.
    pub newest: Option<i64>,
    /// A floor raised by [`Watermark::release_all`].
    pub floor: i64,
}

impl Watermark {
    /// No sample seen yet.
    pub fn new(delay: i64) -> Watermark {
        Watermark {
            delay,
            newest: None,
            floor: i64::MIN,
        }
    }

    /// Samples at or before this are released.
    pub fn at(&self) -> i64 {
        self.newest
            .map_or(i64::MIN, |n| n.saturating_sub(self.delay))
            .max(self.floor)
    }

    /// Takes a sample's timestamp into account.
    pub fn see(&mut self, ts: i64) {
        self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
    }

    /// Raises the watermark to the newest timestamp seen.
    pub fn release_all(&mut self) {
        if let Some(n) = self.newest {
            self.floor = self.floor.max(n);
        }
    }
}

/// A min-queue of (timestamp, series hash). Entries may be outdated; the
/// reader checks each against the series when it pops it.
#[derive(Debug, Default)]
pub struct Due(BinaryHeap<Reverse<(i64, u64)>>);

impl Due {
    /// Adds an entry.
    pub fn push(&mut self, ts: i64, hash: u64) {
        self.0.push(Reverse((ts, hash)));
    }

    /// Removes and returns the earliest entry at or before `at`.
    pub fn pop_due(&mut self, at: i64) -> Option<(i64, u64)> {
        match self.0.peek() {
            Some(Reverse((ts, _))) if *ts <= at => self.0.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// The earliest entry's timestamp.
    pub fn next(&self) -> Option<i64> {
        self.0.peek().map(|Reverse((ts, _))| *ts)
    }

    /// Entries queued (outdated ones included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Held samples per record offset: the lowest offset still holding a
/// sample bounds the stored position.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldOffsets(BTreeMap<i64, u64>);

impl HeldOffsets {
    /// One more sample of `offset` held.
    pub fn add(&mut self, offset: i64) {
        *self.0.entry(offset).or_default() += 1;
    }

    /// One sample of `offset` no longer held.
    pub fn remove(&mut self, offset: i64) {
        if let Some(n) = self.0.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&offset);
            }
        }
    }

    /// The lowest offset holding a sample.
    pub fn lowest(&self) -> Option<i64> {
        self.0.first_key_value().map(|(o, _)| *o)
    }

    /// Samples held.
    pub fn samples(&self) -> u64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_trails_the_newest_timestamp_and_never_moves_back() {
        let mut w = Watermark::new(10_000);
        assert_eq!(w.at(), i64::MIN);
        w.see(50_000);
        assert_eq!(w.at(), 40_000);
        w.see(20_000);
        assert_eq!(w.at(), 40_000);
        w.release_all();
        assert_eq!(w.at(), 50_000);
        w.see(55_000);
        assert_eq!(
            w.at(),
            50_000,
            "the floor holds until newest - delay passes it"
        );
    }

    #[test]
    fn due_pops_in_time_order_up_to_the_watermark() {
        let mut d = Due::default();
        d.push(30, 1);
        d.push(10, 2);
        d.push(20, 3);
        assert_eq!(d.pop_due(25), Some((10, 2)));
        assert_eq!(d.pop_due(25), Some((20, 3)));
        assert_eq!(d.pop_due(25), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn the_lowest_held_offset_follows_releases() {
        let mut h = HeldOffsets::default();
        h.add(5);
        h.add(5);
        h.add(9);
        assert_eq!(h.lowest(), Some(5));
        h.remove(5);
        assert_eq!(h.lowest(), Some(5));
        h.remove(5);
        assert_eq!(h.lowest(), Some(9));
        assert_eq!(h.samples(), 1);
    }
}
