//! One series' window state and its byte form in sled.
//!
//! Invariants: every held sample is newer than `last_out` (what the series
//! already sent, staleness markers included), so releasing held samples in
//! key order keeps the series in timestamp order; `sent` is the newest
//! real sample sent, the base of gap detection, and `filled` counts the
//! synthesized samples sent after it (non-zero while a filled gap is
//! leaving: its closing sample is then the first real one held).
//!
//! Memory: a million series live here, so a series is kept small: its
//! recent deltas inline, its held samples in a sorted vector sized to what
//! it holds (none: no allocation; a `BTreeMap` kept a ~380-byte node per
//! series). Its sled entry is a fixed-size head plus the held samples; the
//! labels are stored once, under their own key (`store.rs`).

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// A timestamp (ms) and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Milliseconds since the epoch.
    pub ts: i64,
    /// The value.
    pub value: f64,
}

/// A sample waiting for the watermark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    /// The value.
    pub value: f64,
    /// Offset of the record it came in (for a synthesized sample: of the
    /// record whose sample closed the gap, which re-creates it when read
    /// again).
    pub offset: i64,
    /// Interpolated into a gap, not received.
    pub synthesized: bool,
}

/// How many recent deltas the interval is learned from.
pub const DELTAS: usize = 5;

/// Window state of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels as protobuf `TimeSeries` field-1 entries, ready
    /// to be copied into a request.
    pub labels: Arc<[u8]>,
    /// Newest real sample sent.
    pub sent: Option<Point>,
    /// Synthesized samples sent after `sent`.
    pub filled: u32,
    /// Newest timestamp sent, staleness markers included.
    pub last_out: i64,
    /// Whether a staleness marker was sent after `sent`.
    pub stale_sent: bool,
    /// Recent deltas between sent real samples (ms), newest last.
    pub deltas: Deltas,
    /// Samples waiting for the watermark, by timestamp.
    pub held: HeldMap,
    /// Whether the labels are in sled (written once per series).
    pub labels_stored: bool,
}

/// The last [`DELTAS`] deltas, inline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deltas {
    d: [u32; DELTAS],
    n: u8,
}

impl Deltas {
    /// The deltas, oldest first.
    pub fn as_slice(&self) -> &[u32] {
        &self.d[..usize::from(self.n)]
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.n)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Appends one, dropping the oldest when full.
    pub fn push(&mut self, delta: u32) {
        if self.len() == DELTAS {
            self.d.copy_within(1.., 0);
            self.n -= 1;
        }
        self.d[self.len()] = delta;
        self.n += 1;
    }
}

/// Held samples sorted by timestamp, one per timestamp: the part of a
/// `BTreeMap`'s interface the windows use, over a vector that allocates
/// only what it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldMap(Vec<(i64, Held)>);

impl HeldMap {
    fn find(&self, ts: i64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&ts, |(t, _)| *t)
    }

    /// Holds `h` at `ts`; returns what was held there.
    pub fn insert(&mut self, ts: i64, h: Held) -> Option<Held> {
        match self.find(ts) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, h)),
            Err(i) => {
                // Most series hold one or two samples: grow one by one
                // at first (a vector's first growth reserves four).
                if self.0.len() == self.0.capacity() && self.0.len() < 4 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (ts, h));
                None
            }
        }
    }

    /// The sample held at `ts`.
    pub fn get(&self, ts: &i64) -> Option<&Held> {
        self.find(*ts).ok().map(|i| &self.0[i].1)
    }

    /// Removes the sample held at `ts`.
    pub fn remove(&mut self, ts: &i64) -> Option<Held> {
        let i = self.find(*ts).ok()?;
        let (_, h) = self.0.remove(i);
        self.shrink();
        Some(h)
    }

    /// The earliest.
    pub fn first_key_value(&self) -> Option<(&i64, &Held)> {
        self.0.first().map(|(t, h)| (t, h))
    }

    /// The newest.
    pub fn last_key_value(&self) -> Option<(&i64, &Held)> {
        self.0.last().map(|(t, h)| (t, h))
    }

    /// Removes and returns the earliest.
    pub fn pop_first(&mut self) -> Option<(i64, Held)> {
        if self.0.is_empty() {
            return None;
        }
        let first = self.0.remove(0);
        self.shrink();
        Some(first)
    }

    /// Removes and returns every sample at or before `at`, in order.
    pub fn take_through(&mut self, at: i64) -> std::vec::Drain<'_, (i64, Held)> {
        let n = self.0.partition_point(|(t, _)| *t <= at);
        self.0.drain(..n)
    }

    /// Frees the vector once it is empty.
    pub fn shrink(&mut self) {
        if self.0.is_empty() && self.0.capacity() > 0 {
            self.0 = Vec::new();
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In timestamp order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&i64, &Held)> {
        self.0.iter().map(|(t, h)| (t, h))
    }

    /// Those with a timestamp in `r`, in order.
    pub fn range(
        &self,
        r: impl RangeBounds<i64>,
    ) -> impl DoubleEndedIterator<Item = (&i64, &Held)> {
        let lo = match r.start_bound() {
            Bound::Included(t) => self.0.partition_point(|(x, _)| x < t),
            Bound::Excluded(t) => self.0.partition_point(|(x, _)| x <= t),
            Bound::Unbounded => 0,
        };
        let hi = match r.end_bound() {
            Bound::Included(t) => self.0.partition_point(|(x, _)| x <= t),
            Bound::Excluded(t) => self.0.partition_point(|(x, _)| x < t),
            Bound::Unbounded => self.0.len(),
        };
        self.0[lo..hi.max(lo)].iter().map(|(t, h)| (t, h))
    }
}

