//! The zero-copy reader for remote write 1.0 requests, shared by the
//! gateway's validation and the router.
//!
//! prost decodes every label into two `String`s (and frees them again),
//! which was most of the gateway's and the router's work. Both only need to
//! read (and the router to rewrite) labels, so this reader borrows them from
//! the decompressed buffer and keeps each series' other fields (samples,
//! exemplars, histograms) as bytes in prost's encoding, to be copied into
//! the output as is.
//!
//! Exactness: [`parse`] reads every valid protobuf encoding of a
//! `WriteRequest` (fields in any order, labels interleaved with samples,
//! explicit default values, repeated scalar fields where the last wins,
//! non-minimal varints, unknown fields of every wire type but groups
//! skipped) and returns what `WriteRequest::decode` followed by
//! [`super::validate_v1`] and prost re-encoding each series would give: the
//! same labels, the same [`Stats`], and, per series, the bytes prost writes
//! for its samples, exemplars and histograms. A series already in that form
//! is borrowed; any other is re-encoded once into [`FastRequest`]'s arena.
//! It returns `None` when prost would refuse the bytes, when `validate_v1`
//! would refuse the request, for metadata and for groups, so the caller
//! takes the prost path, which then reports the very same result or error
//! as before. Exemplars and histograms, which are rare, are decoded with
//! prost (their bytes copied when they are already canonical).
//!
//! Requests of remote write 2.0 are read by [`parse_v2`] (`fast/v2.rs`)
//! into the same [`FastRequest`], with their metadata converted as
//! `into_v1` converts it.

use std::cell::RefCell;
use std::ops::Range;

use prost::Message;

use super::reuse::{give_bytes, recycle, take_bytes, MAX_KEPT_BYTES};

use super::proto::v1::{Exemplar, Histogram, MetricMetadata};
use super::validate::{
    float_histogram_problem, histogram_count_mismatch, Limits, Stats, METRIC_NAME,
};

mod v2;
mod wire;

pub use v2::parse_v2;

use wire::{decode_checked, leading_labels, parse_label, parse_sample, put_sample, Reader, LEN};

/// At most this many bytes of heap are held by [`parse`] per decoded byte,
/// whatever the bytes are: the largest thing it keeps per input byte is a
/// [`FastSeries`] (80 bytes) for an empty series, two bytes on the wire; a
/// vector holds up to twice its length, and three times for a moment while
/// it grows. Everything else it keeps (a label, 32 bytes, for two bytes
/// `0a 00`; re-encoded samples, never longer than their input) and the
/// exemplars and histograms prost decodes one at a time take less. Callers
/// that must bound the reader's memory (the gateway) walk larger bodies
/// with `bounds::check` first. Checked by `integration/allocations.rs`.
pub const MAX_HEAP_PER_DECODED_BYTE: usize = 128;

const _: () =
    assert!(3 * std::mem::size_of::<FastSeries<'static>>() / 2 <= MAX_HEAP_PER_DECODED_BYTE);
const _: () = assert!(3 * std::mem::size_of::<(&str, &str)>() / 2 <= MAX_HEAP_PER_DECODED_BYTE);

/// A request read by [`parse`]: borrowed labels and non-label bytes in
/// prost's encoding.
#[derive(Debug)]
pub struct FastRequest<'a> {
    /// Labels of every series, series after series.
    pub labels: Vec<(&'a str, &'a str)>,
    /// The series, in request order.
    pub series: Vec<FastSeries<'a>>,
    /// The request's metadata, one entry per family: always empty from
    /// [`parse`] (it declines metadata), from [`parse_v2`] what `into_v1`
    /// makes of the series' metadata.
    pub metadata: Vec<MetricMetadata>,
    /// Re-encoded non-label fields of series not written in prost's form
    /// (for 2.0: of every series).
    arena: Vec<u8>,
}

/// One series of a [`FastRequest`].
#[derive(Debug, Clone)]
pub struct FastSeries<'a> {
    /// Its labels: a range of [`FastRequest::labels`].
    pub labels: Range<usize>,
    /// Where its non-label bytes are (see [`FastRequest::rest`]).
    rest: Rest<'a>,
    /// Every one of its labels as written on the wire, when they all came
    /// first in one run of the short form `wire::leading_labels` reads
    /// (as Prometheus and prost write them): `TimeSeries.labels` entries
    /// that decode to exactly [`Self::labels`], so that equal bytes mean
    /// equal labels (the router's relabel cache key, without a copy).
    pub label_run: Option<&'a [u8]>,
    /// Float samples.
    pub samples: usize,
    /// Native histogram samples.
    pub histograms: usize,
    /// Exemplars.
    pub exemplars: usize,
}

