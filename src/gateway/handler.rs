//! Handling of one remote-write request: check, decode, validate, produce,
//! answer. Each outcome is counted and logged in one place ([`Outcome`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, warn};

use super::body::{self, BodyError};
use super::metrics as m;
use super::{auth, Gateway};
use crate::http::{text, Body, Handler, ResponseFuture};
use crate::kafka::producer::SendError;
use crate::kafka::record::IngressMeta;
use crate::remote_write::{
    check_bounded, claimed_size, DecodeError, Encoding, Protocol, RequestError, Stats,
};

/// The paths other receivers use for remote write; all mean the same here.
pub const WRITE_PATHS: &[&str] = &["/api/v1/write", "/api/v1/push", "/receive"];

/// Bodies claiming at most this many decoded bytes are decoded in their own
/// queue (see `Gateway::decode`).
const SMALL_DECODE: usize = 1 << 20;

/// The tenant header (Cortex, Mimir, VictoriaMetrics).
const TENANT_HEADER: &str = "x-scope-orgid";

/// How a request ended.
enum Outcome {
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
    fn rejected(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Outcome {
        Outcome::Rejected {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl Handler for Gateway {
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> ResponseFuture {
        Box::pin(async move {
            let outcome = self.process(request).await;
            self.respond(outcome)
        })
    }

    fn guard(&self, request: &Request<Incoming>) -> Option<Response<Body>> {
        let denied = auth::check(&self.live.get().auth, request.headers()).err()?;
        Some(self.respond(Outcome::rejected(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            denied.message(),
        )))
    }

    fn header_read_timeout(&self) -> Duration {
        self.config.header_read_timeout
    }
}

impl Gateway {
    /// Order matters: everything decided by the headers comes first; the
    /// body is read under the byte budget and its timeout, holding no
    /// in-flight slot; only then are the slot and a decode turn taken.
    async fn process(self: &Arc<Self>, request: Request<Incoming>) -> Outcome {
        if !WRITE_PATHS.contains(&request.uri().path()) {
            return Outcome::rejected(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no endpoint at {}", request.uri().path()),
            );
        }
        if request.method() != Method::POST {
            return Outcome::rejected(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "remote write needs POST",
            );
        }
        if let Err(denied) = auth::check(&self.live.get().auth, request.headers()) {
            return Outcome::rejected(StatusCode::UNAUTHORIZED, "unauthorized", denied.message());
        }

        let headers = request.headers().clone();
        let encoding = match header_str(&headers, CONTENT_ENCODING.as_str()) {
            Ok(None) => Encoding::Snappy, // the remote-write default
            Ok(Some(value)) => match value.parse::<Encoding>() {
                Ok(e) => e,
                Err(e) => {
                    return Outcome::rejected(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "content_encoding",
                        e.to_string(),
                    )
                }
            },
            Err(o) => return o,
        };
        let protocol =
            match header_str(&headers, CONTENT_TYPE.as_str()).map(Protocol::from_content_type) {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    return Outcome::rejected(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "content_type",
                        e.to_string(),
                    )
                }
                Err(o) => return o,
            };
        let tenant = match tenant(&headers) {
            Ok(t) => t,
            Err(o) => return o,
        };
        if let Some(length) = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        {
            if length > self.config.max_body_bytes {
                return self.too_large(length.to_string());
            }
        }
        let limit = self.config.body_read_timeout;
        let read = body::read(
            request.into_body(),
            self.config.max_body_bytes,
            &self.body_bytes,
            self.config.max_body_bytes_in_flight,
        );
        let (body, _held) = match tokio::time::timeout(limit, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(BodyError::TooLarge)) => return self.too_large("more than the limit".into()),
            Ok(Err(BodyError::Busy)) => {
                return Outcome::Unavailable {
                    reason: "busy_bytes",
                    message: "too many body bytes in flight".into(),
                }
            }
            Ok(Err(BodyError::Empty)) => {
                return Outcome::rejected(
                    StatusCode::BAD_REQUEST,
                    "empty_body",
                    "the request body is empty",
                )
            }
            Ok(Err(BodyError::Read(e))) => {
                return Outcome::rejected(
                    StatusCode::BAD_REQUEST,
                    "body_read",
                    format!("cannot read the body: {e}"),
                )
            }
            Err(_) => {
                let message = format!(
                    "the body did not arrive within {} (gateway.body_read_timeout)",
                    humantime::format_duration(limit)
                );
                return Outcome::rejected(StatusCode::REQUEST_TIMEOUT, "body_timeout", message);
            }
        };
        ::metrics::counter!(m::RECEIVED_BYTES, "stage" => "compressed")
            .increment(body.len() as u64);

        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Outcome::Unavailable {
                reason: "busy",
                message: "too many requests in flight".into(),
            };
        };
        let _gauge = InFlight::enter();

        let stats = match self.decode(body.clone(), encoding, protocol).await {
            Ok(stats) => stats,
            Err(outcome) => return outcome,
        };
        if stats.series == 0 && stats.metadata == 0 {
            return Outcome::rejected(
                StatusCode::BAD_REQUEST,
                "empty",
                "the request holds no series and no metadata",
            );
        }

        // The body is stored as received: zstd over batches of snappy bodies
        // stored fewer bytes per sample than over decoded protobuf at the same
        // CPU (scripts/bench-ingress.sh; figures in the README).
        let meta = IngressMeta {
            encoding: Some(encoding),
            protocol,
            tenant,
            received_at_ms: Some(unix_ms()),
        };
        let key = self
            .config
            .key_header
            .as_deref()
            .and_then(|h| headers.get(h))
            .map(HeaderValue::as_bytes);
        let started = Instant::now();
        let sent = self
            .producer
            .send(&self.topic, key, &body, meta.to_headers())
            .await;
        ::metrics::histogram!(m::PRODUCE_DURATION).record(started.elapsed().as_secs_f64());
        match sent {
            Ok(()) => Outcome::Stored { stats, protocol },
            Err(SendError::Refused(message)) => {
                Outcome::rejected(StatusCode::PAYLOAD_TOO_LARGE, "kafka_refused", message)
            }
            Err(SendError::Retryable(message)) => Outcome::Unavailable {
                reason: "kafka_unavailable",
                message,
            },
        }
    }

    /// Decompresses, bounds, decodes and validates on a blocking thread.
    ///
    /// Decode cost follows the decoded size, which the body's header claims
    /// before anything is decompressed. Bodies claiming at most
    /// [`SMALL_DECODE`] bytes (every ordinary Prometheus payload) queue
    /// apart from larger ones, and are held to that claim, so a stream of
    /// expensive bodies never stands in front of a cheap one. Each queue
    /// runs at most `max_concurrent_decodes` at once, first come first
    /// served.
    async fn decode(
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

    fn too_large(&self, size: String) -> Outcome {
        let max = self.config.max_body_bytes;
        Outcome::rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body of {size} bytes exceeds the limit of {max} bytes"),
        )
    }

    fn respond(&self, outcome: Outcome) -> Response<Body> {
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

/// Tracks the in-flight gauge for the life of a request.
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        ::metrics::gauge!(m::IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        ::metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Outcome> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            Outcome::rejected(
                StatusCode::BAD_REQUEST,
                "bad_header",
                format!("header {name} is not ASCII"),
            )
        }),
    }
}

