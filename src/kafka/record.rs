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
//! Task records (what the router writes) use the same headers plus `route`;
//! their value is a 1.0 `WriteRequest` in the route's `record_encoding`,
//! named in `content-encoding` (no header: identity). [`task_value`] undoes it.

use std::borrow::Cow;

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::remote_write::{decompress, Encoding, Protocol};

/// Header naming the value's encoding.
pub const HEADER_ENCODING: &str = "content-encoding";
/// Header naming the protobuf message of the value.
pub const HEADER_PROTOCOL: &str = "protocol";
/// Header with the tenant (`X-Scope-OrgID`).
pub const HEADER_TENANT: &str = "tenant";
/// Header with the receive time, unix milliseconds.
pub const HEADER_RECEIVED_AT: &str = "received-at";
/// Header naming the route that wrote a task-topic record.
pub const HEADER_ROUTE: &str = "route";

/// Largest decoded task-record value accepted: a router batch is at most
/// `router.batch_max_bytes` (256 MiB at most) unless one series alone is
/// larger, and that is bounded by the router's `max_decoded_bytes`.
pub const MAX_TASK_VALUE: usize = 512 << 20;

/// A task record's value as plain protobuf, decompressed as its
/// `content-encoding` header (`encoding`, the raw header value) says;
/// without the header it is identity (records of older routers).
pub fn task_value<'a>(value: &'a [u8], encoding: Option<&[u8]>) -> Result<Cow<'a, [u8]>, String> {
    let encoding = match encoding {
        None => Encoding::Identity,
        Some(raw) => std::str::from_utf8(raw)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                format!(
                    "header {HEADER_ENCODING} {:?} is not identity, snappy or zstd",
                    String::from_utf8_lossy(raw)
                )
            })?,
    };
    match encoding {
        Encoding::Identity => Ok(Cow::Borrowed(value)),
        other => decompress(value, other, MAX_TASK_VALUE)
            .map(Cow::Owned)
            .map_err(|e| format!("{other} value does not decompress: {e}")),
    }
}

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

    /// Reads metadata from record headers; unknown headers are ignored and
    /// unreadable values are reported.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> Result<IngressMeta, String> {
        let mut meta = IngressMeta {
            encoding: None,
            protocol: Protocol::V1,
            tenant: None,
            received_at_ms: None,
        };
        let Some(headers) = headers else {
            return Ok(meta);
        };
        for header in headers.iter() {
            let Some(raw) = header.value else { continue };
            let value = std::str::from_utf8(raw)
                .map_err(|_| format!("header {} is not UTF-8", header.key))?;
            match header.key {
                HEADER_ENCODING => {
                    meta.encoding = Some(
                        value
                            .parse()
                            .map_err(|e| format!("header {HEADER_ENCODING}: {e}"))?,
                    );
                }
                HEADER_PROTOCOL => {
                    meta.protocol = match value {
                        "prometheus.WriteRequest" | "v1" => Protocol::V1,
                        "io.prometheus.write.v2.Request" | "v2" => Protocol::V2,
                        other => {
                            return Err(format!(
                                "header {HEADER_PROTOCOL}: unknown protocol {other:?}"
                            ))
                        }
                    }
                }
                HEADER_TENANT => meta.tenant = Some(value.to_string()),
                HEADER_RECEIVED_AT => {
                    meta.received_at_ms = Some(
                        value
                            .parse()
                            .map_err(|_| format!("header {HEADER_RECEIVED_AT}: not a number"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(meta)
    }
}

/// Copies a consumed record's headers. rdkafka 0.38 panics on a header key
/// that is not UTF-8 (`BorrowedHeaders::try_get` unwraps it); another
/// producer may write such a key, so that case becomes an error the caller
/// dead-letters instead of a crashed consumer thread.
pub fn copy_headers<H: Headers>(headers: Option<&H>) -> Result<Option<OwnedHeaders>, String> {
    let Some(headers) = headers else {
        return Ok(None);
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut copy = OwnedHeaders::new_with_capacity(headers.count());
        for header in headers.iter() {
            copy = copy.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
        copy
    }))
    .map(Some)
    .map_err(|_| "a header key is not UTF-8".to_string())
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
    fn copied_headers_keep_keys_and_values() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_TENANT,
                value: Some("a"),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            });
        let copy = copy_headers(Some(&headers)).unwrap().unwrap();
        let pairs: Vec<(&str, Option<&[u8]>)> = copy.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            pairs,
            vec![(HEADER_TENANT, Some(&b"a"[..])), ("empty", None)]
        );
        assert!(copy_headers::<OwnedHeaders>(None).unwrap().is_none());
    }

    #[test]
    fn task_values_decode_by_their_header() {
        let raw = b"\x0a\x13\x0a\x11\x0a\x08__name__\x12\x05up_up".repeat(50);
        let snappy = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let zstd = zstd::bulk::compress(&raw, 1).unwrap();
        assert!(snappy.len() < raw.len() && zstd.len() < raw.len());
        assert_eq!(task_value(&snappy, Some(b"snappy")).unwrap(), &raw[..]);
        assert_eq!(task_value(&zstd, Some(b"zstd")).unwrap(), &raw[..]);
        assert_eq!(task_value(&raw, Some(b"identity")).unwrap(), &raw[..]);
        // No header: identity, taken as it is (even if it looks compressed).
        assert_eq!(task_value(&snappy, None).unwrap(), &snappy[..]);
        let err = task_value(&raw, Some(b"gzip")).unwrap_err();
        assert!(err.contains("gzip"), "{err}");
        let err = task_value(&raw, Some(b"zstd")).unwrap_err();
        assert!(err.contains("zstd value does not decompress"), "{err}");
        let err = task_value(&zstd, Some(b"snappy")).unwrap_err();
        assert!(err.contains("snappy"), "{err}");
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
            .contains("unknown protocol"));
    }
}
