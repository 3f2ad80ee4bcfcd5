//! Error types of remote-write handling: decoding a body, encoding one,
//! validating a request, and the union [`RequestError`] that
//! [`decode_bounded`](super::decode_bounded)(super::decode_bounded) reports. Each has a bounded
//! `reason()` for metrics labels.
//!
//! May depend on: `codec` (snappy/zstd error types), `bounds::Refusal`;
//! nothing outside `remote_write`.

use thiserror::Error;

use super::bounds;
/// Problems turning a request body into a [`WriteRequest`](super::WriteRequest).
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

/// A request that decoded fine but breaks the spec or the [`Limits`](super::Limits).
/// `labels` fields hold the series rendered by [`render_labels`](super::render_labels).
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
    /// A label name invalid under [`Limits::name_validation`](super::Limits::name_validation): empty, or
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

/// Why [`decode_bounded`](super::decode_bounded) refused a body.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The body cannot be decoded, or is too large to.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The request breaks the spec or the [`Limits`](super::Limits).
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
