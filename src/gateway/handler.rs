//! Handling of one remote-write request: check, decode, validate, produce,
//! answer. Each outcome is counted and logged in one place ([`Outcome`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::body::{self, BodyError};
use super::metrics as m;
use super::{auth, Gateway};
use crate::http::{Body, Handler, ResponseFuture};
use crate::kafka::producer::SendError;
use crate::kafka::record::IngressMeta;
use crate::remote_write::{Encoding, Protocol};

mod decode;
mod outcome;

use outcome::Outcome;

/// The paths other receivers use for remote write; all mean the same here.
pub const WRITE_PATHS: &[&str] = &["/api/v1/write", "/api/v1/push", "/receive"];

/// The tenant header (Cortex, Mimir, VictoriaMetrics).
const TENANT_HEADER: &str = "x-scope-orgid";

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
    use super::decode::refused_status;
    use super::*;
    use crate::remote_write::{DecodeError, RequestError};

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
