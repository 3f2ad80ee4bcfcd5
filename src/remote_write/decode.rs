//! Decoding a received body: [`decode_request`] (trusted), and for
//! untrusted bodies [`decode_bounded`] (build the request) and
//! [`check_bounded`] (check it without building, fast reader first).
//!
//! May depend on: the sibling `codec`, `reuse`, `bounds`, `fast`, `proto`,
//! `validate` and `error` modules, and `crate::metrics` for the read counter.

use prost::Message;

use super::{
    bounds, decompress, decompress_reusing, fast, proto, validate_v1, DecodeError, Encoding,
    Limits, Protocol, RequestError, Stats, WriteRequest,
};
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
/// decoded size and the [`Stats`] of a valid body. The heap budget
/// `max_heap` holds as in [`decode_bounded`]: [`bounds::check`] walks the
/// body first unless it is a 1.0 body of at most `max_heap /`
/// [`fast::MAX_HEAP_PER_DECODED_BYTE`] bytes (every ordinary Prometheus
/// payload), which the zero-copy reader cannot make take more. Requests are read by
/// [`fast::parse`] (1.0) or [`fast::parse_v2`] (2.0), which borrow labels
/// from the decompressed bytes; 1.0 metadata and every request they
/// decline (invalid ones included) take prost's path, so each error is the one
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
    // A 1.0 body small enough that the zero-copy reader cannot hold more
    // than `max_heap` whatever it contains is read without walking it
    // first; prost's path below walks it (and reports the error) if the
    // reader declines it.
    let walk_first = protocol == Protocol::V2
        || raw.len().saturating_mul(fast::MAX_HEAP_PER_DECODED_BYTE) > max_heap;
    if walk_first {
        bounds::check(&raw, protocol, limits, max_heap)?;
    }
    let fast = match protocol {
        Protocol::V1 => fast::parse(&raw, limits),
        Protocol::V2 => fast::parse_v2(&raw, limits),
    };
    if let Some(request) = fast {
        return Ok(Checked {
            decoded_len: raw.len(),
            stats: request.stats(),
            reader: Reader::Fast,
        });
    }
    if !walk_first {
        bounds::check(&raw, protocol, limits, max_heap)?;
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

/// Which reader read a request: the zero-copy reader (`fast.rs`), or
/// prost (1.0 metadata, and every body the fast reader declines).
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
