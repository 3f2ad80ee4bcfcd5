//! One remote-write request and the classification of its answer.
//!
//! The classification is the egress guarantee in small: 2xx is delivered;
//! connection errors, timeouts, 5xx and 429 are retried (never dropped);
//! a refused zstd body is retried as snappy; any other 4xx is a request the
//! receiver will never take, which the caller dead-letters.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, InvalidHeaderName, InvalidHeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::config::{load_ca_file, CaFileError, EgressConfig, SendEncoding};

/// Longest response body kept for logs and dead-letter headers.
const MAX_BODY: usize = 1024;

/// Longest wait a receiver's Retry-After can ask for: a date far ahead
/// (a skewed clock) or a huge number must not stall a partition for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx: the receiver has every sample.
    Delivered,
    /// Try again later; `after` is the receiver's Retry-After.
    Retry {
        reason: &'static str,
        after: Option<Duration>,
        detail: String,
    },
    /// The receiver refused the body's encoding (zstd); resend as snappy.
    EncodingRefused { status: u16, body: String },
    /// A 4xx other than 429: it will never be accepted.
    Rejected { status: u16, body: String },
}

/// Why a [`Sender`] cannot be built from the config (validation checks
/// the same things first, so at start-up this is rare).
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// A configured header name is not a valid HTTP header name.
    #[error("header {name}: {source}")]
    HeaderName {
        /// The name as configured.
        name: String,
        /// Why it is invalid.
        source: InvalidHeaderName,
    },
    /// A header value (extra header, auth) is not a valid HTTP header value.
    #[error("header {name}: {source}")]
    HeaderValue {
        /// The header's name.
        name: String,
        /// Why it is invalid (never the value itself: it may be a secret).
        source: InvalidHeaderValue,
    },
    /// `forward_tenant_header` is not a valid HTTP header name.
    #[error("forward_tenant_header: {0}")]
    TenantHeader(InvalidHeaderName),
    /// rustls refuses the protocol versions.
    #[error("tls: {0}")]
    Tls(rustls::Error),
    /// `tls_ca_file` cannot be read or holds no certificate.
    #[error("tls_ca_file: {0}")]
    CaFile(CaFileError),
    /// A certificate of `tls_ca_file` is not a usable CA.
    #[error("tls_ca_file: {}: {source}", path.display())]
    CaCertificate {
        /// The file.
        path: PathBuf,
        /// Why rustls refuses the certificate.
        source: rustls::Error,
    },
    /// An https target, no `tls_ca_file`, and no system roots.
    #[error("https target but the system's CA certificates cannot be used ({0}); set egress.tls_ca_file")]
    NativeRoots(std::io::Error),
}

/// Builds and sends requests to the receivers.
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    headers: HeaderMap,
    tenant_header: Option<HeaderName>,
    timeout: Duration,
}

/// Whether an error answer to a zstd body says the encoding was the
/// problem. vmagent 1.79 ignores `Content-Encoding: zstd`, reads the body as
/// snappy and answers 400 "cannot decompress … snappy: corrupt input".
pub fn refuses_encoding(status: u16, body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    status == 415
        || (status == 400
            && ["encoding", "snappy", "zstd", "decompress"]
                .iter()
                .any(|w| body.contains(w)))
}

impl Sender {
    /// A sender with the configured auth and extra headers (validated at start-up).
    pub fn new(config: &EgressConfig) -> Result<Sender, SenderError> {
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| -> Result<(), SenderError> {
            let n = HeaderName::try_from(name).map_err(|source| SenderError::HeaderName {
                name: name.to_owned(),
                source,
            })?;
            let v = HeaderValue::try_from(value).map_err(|source| SenderError::HeaderValue {
                name: name.to_owned(),
                source,
            })?;
            headers.insert(n, v);
            Ok(())
        };
        for (name, value) in &config.headers {
            put(name, value)?;
        }
        put("content-type", "application/x-protobuf")?;
        put("x-prometheus-remote-write-version", "0.1.0")?;
        put(
            "user-agent",
            concat!("streamroute/", env!("CARGO_PKG_VERSION")),
        )?;
        if let Some(auth) = &config.basic_auth {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", auth.username, auth.password));
            put("authorization", &format!("Basic {token}"))?;
        }
        if let Some(token) = &config.bearer_token {
            put("authorization", &format!("Bearer {token}"))?;
        }
        let tenant_header = config
            .forward_tenant_header
            .as_deref()
            .map(|n| HeaderName::try_from(n).map_err(SenderError::TenantHeader))
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.request_timeout));
        connector.set_nodelay(true);
        // Lets https:// URLs through to the TLS layer.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Sender {
            client,
            headers,
            tenant_header,
            timeout: config.request_timeout,
        })
    }

    /// POSTs `body` (already compressed with `encoding`) to `url`.
    pub async fn send(
        &self,
        url: &str,
        body: Bytes,
        encoding: SendEncoding,
        tenant: Option<&str>,
    ) -> Outcome {
        let mut request = hyper::Request::post(url);
        if let Some(h) = request.headers_mut() {
            h.extend(self.headers.clone());
            h.insert(
                "content-encoding",
                HeaderValue::from_static(encoding_name(encoding)),
            );
            if let (Some(name), Some(tenant)) = (&self.tenant_header, tenant) {
                if let Ok(v) = HeaderValue::try_from(tenant) {
                    h.insert(name.clone(), v);
                }
            }
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            // Only a bad URL gets here; config validation checks them.
            Err(e) => {
                return Outcome::Rejected {
                    status: 0,
                    body: format!("cannot build the request: {e}"),
                }
            }
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ("connect", error_chain(&e)))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // The body matters only for errors and is kept short.
            let body = match response.into_body().collect().await {
                Ok(b) => truncate(&b.to_bytes()),
                Err(e) => format!("(body unreadable: {e})"),
            };
            Ok::<_, (&'static str, String)>((status, retry_after, body))
        };
        let (status, retry_after, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Outcome::Retry {
                    reason: "timeout",
                    after: None,
                    detail: format!("no answer within {:?}", self.timeout),
                }
            }
            Ok(Err((reason, detail))) => {
                return Outcome::Retry {
                    reason,
                    after: None,
                    detail,
                }
            }
            Ok(Ok(answer)) => answer,
        };
        match status {
            200..=299 => Outcome::Delivered,
            429 => Outcome::Retry {
                reason: "429",
                after: retry_after,
                detail: body,
            },
            500..=599 => Outcome::Retry {
                reason: "5xx",
                after: retry_after,
                detail: format!("{status}: {body}"),
            },
            s if encoding == SendEncoding::Zstd && refuses_encoding(s, &body) => {
                Outcome::EncodingRefused { status: s, body }
            }
            400..=499 => Outcome::Rejected { status, body },
            // 1xx/3xx: not a remote-write answer; the receiver may be misconfigured for now.
            _ => Outcome::Retry {
                reason: "unexpected_status",
                after: retry_after,
                detail: format!("{status}: {body}"),
            },
        }
    }
}