/// The status of a refused body: 413 when it is too large to take (the
/// body, its decoded size or the memory decoding it would need), 400 for
/// anything else wrong with it.
fn refused_status(error: &RequestError) -> StatusCode {
    match error {
        RequestError::Decode(
            DecodeError::BodyTooLarge { .. }
            | DecodeError::DecodedTooLarge { .. }
            | DecodeError::DecodeMemory { .. },
        ) => StatusCode::PAYLOAD_TOO_LARGE,
        RequestError::Decode(_) | RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
    }
}

/// The `X-Scope-OrgID` header: printable ASCII (space to `~`) or refused,
/// so a payload never loses its tenant silently.
fn tenant(headers: &HeaderMap) -> Result<Option<String>, Outcome> {
    let Some(value) = headers.get(TENANT_HEADER) else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Outcome::rejected(
            StatusCode::BAD_REQUEST,
            "bad_tenant",
            format!("header X-Scope-OrgID {why}"),
        )
    };
    let value = value.as_bytes().trim_ascii();
    if value.is_empty() {
        return Err(bad("is empty"));
    }
    if !value.iter().all(|b| (b' '..=b'~').contains(b)) {
        return Err(bad("must be printable ASCII"));
    }
    Ok(Some(String::from_utf8_lossy(value).into_owned()))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_bodies_are_413_and_other_refusals_400() {
        let large = [
            DecodeError::BodyTooLarge { size: 2, max: 1 },
            DecodeError::DecodedTooLarge { size: 2, max: 1 },
            DecodeError::DecodeMemory { max: 1 },
        ];
        for e in large {
            assert_eq!(
                refused_status(&RequestError::Decode(e)),
                StatusCode::PAYLOAD_TOO_LARGE
            );
        }
        let bad = [
            RequestError::Decode(DecodeError::BadSymbolTable),
            RequestError::Decode(DecodeError::UnknownEncoding("br".into())),
            RequestError::Invalid(crate::remote_write::ValidationError::NoLabels { series: 0 }),
        ];
        for e in bad {
            assert_eq!(refused_status(&e), StatusCode::BAD_REQUEST, "{e}");
        }
    }

    fn headers(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TENANT_HEADER,
            HeaderValue::from_bytes(value).unwrap_or(HeaderValue::from_static("?")),
        );
        h
    }

    fn refused(value: &[u8]) -> Option<String> {
        match tenant(&headers(value)) {
            Err(Outcome::Rejected {
                status,
                reason,
                message,
            }) => {
                assert_eq!((status, reason), (StatusCode::BAD_REQUEST, "bad_tenant"));
                Some(message)
            }
            _ => None,
        }
    }

    #[test]
    fn a_tenant_must_be_printable_ascii() {
        assert!(matches!(tenant(&HeaderMap::new()), Ok(None)));
        assert!(matches!(tenant(&headers(b"team-a")), Ok(Some(t)) if t == "team-a"));
        assert!(matches!(tenant(&headers(b" a b~ ")), Ok(Some(t)) if t == "a b~"));
        for bad in [&b"caf\xc3\xa9"[..], b"\xff", b"a\tb"] {
            let message = refused(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(message, "header X-Scope-OrgID must be printable ASCII");
        }
        assert_eq!(
            refused(b"  ").as_deref(),
            Some("header X-Scope-OrgID is empty")
        );
    }
}
