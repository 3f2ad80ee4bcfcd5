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
mod decode;
pub mod entry;
mod error;
pub mod fast;
pub mod proto;
pub mod reuse;
pub mod scan;
pub mod validate;

pub use codec::{claimed_size, compress, decompress, decompress_into, sniff, Encoding};
pub use decode::{check_bounded, decode_bounded, decode_request, Checked, Decoded, Reader};
pub use error::{DecodeError, EncodeError, RequestError, ValidationError};
pub use proto::v1::{Label, TimeSeries, WriteRequest};
pub use reuse::decompress_reusing;
pub use validate::{is_valid_label_name, validate_v1, Limits, NameValidation, Stats};

/// Orders label names by their bytes, as Prometheus sorts them. Names
/// mostly differ in their first byte, which is compared inline: the full
/// comparison is a call into `memcmp`, and sorting and searching labels
/// runs for every series.
#[inline]
pub fn cmp_names(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Rendered label sets in error messages stop after about this many bytes.
const MAX_RENDERED_LABELS: usize = 200;

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