/// The TLS client settings for https receivers: their certificates must
/// chain to `tls_ca_file`'s CAs when set, else to the system's roots. Only
/// https targets need roots, so plain http works on a machine without any.
fn tls_config(config: &EgressConfig) -> Result<ClientConfig, SenderError> {
    use hyper_rustls::ConfigBuilderExt as _;
    // ring explicitly, as the listener (src/tls.rs) does.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SenderError::Tls)?;
    let builder = if let Some(path) = &config.tls_ca_file {
        let mut roots = RootCertStore::empty();
        for cert in load_ca_file(path).map_err(SenderError::CaFile)? {
            roots
                .add(cert)
                .map_err(|source| SenderError::CaCertificate {
                    path: path.clone(),
                    source,
                })?;
        }
        builder.with_root_certificates(roots)
    } else if config.target.uses_https() {
        builder
            .with_native_roots()
            .map_err(SenderError::NativeRoots)?
    } else {
        builder.with_root_certificates(RootCertStore::empty())
    };
    // No ALPN here: the connector sets it from enable_http1 (and panics when preset).
    Ok(builder.with_no_client_auth())
}

/// A Retry-After value (RFC 9110 10.2.3) as a wait from `now`: delay
/// seconds, or an HTTP date (IMF-fixdate, or the obsolete RFC 850 and
/// asctime forms). A date in the past is no wait; any wait is capped at
/// [`MAX_RETRY_AFTER`]. None when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The Content-Encoding value.
pub fn encoding_name(encoding: SendEncoding) -> &'static str {
    match encoding {
        SendEncoding::Snappy => "snappy",
        SendEncoding::Zstd => "zstd",
    }
}

/// An error and its causes, e.g. "client error (Connect): invalid peer
/// certificate: UnknownIssuer": hyper's own message hides the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = e.source();
    }
    text
}

fn truncate(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY)]);
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_header_or_ca_file_is_named_in_the_error() {
        let config = EgressConfig {
            headers: [("bad name".into(), "v".into())].into(),
            ..EgressConfig::default()
        };
        let e = Sender::new(&config).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("header bad name: invalid HTTP header name")
        );

        let config = EgressConfig {
            headers: [("x-env".into(), "line\nbreak".into())].into(),
            ..EgressConfig::default()
        };
        let e = Sender::new(&config).err();
        assert!(
            matches!(&e, Some(SenderError::HeaderValue { name, .. }) if name == "x-env"),
            "{e:?}"
        );

        let config = EgressConfig {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..EgressConfig::default()
        };
        let e = Sender::new(&config).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("tls_ca_file: cannot read /nonexistent/ca.pem")),
            "{e:?}"
        );
    }

    #[test]
    fn vmagent_179s_answer_to_zstd_counts_as_a_refused_encoding() {
        let body = "remoteAddr: \"127.0.0.1:43474\"; requestURI: /api/v1/write; cannot decompress request with length 2: snappy: corrupt input";
        assert!(refuses_encoding(400, body));
        assert!(refuses_encoding(415, ""));
        assert!(!refuses_encoding(400, "label name too long"));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        // Wed, 21 Oct 2015 07:28:00 GMT
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let now = date - Duration::from_secs(90);
        let wait = |v: &str| parse_retry_after(v, now);
        assert_eq!(wait("120"), Some(Duration::from_secs(120)));
        assert_eq!(wait(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            wait("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(90))
        );
        // The obsolete forms a recipient must still accept.
        assert_eq!(
            wait("Wednesday, 21-Oct-15 07:28:00 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            wait("Wed Oct 21 07:28:00 2015"),
            Some(Duration::from_secs(90))
        );
        // A date already past is no wait, never a negative one.
        assert_eq!(
            parse_retry_after(
                "Wed, 21 Oct 2015 07:28:00 GMT",
                date + Duration::from_secs(5)
            ),
            Some(Duration::ZERO)
        );
        // Far ahead, in either form: capped.
        assert_eq!(wait("Fri, 21 Oct 2016 07:28:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(wait("99999999"), Some(MAX_RETRY_AFTER));
        // Neither: the caller's own backoff applies.
        assert_eq!(wait("soon"), None);
        assert_eq!(wait("-5"), None);
        assert_eq!(wait("2015-10-21T07:28:00Z"), None);
    }
}
