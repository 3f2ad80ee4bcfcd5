//! The zero-copy reader for remote write 2.0 requests: [`parse_v2`].
//!
//! A 2.0 request holds every string once, in its symbol table, and refers
//! to it by index. This reader borrows the symbols from the decompressed
//! buffer, resolves each series' `labels_refs` through them, and writes the
//! series' samples (and its rare exemplars and histograms) into the
//! request's arena in 1.0's prost encoding, so that the router copies them
//! out exactly as it does for 1.0. Metadata becomes 1.0 `MetricMetadata`,
//! one per family, as [`Request::into_v1`] converts it.
//!
//! Exactness: [`parse_v2`] reads every valid protobuf encoding (fields in
//! any order, symbols after the series, explicit default values, packed or
//! unpacked `labels_refs`, repeated scalar fields where the last wins,
//! repeated metadata merged, non-minimal varints, unknown fields but
//! groups skipped) and returns what `Request::decode`, then
//! [`Request::into_v1`], then [`validate_v1`] and prost re-encoding each
//! series give. It returns `None` where any of those fails, and for groups,
//! so the caller takes the prost path, which reports the error.
//!
//! [`Request::into_v1`]: crate::remote_write::proto::v2::Request::into_v1
//! [`validate_v1`]: crate::remote_write::validate_v1

use std::collections::HashSet;

use prost::Message;

use super::wire::{put_sample, Reader, FIXED64, LEN, VARINT};
use super::{valid, FastRequest, FastSeries, Rest};
use crate::remote_write::proto::v1::{Exemplar, Label, MetricMetadata};
use crate::remote_write::proto::v2::{self, Histogram, Metadata};
use crate::remote_write::validate::{float_histogram_problem, histogram_count_mismatch};
use crate::remote_write::Limits;

/// `Request` fields.
const SYMBOLS: u64 = 4;
const TIMESERIES: u64 = 5;

/// Reads a decompressed 2.0 `Request`, or returns `None` when prost,
/// `into_v1` or `validate_v1` would refuse it (see the module docs): the
/// caller must then decode it with prost, convert and validate it as
/// before.
pub fn parse_v2<'a>(raw: &'a [u8], limits: &Limits) -> Option<FastRequest<'a>> {
    let symbols = symbols(raw)?;
    let mut req = FastRequest::new();
    let mut series = SeriesReader {
        symbols: &symbols,
        refs: Vec::new(),
        families: HashSet::new(),
    };
    let mut r = Reader(raw);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (TIMESERIES, LEN) => {
                let body = r.len_delimited()?;
                let s = series.read(body, &mut req)?;
                req.series.push(s);
            }
            // Read by `symbols` already.
            (SYMBOLS, LEN) => drop(r.len_delimited()?),
            // prost: "invalid wire type" for a known field.
            (SYMBOLS | TIMESERIES, _) => return None,
            _ => r.skip(wire)?,
        }
    }
    valid(&req, limits).then_some(req)
}

/// The symbol table, borrowed, or None when prost refuses a symbol (not
/// UTF-8) or `into_v1` refuses the table (its first entry is not "").
/// Other fields are only skipped here; [`parse_v2`] checks them.
fn symbols(raw: &[u8]) -> Option<Vec<&str>> {
    let mut table = Vec::new();
    let mut r = Reader(raw);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        if (field, wire) == (SYMBOLS, LEN) {
            table.push(std::str::from_utf8(r.len_delimited()?).ok()?);
        } else {
            r.skip(wire)?;
        }
    }
    if table.first().is_some_and(|first| !first.is_empty()) {
        return None;
    }
    Some(table)
}

/// Resolves a reference as `into_v1` does: 0 is "" even in an empty table.
fn symbol<'a>(table: &[&'a str], reference: u32) -> Option<&'a str> {
    if reference == 0 && table.is_empty() {
        return Some("");
    }
    table.get(reference as usize).copied()
}

/// Label references resolved to (name, value) pairs, None for an odd count
/// or a reference outside the table.
fn resolve<'a, 'r>(
    table: &'r [&'a str],
    refs: &'r [u32],
) -> Option<impl Iterator<Item = Option<(&'a str, &'a str)>> + 'r> {
    let pairs = refs.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    Some(pairs.map(|pair| Some((symbol(table, pair[0])?, symbol(table, pair[1])?))))
}

/// What reading the series of one request shares.
struct SeriesReader<'t, 'a> {
    symbols: &'t [&'a str],
    /// The current series' label references, reused from series to series.
    refs: Vec<u32>,
    /// Families that have metadata already (the first series wins).
    families: HashSet<&'a str>,
}