#[derive(Debug, Clone)]
enum Rest<'a> {
    /// Borrowed from the request: it was written as prost writes it.
    Raw(&'a [u8]),
    /// A range of the request's arena.
    Arena(Range<usize>),
}

impl FastRequest<'_> {
    /// The samples, exemplars and histograms of `series` (one of
    /// [`Self::series`]) exactly as prost encodes them: TimeSeries fields
    /// 2, 3 and 4, keys included, in that order.
    pub fn rest<'s>(&'s self, series: &'s FastSeries<'_>) -> &'s [u8] {
        match &series.rest {
            Rest::Raw(bytes) => bytes,
            Rest::Arena(range) => self.arena.get(range.clone()).unwrap_or_default(),
        }
    }

    /// The float samples of `series` as (value, timestamp), read from
    /// [`Self::rest`].
    pub fn samples<'s>(
        &'s self,
        series: &'s FastSeries<'_>,
    ) -> impl Iterator<Item = (f64, i64)> + 's {
        entries(self.rest(series))
            .filter(|(field, _, _)| *field == 2)
            .filter_map(|(_, _, body)| parse_sample(body).map(|(value, ts, _)| (value, ts)))
    }

    /// Appends the exemplars and histograms of `series` to `out`: its
    /// [`Self::rest`] without the samples.
    pub fn put_without_samples(&self, series: &FastSeries<'_>, out: &mut Vec<u8>) {
        for (field, entry, _) in entries(self.rest(series)) {
            if field != 2 {
                out.extend_from_slice(entry);
            }
        }
    }

    /// What [`super::validate_v1`] returns for this request.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            series: self.series.len(),
            metadata: self.metadata.len(),
            ..Stats::default()
        };
        for s in &self.series {
            stats.samples += s.samples;
            stats.histograms += s.histograms;
            stats.exemplars += s.exemplars;
        }
        stats
    }
}

thread_local! {
    /// Emptied label and series vectors of dropped requests, for the next
    /// request on this thread (see [`super::reuse`]).
    static SPARE: RefCell<Option<Spare>> = const { RefCell::new(None) };
}

/// The vectors of a dropped [`FastRequest`], empty, with `'static` in
/// place of the lifetime of the bytes they borrowed.
struct Spare {
    labels: Vec<(&'static str, &'static str)>,
    series: Vec<FastSeries<'static>>,
}

impl FastRequest<'_> {
    fn new() -> Self {
        let spare = SPARE.with(|s| s.borrow_mut().take());
        let (labels, series) =
            spare.map_or_else(Default::default, |s| (recycle(s.labels), recycle(s.series)));
        FastRequest {
            labels,
            series,
            metadata: Vec::new(),
            arena: take_bytes(),
        }
    }
}

impl Drop for FastRequest<'_> {
    fn drop(&mut self) {
        give_bytes(std::mem::take(&mut self.arena));
        let bytes = self.labels.capacity() * std::mem::size_of::<(&str, &str)>()
            + self.series.capacity() * std::mem::size_of::<FastSeries<'_>>();
        if bytes > MAX_KEPT_BYTES {
            return;
        }
        let spare = Spare {
            labels: recycle(std::mem::take(&mut self.labels)),
            series: recycle(std::mem::take(&mut self.series)),
        };
        SPARE.with(|s| *s.borrow_mut() = Some(spare));
    }
}

/// Reads a decompressed 1.0 `WriteRequest`, or returns `None` when prost or
/// `validate_v1` would refuse it, or it holds metadata (see the module
/// docs): the caller must then decode it with prost and validate it as
/// before.
pub fn parse<'a>(raw: &'a [u8], limits: &Limits) -> Option<FastRequest<'a>> {
    let mut req = FastRequest::new();
    // Scratch for checking exemplars and histograms, which are rare.
    let mut scratch = Vec::new();
    let mut r = Reader(raw);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, LEN) => {
                let body = r.len_delimited()?;
                let series = parse_series(body, &mut req.labels, &mut req.arena, &mut scratch)?;
                req.series.push(series);
            }
            // Metadata takes the prost path; a wrong wire type is an error there.
            (1 | 3, _) => return None,
            _ => r.skip(wire)?,
        }
    }
    valid(&req, limits).then_some(req)
}

/// What a series' non-label fields look like on the wire.
struct Layout {
    /// Every label comes before every other field, the other fields are
    /// samples, exemplars and histograms in that order, each as prost
    /// writes it, and nothing else is there.
    canonical: bool,
    /// Where the first non-label field starts, if `canonical`.
    rest_start: usize,
}

