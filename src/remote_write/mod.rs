//! Prometheus remote write: wire messages, body encodings, protocol
//! detection and validation, shared by every role that receives or emits
//! remote-write data.
//!
//! Pipeline for a received body: [`Encoding::parse`] the `Content-Encoding`
//! (or [`sniff`] it), [`Protocol::from_content_type`] the `Content-Type`,
//! then [`decode_request`] (decompress + protobuf decode + 2.0 → 1.0
//! conversion) and [`validate_v1`].
//!
//! Invariants:
//! - Decoding never allocates more than `max_decoded` bytes for the body,
//!   whatever sizes the body claims (see [`codec`]).
//! - Malformed input is an error, never a panic; every error has a short,
//!   bounded `reason()` suitable as a metrics label, and messages quote at
//!   most a few hundred bytes of client data.
//! - Downstream code only sees 1.0 [`WriteRequest`]s; a request that passed
//!   [`validate_v1`] has, per series, a non-empty `__name__` and label names
//!   that are valid under [`Limits::name_validation`] and strictly ascending
//!   (sorted and unique), integer histograms whose counts add up, and float
//!   histograms that Prometheus' `FloatHistogram.Validate` accepts.

pub mod bounds;
pub mod codec;
pub mod fast;
pub mod proto;
pub mod reuse;
pub mod validate;

use prost::Message;
use thiserror::Error;

pub use codec::{claimed_size, compress, decompress, decompress_into, sniff, Encoding};
pub use proto::v1::{Label, TimeSeries, WriteRequest};
pub use reuse::decompress_reusing;
pub use validate::{is_valid_label_name, validate_v1, Limits, NameValidation, Stats};

/// Rendered label sets in error messages stop after about this many bytes.
const MAX_RENDERED_LABELS: usize = 200;

/// Problems turning a request body into a [`WriteRequest`].
#[derive(Debug, Error)]
pub enum DecodeError {
    /// `Content-Encoding` is not one we support.
    #[error("unsupported content encoding {0:?} (want snappy, zstd or identity)")]
    UnknownEncoding(String),
    /// `Content-Type` is not a remote-write protobuf type.
    #[error("unsupported content type {0:?} (want application/x-protobuf with proto=prometheus.WriteRequest or io.prometheus.write.v2.Request)")]
    UnsupportedContentType(String),
    /// An uncompressed body over the limit.
    #[error("body of {size} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// Body size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A compressed body whose decoded size exceeds the limit (as claimed by
    /// its header, or as found while decoding).
    #[error("decoded body of {size} bytes or more exceeds the limit of {max} bytes")]
    DecodedTooLarge {
        /// Claimed size, or the bytes produced when decoding stopped.
        size: u64,
        /// Limit.
        max: usize,
    },
    /// Corrupt snappy block.
    #[error("invalid snappy body: {0}")]
    BadSnappy(#[source] snap::Error),
    /// Corrupt zstd frame, or one needing too large a window.
    #[error("invalid zstd body: {0}")]
    BadZstd(#[source] std::io::Error),
    /// The decoded bytes are not the expected protobuf message.
    #[error("invalid protobuf: {0}")]
    BadProtobuf(#[source] prost::DecodeError),
    /// A 2.0 symbol table whose first entry is not the empty string.
    #[error("remote write 2.0 symbols table must start with the empty string")]
    BadSymbolTable,
    /// A 2.0 reference past the end of the symbol table.
    #[error(
        "series {series}: symbol reference {reference} out of range (table has {symbols} entries)"
    )]
    BadSymbolRef {
        /// Index of the series holding the reference.
        series: usize,
        /// The bad reference.
        reference: u32,
        /// Size of the symbol table.
        symbols: usize,
    },
    /// Decoding would build more than the heap budget allows (see
    /// [`bounds`]); checked before prost allocates anything.
    #[error("the decoded request would take more than {max} bytes of memory")]
    DecodeMemory {
        /// The budget.
        max: usize,
    },
    /// A 2.0 label reference list that is not name/value pairs.
    #[error("series {series}: odd number ({len}) of label references")]
    OddLabelRefs {
        /// Index of the series.
        series: usize,
        /// Number of references.
        len: usize,
    },
}

impl DecodeError {
    /// Short snake_case cause for metrics labels (bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::UnknownEncoding(_) => "unknown_encoding",
            DecodeError::UnsupportedContentType(_) => "unsupported_content_type",
            DecodeError::BodyTooLarge { .. } => "body_too_large",
            DecodeError::DecodedTooLarge { .. } => "decoded_too_large",
            DecodeError::BadSnappy(_) => "bad_snappy",
            DecodeError::BadZstd(_) => "bad_zstd",
            DecodeError::BadProtobuf(_) => "bad_protobuf",
            DecodeError::BadSymbolTable => "bad_symbol_table",
            DecodeError::BadSymbolRef { .. } => "bad_symbol_ref",
            DecodeError::OddLabelRefs { .. } => "odd_label_refs",
            DecodeError::DecodeMemory { .. } => "decode_memory",
        }
    }
}

