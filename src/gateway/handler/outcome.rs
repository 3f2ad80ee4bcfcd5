//! How a request ended ([`Outcome`]) and the response built from it: each
//! outcome is counted and logged here, in one place.
//!
//! May depend on: the gateway's config and metrics, and `crate::http` for
//! the response body.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use hyper::{Response, StatusCode};
use tracing::{debug, warn};

use super::super::metrics as m;
use super::super::Gateway;
use crate::http::{text, Body};
use crate::remote_write::{Protocol, Stats};

/// How a request ended.
pub(super) enum Outcome {
    /// Stored in Kafka.
    Stored { stats: Stats, protocol: Protocol },
    /// The sender must change something; `reason` is a metrics label.
    Rejected {
        status: StatusCode,
        reason: &'static str,
        message: String,
    },
    /// Try again later.
    Unavailable {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    pub(super) fn rejected(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Outcome {
        Outcome::Rejected {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl Gateway {
    pub(super) fn too_large(&self, size: String) -> Outcome {
        let max = self.config.max_body_bytes;
        Outcome::rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body of {size} bytes exceeds the limit of {max} bytes"),
        )
    }

    pub(super) fn respond(&self, outcome: Outcome) -> Response<Body> {
        let response = match outcome {
            Outcome::Stored { stats, protocol } => {
                ::metrics::counter!(m::SAMPLES).increment(stats.samples as u64);
                ::metrics::counter!(m::SERIES).increment(stats.series as u64);
                ::metrics::counter!(m::HISTOGRAMS).increment(stats.histograms as u64);
                ::metrics::counter!(m::EXEMPLARS).increment(stats.exemplars as u64);
                ::metrics::counter!(m::METADATA).increment(stats.metadata as u64);
                debug!(
                    series = stats.series,
                    samples = stats.samples,
                    "payload stored"
                );
                let mut response = text(StatusCode::NO_CONTENT, Bytes::new());
                if protocol == Protocol::V2 {
                    let h = response.headers_mut();
                    h.insert(
                        "x-prometheus-remote-write-samples-written",
                        HeaderValue::from(stats.samples),
                    );
                    h.insert(
                        "x-prometheus-remote-write-histograms-written",
                        HeaderValue::from(stats.histograms),
                    );
                    h.insert(
                        "x-prometheus-remote-write-exemplars-written",
                        HeaderValue::from(stats.exemplars),
                    );
                }
                response
            }
            Outcome::Rejected {
                status,
                reason,
                message,
            } => {
                ::metrics::counter!(m::REJECTED, "reason" => reason).increment(1);
                debug!(%status, reason, %message, "request rejected");
                let mut response = text(status, format!("{message}\n"));
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        "www-authenticate",
                        HeaderValue::from_static("Basic realm=\"streamroute\""),
                    );
                }
                if status == StatusCode::REQUEST_TIMEOUT {
                    // The rest of the body may still come: do not read it as a request.
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
            Outcome::Unavailable { reason, message } => {
                ::metrics::counter!(m::REJECTED, "reason" => reason).increment(1);
                warn!(reason, %message, "request not stored; sender will retry");
                let mut response = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{message}; retry later\n"),
                );
                response.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from(self.config.retry_after.as_secs().max(1)),
                );
                response
            }
        };
        ::metrics::counter!(m::REQUESTS, "code" => response.status().as_u16().to_string())
            .increment(1);
        response
    }
}