fn parse_series<'a>(
    body: &'a [u8],
    labels: &mut Vec<(&'a str, &'a str)>,
    arena: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Option<FastSeries<'a>> {
    let start = labels.len();
    let (mut samples, mut histograms, mut exemplars) = (0, 0, 0);
    let mut layout = Layout {
        canonical: true,
        rest_start: body.len(),
    };
    // The highest non-label field seen so far (0: none yet).
    let mut last_field = 0;
    // Labels as prost writes them are read in one go; the loop reads the
    // rest, in whatever form.
    let run_end = leading_labels(body, labels);
    let in_run = labels.len() - start;
    let mut r = Reader(&body[run_end..]);
    while !r.is_empty() {
        let at = body.len() - r.0.len();
        let key_start = r.0.len();
        let (field, wire) = r.key()?;
        let one_byte_key = key_start - r.0.len() == 1;
        if !(1..=4).contains(&field) {
            r.skip(wire)?;
            layout.canonical = false;
            continue;
        }
        if wire != LEN {
            // prost: "invalid wire type" for a known field.
            return None;
        }
        let len_start = r.0.len();
        let len = r.varint()?;
        let minimal_len = len_start - r.0.len() == prost::encoding::encoded_len_varint(len);
        let msg = r.take(usize::try_from(len).ok()?)?;
        if field == 1 {
            labels.push(parse_label(msg)?);
            if last_field != 0 {
                layout.canonical = false;
            }
            continue;
        }
        if last_field == 0 {
            layout.rest_start = at;
        }
        if field < last_field || !one_byte_key || !minimal_len {
            layout.canonical = false;
        }
        last_field = last_field.max(field);
        match field {
            2 => {
                let (_, _, canonical) = parse_sample(msg)?;
                layout.canonical &= canonical;
                samples += 1;
            }
            3 => {
                let (_, canonical) = decode_checked::<Exemplar>(msg, scratch)?;
                layout.canonical &= canonical;
                exemplars += 1;
            }
            _ => {
                let (h, canonical) = decode_checked::<Histogram>(msg, scratch)?;
                // Counts that do not add up and invalid float histograms
                // fall back, so prost's path reports them.
                if histogram_count_mismatch(&h).is_some() || float_histogram_problem(&h).is_some() {
                    return None;
                }
                layout.canonical &= canonical;
                histograms += 1;
            }
        }
    }
    let rest = if layout.canonical {
        Rest::Raw(&body[layout.rest_start..])
    } else {
        let from = arena.len();
        reencode(body, arena)?;
        Rest::Arena(from..arena.len())
    };
    Some(FastSeries {
        label_run: (labels.len() - start == in_run).then(|| &body[..run_end]),
        labels: start..labels.len(),
        rest,
        samples,
        histograms,
        exemplars,
    })
}

/// Writes the samples, exemplars and histograms of a series (already read
/// once by [`parse_series`]) into `out` as prost encodes them.
fn reencode(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    for wanted in 2..=4 {
        let mut r = Reader(body);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            if field != wanted {
                r.skip(wire)?;
                continue;
            }
            let msg = r.len_delimited()?;
            match field {
                2 => {
                    let (value, timestamp, _) = parse_sample(msg)?;
                    put_sample(out, value, timestamp);
                }
                3 => prost::encoding::message::encode(3, &Exemplar::decode(msg).ok()?, out),
                _ => prost::encoding::message::encode(4, &Histogram::decode(msg).ok()?, out),
            }
        }
    }
    Some(())
}

/// The fields of a series' rest (length-delimited, as prost writes fields
/// 2 to 4): (field, the whole entry with its key, its body).
fn entries(rest: &[u8]) -> impl Iterator<Item = (u64, &[u8], &[u8])> {
    let mut r = Reader(rest);
    std::iter::from_fn(move || {
        let before = r.0;
        let (field, _) = r.key()?;
        let body = r.len_delimited()?;
        Some((field, &before[..before.len() - r.0.len()], body))
    })
}

/// The checks of [`super::validate_v1`], without building errors: an
/// invalid request falls back to the prost path, which reports it.
fn valid(req: &FastRequest<'_>, limits: &Limits) -> bool {
    req.series.len() <= limits.max_series_per_request
        && req.series.iter().all(|s| {
            let labels = &req.labels[s.labels.clone()];
            !labels.is_empty()
                && labels.len() <= limits.max_labels_per_series
                && labels.iter().all(|(name, value)| {
                    name.len() <= limits.max_label_name_len
                        && limits.name_validation.is_valid(name)
                        && value.len() <= limits.max_label_value_len
                })
                && labels.iter().any(|(name, value)| *name == METRIC_NAME && !value.is_empty())
                // Strictly ascending bytes: sorted and unique.
                && labels.windows(2).all(|w| super::cmp_names(w[0].0, w[1].0).is_lt())
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
pub(crate) mod tests;
