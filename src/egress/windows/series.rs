//! One series' window state and its byte form in sled.
//!
//! Invariants: every held sample is newer than `last_out` (what the series
//! already sent, staleness markers included), so releasing held samples in
//! key order keeps the series in timestamp order; `sent` is the newest
//! real sample sent, the base of gap detection, and `filled` counts the
//! synthesized samples sent after it (non-zero while a filled gap is
//! leaving: its closing sample is then the first real one held).

use std::collections::BTreeMap;
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
    pub deltas: Vec<u32>,
    /// Samples waiting for the watermark, by timestamp.
    pub held: BTreeMap<i64, Held>,
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
            deltas: Vec::new(),
            held: BTreeMap::new(),
        }
    }

    /// The learned interval: the lower median of the recent deltas, or
    /// `default` before there is one. A median ignores one gap and one
    /// stray early sample alike.
    pub fn interval(&self, default: i64) -> i64 {
        if self.deltas.is_empty() {
            return default;
        }
        let mut d = self.deltas.clone();
        d.sort_unstable();
        i64::from(d[(d.len() - 1) / 2]).max(1)
    }

    /// Remembers a delta between two sent real samples.
    pub fn learn(&mut self, delta: i64) {
        if delta <= 0 {
            return;
        }
        if self.deltas.len() == DELTAS {
            self.deltas.remove(0);
        }
        self.deltas.push(u32::try_from(delta).unwrap_or(u32::MAX));
    }

    /// Newest event time the series is known at.
    pub fn newest(&self) -> i64 {
        self.held
            .last_key_value()
            .map_or(self.last_out, |(ts, _)| *ts)
    }

    /// The byte form stored in sled.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.labels.len() + self.held.len() * 32);
        b.push(VERSION);
        match self.sent {
            Some(p) => {
                b.push(1);
                b.extend_from_slice(&p.ts.to_be_bytes());
                b.extend_from_slice(&p.value.to_bits().to_be_bytes());
            }
            None => b.push(0),
        }
        b.extend_from_slice(&self.last_out.to_be_bytes());
        b.push(u8::from(self.stale_sent));
        b.extend_from_slice(&self.filled.to_be_bytes());
        b.push(self.deltas.len() as u8);
        for d in &self.deltas {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(&(self.labels.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.labels);
        b.extend_from_slice(&(self.held.len() as u32).to_be_bytes());
        for (ts, h) in &self.held {
            b.extend_from_slice(&ts.to_be_bytes());
            b.extend_from_slice(&h.value.to_bits().to_be_bytes());
            b.extend_from_slice(&h.offset.to_be_bytes());
            b.push(u8::from(h.synthesized));
        }
        b
    }

    /// Reads [`Series::encode`]'s form; None when it is not that.
    pub fn decode(bytes: &[u8]) -> Option<Series> {
        let mut r = Bytes(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let sent = match r.u8()? {
            0 => None,
            1 => Some(Point {
                ts: r.i64()?,
                value: f64::from_bits(r.i64()? as u64),
            }),
            _ => return None,
        };
        let last_out = r.i64()?;
        let stale_sent = r.u8()? == 1;
        let filled = r.u32()?;
        let n = usize::from(r.u8()?);
        if n > DELTAS {
            return None;
        }
        let mut deltas = Vec::with_capacity(n);
        for _ in 0..n {
            deltas.push(u32::from_be_bytes(r.take(4)?.try_into().ok()?));
        }
        let len = r.u32()? as usize;
        let labels: Arc<[u8]> = Arc::from(r.take(len)?);
        let n = r.u32()? as usize;
        let mut held = BTreeMap::new();
        for _ in 0..n {
            let ts = r.i64()?;
            held.insert(
                ts,
                Held {
                    value: f64::from_bits(r.i64()? as u64),
                    offset: r.i64()?,
                    synthesized: match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => return None,
                    },
                },
            );
        }
        r.0.is_empty().then_some(Series {
            labels,
            sent,
            filled,
            last_out,
            stale_sent,
            deltas,
            held,
        })
    }
}

/// Format version of [`Series::encode`]. 2: `filled` after `stale_sent`,
/// and each held sample ends with a synthesized flag (1 had the arrival
/// watermark there); entries of another version do not decode.
const VERSION: u8 = 2;

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
        assert_eq!(Series::decode(&s.encode()), Some(s.clone()));
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
        let back = Series::decode(&s.encode()).expect("decodes");
        assert_eq!(back.encode(), s.encode());
        assert_eq!(back.held[&60_000].value.to_bits(), 0x7ff0000000000002);
        assert!(back.held[&75_000].synthesized && !back.held[&60_000].synthesized);
        assert_eq!(back.filled, 3);
        assert_eq!(Series::decode(&s.encode()[..10]), None, "truncated");
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
    }
}
