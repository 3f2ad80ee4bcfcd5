//! Reading a request body under the gateway's byte budget.
//!
//! Invariant: the bytes of every body being read or handled are counted in
//! one shared counter, never above `gateway.max_body_bytes_in_flight`. A
//! chunk is counted when it arrives (not what Content-Length claims), so a
//! client that sends headers and one byte holds one byte, not a slot; the
//! caller bounds how long it may take (`gateway.body_read_timeout`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Body bytes counted in the shared budget until dropped.
pub struct Held {
    bytes: usize,
    budget: Arc<AtomicUsize>,
}

impl Held {
    /// Counts `n` more bytes, unless the budget (at most `max`) is spent.
    fn take(&mut self, n: usize, max: usize) -> bool {
        let taken = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= max)
            });
        if taken.is_ok() {
            self.bytes += n;
        }
        taken.is_ok()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// More than `max_body_bytes`.
    TooLarge,
    /// The shared budget is spent: retry later.
    Busy,
    /// The connection failed or the body was malformed.
    Read(hyper::Error),
    /// No bytes.
    Empty,
}

/// Reads `body` (at most `max_body` bytes), counting its bytes in `budget`
/// (at most `max_budget` for everyone).
pub async fn read(
    mut body: Incoming,
    max_body: usize,
    budget: &Arc<AtomicUsize>,
    max_budget: usize,
) -> Result<(Bytes, Held), BodyError> {
    let mut held = Held {
        bytes: 0,
        budget: budget.clone(),
    };
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        }; // trailers
        if buf.len() + chunk.len() > max_body {
            return Err(BodyError::TooLarge);
        }
        if !held.take(chunk.len(), max_budget) {
            return Err(BodyError::Busy);
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok((buf.freeze(), held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_return_to_the_budget_when_dropped() {
        let budget = Arc::new(AtomicUsize::new(0));
        let mut a = Held {
            bytes: 0,
            budget: budget.clone(),
        };
        assert!(a.take(60, 100));
        let mut b = Held {
            bytes: 0,
            budget: budget.clone(),
        };
        assert!(!b.take(41, 100), "over the budget");
        assert!(b.take(40, 100));
        assert_eq!(budget.load(Ordering::Acquire), 100);
        drop(a);
        assert_eq!(budget.load(Ordering::Acquire), 40);
        drop(b);
        assert_eq!(budget.load(Ordering::Acquire), 0);
    }
}
