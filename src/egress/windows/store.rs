//! How the windows of a partition are laid out in sled, next to its
//! position (`src/state/`).
//!
//! Tree `windows`, under the partition's key (topic, 0, partition):
//! - `+ 'M'`: meta — the offset of the last record taken into the windows
//!   (`read_through`), the newest timestamp seen and the watermark floor;
//! - `+ 'S' + hash`: one series ([`Series::encode`]: a fixed-size head,
//!   then its held samples), rewritten when it changes;
//! - `+ 'L' + hash`: its labels, written once, when the series is new, and
//!   removed with it.
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

/// Key of a series' labels under `prefix`.
pub fn labels_key(prefix: &[u8], hash: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.push(b'L');
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
    labels: HashMap<u64, Arc<[u8]>>,
    gaps: Vec<Gap>,
}

impl Unsaved {
    /// Adds newer changes.
    pub fn merge(&mut self, c: Changes) {
        for (hash, state) in c.series {
            if state.is_none() {
                self.labels.remove(&hash);
            }
            self.series.insert(hash, state);
        }
        self.labels.extend(c.labels);
        self.gaps.extend(c.gaps);
    }

    /// Series entries to write or delete.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether nothing is to be written but the meta.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.gaps.is_empty()
    }

    /// The sled batches of the windows and gaps trees, with `meta`.
    pub fn batches(&self, prefix: &[u8], meta: &Meta) -> (sled::Batch, sled::Batch) {
        let mut windows = sled::Batch::default();
        windows.insert(meta_key(prefix), meta.encode());
        for (hash, state) in &self.series {
            match state {
                Some(bytes) => windows.insert(series_key(prefix, *hash), bytes.as_slice()),
                None => {
                    windows.remove(series_key(prefix, *hash));
                    windows.remove(labels_key(prefix, *hash));
                }
            }
        }
        for (hash, labels) in &self.labels {
            windows.insert(labels_key(prefix, *hash), &labels[..]);
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
        self.labels.clear();
        self.gaps.clear();
    }
}

/// A partition's windows as stored: meta, series, keys that do not decode.
pub type Loaded = (Option<Meta>, Vec<(u64, Series)>, Vec<Vec<u8>>);

/// Splits a partition's `windows` entries into meta and series; entries
/// that do not decode (a series without labels, labels without a series)
/// are returned as keys (corrupt).
pub fn load(prefix: &[u8], entries: Vec<crate::state::Entry>, delay: i64) -> Loaded {
    let (mut meta, mut series, mut bad) = (None, Vec::new(), Vec::new());
    // Key order: every 'L' entry comes before the 'S' entries.
    let mut labels: HashMap<u64, (Vec<u8>, Arc<[u8]>)> = HashMap::new();
    for (k, v) in entries {
        let rest = &k[prefix.len()..];
        let hash = |h: &[u8]| <[u8; 8]>::try_from(h).ok().map(u64::from_be_bytes);
        match rest.split_first() {
            Some((b'M', [])) => match Meta::decode(&v, delay) {
                Some(m) => meta = Some(m),
                None => bad.push(k),
            },
            Some((b'L', h)) => match hash(h) {
                Some(h) => {
                    labels.insert(h, (k, Arc::from(v)));
                }
                None => bad.push(k),
            },
            Some((b'S', h)) => {
                let found = hash(h).and_then(|h| Some((h, labels.remove(&h)?.1)));
                match found.and_then(|(h, l)| Some((h, Series::decode(&v, l)?))) {
                    Some(s) => series.push(s),
                    None => bad.push(k),
                }
            }
            _ => bad.push(k),
        }
    }
    bad.extend(labels.into_values().map(|(k, _)| k));
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

    /// Labels are written once, with the series' first store, and a
    /// series comes back with them; deleting a series deletes its labels.
    #[test]
    fn labels_are_written_once_and_loaded_with_their_series() {
        use crate::egress::windows::{Emit, OnGap, OnLate, Point, Settings, Windows};
        let st = Settings {
            delay: 10,
            on_late: OnLate::Drop,
            gap_factor: 2.0,
            default_interval: 10,
            on_gap: OnGap::None,
            expire_after: 1_000,
        };
        let mut w = Windows::new(st);
        let labels: Arc<[u8]> = Arc::from(&b"\x0a\x03abc"[..]);
        let mut out = Emit::default();
        let p = |ts| [Point { ts, value: 1.0 }];
        w.ingest(0, 7, || labels.clone(), p(10), &mut out);
        let first = w.take_changes();
        assert_eq!(first.labels, [(7, labels.clone())]);
        w.ingest(1, 7, || labels.clone(), p(20), &mut out);
        let second = w.take_changes();
        assert_eq!((second.series.len(), second.labels.len()), (1, 0));

        let db = sled::Config::new().temporary(true).open().expect("sled");
        let mut unsaved = Unsaved::default();
        unsaved.merge(first);
        unsaved.merge(second);
        let meta = Meta {
            read_through: Some(1),
            watermark: w.watermark(),
        };
        db.apply_batch(unsaved.batches(b"p", &meta).0)
            .expect("write");
        let entries: Vec<_> = db
            .iter()
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"))
            .collect();
        assert_eq!(entries.len(), 3, "meta, labels, series");
        let (m, series, bad) = load(b"p", entries, st.delay);
        assert_eq!((m, bad.len()), (Some(meta), 0));
        assert_eq!(series.len(), 1);
        let (hash, s) = &series[0];
        assert_eq!((*hash, &s.labels, s.held.len()), (7, &labels, 2));

        let mut unsaved = Unsaved::default();
        unsaved.merge(crate::egress::windows::Changes {
            series: vec![(7, None)],
            ..Default::default()
        });
        db.apply_batch(unsaved.batches(b"p", &meta).0)
            .expect("delete");
        assert_eq!(db.len(), 1, "only the meta is left");
    }
}
