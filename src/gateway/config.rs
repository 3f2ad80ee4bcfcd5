//! Gateway settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Per-series and per-request limits.
    pub limits: Limits,
    /// How long Kafka may take to acknowledge a payload before the sender
    /// gets 503 (it retries; the payload may then arrive twice, which
    /// VictoriaMetrics deduplicates).
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Retry-After sent with 503 when Kafka cannot take a payload.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Requests handled at once; more get 503 with Retry-After.
    pub max_in_flight: usize,
    /// When set, the value of this request header becomes the ingress
    /// record key, so one sender's payloads stay in order on one partition
    /// (e.g. a header set in Prometheus' `remote_write.headers`).
    pub key_header: Option<String>,
    /// Accepted credentials; empty means no authentication.
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
    /// Problems as (key relative to `gateway.`, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &str, reason: &str| {
            if !ok {
                out.push((key.to_string(), reason.to_string()));
            }
        };
        check(self.max_body_bytes > 0, "max_body_bytes", "must be greater than zero");
        check(
            self.max_decoded_bytes >= self.max_body_bytes,
            "max_decoded_bytes",
            "must be at least max_body_bytes (a decoded payload is never smaller than its body)",
        );
        check(!self.produce_timeout.is_zero(), "produce_timeout", "must be greater than zero");
        check(self.max_in_flight > 0, "max_in_flight", "must be greater than zero");
        if let Some(h) = &self.key_header {
            check(hyper::header::HeaderName::from_bytes(h.as_bytes()).is_ok(), "key_header", "is not a valid HTTP header name");
        }
        for (i, credential) in self.auth.iter().enumerate() {
            match credential {
                Credential::Bearer { token } => check(!token.is_empty(), &format!("auth[{i}].token"), "must not be empty"),
                Credential::Basic { username, .. } => {
                    check(!username.is_empty() && !username.contains(':'), &format!("auth[{i}].username"), "must be non-empty and hold no ':'")
                }
            }
        }
        if let Some(tls) = &self.tls {
            out.extend(tls.problems().into_iter().map(|(key, reason)| (format!("tls.{key}"), reason)));
        }
        out
    }
}