impl<'a> SeriesReader<'_, 'a> {
    /// Reads one `TimeSeries`: its labels into `req.labels`, its samples,
    /// exemplars and histograms into `req`'s arena as 1.0 fields 2, 3 and
    /// 4, its metadata (if its family has none yet) into `req.metadata`.
    fn read(&mut self, body: &'a [u8], req: &mut FastRequest<'a>) -> Option<FastSeries<'a>> {
        self.refs.clear();
        let mut metadata: Option<Metadata> = None;
        let (mut samples, mut histograms, mut exemplars) = (0, 0, 0);
        let arena_start = req.arena.len();
        let mut r = Reader(body);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                // labels_refs, unpacked: one varint (prost keeps its low 32 bits).
                (1, VARINT) => self.refs.push(r.varint()? as u32),
                // labels_refs, packed: varints filling the field exactly.
                (1, LEN) => {
                    let mut packed = Reader(r.len_delimited()?);
                    while !packed.is_empty() {
                        self.refs.push(packed.varint()? as u32);
                    }
                }
                (2, LEN) => {
                    let (value, timestamp) = parse_sample(r.len_delimited()?)?;
                    put_sample(&mut req.arena, value, timestamp);
                    samples += 1;
                }
                // Histograms and exemplars: decoded below.
                (3, LEN) => {
                    r.len_delimited()?;
                    histograms += 1;
                }
                (4, LEN) => {
                    r.len_delimited()?;
                    exemplars += 1;
                }
                // A repeated message field is merged into one, as prost does.
                (5, LEN) => metadata
                    .get_or_insert_with(Metadata::default)
                    .merge(r.len_delimited()?)
                    .ok()?,
                (1..=5, _) => return None,
                _ => r.skip(wire)?,
            }
        }
        let start = req.labels.len();
        for label in resolve(self.symbols, &self.refs)? {
            req.labels.push(label?);
        }
        if exemplars > 0 {
            write_exemplars(body, self.symbols, &mut req.arena)?;
        }
        if histograms > 0 {
            write_histograms(body, &mut req.arena)?;
        }
        if let Some(md) = metadata.filter(|m| *m != Metadata::default()) {
            let help = symbol(self.symbols, md.help_ref)?;
            let unit = symbol(self.symbols, md.unit_ref)?;
            let name = req.labels[start..].iter().find(|(n, _)| *n == "__name__");
            if let Some(&(_, name)) = name {
                if self.families.insert(name) {
                    req.metadata.push(MetricMetadata {
                        r#type: md.r#type,
                        metric_family_name: name.to_owned(),
                        help: help.to_owned(),
                        unit: unit.to_owned(),
                    });
                }
            }
        }
        Some(FastSeries {
            labels: start..req.labels.len(),
            rest: Rest::Arena(arena_start..req.arena.len()),
            // 2.0 labels are symbol references, not label entries.
            label_run: None,
            samples,
            histograms,
            exemplars,
        })
    }
}

/// A 2.0 `Sample` as prost decodes it: (value, timestamp); the start
/// timestamp (field 3) is checked and dropped, as `into_v1` drops it.
fn parse_sample(body: &[u8]) -> Option<(f64, i64)> {
    let (mut value, mut timestamp) = (0.0, 0i64);
    let mut r = Reader(body);
    while !r.is_empty() {
        match r.key()? {
            (1, FIXED64) => value = f64::from_le_bytes(r.take(8)?.try_into().ok()?),
            (2, VARINT) => timestamp = r.varint()? as i64,
            (3, VARINT) => drop(r.varint()?),
            (1..=3, _) => return None,
            (_, wire) => r.skip(wire)?,
        }
    }
    Some((value, timestamp))
}

/// The bodies of every `field` of a message already read once.
fn fields(body: &[u8], field: u64) -> impl Iterator<Item = &[u8]> {
    let mut r = Reader(body);
    std::iter::from_fn(move || {
        while !r.is_empty() {
            let (f, wire) = r.key()?;
            if f == field {
                return r.len_delimited();
            }
            r.skip(wire)?;
        }
        None
    })
}

/// The series' exemplars (2.0 field 4), converted as `into_v1` does and
/// written as 1.0 field 3. Rare: prost and owned strings are fine here.
fn write_exemplars(body: &[u8], symbols: &[&str], out: &mut Vec<u8>) -> Option<()> {
    for msg in fields(body, 4) {
        let e = v2::Exemplar::decode(msg).ok()?;
        let labels = resolve(symbols, &e.labels_refs)?
            .map(|label| label.map(|(n, v)| Label::new(n, v)))
            .collect::<Option<Vec<_>>>()?;
        let exemplar = Exemplar {
            labels,
            value: e.value,
            timestamp: e.timestamp,
        };
        prost::encoding::message::encode(3, &exemplar, out);
    }
    Some(())
}

/// The series' histograms (2.0 field 3) without their start timestamp,
/// written as 1.0 field 4; None for one `validate_v1` refuses.
fn write_histograms(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    for msg in fields(body, 3) {
        let h = Histogram::decode(msg).ok()?;
        if histogram_count_mismatch(&h).is_some() || float_histogram_problem(&h).is_some() {
            return None;
        }
        let h = Histogram {
            start_timestamp: 0,
            ..h
        };
        prost::encoding::message::encode(4, &h, out);
    }
    Some(())
}
