//! Body encodings of remote-write requests: snappy (block format, the 1.0
//! default), zstd, and identity (plain protobuf).
//!
//! Decompression is bounded by the caller's `max_decoded` *before* memory is
//! committed: the snappy header and the zstd frame header are checked first,
//! and zstd is additionally stream-decoded through a reader that never yields
//! more than `max_decoded + 1` bytes, so frames that do not declare their size
//! are bounded too.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use super::{DecodeError, EncodeError};

/// zstd frame magic number, little-endian on the wire.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// zstd level used by [`compress`]; 3 is zstd's own default, a good
/// speed/ratio trade-off for metric payloads.
const ZSTD_LEVEL: i32 = 3;

/// A `Content-Encoding` of a remote-write body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Snappy block format (`snap::raw`), not the framed format.
    Snappy,
    /// zstd frames.
    Zstd,
    /// No compression.
    Identity,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value, case-insensitively and
    /// ignoring surrounding whitespace. Unknown values are an error naming
    /// the value. A missing header is the caller's decision (see [`sniff`]).
    pub fn parse(value: &str) -> Result<Self, DecodeError> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("snappy") {
            Ok(Encoding::Snappy)
        } else if v.eq_ignore_ascii_case("zstd") {
            Ok(Encoding::Zstd)
        } else if v.eq_ignore_ascii_case("identity") {
            Ok(Encoding::Identity)
        } else {
            Err(DecodeError::UnknownEncoding(truncate(v, 64)))
        }
    }

    /// The canonical header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Snappy => "snappy",
            Encoding::Zstd => "zstd",
            Encoding::Identity => "identity",
        }
    }
}

