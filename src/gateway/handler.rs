//! Handling of one remote-write request: check, decode, validate, produce,
//! answer. Each outcome is counted and logged in one place ([`Outcome`]).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, warn};

use super::metrics as m;
use super::{Credential, Gateway};
use crate::http::{text, Body, Handler, ResponseFuture};
use crate::kafka::producer::SendError;
use crate::kafka::record::IngressMeta;
use crate::remote_write::{decode_request, validate_v1, Encoding, Protocol, Stats};

/// The paths other receivers use for remote write; all mean the same here.
pub const WRITE_PATHS: &[&str] = &["/api/v1/write", "/api/v1/push", "/receive"];

/// How a request ended.
enum Outcome {
    /// Stored in Kafka.
    Stored { stats: Stats, protocol: Protocol },
    /// The sender must change something; `reason` is a metrics label.
    Rejected { status: StatusCode, reason: &'static str, message: String },
    /// Try again later.
    Unavailable { reason: &'static str, message: String },
}

impl Outcome {
    fn rejected(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Outcome {
        Outcome::Rejected { status, reason, message: message.into() }
    }
}

impl Handler for Gateway {
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> ResponseFuture {
        Box::pin(async move {
            let outcome = self.process(request).await;
            self.respond(outcome)
        })
    }
}

impl Gateway {
    async fn process(&self, request: Request<Incoming>) -> Outcome {
        if !WRITE_PATHS.contains(&request.uri().path()) {
            return Outcome::rejected(StatusCode::NOT_FOUND, "not_found", format!("no endpoint at {}", request.uri().path()));
        }
        if request.method() != Method::POST {
            return Outcome::rejected(StatusCode::METHOD_NOT_ALLOWED, "method", "remote write needs POST");
        }
        if let Err(outcome) = self.authorize(request.headers()) {
            return outcome;
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Outcome::Unavailable { reason: "busy", message: "too many requests in flight".into() };
        };
        let _gauge = InFlight::enter();

        let headers = request.headers().clone();
        let encoding = match header_str(&headers, CONTENT_ENCODING.as_str()) {
            Ok(None) => Encoding::Snappy, // the remote-write default
            Ok(Some(value)) => match value.parse::<Encoding>() {
                Ok(e) => e,
                Err(e) => return Outcome::rejected(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_encoding", e.to_string()),
            },
            Err(o) => return o,
        };
        let protocol = match header_str(&headers, CONTENT_TYPE.as_str()).map(Protocol::from_content_type) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Outcome::rejected(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type", e.to_string()),
            Err(o) => return o,
        };
        let body = match self.read_body(request).await {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        ::metrics::counter!(m::RECEIVED_BYTES, "stage" => "compressed").increment(body.len() as u64);

        let decoded = match decode_request(&body, encoding, protocol, self.config.max_decoded_bytes) {
            Ok(d) => d,
            Err(e) => {
                let status = match e.reason() {
                    "decoded_too_large" | "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                return Outcome::rejected(status, e.reason(), e.to_string());
            }
        };
        ::metrics::counter!(m::RECEIVED_BYTES, "stage" => "decoded").increment(decoded.raw.len() as u64);
        let stats = match validate_v1(&decoded.request, &self.config.limits) {
            Ok(stats) => stats,
            Err(e) => return Outcome::rejected(StatusCode::BAD_REQUEST, e.reason(), e.to_string()),
        };
        if stats.series == 0 && stats.metadata == 0 {
            return Outcome::rejected(StatusCode::BAD_REQUEST, "empty", "the request holds no series and no metadata");
        }

        // The body is stored as received: zstd over batches of snappy bodies
        // stored fewer bytes per sample than over decoded protobuf at the same
        // CPU (scripts/bench-ingress.sh; figures in the README).
        let meta = IngressMeta {
            encoding: Some(encoding),
            protocol,
            tenant: header_str(&headers, "x-scope-orgid").ok().flatten().map(str::to_string),
            received_at_ms: Some(unix_ms()),
        };
        let key = self.config.key_header.as_deref().and_then(|h| headers.get(h)).map(HeaderValue::as_bytes);
        let started = Instant::now();
        let sent = self.producer.send(&self.topic, key, &body, meta.to_headers()).await;
        ::metrics::histogram!(m::PRODUCE_DURATION).record(started.elapsed().as_secs_f64());
        match sent {
            Ok(()) => Outcome::Stored { stats, protocol },
            Err(SendError::Refused(message)) => {
                Outcome::rejected(StatusCode::PAYLOAD_TOO_LARGE, "kafka_refused", message)
            }
            Err(SendError::Retryable(message)) => Outcome::Unavailable { reason: "kafka_unavailable", message },
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), Outcome> {
        if self.config.auth.is_empty() {
            return Ok(());
        }
        let unauthorized = |message: &str| Outcome::rejected(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err(unauthorized("missing Authorization header"));
        };
        let accepted = if let Some(token) = value.strip_prefix("Bearer ") {
            self.config.auth.iter().any(|c| matches!(c, Credential::Bearer { token: t } if t == token.trim()))
        } else if let Some(encoded) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            let pair = String::from_utf8_lossy(&decoded);
            pair.split_once(':').is_some_and(|(user, pass)| {
                self.config.auth.iter().any(
                    |c| matches!(c, Credential::Basic { username, password } if username == user && password == pass),
                )
            })
        } else {
            false
        };
        if accepted {
            Ok(())
        } else {
            Err(unauthorized("invalid credentials"))
        }
    }

    async fn read_body(&self, request: Request<Incoming>) -> Result<Bytes, Outcome> {
        let max = self.config.max_body_bytes;
        let too_large = |size: String| {
            Outcome::rejected(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("body of {size} bytes exceeds the limit of {max} bytes"))
        };
        if let Some(length) = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()) {
            if length > max {
                return Err(too_large(length.to_string()));
            }
        }
        match Limited::new(request.into_body(), max).collect().await {
            Ok(collected) => {
                let body = collected.to_bytes();
                if body.is_empty() {
                    return Err(Outcome::rejected(StatusCode::BAD_REQUEST, "empty_body", "the request body is empty"));
                }
                Ok(body)
            }
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large("more than the limit".into())),
            Err(e) => Err(Outcome::rejected(StatusCode::BAD_REQUEST, "body_read", format!("cannot read the body: {e}"))),
        }
    }

    fn respond(&self, outcome: Outcome) -> Response<Body> {
        let response = match outcome {
            Outcome::Stored { stats, protocol } => {
                ::metrics::counter!(m::SAMPLES).increment(stats.samples as u64);
                ::metrics::counter!(m::SERIES).increment(stats.series as u64);
                ::metrics::counter!(m::HISTOGRAMS).increment(stats.histograms as u64);
                ::metrics::counter!(m::EXEMPLARS).increment(stats.exemplars as u64);
                ::metrics::counter!(m::METADATA).increment(stats.metadata as u64);
                debug!(series = stats.series, samples = stats.samples, "payload stored");
                let mut response = text(StatusCode::NO_CONTENT, Bytes::new());
                if protocol == Protocol::V2 {
                    let h = response.headers_mut();
                    h.insert("x-prometheus-remote-write-samples-written", HeaderValue::from(stats.samples));
                    h.insert("x-prometheus-remote-write-histograms-written", HeaderValue::from(stats.histograms));
                    h.insert("x-prometheus-remote-write-exemplars-written", HeaderValue::from(stats.exemplars));
                }
                response
            }
            Outcome::Rejected { status, reason, message } => {
                ::metrics::counter!(m::REJECTED, "reason" => reason).increment(1);
                debug!(%status, reason, %message, "request rejected");
                let mut response = text(status, format!("{message}\n"));
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Basic realm=\"streamroute\""));
                }
                response
            }
            Outcome::Unavailable { reason, message } => {
                ::metrics::counter!(m::REJECTED, "reason" => reason).increment(1);
                warn!(reason, %message, "request not stored; sender will retry");
                let mut response = text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}; retry later\n"));
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(self.config.retry_after.as_secs().max(1)));
                response
            }
        };
        ::metrics::counter!(m::REQUESTS, "code" => response.status().as_u16().to_string()).increment(1);
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
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| Outcome::rejected(StatusCode::BAD_REQUEST, "bad_header", format!("header {name} is not ASCII"))),
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
