//! The task-record writer: series written as `WriteRequest.timeseries`
//! entries (field 1), byte for byte as prost writes them, so that a
//! concatenation of entries is itself a valid `WriteRequest`. The router
//! writes every task record with it, from a prost-decoded series
//! ([`put_series`]) or from borrowed labels and the already encoded rest of
//! a series read by [`super::fast`] ([`put_entry`]); the egress scanner
//! ([`super::scan`]) reads them back.
//!
//! Labels, most of every entry, are encoded by hand: prost's generic path
//! computes each label's length twice and writes varints one `BufMut` call
//! per byte. Samples, exemplars and histograms still go through prost.
//!
//! May depend on: prost and [`super::proto`] only.

use super::proto::v1::TimeSeries;

// Protobuf keys (field number << 3 | wire type 2, length-delimited).
/// `WriteRequest.timeseries`, `TimeSeries.labels` and `Label.name`: field 1.
const KEY_FIELD_1: u8 = 1 << 3 | 2;
/// `Label.value`: field 2.
const KEY_FIELD_2: u8 = 2 << 3 | 2;

/// Appends `series` as one entry: what
/// `prost::encoding::message::encode(1, series, buf)` writes.
pub fn put_series(series: &TimeSeries, buf: &mut Vec<u8>) {
    let len = series_len(series);
    buf.reserve(1 + 10 + len);
    buf.push(KEY_FIELD_1);
    put_varint(buf, len);
    put_labels(series.labels.iter().map(|l| (&*l.name, &*l.value)), buf);
    put_rest(series, buf);
}

/// Appends `series`' fields other than its labels (samples, exemplars,
/// histograms), as prost encodes them.
pub fn put_rest(series: &TimeSeries, buf: &mut Vec<u8>) {
    prost::encoding::message::encode_repeated(2, &series.samples, buf);
    prost::encoding::message::encode_repeated(3, &series.exemplars, buf);
    prost::encoding::message::encode_repeated(4, &series.histograms, buf);
}

/// Encoded size of [`put_series`]'s entry (for batch limits).
pub fn series_entry_len(series: &TimeSeries) -> usize {
    entry_len_of(series_len(series))
}

/// Appends one entry of `labels` (as `TimeSeries.labels`) followed by
/// `rest`, the series' other fields already encoded as prost encodes them.
pub fn put_entry<'l>(
    labels: impl Iterator<Item = (&'l str, &'l str)> + Clone,
    rest: &[u8],
    buf: &mut Vec<u8>,
) {
    let len = labels_len(labels.clone()) + rest.len();
    buf.reserve(1 + 10 + len);
    buf.push(KEY_FIELD_1);
    put_varint(buf, len);
    put_labels(labels, buf);
    buf.extend_from_slice(rest);
}

/// [`put_entry`] of labels already encoded by [`put_labels`].
pub fn put_entry_encoded(labels: &[u8], rest: &[u8], buf: &mut Vec<u8>) {
    let len = labels.len() + rest.len();
    buf.reserve(1 + 10 + len);
    buf.push(KEY_FIELD_1);
    put_varint(buf, len);
    buf.extend_from_slice(labels);
    buf.extend_from_slice(rest);
}

/// Encoded size of an entry whose `TimeSeries` body (encoded labels and
/// the rest) is `len` bytes.
pub fn encoded_entry_len(len: usize) -> usize {
    entry_len_of(len)
}

/// Encoded size of [`put_entry`]'s entry.
pub fn entry_len<'l>(labels: impl Iterator<Item = (&'l str, &'l str)>, rest_len: usize) -> usize {
    entry_len_of(labels_len(labels) + rest_len)
}

/// `labels` as `TimeSeries.labels` entries, on their own.
pub fn labels<'l>(labels: impl Iterator<Item = (&'l str, &'l str)> + Clone) -> Vec<u8> {
    let mut buf = Vec::with_capacity(labels_len(labels.clone()));
    put_labels(labels, &mut buf);
    buf
}

/// Size of an entry whose `TimeSeries` body is `len` bytes.
fn entry_len_of(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Writes `labels` as `TimeSeries.labels` entries, as prost does.
pub fn put_labels<'l>(labels: impl Iterator<Item = (&'l str, &'l str)>, buf: &mut Vec<u8>) {
    for (name, value) in labels {
        buf.push(KEY_FIELD_1);
        put_varint(buf, label_len(name, value));
        // proto3 leaves empty strings out, as prost does.
        for (key, text) in [(KEY_FIELD_1, name), (KEY_FIELD_2, value)] {
            if !text.is_empty() {
                buf.push(key);
                put_varint(buf, text.len());
                buf.extend_from_slice(text.as_bytes());
            }
        }
    }
}

/// `series.encoded_len()`, with the labels summed by hand.
fn series_len(series: &TimeSeries) -> usize {
    labels_len(series.labels.iter().map(|l| (&*l.name, &*l.value)))
        + prost::encoding::message::encoded_len_repeated(2, &series.samples)
        + prost::encoding::message::encoded_len_repeated(3, &series.exemplars)
        + prost::encoding::message::encoded_len_repeated(4, &series.histograms)
}

/// Encoded size of `labels` as `TimeSeries.labels` entries.
fn labels_len<'l>(labels: impl Iterator<Item = (&'l str, &'l str)>) -> usize {
    labels
        .map(|(name, value)| entry_len_of(label_len(name, value)))
        .sum()
}

/// `Label { name, value }.encoded_len()`.
fn label_len(name: &str, value: &str) -> usize {
    let field = |text: &str| match text.len() {
        0 => 0,
        n => 1 + prost::encoding::encoded_len_varint(n as u64) + n,
    };
    field(name) + field(value)
}

/// Appends `value` as a protobuf varint.
fn put_varint(buf: &mut Vec<u8>, value: usize) {
    let mut value = value as u64;
    while value >= 0x80 {
        // Low 7 bits, with the continuation bit set.
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}
