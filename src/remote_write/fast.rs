//! A zero-copy reader for remote write 1.0 requests, for the router.
//!
//! prost decodes every label into two `String`s (and frees them again),
//! which is about half the router's work. The router only needs to read and
//! rewrite labels, so this reader borrows them from the decompressed buffer
//! and keeps each series' other fields (samples, exemplars, histograms) as
//! the raw bytes that follow its labels, to be copied into the output as is.
//!
//! Exactness: [`parse`] accepts only requests for which this is the same as
//! `WriteRequest::decode` followed by [`super::validate_v1`] succeeding and
//! prost re-encoding the series: well-formed, valid UTF-8, every series
//! written as all its labels, then its samples, exemplars and histograms in
//! that order, each sample, exemplar and histogram exactly as prost encodes
//! it, no metadata, and valid under the [`Limits`] and the other rules of
//! `validate_v1` (a non-empty `__name__`, histogram counts that add up).
//! Anything else returns `None` and the caller takes the prost path, which
//! then produces the very same result or error as before. Prometheus and the generator write this
//! canonical form, so the fallback is rare.

use std::ops::Range;

use prost::Message;

use super::proto::v1::{Exemplar, Histogram};
use super::validate::{histogram_count_mismatch, Limits, METRIC_NAME};

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// A request read by [`parse`]: borrowed labels and raw non-label bytes.
#[derive(Debug, Default)]
pub struct FastRequest<'a> {
    /// Labels of every series, series after series.
    pub labels: Vec<(&'a str, &'a str)>,
    /// The series, in request order.
    pub series: Vec<FastSeries<'a>>,
}

/// One series of a [`FastRequest`].
#[derive(Debug, Clone)]
pub struct FastSeries<'a> {
    /// Its labels: a range of [`FastRequest::labels`].
    pub labels: Range<usize>,
    /// Its samples, exemplars and histograms exactly as prost would encode
    /// them (TimeSeries fields 2, 3 and 4, keys included).
    pub rest: &'a [u8],
    /// Float samples in `rest`.
    pub samples: usize,
    /// Native histogram samples in `rest`.
    pub histograms: usize,
}

/// Reads a decompressed 1.0 `WriteRequest`, or returns `None` when the
/// request is outside what the fast path handles (see the module docs):
/// the caller must then decode it with prost and validate it as before.
pub fn parse<'a>(raw: &'a [u8], limits: &Limits) -> Option<FastRequest<'a>> {
    let mut req = FastRequest::default();
    // Scratch for checking exemplars and histograms, which are rare.
    let mut scratch = Vec::new();
    let mut r = Reader(raw);
    while !r.is_empty() {
        // Only timeseries (field 1); metadata and unknown fields fall back.
        let body = r.field(1, LEN)?;
        let series = parse_series(body, &mut req.labels, &mut scratch)?;
        req.series.push(series);
    }
    valid(&req, limits).then_some(req)
}

fn parse_series<'a>(
    body: &'a [u8],
    labels: &mut Vec<(&'a str, &'a str)>,
    scratch: &mut Vec<u8>,
) -> Option<FastSeries<'a>> {
    let start = labels.len();
    let mut r = Reader(body);
    // Labels come first; prost would put them first when re-encoding.
    while r.peek_key() == Some(1 << 3 | LEN) {
        let label = r.field(1, LEN)?;
        labels.push(parse_label(label)?);
    }
    let rest = r.0;
    let (mut samples, mut histograms) = (0, 0);
    // Fields in ascending order only, so `rest` is in prost's order.
    let mut last_field = 2;
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        if wire != LEN || field < last_field || field > 4 {
            return None;
        }
        last_field = field;
        // prost writes minimal length varints; check we copy only those.
        let before = r.0.len();
        let len = r.varint()?;
        if before - r.0.len() != prost::encoding::encoded_len_varint(len) {
            return None;
        }
        let msg = r.take(usize::try_from(len).ok()?)?;
        match field {
            2 => {
                canonical_sample(msg)?;
                samples += 1;
            }
            3 => {
                round_trips::<Exemplar>(msg, scratch)?;
            }
            _ => {
                // Counts that do not add up fall back, so prost's path
                // reports them.
                let h = round_trips::<Histogram>(msg, scratch)?;
                if histogram_count_mismatch(&h).is_some() {
                    return None;
                }
                histograms += 1;
            }
        }
    }
    Some(FastSeries {
        labels: start..labels.len(),
        rest,
        samples,
        histograms,
    })
}

/// A `Label` message, decoded as prost would: fields in any order, the last
/// of a repeated field wins, absent means empty. Unknown fields fall back.
fn parse_label(body: &[u8]) -> Option<(&str, &str)> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader(body);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        if wire != LEN {
            return None;
        }
        let len = usize::try_from(r.varint()?).ok()?;
        // prost refuses strings that are not UTF-8; so do we (by falling back).
        let text = std::str::from_utf8(r.take(len)?).ok()?;
        match field {
            1 => name = text,
            2 => value = text,
            _ => return None,
        }
    }
    Some((name, value))
}

/// A `Sample` exactly as prost encodes it: value (fixed64) unless 0.0, then
/// timestamp (minimal varint) unless 0.
fn canonical_sample(body: &[u8]) -> Option<()> {
    let mut r = Reader(body);
    if r.peek_key() == Some(1 << 3 | FIXED64) {
        r.take(1)?;
        let bytes: [u8; 8] = r.take(8)?.try_into().ok()?;
        // prost leaves 0.0 (and -0.0, which equals it) out.
        if f64::from_le_bytes(bytes) == 0.0 {
            return None;
        }
    }
    if r.peek_key() == Some(2 << 3 | VARINT) {
        r.take(1)?;
        let before = r.0.len();
        let ts = r.varint()?;
        if ts == 0 || before - r.0.len() != prost::encoding::encoded_len_varint(ts) {
            return None;
        }
    }
    r.is_empty().then_some(())
}

/// `body` decoded as an `M`, if prost decodes it and re-encodes it to the
/// same bytes.
fn round_trips<M: Message + Default>(body: &[u8], scratch: &mut Vec<u8>) -> Option<M> {
    let msg = M::decode(body).ok()?;
    scratch.clear();
    msg.encode(scratch).ok()?;
    (scratch.as_slice() == body).then_some(msg)
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
                && labels.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes())
        })
}

/// A cursor over protobuf bytes; every read fails (None) rather than panics.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next byte, if it is a one-byte key.
    fn peek_key(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    /// A varint of up to 10 bytes (prost's limit), not necessarily minimal.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.0.get(i)?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                // prost refuses a 10th byte above 1 (overflow).
                if i == 9 && byte > 1 {
                    return None;
                }
                self.0 = &self.0[i + 1..];
                return Some(value);
            }
        }
        None
    }

    /// A key: (field number, wire type).
    fn key(&mut self) -> Option<(u64, u8)> {
        let key = self.varint()?;
        Some((key >> 3, (key & 7) as u8))
    }

    /// The body of a length-delimited field `field`; None for any other key.
    fn field(&mut self, field: u64, wire: u8) -> Option<&'a [u8]> {
        if self.key()? != (field, wire) {
            return None;
        }
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }
}
