//! Protobuf wire primitives of the zero-copy reader: the [`Reader`] cursor,
//! which fails (None) exactly where prost's decoding fails, the `Label`
//! and `Sample` readers, the canonical-encoding check, and writing a
//! `Sample` as prost does.
//!
//! May depend on: prost only.

use std::ops::Range;

use prost::Message;

/// Wire types.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const FIXED32: u8 = 5;

/// A `Sample` field (key included) as prost encodes it.
pub(super) fn put_sample(out: &mut Vec<u8>, value: f64, timestamp: i64) {
    // prost leaves 0.0 (and -0.0, which equals it) and 0 out.
    let value_len = if value != 0.0 { 9 } else { 0 };
    let ts_len = if timestamp != 0 {
        1 + prost::encoding::encoded_len_varint(timestamp as u64)
    } else {
        0
    };
    out.push(2 << 3 | LEN);
    out.push((value_len + ts_len) as u8);
    if value != 0.0 {
        out.push(1 << 3 | FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
    if timestamp != 0 {
        out.push(2 << 3 | VARINT);
        prost::encoding::encode_varint(timestamp as u64, out);
    }
}

/// A `Label` message, decoded as prost would: fields in any order, the last
/// of a repeated field wins, absent means empty, unknown fields skipped.
pub(super) fn parse_label(body: &[u8]) -> Option<(&str, &str)> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader(body);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        if !(1..=2).contains(&field) {
            r.skip(wire)?;
            continue;
        }
        if wire != LEN {
            return None;
        }
        // prost refuses strings that are not UTF-8; so do we (by falling back).
        let text = std::str::from_utf8(r.len_delimited()?).ok()?;
        if field == 1 {
            name = text;
        } else {
            value = text;
        }
    }
    Some((name, value))
}

/// The run of labels a series body starts with when written as prost
/// writes them, read with one UTF-8 check for the whole run instead of two
/// per label: pushes them to `labels` and returns where the run ends
/// (0 when the run is not valid UTF-8, for [`parse_label`] to judge label
/// by label).
///
/// A label of the run is a `TimeSeries.labels` entry `0x0a len` whose body
/// is `0x0a n name`, then `0x12 m value` unless the value is empty (an
/// empty label is `0x0a 0x00`), every length below 128. The run stops
/// before the first entry in any other form. Every byte around the strings
/// is then ASCII, so the run is valid UTF-8 exactly when each string is,
/// and each string starts and ends on a character boundary.
pub(super) fn leading_labels<'a>(body: &'a [u8], labels: &mut Vec<(&'a str, &'a str)>) -> usize {
    let mut end = 0;
    while let Some((_, _, next)) = short_label(body, end) {
        end = next;
    }
    let Ok(run) = std::str::from_utf8(&body[..end]) else {
        return 0;
    };
    let mut at = 0;
    while let Some((name, value, next)) = short_label(body, at) {
        if next > end {
            break;
        }
        // On boundaries by construction; `get` checks it anyway.
        labels.push((
            run.get(name).unwrap_or_default(),
            run.get(value).unwrap_or_default(),
        ));
        at = next;
    }
    end
}

/// The label entry of [`leading_labels`]' form at `at`: where its name and
/// value are and where the next entry starts.
fn short_label(body: &[u8], at: usize) -> Option<(Range<usize>, Range<usize>, usize)> {
    const ENTRY: u8 = 1 << 3 | LEN;
    const VALUE: u8 = 2 << 3 | LEN;
    let &[ENTRY, len, ref label @ ..] = body.get(at..)? else {
        return None;
    };
    let label = label.get(..usize::from(len)).filter(|_| len < 0x80)?;
    let start = at + 2;
    let next = start + label.len();
    match *label {
        [] => Some((start..start, start..start, next)),
        [ENTRY, name_len, ref rest @ ..] if name_len < 0x80 => {
            let name = start + 2..start + 2 + usize::from(name_len);
            match rest.get(usize::from(name_len)..)? {
                [] => Some((name, next..next, next)),
                [VALUE, value_len, value @ ..] if usize::from(*value_len) == value.len() => {
                    Some((name.clone(), name.end + 2..next, next))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A `Sample` decoded as prost would, and whether it is written exactly as
/// prost writes it: value (fixed64) unless 0.0, then timestamp (minimal
/// varint) unless 0, nothing else.
pub(super) fn parse_sample(body: &[u8]) -> Option<(f64, i64, bool)> {
    let (mut value, mut timestamp) = (0.0, 0i64);
    let mut r = Reader(body);
    // The fields seen, in order, for the canonical check.
    let mut canonical = true;
    let mut last = 0;
    while !r.is_empty() {
        let key_start = r.0.len();
        let (field, wire) = r.key()?;
        canonical &= key_start - r.0.len() == 1 && field > last;
        last = field;
        match (field, wire) {
            (1, FIXED64) => {
                let bytes: [u8; 8] = r.take(8)?.try_into().ok()?;
                value = f64::from_le_bytes(bytes);
                canonical &= value != 0.0;
            }
            (2, VARINT) => {
                let before = r.0.len();
                let v = r.varint()?;
                timestamp = v as i64;
                canonical &= v != 0 && before - r.0.len() == prost::encoding::encoded_len_varint(v);
            }
            // prost: "invalid wire type" for a known field.
            (1 | 2, _) => return None,
            _ => {
                r.skip(wire)?;
                canonical = false;
            }
        }
    }
    Some((value, timestamp, canonical))
}

/// `body` decoded as an `M`, and whether prost re-encodes it to the same
/// bytes.
pub(super) fn decode_checked<M: Message + Default>(
    body: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<(M, bool)> {
    let msg = M::decode(body).ok()?;
    scratch.clear();
    msg.encode(scratch).ok()?;
    let canonical = scratch.as_slice() == body;
    Some((msg, canonical))
}

/// A cursor over protobuf bytes; every read fails (None) where prost's
/// decoding fails, rather than panics.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    /// A varint of up to 10 bytes (prost's limit), not necessarily minimal.
    pub(super) fn varint(&mut self) -> Option<u64> {
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

    /// A key: (field number, wire type), refused where prost refuses it
    /// (above u32, wire type 6 or 7, field 0).
    pub(super) fn key(&mut self) -> Option<(u64, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) || key & 7 > 5 || key >> 3 == 0 {
            return None;
        }
        Some((key >> 3, (key & 7) as u8))
    }

    /// The body of a length-delimited field whose key was just read.
    pub(super) fn len_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    /// Skips an unknown field's value. Groups (3, 4) return None: prost
    /// skips them, the caller's prost path does it.
    pub(super) fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => None,
        }
    }
}