impl FromStr for Encoding {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::parse(s)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decompresses `body`, refusing output larger than `max_decoded` bytes.
///
/// For identity the body itself must not exceed `max_decoded`
/// ([`DecodeError::BodyTooLarge`]). Memory use is bounded by `max_decoded`
/// plus small codec buffers whatever the body claims.
pub fn decompress(body: &[u8], enc: Encoding, max_decoded: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    decompress_into(body, enc, max_decoded, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out` (cleared first), reusing its allocation.
pub fn decompress_into(
    body: &[u8],
    enc: Encoding,
    max_decoded: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    out.clear();
    match enc {
        Encoding::Identity => {
            if body.len() > max_decoded {
                return Err(DecodeError::BodyTooLarge {
                    size: body.len(),
                    max: max_decoded,
                });
            }
            out.extend_from_slice(body);
            Ok(())
        }
        Encoding::Snappy => decompress_snappy(body, max_decoded, out),
        Encoding::Zstd => decompress_zstd(body, max_decoded, out),
    }
}

/// The decoded size `body` claims, read from its header without
/// decompressing: snappy's length preamble, a zstd frame's declared content
/// size (None when the frame does not declare it), or the body's own length.
/// A lie is caught by [`decompress`] given this size as its limit.
pub fn claimed_size(body: &[u8], enc: Encoding) -> Option<u64> {
    match enc {
        Encoding::Identity => Some(body.len() as u64),
        Encoding::Snappy => snap::raw::decompress_len(body).ok().map(|n| n as u64),
        Encoding::Zstd => zstd::zstd_safe::get_frame_content_size(body).ok().flatten(),
    }
}

fn decompress_snappy(
    body: &[u8],
    max_decoded: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let n = decompress_snappy_over(body, max_decoded, out)?;
    out.truncate(n);
    Ok(())
}

/// Decompresses a snappy `body` into the start of `out`, grown (never
/// shrunk) to the decoded length, and returns that length: the bytes of
/// `out` past it are left as they were, so a buffer reused at its length
/// is not zeroed again.
pub(crate) fn decompress_snappy_over(
    body: &[u8],
    max_decoded: usize,
    out: &mut Vec<u8>,
) -> Result<usize, DecodeError> {
    // The header holds the decoded length; check it before allocating that
    // many bytes.
    let claimed = match snap::raw::decompress_len(body) {
        Ok(n) => n as u64,
        // snap refuses claims over u32::MAX itself; still "too large".
        Err(snap::Error::TooBig { given, .. }) => given,
        Err(e) => return Err(DecodeError::BadSnappy(e)),
    };
    if claimed > max_decoded as u64 {
        return Err(DecodeError::DecodedTooLarge {
            size: claimed,
            max: max_decoded,
        });
    }
    // Checked above: at most max_decoded bytes.
    let claimed = claimed as usize;
    if out.len() < claimed {
        out.resize(claimed, 0);
    }
    let into = out.get_mut(..claimed).unwrap_or_default();
    snap::raw::Decoder::new()
        .decompress(body, into)
        .map_err(DecodeError::BadSnappy)
}

fn decompress_zstd(body: &[u8], max_decoded: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    // A declared content size lets us refuse early and size the buffer
    // exactly; its absence is fine, the bounded read below still applies.
    let declared = zstd::zstd_safe::get_frame_content_size(body).map_err(|_| {
        DecodeError::BadZstd(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid zstd frame header",
        ))
    })?;
    if let Some(size) = declared {
        if size > max_decoded as u64 {
            return Err(DecodeError::DecodedTooLarge {
                size,
                max: max_decoded,
            });
        }
    }

    let mut decoder = zstd::stream::read::Decoder::new(body).map_err(DecodeError::BadZstd)?;
    // Cap the window the decoder allocates up front: a hostile header could
    // otherwise make every concurrent request reserve 128 MiB.
    decoder
        .window_log_max(window_log_for(max_decoded))
        .map_err(DecodeError::BadZstd)?;

    // The declared size is only a hint for capacity (already bounded above).
    out.reserve(declared.map_or(0, |s| s as usize));
    let limit = max_decoded as u64 + 1;
    decoder
        .take(limit)
        .read_to_end(out)
        .map_err(DecodeError::BadZstd)?;
    if out.len() > max_decoded {
        return Err(DecodeError::DecodedTooLarge {
            size: out.len() as u64,
            max: max_decoded,
        });
    }
    Ok(())
}

/// Window log cap for a given output limit: enough to cover `max` bytes,
/// but never below 23 (8 MiB), the largest window zstd's standard levels
/// 1–19 pick for streams of unknown size, so ordinary senders are never
/// refused; and never above 27, the decoder's default limit.
fn window_log_for(max: usize) -> u32 {
    let bits = usize::BITS - max.saturating_sub(1).leading_zeros();
    bits.clamp(23, 27)
}

/// Guesses the encoding of a body sent without (or with a wrong)
/// `Content-Encoding`: zstd by its magic number, snappy when the whole body
/// is a well-formed snappy block, identity otherwise.
///
/// The snappy check walks the block structure without allocating, so a
/// body claiming a huge decoded size costs nothing. It is a heuristic: a
/// tiny protobuf message could in principle also be valid snappy.
pub fn sniff(body: &[u8]) -> Encoding {
    if body.starts_with(&ZSTD_MAGIC) {
        Encoding::Zstd
    } else if snappy_well_formed(body) {
        Encoding::Snappy
    } else {
        Encoding::Identity
    }
}

/// Compresses `raw` with `enc` (snappy block format, zstd level 3, or a copy).
pub fn compress(raw: &[u8], enc: Encoding) -> Result<Vec<u8>, EncodeError> {
    match enc {
        Encoding::Snappy => snap::raw::Encoder::new()
            .compress_vec(raw)
            .map_err(EncodeError::Snappy),
        Encoding::Zstd => zstd::bulk::compress(raw, ZSTD_LEVEL).map_err(EncodeError::Zstd),
        Encoding::Identity => Ok(raw.to_vec()),
    }
}

/// Validates a snappy block without producing output: every element must be
/// complete, copies must point into already-produced bytes, and the total
/// must equal the length in the header.
fn snappy_well_formed(body: &[u8]) -> bool {
    let Ok(claimed) = snap::raw::decompress_len(body) else {
        return false;
    };
    if body.is_empty() {
        return false;
    }
    // Skip the varint header (at most 5 bytes for a u32).
    let Some(header_len) = body.iter().position(|b| b & 0x80 == 0).map(|p| p + 1) else {
        return false;
    };
    let mut pos = header_len;
    let mut produced: usize = 0;
    while pos < body.len() {
        let tag = body[pos];
        pos += 1;
        let (len, offset) = match tag & 0x03 {
            0 => {
                // Literal: length in the tag, or in 1–4 following bytes.
                let small = (tag >> 2) as usize;
                let len = if small < 60 {
                    small + 1
                } else {
                    let n = small - 59;
                    let Some(bytes) = body.get(pos..pos + n) else {
                        return false;
                    };
                    pos += n;
                    let v = bytes
                        .iter()
                        .rev()
                        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                    v + 1
                };
                if body.len() - pos < len {
                    return false;
                }
                pos += len;
                (len, None)
            }
            1 => {
                let Some(&b) = body.get(pos) else {
                    return false;
                };
                pos += 1;
                let len = 4 + ((tag >> 2) & 0x07) as usize;
                let offset = (((tag >> 5) as usize) << 8) | b as usize;
                (len, Some(offset))
            }
            2 => {
                let Some(b) = body.get(pos..pos + 2) else {
                    return false;
                };
                pos += 2;
                let offset = u16::from_le_bytes([b[0], b[1]]) as usize;
                ((tag >> 2) as usize + 1, Some(offset))
            }
            _ => {
                let Some(b) = body.get(pos..pos + 4) else {
                    return false;
                };
                pos += 4;
                let offset = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                ((tag >> 2) as usize + 1, Some(offset))
            }
        };
        if let Some(offset) = offset {
            if offset == 0 || offset > produced {
                return false;
            }
        }
        produced += len;
        if produced > claimed {
            return false;
        }
    }
    produced == claimed
}

/// Shortens `s` to at most `max` bytes on a char boundary, for messages.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn payload() -> Vec<u8> {
        // Repetitive like real protobuf label data, so it compresses.
        let mut v = Vec::new();
        for i in 0..2000u32 {
            v.extend_from_slice(b"\x0a\x08__name__\x12\x0fhttp_requests_t");
            v.extend_from_slice(&i.to_le_bytes());
        }
        v
    }

    /// Snappy block header claiming `len` decoded bytes (varint).
    fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn encoding_parse_and_as_str() {
        assert_eq!(Encoding::parse("snappy").unwrap(), Encoding::Snappy);
        assert_eq!(Encoding::parse(" ZSTD ").unwrap(), Encoding::Zstd);
        assert_eq!(Encoding::parse("Identity").unwrap(), Encoding::Identity);
        for e in [Encoding::Snappy, Encoding::Zstd, Encoding::Identity] {
            assert_eq!(e.as_str().parse::<Encoding>().unwrap(), e);
        }
        let err = Encoding::parse("gzip").unwrap_err();
        assert_eq!(err.reason(), "unknown_encoding");
        assert!(err.to_string().contains("gzip"), "{err}");
    }

    #[test]
    fn round_trips() {
        let raw = payload();
        for enc in [Encoding::Snappy, Encoding::Zstd, Encoding::Identity] {
            let body = compress(&raw, enc).unwrap();
            if enc != Encoding::Identity {
                assert!(body.len() < raw.len() / 2, "{enc} did not compress");
            }
            assert_eq!(decompress(&body, enc, raw.len()).unwrap(), raw, "{enc}");
            // One byte under the exact size is refused.
            let err = decompress(&body, enc, raw.len() - 1).unwrap_err();
            let want = if enc == Encoding::Identity {
                "body_too_large"
            } else {
                "decoded_too_large"
            };
            assert_eq!(err.reason(), want, "{enc}");
        }
    }

    #[test]
    fn snappy_bomb_refused_before_allocating() {
        // 4 GiB - 1 (the largest snappy can express) and 4 GiB (over snap's
        // own limit) followed by junk, 50 bytes in total.
        for claim in [u32::MAX as u64, 4 << 30] {
            let mut body = varint(claim);
            body.resize(50, 0x00);
            let start = Instant::now();
            let err = decompress(&body, Encoding::Snappy, 64 << 20).unwrap_err();
            assert!(start.elapsed() < Duration::from_millis(50));
            match err {
                DecodeError::DecodedTooLarge { size, max } => {
                    assert_eq!(size, claim);
                    assert_eq!(max, 64 << 20);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn zstd_bomb_without_content_size_is_bounded() {
        // Stream-compress 64 MiB of zeros: the streaming encoder does not
        // write a content size, so only the bounded read can stop it.
        let zeros = std::io::repeat(0).take(64 << 20);
        let mut enc = zstd::stream::read::Encoder::new(zeros, 19).unwrap();
        let mut body = Vec::new();
        enc.read_to_end(&mut body).unwrap();
        assert!(body.len() < 64 << 10, "bomb is {} bytes", body.len());
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&body).unwrap(),
            None
        );

        let err = decompress(&body, Encoding::Zstd, 1 << 20).unwrap_err();
        match err {
            DecodeError::DecodedTooLarge { size, max } => {
                assert_eq!(max, 1 << 20);
                // We stopped one byte past the limit, not at 64 MiB.
                assert_eq!(size, (1 << 20) + 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn zstd_huge_window_refused() {
        // A 128 MiB window with no content size: refused by the window cap
        // instead of making the decoder reserve 128 MiB.
        let mut enc = zstd::stream::read::Encoder::new(&b"tiny"[..], 3).unwrap();
        enc.window_log(27).unwrap();
        let mut body = Vec::new();
        enc.read_to_end(&mut body).unwrap();
        let err = decompress(&body, Encoding::Zstd, 1 << 20).unwrap_err();
        assert_eq!(err.reason(), "bad_zstd");
        // With a limit that justifies such a window it decodes.
        assert_eq!(decompress(&body, Encoding::Zstd, 1 << 30).unwrap(), b"tiny");
    }

    #[test]
    fn zstd_declared_size_refused_early() {
        let raw = vec![7u8; 1 << 20];
        let body = compress(&raw, Encoding::Zstd).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&body).unwrap(),
            Some(1 << 20)
        );
        match decompress(&body, Encoding::Zstd, 1000).unwrap_err() {
            DecodeError::DecodedTooLarge { size, .. } => assert_eq!(size, 1 << 20),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn corrupt_bodies_have_their_own_reason() {
        let raw = payload();
        let mut snappy = compress(&raw, Encoding::Snappy).unwrap();
        snappy.truncate(snappy.len() / 2);
        let err = decompress(&snappy, Encoding::Snappy, 1 << 20).unwrap_err();
        assert_eq!(err.reason(), "bad_snappy");

        let mut zst = compress(&raw, Encoding::Zstd).unwrap();
        let n = zst.len();
        zst[n / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
        let err = decompress(&zst, Encoding::Zstd, 1 << 20).unwrap_err();
        assert_eq!(err.reason(), "bad_zstd");
        let err = decompress(b"not zstd at all", Encoding::Zstd, 1 << 20).unwrap_err();
        assert_eq!(err.reason(), "bad_zstd");
    }

    #[test]
    fn sniff_each_encoding() {
        let raw = payload();
        let snappy = compress(&raw, Encoding::Snappy).unwrap();
        let zst = compress(&raw, Encoding::Zstd).unwrap();
        assert_eq!(sniff(&snappy), Encoding::Snappy);
        assert_eq!(sniff(&zst), Encoding::Zstd);
        assert_eq!(sniff(&raw), Encoding::Identity);
        assert_eq!(sniff(&[]), Encoding::Identity);
        // Truncated snappy is not snappy.
        assert_eq!(sniff(&snappy[..snappy.len() - 1]), Encoding::Identity);
        // A bomb header with junk after it is not snappy either, and sniffing
        // it must not allocate the claimed size (it would abort the test).
        let mut bomb = varint(u32::MAX as u64);
        bomb.resize(50, 0x00);
        assert_eq!(sniff(&bomb), Encoding::Identity);
    }

    #[test]
    fn sniff_agrees_with_snap_on_edge_cases() {
        // Long literals (1-4 length bytes) and all copy kinds come from
        // compressing a mix of random and repeated data.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for size in [1usize, 59, 60, 61, 300, 70_000, 300_000] {
            let mut raw: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
            let copy = raw[..size / 2].to_vec();
            raw.extend_from_slice(&copy);
            let body = compress(&raw, Encoding::Snappy).unwrap();
            assert!(snappy_well_formed(&body), "size {size}");
            // Flipping a byte: whatever we say must match what snap says.
            let mut bad = body.clone();
            let i = bad.len() / 3;
            bad[i] ^= 0xff;
            let snap_ok = snap::raw::Decoder::new().decompress_vec(&bad).is_ok();
            assert_eq!(snappy_well_formed(&bad), snap_ok, "size {size}");
        }
    }

    #[test]
    fn window_log_bounds() {
        assert_eq!(window_log_for(0), 23);
        assert_eq!(window_log_for(1 << 20), 23);
        assert_eq!(window_log_for(32 << 20), 25);
        assert_eq!(window_log_for((32 << 20) + 1), 26);
        assert_eq!(window_log_for(usize::MAX), 27);
    }
}
