//! Gateway settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};
use crate::remote_write::validate::Limits;
use crate::tls::TlsConfig;

/// The gateway role: Prometheus remote write in, ingress topic out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address of the write endpoints and `/metrics` when the gateway runs
    /// alone (`streamroute gateway`); `run` serves on `run.listen`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes, before decompression.
    pub max_body_bytes: usize,
    /// Largest decoded (decompressed) payload accepted, in bytes. Checked
    /// against the size the snappy/zstd header claims before allocating.
    pub max_decoded_bytes: usize,
    /// Estimated memory one request may take once decoded (labels, samples
    /// and metadata as structs, plus their strings). Counted while walking
    /// the decompressed bytes, before anything is built; over it is 413.
    pub max_decode_memory_bytes: usize,
    /// Requests decoded at once, each on a blocking thread (never on the
    /// async threads); the others wait their turn. Default: the CPU count.
    pub max_concurrent_decodes: usize,
    /// Body bytes held at once by all requests being read or handled; a
    /// request whose next chunk would go over it gets 503. Bytes count as
    /// they arrive, so a client trickling its body holds only what it sent.
    pub max_body_bytes_in_flight: usize,
    /// How long a client may take to send a request's headers (from the
    /// first byte, and on an idle keep-alive connection); then the
    /// connection is closed. Applies to every path of the listener.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send the whole body once the headers
    /// are in; then it gets 408 and the connection is closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Per-series and per-request limits, applied while decoding.
    pub limits: Limits,
    /// How long Kafka may take to acknowledge a payload before the sender
    /// gets 503 (it retries; the payload may then arrive twice, which
    /// VictoriaMetrics deduplicates).
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Retry-After sent with 503 when Kafka cannot take a payload.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Requests decoded or waiting for Kafka at once (taken once the body is
    /// in); more get 503 with Retry-After.
    pub max_in_flight: usize,
    /// When set, the value of this request header becomes the ingress
    /// record key, so one sender's payloads stay in order on one partition
    /// (e.g. a header set in Prometheus' `remote_write.headers`).
    pub key_header: Option<String>,
    /// Accepted credentials; empty means no authentication. When set, every
    /// path of the listener needs them except `/-/healthy`.
    pub auth: Vec<Credential>,
    /// When set, `streamroute gateway` serves HTTPS with this certificate
    /// and key; `run` uses `run.tls`.
    pub tls: Option<TlsConfig>,
}

/// One accepted credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9201)),
            max_body_bytes: 16 << 20,
            max_decoded_bytes: 32 << 20,
            max_decode_memory_bytes: 256 << 20,
            max_concurrent_decodes: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_body_bytes_in_flight: 256 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(20),
            limits: Limits::default(),
            produce_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(5),
            max_in_flight: 256,
            key_header: None,
            auth: Vec::new(),
            tls: None,
        }
    }
}

impl GatewayConfig {
    /// Problems, keys relative to `gateway.`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        out.check(
            self.max_body_bytes > 0,
            "max_body_bytes",
            "must be greater than zero",
        );
        out.check(
            self.max_decoded_bytes >= self.max_body_bytes,
            "max_decoded_bytes",
            "must be at least max_body_bytes (a decoded payload is never smaller than its body)",
        );
        out.check(
            !self.produce_timeout.is_zero(),
            "produce_timeout",
            "must be greater than zero",
        );
        out.check(
            self.max_decode_memory_bytes > 0,
            "max_decode_memory_bytes",
            "must be greater than zero",
        );
        out.check(
            self.max_concurrent_decodes > 0,
            "max_concurrent_decodes",
            "must be greater than zero",
        );
        out.check(
            self.max_body_bytes_in_flight >= self.max_body_bytes,
            "max_body_bytes_in_flight",
            "must be at least max_body_bytes (one full body must fit)",
        );
        out.check(
            !self.header_read_timeout.is_zero(),
            "header_read_timeout",
            "must be greater than zero",
        );
        out.check(
            !self.body_read_timeout.is_zero(),
            "body_read_timeout",
            "must be greater than zero",
        );
        out.extend_within("limits", limits_problems(&self.limits));
        out.check(
            self.max_in_flight > 0,
            "max_in_flight",
            "must be greater than zero",
        );
        if let Some(h) = &self.key_header {
            out.check(
                hyper::header::HeaderName::from_bytes(h.as_bytes()).is_ok(),
                "key_header",
                "is not a valid HTTP header name",
            );
        }
        for (i, credential) in self.auth.iter().enumerate() {
            match credential {
                Credential::Bearer { token } => out.check(
                    !token.is_empty(),
                    format!("auth[{i}].token"),
                    "must not be empty",
                ),
                Credential::Basic { username, .. } => out.check(
                    !username.is_empty() && !username.contains(':'),
                    format!("auth[{i}].username"),
                    "must be non-empty and hold no ':'",
                ),
            }
        }
        if let Some(tls) = &self.tls {
            out.extend_within("tls", tls.problems());
        }
        out.into_vec()
    }
}

/// Problems of a `limits` section (`gateway.limits`, `router.limits`),
/// keys relative to it.
pub fn limits_problems(limits: &Limits) -> Vec<Problem> {
    let mut out = Problems::default();
    for (key, value) in [
        ("max_labels_per_series", limits.max_labels_per_series),
        ("max_label_name_len", limits.max_label_name_len),
        ("max_label_value_len", limits.max_label_value_len),
        ("max_series_per_request", limits.max_series_per_request),
    ] {
        out.check(value > 0, key, "must be greater than zero");
    }
    out.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_naming_the_key() {
        let mut config = GatewayConfig::default();
        assert_eq!(config.problems(), vec![]);
        config.limits.max_labels_per_series = 0;
        config.limits.max_series_per_request = 0;
        config.body_read_timeout = Duration::ZERO;
        config.max_concurrent_decodes = 0;
        let keys: Vec<String> = config.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "max_concurrent_decodes",
                "body_read_timeout",
                "limits.max_labels_per_series",
                "limits.max_series_per_request"
            ]
        );
    }

    #[test]
    fn the_body_budget_must_hold_one_body() {
        let config = GatewayConfig {
            max_body_bytes_in_flight: 1024,
            max_body_bytes: 2048,
            max_decoded_bytes: 4096,
            ..GatewayConfig::default()
        };
        assert_eq!(config.problems().len(), 1);
        assert_eq!(config.problems()[0].key, "max_body_bytes_in_flight");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod example {
    use std::path::Path;

    /// config/example.toml documents every gateway key with its default.
    #[test]
    fn the_example_gateway_section_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = crate::config::Config::load(Some(&path)).unwrap();
        let defaults = super::GatewayConfig::default();
        assert_eq!(
            config.gateway.max_body_bytes_in_flight,
            defaults.max_body_bytes_in_flight
        );
        assert_eq!(
            config.gateway.header_read_timeout,
            defaults.header_read_timeout
        );
        assert_eq!(config.gateway.body_read_timeout, defaults.body_read_timeout);
        assert_eq!(
            config.gateway.max_decode_memory_bytes,
            defaults.max_decode_memory_bytes
        );
        assert_eq!(config.gateway.max_in_flight, defaults.max_in_flight);
    }
}
