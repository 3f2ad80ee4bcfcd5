//! The ingress record format: what the gateway and `streamroute produce`
//! write, and what the router accepts from any producer.
//!
//! - value: the remote-write body as the sender compressed it (snappy for
//!   Prometheus, zstd for the VictoriaMetrics variant) or plain protobuf
//!   (`identity`); Kafka's batch compression (zstd) runs over it.
//! - headers (all optional for other producers; the router sniffs the value
//!   when `content-encoding` is missing):
//!   - `content-encoding`: `identity`, `snappy` or `zstd`
//!   - `protocol`: `prometheus.WriteRequest` (1.0, the default) or
//!     `io.prometheus.write.v2.Request` (2.0)
//!   - `tenant`: the sender's `X-Scope-OrgID`, when it sent one
//!   - `received-at`: when the gateway accepted it, unix milliseconds
//! - key: the sender identity when the gateway is configured with
//!   `gateway.key_header`, else none (records spread over partitions).
//!
//! Depends on `remote_write`'s encodings and the header guard in `record`.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use super::{for_each_header, HeaderError};
use crate::remote_write::{Encoding, Protocol};

/// Header naming the value's encoding.
pub const HEADER_ENCODING: &str = "content-encoding";
/// Header naming the protobuf message of the value.
pub const HEADER_PROTOCOL: &str = "protocol";
/// Header with the tenant (`X-Scope-OrgID`).
pub const HEADER_TENANT: &str = "tenant";
/// Header with the receive time, unix milliseconds.
pub const HEADER_RECEIVED_AT: &str = "received-at";
/// Metadata carried in an ingress record's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressMeta {
    /// Encoding of the value; None means "sniff it".
    pub encoding: Option<Encoding>,
    /// Protocol of the decoded value.
    pub protocol: Protocol,
    /// Tenant, when the sender named one.
    pub tenant: Option<String>,
    /// Receive time, unix milliseconds.
    pub received_at_ms: Option<i64>,
}

/// The protobuf message name written in the `protocol` header.
pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::V1 => "prometheus.WriteRequest",
        Protocol::V2 => "io.prometheus.write.v2.Request",
    }
}

impl IngressMeta {
    /// The record headers for this metadata.
    pub fn to_headers(&self) -> OwnedHeaders {
        let received_at = self.received_at_ms.map(|t| t.to_string());
        let mut headers = OwnedHeaders::new_with_capacity(4);
        if let Some(encoding) = self.encoding {
            headers = headers.insert(Header {
                key: HEADER_ENCODING,
                value: Some(encoding.as_str()),
            });
        }
        headers = headers.insert(Header {
            key: HEADER_PROTOCOL,
            value: Some(protocol_name(self.protocol)),
        });
        if let Some(tenant) = &self.tenant {
            headers = headers.insert(Header {
                key: HEADER_TENANT,
                value: Some(tenant.as_str()),
            });
        }
        if let Some(t) = &received_at {
            headers = headers.insert(Header {
                key: HEADER_RECEIVED_AT,
                value: Some(t.as_str()),
            });
        }
        headers
    }

    /// Reads metadata from record headers (through the guard against a key
    /// that is not UTF-8); unknown headers are ignored and unreadable values
    /// are reported.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> Result<IngressMeta, HeaderError> {
        let mut meta = IngressMeta {
            encoding: None,
            protocol: Protocol::V1,
            tenant: None,
            received_at_ms: None,
        };
        for_each_header(headers, |header| {
            let Some(raw) = header.value else {
                return Ok(());
            };
            let value = std::str::from_utf8(raw)
                .map_err(|_| HeaderError::NotUtf8Value(header.key.to_string()))?;
            match header.key {
                HEADER_ENCODING => {
                    meta.encoding = Some(value.parse().map_err(
                        |e: crate::remote_write::DecodeError| HeaderError::Invalid {
                            header: HEADER_ENCODING,
                            reason: e.to_string(),
                        },
                    )?);
                }
                HEADER_PROTOCOL => {
                    meta.protocol = match value {
                        "prometheus.WriteRequest" | "v1" => Protocol::V1,
                        "io.prometheus.write.v2.Request" | "v2" => Protocol::V2,
                        other => {
                            return Err(HeaderError::Invalid {
                                header: HEADER_PROTOCOL,
                                reason: format!("unknown protocol {other:?}"),
                            })
                        }
                    }
                }
                HEADER_TENANT => meta.tenant = Some(value.to_string()),
                HEADER_RECEIVED_AT => {
                    meta.received_at_ms =
                        Some(value.parse().map_err(|_| HeaderError::Invalid {
                            header: HEADER_RECEIVED_AT,
                            reason: "not a number".into(),
                        })?);
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let meta = IngressMeta {
            encoding: Some(Encoding::Identity),
            protocol: Protocol::V2,
            tenant: Some("team-a".into()),
            received_at_ms: Some(1_700_000_000_123),
        };
        let headers = meta.to_headers();
        assert_eq!(IngressMeta::from_headers(Some(&headers)).unwrap(), meta);
    }

    #[test]
    fn missing_headers_mean_v1_and_sniffing() {
        let meta = IngressMeta::from_headers::<OwnedHeaders>(None).unwrap();
        assert_eq!(meta.encoding, None);
        assert_eq!(meta.protocol, Protocol::V1);
    }

    #[test]
    fn bad_protocol_header_is_reported() {
        let headers = OwnedHeaders::new().insert(Header {
            key: HEADER_PROTOCOL,
            value: Some("json"),
        });
        assert!(IngressMeta::from_headers(Some(&headers))
            .unwrap_err()
            .to_string()
            .contains("unknown protocol"));
    }
}