/// Problems compressing a body (only possible for absurd input sizes).
#[derive(Debug, Error)]
pub enum EncodeError {
    /// Snappy refused the input (over 4 GiB).
    #[error("snappy compression failed: {0}")]
    Snappy(#[source] snap::Error),
    /// zstd failed.
    #[error("zstd compression failed: {0}")]
    Zstd(#[source] std::io::Error),
}

impl EncodeError {
    /// Short snake_case cause for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            EncodeError::Snappy(_) => "encode_snappy",
            EncodeError::Zstd(_) => "encode_zstd",
        }
    }
}

/// A request that decoded fine but breaks the spec or the [`Limits`].
/// `labels` fields hold the series rendered by [`render_labels`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    /// More series than `max_series_per_request`.
    #[error("{count} series exceed the limit of {max} per request")]
    TooManySeries {
        /// Series in the request.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A series without labels.
    #[error("series {series} has no labels")]
    NoLabels {
        /// Series index.
        series: usize,
    },
    /// More labels than `max_labels_per_series`.
    #[error("series {series} {labels}: {count} labels exceed the limit of {max}")]
    TooManyLabels {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// Labels on the series.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A label name longer than `max_label_name_len`.
    #[error("series {series} {labels}: label name {name:?} is {len} bytes, limit is {max}")]
    LabelNameTooLong {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// The name (truncated).
        name: String,
        /// Its length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A label name invalid under [`Limits::name_validation`]: empty, or
    /// not matching `^[a-zA-Z_][a-zA-Z0-9_]*$` in legacy mode.
    #[error("series {series} {labels}: invalid label name {name:?}")]
    InvalidLabelName {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// The name (truncated).
        name: String,
    },
    /// A series without a `__name__` label, or with an empty one (both
    /// remote-write specs require the metric name).
    #[error("series {series} {labels}: no metric name (__name__ missing or empty)")]
    MissingMetricName {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
    },
    /// An integer native histogram whose count is not its zero bucket count
    /// plus its bucket counts.
    #[error("series {series} {labels}: histogram {histogram} has count {count} but its zero bucket and buckets hold {buckets}")]
    HistogramCountMismatch {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// Index of the histogram in the series.
        histogram: usize,
        /// The histogram's count.
        count: u64,
        /// Observations in its zero bucket and buckets.
        buckets: i128,
    },
    /// A float native histogram that Prometheus' `FloatHistogram.Validate`
    /// refuses (negative counts, spans that do not match the buckets, bad
    /// custom bounds, an unknown schema).
    #[error("series {series} {labels}: float histogram {histogram} is invalid: {problem}")]
    InvalidFloatHistogram {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// Index of the histogram in the series.
        histogram: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A label value longer than `max_label_value_len`.
    #[error("series {series} {labels}: value of label {name:?} is {len} bytes, limit is {max}")]
    LabelValueTooLong {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// The label's name.
        name: String,
        /// Value length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The same label name twice on one series.
    #[error("series {series} {labels}: duplicate label {name:?}")]
    DuplicateLabel {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// The repeated name.
        name: String,
    },
    /// Label names not in ascending byte order.
    #[error("series {series} {labels}: labels not sorted, {name:?} comes after {previous:?}")]
    UnsortedLabels {
        /// Series index.
        series: usize,
        /// Rendered labels.
        labels: String,
        /// The out-of-order name.
        name: String,
        /// The name before it.
        previous: String,
    },
}

impl ValidationError {
    /// Short snake_case cause for metrics labels (bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            ValidationError::TooManySeries { .. } => "too_many_series",
            ValidationError::NoLabels { .. } => "no_labels",
            ValidationError::TooManyLabels { .. } => "too_many_labels",
            ValidationError::LabelNameTooLong { .. } => "label_name_too_long",
            ValidationError::InvalidLabelName { .. } => "invalid_label_name",
            ValidationError::LabelValueTooLong { .. } => "label_value_too_long",
            ValidationError::DuplicateLabel { .. } => "duplicate_label",
            ValidationError::UnsortedLabels { .. } => "unsorted_labels",
            ValidationError::MissingMetricName { .. } => "missing_metric_name",
            ValidationError::HistogramCountMismatch { .. } => "histogram_count_mismatch",
            ValidationError::InvalidFloatHistogram { .. } => "invalid_float_histogram",
        }
    }
}

/// Remote-write protocol version of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// 1.0, `prometheus.WriteRequest`.
    V1,
    /// 2.0, `io.prometheus.write.v2.Request`.
    V2,
}

impl Protocol {
    /// Detects the protocol from a `Content-Type` header value.
    ///
    /// Missing, empty or bare `application/x-protobuf` means 1.0, as the 2.0
    /// spec prescribes; the `proto` parameter selects the message. Other
    /// parameters are ignored; media type and parameter names are
    /// case-insensitive, the message name is not.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Protocol::V1);
        };
        let unsupported = || DecodeError::UnsupportedContentType(codec::truncate(value, 128));
        let mut parts = value.split(';');
        let media = parts.next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(unsupported());
        }
        let mut protocol = Protocol::V1;
        for param in parts {
            let Some((key, val)) = param.split_once('=') else {
                continue;
            };
            if !key.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            protocol = match val.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Protocol::V1,
                "io.prometheus.write.v2.Request" => Protocol::V2,
                _ => return Err(unsupported()),
            };
        }
        Ok(protocol)
    }

    /// The canonical `Content-Type` for this protocol.
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::V1 => "application/x-protobuf;proto=prometheus.WriteRequest",
            Protocol::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }

    /// Short name for logs and metrics labels: `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
        }
    }
}