impl Series {
    /// A series never seen before.
    pub fn new(labels: Arc<[u8]>) -> Series {
        Series {
            labels,
            sent: None,
            filled: 0,
            last_out: i64::MIN,
            stale_sent: false,
            deltas: Deltas::default(),
            held: HeldMap::default(),
            labels_stored: false,
        }
    }

    /// The learned interval: the lower median of the recent deltas, or
    /// `default` before there is one. A median ignores one gap and one
    /// stray early sample alike.
    pub fn interval(&self, default: i64) -> i64 {
        if self.deltas.is_empty() {
            return default;
        }
        let mut d = self.deltas;
        let d = &mut d.d[..usize::from(d.n)];
        d.sort_unstable();
        i64::from(d[(d.len() - 1) / 2]).max(1)
    }

    /// Remembers a delta between two sent real samples.
    pub fn learn(&mut self, delta: i64) {
        if delta <= 0 {
            return;
        }
        self.deltas.push(u32::try_from(delta).unwrap_or(u32::MAX));
    }

    /// Newest event time the series is known at.
    pub fn newest(&self) -> i64 {
        self.held
            .last_key_value()
            .map_or(self.last_out, |(ts, _)| *ts)
    }

    /// The byte form stored in sled, without the labels (stored once,
    /// apart): a fixed [`HEAD`]-byte head, then 25 bytes per held sample.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD + self.held.len() * 25);
        b.push(VERSION);
        let flags = u8::from(self.sent.is_some()) | u8::from(self.stale_sent) << 1;
        b.push(flags);
        let sent = self.sent.unwrap_or(Point { ts: 0, value: 0.0 });
        b.extend_from_slice(&sent.ts.to_be_bytes());
        b.extend_from_slice(&sent.value.to_bits().to_be_bytes());
        b.extend_from_slice(&self.last_out.to_be_bytes());
        b.extend_from_slice(&self.filled.to_be_bytes());
        b.push(self.deltas.n);
        for d in &self.deltas.d {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(&(self.held.len() as u32).to_be_bytes());
        for (ts, h) in self.held.iter() {
            b.extend_from_slice(&ts.to_be_bytes());
            b.extend_from_slice(&h.value.to_bits().to_be_bytes());
            b.extend_from_slice(&h.offset.to_be_bytes());
            b.push(u8::from(h.synthesized));
        }
        b
    }

