//! The 2.0 (`io.prometheus.write.v2.Request`) half of [`check`](super::check):
//! the symbol table, series and label references, charged to the heap
//! estimate as the 1.0 request they convert to.
//!
//! May depend on: the parent `bounds` module (heap estimate, refusals,
//! rendering limits), its `wire` reader, and the `remote_write` types.

use std::mem::size_of;

use super::wire::{Reader, Wire};
use super::{lossy, Heap, Refusal, RENDERED_LABELS};
use crate::remote_write::proto::{v1, v2};
use crate::remote_write::{render_labels, Label, Limits, ValidationError};

pub(super) fn check_v2(raw: &[u8], limits: &Limits, heap: &mut Heap) -> Result<(), Refusal> {
    // Symbols may follow the series on the wire: count and charge them
    // first, then keep one slice per symbol for resolving references.
    let mut count = 0usize;
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.field()? {
        if let (4, Wire::Len(s)) = (field, wire) {
            count += 1;
            heap.add(size_of::<String>() + s.len())?;
        }
    }
    let mut symbols: Vec<&[u8]> = Vec::with_capacity(count);
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.field()? {
        if let (4, Wire::Len(s)) = (field, wire) {
            symbols.push(s);
        }
    }
    let longest = symbols.iter().map(|s| s.len()).max().unwrap_or(0);
    let table = Table(&symbols);

    let mut series = 0usize;
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.field()? {
        let (5, Wire::Len(body)) = (field, wire) else {
            continue;
        };
        if series == limits.max_series_per_request {
            let count = series + 1 + r.count(5)?;
            return Err(Refusal::Invalid(ValidationError::TooManySeries {
                count,
                max: limits.max_series_per_request,
            }));
        }
        // The 2.0 series and the 1.0 one it is converted to.
        heap.add(size_of::<v2::TimeSeries>() + size_of::<v1::TimeSeries>())?;
        check_v2_series(body, series, limits, &table, longest, heap)?;
        series += 1;
    }
    Ok(())
}

fn check_v2_series(
    body: &[u8],
    series: usize,
    limits: &Limits,
    table: &Table<'_>,
    longest: usize,
    heap: &mut Heap,
) -> Result<(), Refusal> {
    let mut refs = 0usize;
    let mut r = Reader(body);
    while let Some((field, wire)) = r.field()? {
        match (field, wire) {
            (1, wire) => {
                let cap = 2 * limits.max_labels_per_series - refs;
                refs += label_refs(wire, table, heap, cap)?;
                if refs > 2 * limits.max_labels_per_series {
                    // Count them all for the message, charging nothing.
                    let mut count = 0;
                    let mut all = Reader(body);
                    while let Some((field, wire)) = all.field()? {
                        if field == 1 {
                            count += label_refs(
                                wire,
                                &Table(&[]),
                                &mut Heap {
                                    used: 0,
                                    max: usize::MAX,
                                },
                                usize::MAX,
                            )?;
                        }
                    }
                    return Err(Refusal::Invalid(ValidationError::TooManyLabels {
                        series,
                        labels: render_labels(&v2_labels(body, table)?),
                        count: count / 2,
                        max: limits.max_labels_per_series,
                    }));
                }
            }
            (2, Wire::Len(_)) => heap.add(size_of::<v2::Sample>() + size_of::<v1::Sample>())?,
            (3, Wire::Len(msg)) => heap.add(2 * (size_of::<v1::Histogram>() + 8 * msg.len()))?,
            (4, Wire::Len(msg)) => {
                heap.add(size_of::<v2::Exemplar>() + size_of::<v1::Exemplar>())?;
                let mut e = Reader(msg);
                while let Some((field, wire)) = e.field()? {
                    if field == 1 {
                        label_refs(wire, table, heap, usize::MAX)?;
                    }
                }
            }
            // Converted to a 1.0 metadata entry holding up to three strings.
            (5, Wire::Len(_)) => heap.add(size_of::<v1::MetricMetadata>() + 3 * longest)?,
            _ => {}
        }
    }
    Ok(())
}

/// Charges the references in one `labels_refs` field (packed or not) and
/// the 1.0 labels they resolve to; returns how many references it held,
/// stopping once that is over `cap`.
fn label_refs(
    wire: Wire<'_>,
    table: &Table<'_>,
    heap: &mut Heap,
    cap: usize,
) -> Result<usize, Refusal> {
    // The u32 in the 2.0 struct, and half a 1.0 label plus its string.
    let cost = |reference: u64| 4 + size_of::<Label>() / 2 + table.len(reference);
    match wire {
        Wire::Varint(v) => {
            heap.add(cost(v))?;
            Ok(1)
        }
        Wire::Len(packed) => {
            let mut n = 0;
            let mut p = Reader(packed);
            while !p.0.is_empty() && n <= cap {
                let v = p.varint()?;
                n += 1;
                if n <= cap {
                    heap.add(cost(v))?;
                }
            }
            Ok(n)
        }
        _ => Ok(0),
    }
}

/// The first labels of a 2.0 series, resolved, for an error message.
fn v2_labels(series: &[u8], table: &Table<'_>) -> Result<Vec<Label>, Refusal> {
    let mut refs = Vec::new();
    let mut r = Reader(series);
    while let Some((field, wire)) = r.field()? {
        match (field, wire) {
            (1, Wire::Varint(v)) => refs.push(v),
            (1, Wire::Len(packed)) => {
                let mut p = Reader(packed);
                while !p.0.is_empty() && refs.len() < 2 * RENDERED_LABELS {
                    refs.push(p.varint()?);
                }
            }
            _ => {}
        }
        if refs.len() >= 2 * RENDERED_LABELS {
            break;
        }
    }
    Ok(refs
        .chunks_exact(2)
        .map(|p| Label {
            name: table.lossy(p[0]),
            value: table.lossy(p[1]),
        })
        .collect())
}

/// A 2.0 symbol table as slices of the body.
struct Table<'a>(&'a [&'a [u8]]);

impl Table<'_> {
    /// Length of a symbol; 0 for a bad reference (the conversion refuses it).
    pub(super) fn len(&self, reference: u64) -> usize {
        self.get(reference).map_or(0, <[u8]>::len)
    }

    pub(super) fn get(&self, reference: u64) -> Option<&[u8]> {
        usize::try_from(reference)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
    }

    pub(super) fn lossy(&self, reference: u64) -> String {
        self.get(reference)
            .map_or_else(|| format!("<ref {reference}>"), lossy)
    }
}