/// Result of [`decode_request`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The request as 1.0 (converted when it arrived as 2.0).
    pub request: WriteRequest,
    /// The decompressed protobuf bytes, in the protocol they arrived in.
    pub raw: Vec<u8>,
    /// The protocol the body was decoded as.
    pub protocol: Protocol,
}

/// Decompresses (bounded by `max_decoded`) and decodes a request body,
/// converting 2.0 to 1.0. Does not validate: call [`validate_v1`] next.
pub fn decode_request(
    body: &[u8],
    encoding: Encoding,
    protocol: Protocol,
    max_decoded: usize,
) -> Result<Decoded, DecodeError> {
    let raw = decompress(body, encoding, max_decoded)?;
    let request = match protocol {
        Protocol::V1 => WriteRequest::decode(raw.as_slice()).map_err(DecodeError::BadProtobuf)?,
        Protocol::V2 => proto::v2::Request::decode(raw.as_slice())
            .map_err(DecodeError::BadProtobuf)?
            .into_v1()?,
    };
    Ok(Decoded {
        request,
        raw,
        protocol,
    })
}

/// Why [`decode_bounded`] refused a body.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The body cannot be decoded, or is too large to.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The request breaks the spec or the [`Limits`].
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl RequestError {
    /// Short snake_case cause for metrics labels (bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Decode(e) => e.reason(),
            RequestError::Invalid(e) => e.reason(),
        }
    }
}

impl From<bounds::Refusal> for RequestError {
    fn from(r: bounds::Refusal) -> Self {
        match r {
            bounds::Refusal::Decode(e) => RequestError::Decode(e),
            bounds::Refusal::Invalid(e) => RequestError::Invalid(e),
        }
    }
}

