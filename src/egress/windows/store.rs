//! How the windows of a partition are laid out in sled, next to its
//! position (`src/state/`).
//!
//! Tree `windows`, under the partition's key (topic, 0, partition):
//! - `+ 'M'`: meta — the offset of the last record taken into the windows
//!   (`read_through`), the newest timestamp seen and the watermark floor;
//! - `+ 'S' + hash`: one series ([`Series::encode`]).
//!
//! Tree `gaps`, under the partition's key: `+ end (ms, sign-flipped) +
//! hash` → start, end, samples missing, samples synthesized, labels. At
//! most [`MAX_GAPS`] per partition are kept (the oldest go first).
//!
//! The rule that ties them to the position: everything here and the
//! position are written in one transaction after the records up to
//! `read_through` were taken in and everything they released was
//! delivered; the position is at most the lowest offset still holding a
//! sample. After a restart, records from the position up to `read_through`
//! are read again but not taken in twice: their held samples are here.

use std::collections::HashMap;
use std::sync::Arc;

use super::delay::Watermark;
use super::{Changes, Gap, Series};

/// Gaps kept per partition.
pub const MAX_GAPS: usize = 10_000;

/// A partition's window meta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Offset of the last record taken into the windows.
    pub read_through: Option<i64>,
    /// The watermark's state.
    pub watermark: Watermark,
}

fn opt(v: Option<i64>) -> i64 {
    v.unwrap_or(i64::MIN)
}

fn unopt(v: i64) -> Option<i64> {
    (v != i64::MIN).then_some(v)
}

impl Meta {
    /// Byte form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&opt(self.read_through).to_be_bytes());
        b.extend_from_slice(&opt(self.watermark.newest).to_be_bytes());
        b.extend_from_slice(&self.watermark.floor.to_be_bytes());
        b
    }

    /// Reads [`Meta::encode`]'s form.
    pub fn decode(b: &[u8], delay: i64) -> Option<Meta> {
        if b.len() != 24 {
            return None;
        }
        let at = |i: usize| i64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Some(Meta {
            read_through: unopt(at(0)),
            watermark: Watermark {
                delay,
                newest: unopt(at(8)),
                floor: at(16),
            },
        })
    }
}

/// Key of the meta entry under `prefix` (the partition's key).
pub fn meta_key(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.push(b'M');
    k
}

/// Key of a series under `prefix`.
pub fn series_key(prefix: &[u8], hash: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.push(b'S');
    k.extend_from_slice(&hash.to_be_bytes());
    k
}

/// Key of a gap: ordered by end time, then series.
pub fn gap_key(prefix: &[u8], end: i64, hash: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&hash.to_be_bytes());
    k
}

/// A gap's stored value.
pub fn encode_gap(g: &Gap) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + g.labels.len());
    b.extend_from_slice(&g.start.to_be_bytes());
    b.extend_from_slice(&g.end.to_be_bytes());
    b.extend_from_slice(&g.missing.to_be_bytes());
    b.extend_from_slice(&g.synthesized.to_be_bytes());
    b.extend_from_slice(&g.labels);
    b
}

/// Reads a gap stored under a key ending in its hash.
pub fn decode_gap(key: &[u8], value: &[u8]) -> Option<Gap> {
    let hash = u64::from_be_bytes(key.get(key.len().checked_sub(8)?..)?.try_into().ok()?);
    if value.len() < 32 {
        return None;
    }
    let at = |i: usize| u64::from_be_bytes(value[i..i + 8].try_into().unwrap_or_default());
    Some(Gap {
        hash,
        labels: Arc::from(&value[32..]),
        start: at(0) as i64,
        end: at(8) as i64,
        missing: at(16),
        synthesized: at(24),
    })
}

/// Changes not stored yet, merged over failed attempts: the newest state
/// of each series wins.
#[derive(Debug, Default)]
pub struct Unsaved {
    series: HashMap<u64, Option<Vec<u8>>>,
    gaps: Vec<Gap>,
}

impl Unsaved {
    /// Adds newer changes.
    pub fn merge(&mut self, c: Changes) {
        self.series.extend(c.series);
        self.gaps.extend(c.gaps);
    }

    /// The sled batches of the windows and gaps trees, with `meta`.
    pub fn batches(&self, prefix: &[u8], meta: &Meta) -> (sled::Batch, sled::Batch) {
        let mut windows = sled::Batch::default();
        windows.insert(meta_key(prefix), meta.encode());
        for (hash, state) in &self.series {
            match state {
                Some(bytes) => windows.insert(series_key(prefix, *hash), bytes.as_slice()),
                None => windows.remove(series_key(prefix, *hash)),
            }
        }
        let mut gaps = sled::Batch::default();
        for g in &self.gaps {
            gaps.insert(gap_key(prefix, g.end, g.hash), encode_gap(g));
        }
        (windows, gaps)
    }

    /// Stored: forget them.
    pub fn clear(&mut self) {
        self.series.clear();
        self.gaps.clear();
    }
}

/// A partition's windows as stored: meta, series, keys that do not decode.
pub type Loaded = (Option<Meta>, Vec<(u64, Series)>, Vec<Vec<u8>>);

/// Splits a partition's `windows` entries into meta and series; entries
/// that do not decode are returned as keys (corrupt).
pub fn load(prefix: &[u8], entries: Vec<crate::state::Entry>, delay: i64) -> Loaded {
    let (mut meta, mut series, mut bad) = (None, Vec::new(), Vec::new());
    for (k, v) in entries {
        let rest = &k[prefix.len()..];
        match rest.split_first() {
            Some((b'M', [])) => match Meta::decode(&v, delay) {
                Some(m) => meta = Some(m),
                None => bad.push(k),
            },
            Some((b'S', h)) if h.len() == 8 => {
                let hash = u64::from_be_bytes(h.try_into().unwrap_or_default());
                match Series::decode(&v) {
                    Some(s) => series.push((hash, s)),
                    None => bad.push(k),
                }
            }
            _ => bad.push(k),
        }
    }
    (meta, series, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_and_gaps_round_trip_and_gaps_sort_by_end() {
        let m = Meta {
            read_through: Some(41),
            watermark: Watermark {
                delay: 5,
                newest: Some(-3),
                floor: i64::MIN,
            },
        };
        assert_eq!(Meta::decode(&m.encode(), 5), Some(m));
        let g = Gap {
            hash: 7,
            labels: Arc::from(&b"\x0a\x00"[..]),
            start: -10,
            end: 20,
            missing: 2,
            synthesized: 1,
        };
        let k = gap_key(b"p", g.end, g.hash);
        assert_eq!(decode_gap(&k, &encode_gap(&g)), Some(g));
        assert!(gap_key(b"p", -5, 9) < gap_key(b"p", 3, 1));
    }
}