    /// Reads [`Series::encode`]'s form with the series' stored labels;
    /// None when it is not that.
    pub fn decode(bytes: &[u8], labels: Arc<[u8]>) -> Option<Series> {
        let mut r = Bytes(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let flags = r.u8()?;
        if flags > 3 {
            return None;
        }
        let sent = Point {
            ts: r.i64()?,
            value: f64::from_bits(r.i64()? as u64),
        };
        let sent = (flags & 1 == 1).then_some(sent);
        let last_out = r.i64()?;
        let filled = r.u32()?;
        let n = r.u8()?;
        if usize::from(n) > DELTAS {
            return None;
        }
        let mut deltas = Deltas { d: [0; DELTAS], n };
        for d in &mut deltas.d {
            *d = r.u32()?;
        }
        let n = r.u32()? as usize;
        if r.0.len() != n.checked_mul(25)? {
            return None;
        }
        let mut held = HeldMap(Vec::with_capacity(n));
        for _ in 0..n {
            let ts = r.i64()?;
            let h = Held {
                value: f64::from_bits(r.i64()? as u64),
                offset: r.i64()?,
                synthesized: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
            };
            if held.insert(ts, h).is_some() {
                return None;
            }
        }
        Some(Series {
            labels,
            sent,
            filled,
            last_out,
            stale_sent: flags & 2 == 2,
            deltas,
            held,
            labels_stored: true,
        })
    }
}

/// Bytes of an encoded series holding nothing.
pub const HEAD: usize = 1 + 1 + 8 + 8 + 8 + 4 + 1 + 4 * DELTAS + 4;

/// Format version of [`Series::encode`]. 3: fixed-size head, labels
/// stored apart (2 had them inside, with variable-length deltas); entries
/// of another version do not decode.
const VERSION: u8 = 3;

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_form_round_trips() {
        let mut s = Series::new(Arc::from(&b"\x0a\x03abc"[..]));
        s.labels_stored = true;
        assert_eq!(s.encode().len(), HEAD, "fixed size when nothing is held");
        assert_eq!(
            Series::decode(&s.encode(), s.labels.clone()),
            Some(s.clone())
        );
        s.sent = Some(Point {
            ts: 30_000,
            value: 4.5,
        });
        s.last_out = 31_000;
        s.stale_sent = true;
        s.learn(15_000);
        s.learn(30_000);
        s.held.insert(
            60_000,
            Held {
                value: f64::from_bits(0x7ff0000000000002),
                offset: 7,
                synthesized: false,
            },
        );
        s.held.insert(
            75_000,
            Held {
                value: 5.0,
                offset: 9,
                synthesized: true,
            },
        );
        s.filled = 3;
        let back = Series::decode(&s.encode(), s.labels.clone()).expect("decodes");
        // (A NaN is not equal to itself: compare the bytes.)
        assert_eq!(back.encode(), s.encode());
        assert_eq!((back.sent, back.deltas, back.filled), (s.sent, s.deltas, 3));
        assert_eq!(back.encode().len(), HEAD + 2 * 25);
        let held = |ts| *back.held.get(&ts).expect("held");
        assert_eq!(held(60_000).value.to_bits(), 0x7ff0000000000002);
        assert!(held(75_000).synthesized && !held(60_000).synthesized);
        assert_eq!(back.filled, 3);
        let labels = s.labels.clone();
        assert_eq!(
            Series::decode(&s.encode()[..10], labels.clone()),
            None,
            "truncated"
        );
        let mut longer = s.encode();
        longer.push(0);
        assert_eq!(Series::decode(&longer, labels), None, "trailing bytes");
    }

    #[test]
    fn the_interval_is_the_lower_median_of_recent_deltas() {
        let mut s = Series::new(Arc::from(&[][..]));
        assert_eq!(s.interval(15_000), 15_000);
        s.learn(30_000);
        s.learn(120_000); // a gap
        assert_eq!(s.interval(15_000), 30_000);
        for d in [30_000, 29_000, 31_000, 1] {
            s.learn(d);
        }
        assert_eq!(s.deltas.len(), DELTAS);
        assert_eq!(s.interval(15_000), 30_000, "1, 29, 30, 31, 120 s");
        assert_eq!(s.deltas.as_slice(), [120_000, 30_000, 29_000, 31_000, 1]);
    }

    #[test]
    fn the_held_map_keeps_time_order_and_frees_itself_when_empty() {
        let h = |value: f64| Held {
            value,
            offset: 1,
            synthesized: false,
        };
        let mut m = HeldMap::default();
        for ts in [30, 10, 20, 40] {
            assert_eq!(m.insert(ts, h(ts as f64)), None);
        }
        assert_eq!(m.insert(20, h(2.0)), Some(h(20.0)), "replaced");
        let ts =
            |it: &mut dyn Iterator<Item = (&i64, &Held)>| it.map(|(t, _)| *t).collect::<Vec<_>>();
        assert_eq!(ts(&mut m.iter()), [10, 20, 30, 40]);
        assert_eq!(ts(&mut m.range(..30)), [10, 20]);
        assert_eq!(ts(&mut m.range(..30).rev()), [20, 10]);
        assert_eq!(ts(&mut m.range(21..)), [30, 40]);
        assert_eq!(ts(&mut m.range(11..40)), [20, 30]);
        let (lo, hi) = (50, 40);
        assert_eq!(ts(&mut m.range(lo..hi)), Vec::<i64>::new(), "reversed");
        assert_eq!(m.get(&20), Some(&h(2.0)));
        assert_eq!(m.remove(&30), Some(h(30.0)));
        assert_eq!(
            m.take_through(25).map(|(t, _)| t).collect::<Vec<_>>(),
            [10, 20]
        );
        assert_eq!(m.pop_first().map(|(t, _)| t), Some(40));
        m.shrink();
        assert!(m.is_empty() && m.0.capacity() == 0);
        m.insert(5, h(5.0));
        assert_eq!(m.0.capacity(), 1, "one held sample, one slot");
    }
}