/// [`decode_request`] then [`validate_v1`], for untrusted bodies: between
/// decompressing and decoding, [`bounds::check`] applies the series and
/// label limits and the heap budget `max_heap` while walking the bytes, so
/// prost never builds a request that breaks them. CPU-bound: call it off
/// the async threads.
pub fn decode_bounded(
    body: &[u8],
    encoding: Encoding,
    protocol: Protocol,
    max_decoded: usize,
    limits: &Limits,
    max_heap: usize,
) -> Result<(Decoded, Stats), RequestError> {
    let raw = decompress(body, encoding, max_decoded)?;
    bounds::check(&raw, protocol, limits, max_heap)?;
    let request = match protocol {
        Protocol::V1 => WriteRequest::decode(raw.as_slice()).map_err(DecodeError::BadProtobuf)?,
        Protocol::V2 => proto::v2::Request::decode(raw.as_slice())
            .map_err(DecodeError::BadProtobuf)?
            .into_v1()?,
    };
    let stats = validate_v1(&request, limits)?;
    Ok((
        Decoded {
            request,
            raw,
            protocol,
        },
        stats,
    ))
}

/// What [`decode_bounded`] checks, without building the request: the
/// decoded size and the [`Stats`] of a valid body. Requests of 1.0 are read
/// by [`fast::parse`], which borrows labels from the decompressed bytes;
/// 2.0, metadata and every request `fast::parse` declines (invalid ones
/// included) take prost's path, so each error is the one
/// [`decode_bounded`] reports. CPU-bound: call it off the async threads.
pub fn check_bounded(
    body: &[u8],
    encoding: Encoding,
    protocol: Protocol,
    max_decoded: usize,
    limits: &Limits,
    max_heap: usize,
) -> Result<Checked, RequestError> {
    let raw = decompress_reusing(body, encoding, max_decoded)?;
    bounds::check(&raw, protocol, limits, max_heap)?;
    if protocol == Protocol::V1 {
        if let Some(request) = fast::parse(&raw, limits) {
            return Ok(Checked {
                decoded_len: raw.len(),
                stats: request.stats(),
                reader: Reader::Fast,
            });
        }
    }
    let request = match protocol {
        Protocol::V1 => WriteRequest::decode(&*raw).map_err(DecodeError::BadProtobuf)?,
        Protocol::V2 => proto::v2::Request::decode(&*raw)
            .map_err(DecodeError::BadProtobuf)?
            .into_v1()?,
    };
    Ok(Checked {
        decoded_len: raw.len(),
        stats: validate_v1(&request, limits)?,
        reader: Reader::Prost,
    })
}

/// What [`check_bounded`] found in a valid body.
#[derive(Debug)]
pub struct Checked {
    /// Bytes after decompression.
    pub decoded_len: usize,
    pub stats: Stats,
    /// Which reader took it.
    pub reader: Reader,
}

/// Which reader read a request: the zero-copy 1.0 reader (`fast.rs`), or
/// prost (2.0, metadata, and every body the fast reader declines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Fast,
    Prost,
}

impl Reader {
    /// Counts one request read by `role` (`streamroute_remote_write_requests_read_total`).
    pub fn count(self, role: &'static str) {
        let reader = match self {
            Reader::Fast => "fast",
            Reader::Prost => "prost",
        };
        metrics::counter!(crate::metrics::REQUESTS_READ, "role" => role, "reader" => reader)
            .increment(1);
    }
}

/// Renders labels like `{__name__="up", job="api"}` for messages, escaping
/// `\`, `"` and newlines, and cut to about 200 bytes (ending in `...`).
/// Work and memory stay bounded however long the labels are.
pub fn render_labels(labels: &[Label]) -> String {
    let mut out = String::with_capacity(64);
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        let parts = [
            (sep, false),
            (label.name.as_str(), true),
            ("=\"", false),
            (label.value.as_str(), true),
            ("\"", false),
        ];
        if !parts
            .iter()
            .all(|(s, escape)| push_bounded(&mut out, s, *escape))
        {
            out.push_str("...");
            return out;
        }
    }
    out.push('}');
    out
}

/// Appends `s` to `out` while `out` is under [`MAX_RENDERED_LABELS`];
/// returns false once it is full.
fn push_bounded(out: &mut String, s: &str, escape: bool) -> bool {
    for c in s.chars() {
        if out.len() >= MAX_RENDERED_LABELS {
            return false;
        }
        match c {
            '\\' if escape => out.push_str("\\\\"),
            '"' if escape => out.push_str("\\\""),
            '\n' if escape => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests;

#[cfg(test)]
mod proptests;
