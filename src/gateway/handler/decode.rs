//! The decode step of a request: the two decode queues (small bodies by
//! their claimed size apart from large ones), the blocking
//! [`check_bounded`] call, and the status of a refused body.
//!
//! May depend on: the handler's [`Outcome`], the gateway's config, queues
//! and metrics, and `remote_write`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use tracing::warn;

use super::super::metrics as m;
use super::super::Gateway;
use super::Outcome;
use crate::remote_write::{
    check_bounded, claimed_size, DecodeError, Encoding, Protocol, RequestError, Stats,
};

/// Bodies claiming at most this many decoded bytes are decoded in their own
/// queue (see `Gateway::decode`).
const SMALL_DECODE: usize = 1 << 20;

impl Gateway {
    /// Decompresses, bounds, decodes and validates on a blocking thread.
    ///
    /// Decode cost follows the decoded size, which the body's header claims
    /// before anything is decompressed. Bodies claiming at most
    /// [`SMALL_DECODE`] bytes (every ordinary Prometheus payload) queue
    /// apart from larger ones, and are held to that claim, so a stream of
    /// expensive bodies never stands in front of a cheap one. Each queue
    /// runs at most `max_concurrent_decodes` at once, first come first
    /// served.
    pub(super) async fn decode(
        self: &Arc<Self>,
        body: Bytes,
        encoding: Encoding,
        protocol: Protocol,
    ) -> Result<Stats, Outcome> {
        let claimed = claimed_size(&body, encoding).unwrap_or(u64::MAX);
        let (queue, max_decoded) = if claimed <= SMALL_DECODE as u64 {
            (
                &self.small_decodes,
                self.config.max_decoded_bytes.min(SMALL_DECODE),
            )
        } else {
            (&self.decodes, self.config.max_decoded_bytes)
        };
        let Ok(_turn) = queue.clone().acquire_owned().await else {
            return Err(Outcome::Unavailable {
                reason: "busy",
                message: "the gateway is shutting down".into(),
            });
        };
        let this = self.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            check_bounded(
                &body,
                encoding,
                protocol,
                max_decoded,
                &this.live.get().limits,
                this.config.max_decode_memory_bytes,
            )
        })
        .await;
        match decoded {
            Ok(Ok(checked)) => {
                ::metrics::counter!(m::RECEIVED_BYTES, "stage" => "decoded")
                    .increment(checked.decoded_len as u64);
                checked.reader.count("gateway");
                Ok(checked.stats)
            }
            Ok(Err(e)) => Err(Outcome::rejected(
                refused_status(&e),
                e.reason(),
                e.to_string(),
            )),
            Err(e) => {
                warn!(error = %e, "decode task failed");
                Err(Outcome::rejected(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "decode_failed",
                    "the body could not be decoded",
                ))
            }
        }
    }
}

/// The status of a refused body: 413 when it is too large to take (the
/// body, its decoded size or the memory decoding it would need), 400 for
/// anything else wrong with it.
pub(super) fn refused_status(error: &RequestError) -> StatusCode {
    match error {
        RequestError::Decode(
            DecodeError::BodyTooLarge { .. }
            | DecodeError::DecodedTooLarge { .. }
            | DecodeError::DecodeMemory { .. },
        ) => StatusCode::PAYLOAD_TOO_LARGE,
        RequestError::Decode(_) | RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
    }
}
