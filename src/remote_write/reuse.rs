//! Per-thread reuse of the large per-request buffers: the decompressed
//! body ([`decompress_reusing`]) and the label and series vectors of
//! [`super::fast::FastRequest`]. A 2,000-series request decompresses to
//! about 500 kB and reads into about 1 MB of label slices; allocating them
//! fresh for every request costs page faults and allocator work on every
//! request of the gateway and the router.
//!
//! Invariants: a buffer goes back to the thread that dropped it, empty;
//! at most [`KEPT`] buffers of each kind are kept per thread, none larger
//! than [`MAX_KEPT_BYTES`], so an outsized request does not pin its memory.

use std::cell::RefCell;
use std::ops::Deref;

use super::codec::{decompress_into, decompress_snappy_over};
use super::{DecodeError, Encoding};

/// Buffers of each kind kept per thread.
const KEPT: usize = 2;
/// Larger buffers are freed, not kept.
pub(crate) const MAX_KEPT_BYTES: usize = 16 << 20;

thread_local! {
    /// Empty buffers (the fast reader's arenas).
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Decompression buffers, kept at their length: see [`Raw`].
    static RAW: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A decompressed body whose buffer returns to this thread's pool.
///
/// Its buffer keeps the length of the largest body it held: snappy
/// decompresses into a slice, and zeroing ~500 kB before every request (as
/// growing a cleared vector does) cost 2.7% of `streamroute run`'s CPU.
/// Only the first `len` bytes are this body; the rest are an earlier
/// body's, never read.
#[derive(Debug)]
pub struct Raw {
    buf: Vec<u8>,
    len: usize,
}

impl Deref for Raw {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        keep(&RAW, std::mem::take(&mut self.buf));
    }
}

/// [`super::decompress`] into a buffer of this thread's pool.
pub fn decompress_reusing(
    body: &[u8],
    enc: Encoding,
    max_decoded: usize,
) -> Result<Raw, DecodeError> {
    let buf = RAW.with(|pool| pool.borrow_mut().pop()).unwrap_or_default();
    // Dropped on an error, the buffer goes back to the pool.
    let mut raw = Raw { buf, len: 0 };
    raw.len = match enc {
        Encoding::Snappy => decompress_snappy_over(body, max_decoded, &mut raw.buf)?,
        Encoding::Zstd | Encoding::Identity => {
            decompress_into(body, enc, max_decoded, &mut raw.buf)?;
            raw.buf.len()
        }
    };
    Ok(raw)
}

/// An empty byte buffer, from the pool when it has one.
pub(crate) fn take_bytes() -> Vec<u8> {
    BYTES
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default()
}

/// Returns a buffer to the pool (or frees it).
pub(crate) fn give_bytes(mut buf: Vec<u8>) {
    buf.clear();
    keep(&BYTES, buf);
}

/// Puts `buf` in `pool` unless it is empty, outsized or the pool is full.
fn keep(pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<u8>>>>, buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_KEPT_BYTES {
        return;
    }
    pool.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEPT {
            pool.push(buf);
        }
    });
}

/// `v`'s allocation as an empty vector of another element type of the same
/// size and alignment, so that a vector of borrowed slices can outlive what
/// it borrowed once it is empty. Without unsafe code: an in-place collect
/// of no elements, which the standard library does in the same allocation.
pub(crate) fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn recycle_keeps_the_allocation() {
        let text = String::from("abc");
        let mut v: Vec<(&str, &str)> = Vec::with_capacity(1000);
        v.push((&text, &text));
        let ptr = v.as_ptr() as usize;
        let back: Vec<(&'static str, &'static str)> = recycle(v);
        assert!(back.is_empty());
        assert_eq!(back.capacity(), 1000);
        assert_eq!(back.as_ptr() as usize, ptr);
    }

    #[test]
    fn bodies_decompress_into_reused_buffers() {
        let raw: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let body = super::super::compress(&raw, Encoding::Snappy).unwrap();
        let first = decompress_reusing(&body, Encoding::Snappy, 1 << 20).unwrap();
        assert_eq!(&*first, raw.as_slice());
        let ptr = first.as_ptr() as usize;
        drop(first);
        let second = decompress_reusing(&body, Encoding::Snappy, 1 << 20).unwrap();
        assert_eq!(&*second, raw.as_slice());
        assert_eq!(second.as_ptr() as usize, ptr, "the buffer was not reused");
        // A smaller body after it reads as itself, not the larger one's
        // tail, in the same buffer; and a larger one again.
        drop(second);
        let small_raw = &raw[..1000];
        let small = super::super::compress(small_raw, Encoding::Snappy).unwrap();
        let third = decompress_reusing(&small, Encoding::Snappy, 1 << 20).unwrap();
        assert_eq!(&*third, small_raw);
        assert_eq!(third.as_ptr() as usize, ptr, "the buffer was not reused");
        drop(third);
        assert_eq!(
            &*decompress_reusing(&body, Encoding::Snappy, 1 << 20).unwrap(),
            raw.as_slice()
        );
        // Errors are the same as decompress's.
        let err = decompress_reusing(&body, Encoding::Snappy, 10).unwrap_err();
        assert_eq!(err.reason(), "decoded_too_large");
        for enc in [Encoding::Zstd, Encoding::Identity] {
            let body = super::super::compress(&raw, enc).unwrap();
            assert_eq!(
                &*decompress_reusing(&body, enc, 1 << 20).unwrap(),
                raw.as_slice()
            );
        }
    }
}
