//! The task-topic record format: what the router writes and egress (or any
//! downstream consumer) reads.
//!
//! - value: a 1.0 `WriteRequest` (series and metadata entries, so records
//!   of one partition concatenate into one request) in the route's
//!   `record_encoding` ([`encode_task_value`]); [`TaskHeaders::value`]
//!   undoes it.
//! - headers, in this order:
//!   - `content-encoding`: `identity`, `snappy` or `zstd` (a record without
//!     it, from routers before `record_encoding`, is identity)
//!   - `protocol`: `prometheus.WriteRequest`, or `streamroute.SeriesIds`
//!     for a route with `record_format = "series_ids"` (the value's series
//!     name their labels by number: `series.rs`)
//!   - `tenant`: the ingress record's tenant, when it had one
//!   - `route`: the route that wrote it
//!   - `series-writer`, `series-refresh-ms`: `series_ids` records only
//!     (`series.rs`)
//! - key: none; the partition is the series' task.
//!
//! Depends on `remote_write`'s codecs, the ingress header names it shares
//! and the header guard in `record`.

use std::borrow::Cow;

use rdkafka::message::{Header, Headers, OwnedHeaders};

use super::ingress::{protocol_name, HEADER_ENCODING, HEADER_PROTOCOL, HEADER_TENANT};
use super::series::{self, SeriesOrigin};
use super::{for_each_header, with_headers, HeaderError};
use crate::remote_write::{compress, decompress, Encoding, Protocol};

/// Header naming the route that wrote a task-topic record.
pub const HEADER_ROUTE: &str = "route";

/// Largest decoded task-record value accepted: a router batch is at most
/// `router.batch_max_bytes` (256 MiB at most) unless one series alone is
/// larger, and that is bounded by the router's `max_decoded_bytes`.
pub const MAX_TASK_VALUE: usize = 512 << 20;

/// What the router writes in a task record's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMeta<'a> {
    /// The name of the route that wrote the record.
    pub route: &'a str,
    /// The value's encoding (identity when compressing failed).
    pub encoding: Encoding,
    /// The tenant of the ingress records in it (a batch never mixes them).
    pub tenant: Option<&'a str>,
    /// The writer of a `series_ids` record (`None`: a plain WriteRequest).
    pub series: Option<SeriesOrigin>,
}

impl TaskMeta<'_> {
    /// The record headers for this metadata.
    pub fn to_headers(&self) -> OwnedHeaders {
        let protocol = match self.series {
            None => protocol_name(Protocol::V1),
            Some(_) => series::PROTOCOL,
        };
        let headers = with_headers(
            OwnedHeaders::new_with_capacity(6),
            [
                (HEADER_ENCODING, Some(self.encoding.as_str())),
                (HEADER_PROTOCOL, Some(protocol)),
                (HEADER_TENANT, self.tenant),
                (HEADER_ROUTE, Some(self.route)),
            ],
        );
        let Some(origin) = self.series else {
            return headers;
        };
        let (writer, refresh) = (origin.writer_hex(), origin.refresh_ms.to_string());
        with_headers(
            headers,
            [
                (series::HEADER_WRITER, Some(writer.as_str())),
                (series::HEADER_REFRESH, Some(refresh.as_str())),
            ],
        )
    }
}

/// A consumed task record's headers, as egress reads them.
#[derive(Debug)]
pub struct TaskHeaders {
    /// As read: a record dead-lettered without being decoded keeps them.
    pub original: OwnedHeaders,
    /// As they are once the value is decoded: the same, with
    /// `content-encoding: identity` last.
    pub decoded: OwnedHeaders,
    /// The `tenant` header (a value that is not UTF-8 is taken lossily).
    pub tenant: Option<String>,
    /// The raw `content-encoding` value, checked when the value is decoded.
    encoding: Option<Vec<u8>>,
    /// Whether `protocol` says `series_ids`, and the raw `series-writer`
    /// and `series-refresh-ms` values, checked by [`TaskHeaders::series`].
    series_ids: bool,
    writer: Option<Vec<u8>>,
    refresh: Option<Vec<u8>>,
}

impl TaskHeaders {
    /// Reads a consumed record's headers through the guard against a key
    /// that is not UTF-8 (the error then).
    pub fn read<H: Headers>(headers: Option<&H>) -> Result<TaskHeaders, HeaderError> {
        let mut read = TaskHeaders {
            original: OwnedHeaders::new(),
            decoded: OwnedHeaders::new(),
            tenant: None,
            encoding: None,
            series_ids: false,
            writer: None,
            refresh: None,
        };
        let plain = Some(protocol_name(Protocol::V1).as_bytes());
        for_each_header(headers, |mut header| {
            if header.key == HEADER_TENANT {
                read.tenant = header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned());
            }
            read.original = std::mem::take(&mut read.original).insert(header.clone());
            // Decoded, a series_ids value is a plain WriteRequest: its
            // headers say so and lose the writer's.
            match header.key {
                HEADER_ENCODING => read.encoding = header.value.map(<[u8]>::to_vec),
                series::HEADER_WRITER => read.writer = header.value.map(<[u8]>::to_vec),
                series::HEADER_REFRESH => read.refresh = header.value.map(<[u8]>::to_vec),
                _ => {
                    if header.key == HEADER_PROTOCOL
                        && header.value == Some(series::PROTOCOL.as_bytes())
                    {
                        read.series_ids = true;
                        header.value = plain;
                    }
                    read.decoded = std::mem::take(&mut read.decoded).insert(header);
                }
            }
            Ok(())
        })?;
        read.decoded = std::mem::take(&mut read.decoded).insert(Header {
            key: HEADER_ENCODING,
            value: Some(Encoding::Identity.as_str()),
        });
        Ok(read)
    }

    /// The writer of a `series_ids` record (`None` for a plain one), or
    /// why its headers do not name one.
    pub fn series(&self) -> Result<Option<SeriesOrigin>, TaskValueError> {
        if !self.series_ids {
            return Ok(None);
        }
        let text = |raw: &Option<Vec<u8>>| {
            raw.as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        let (writer, refresh) = (text(&self.writer), text(&self.refresh));
        let origin = writer
            .as_deref()
            .and_then(|w| u64::from_str_radix(w, 16).ok())
            .zip(refresh.as_deref().and_then(|r| r.parse::<i64>().ok()))
            .filter(|(_, refresh_ms)| *refresh_ms > 0);
        match origin {
            Some((writer, refresh_ms)) => Ok(Some(SeriesOrigin { writer, refresh_ms })),
            None => Err(TaskValueError::SeriesHeaders { writer, refresh }),
        }
    }

    /// The record's value as plain protobuf, decoded as its
    /// `content-encoding` header says.
    pub fn value<'a>(&self, value: &'a [u8]) -> Result<Cow<'a, [u8]>, TaskValueError> {
        task_value(value, self.encoding.as_deref())
    }
}

/// A task record's value as plain protobuf, decompressed as its
/// `content-encoding` header (`encoding`, the raw header value) says;
/// without the header it is identity (records of older routers).
pub fn task_value<'a>(
    value: &'a [u8],
    encoding: Option<&[u8]>,
) -> Result<Cow<'a, [u8]>, TaskValueError> {
    let encoding = match encoding {
        None => Encoding::Identity,
        Some(raw) => std::str::from_utf8(raw)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| TaskValueError::Encoding(String::from_utf8_lossy(raw).into_owned()))?,
    };
    match encoding {
        Encoding::Identity => Ok(Cow::Borrowed(value)),
        other => decompress(value, other, MAX_TASK_VALUE)
            .map(Cow::Owned)
            .map_err(|source| TaskValueError::Decompress {
                encoding: other,
                source,
            }),
    }
}

/// Why a task record's value cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TaskValueError {
    #[error("a {} record needs headers {}: 16 hex digits (got {writer:?}) and {}: a positive number (got {refresh:?})", series::PROTOCOL, series::HEADER_WRITER, series::HEADER_REFRESH)]
    SeriesHeaders {
        writer: Option<String>,
        refresh: Option<String>,
    },
    #[error("header {HEADER_ENCODING} {0:?} is not identity, snappy or zstd")]
    Encoding(String),
    #[error("{encoding} value does not decompress: {source}")]
    Decompress {
        encoding: Encoding,
        source: crate::remote_write::DecodeError,
    },
}

/// A task record's value in `wanted` encoding, with the encoding it is
/// really in: identity when compressing fails (a body too large for
/// snappy), so the header always tells consumers the truth.
pub fn encode_task_value(encoded: &[u8], wanted: Encoding) -> (Encoding, Cow<'_, [u8]>) {
    if wanted == Encoding::Identity {
        return (Encoding::Identity, Cow::Borrowed(encoded));
    }
    match compress(encoded, wanted) {
        Ok(body) => (wanted, Cow::Owned(body)),
        Err(_) => (Encoding::Identity, Cow::Borrowed(encoded)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(headers: &OwnedHeaders) -> Vec<(String, Option<String>)> {
        headers
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    h.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect()
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn the_router_writes_encoding_protocol_tenant_and_route_in_order() {
        let meta = TaskMeta {
            route: "r1",
            encoding: Encoding::Zstd,
            tenant: Some("team-a"),
            series: None,
        };
        assert_eq!(
            pairs(&meta.to_headers()),
            owned(&[
                ("content-encoding", "zstd"),
                ("protocol", "prometheus.WriteRequest"),
                ("tenant", "team-a"),
                ("route", "r1"),
            ])
        );
        let untenanted = TaskMeta {
            tenant: None,
            ..meta
        };
        assert_eq!(pairs(&untenanted.to_headers()).len(), 3);
    }

    #[test]
    fn egress_reads_what_the_router_writes() {
        let written = TaskMeta {
            route: "r1",
            encoding: Encoding::Snappy,
            tenant: Some("team-a"),
            series: None,
        }
        .to_headers();
        let read = TaskHeaders::read(Some(&written)).unwrap();
        assert_eq!(read.tenant.as_deref(), Some("team-a"));
        assert_eq!(pairs(&read.original), pairs(&written));
        assert_eq!(
            pairs(&read.decoded),
            owned(&[
                ("protocol", "prometheus.WriteRequest"),
                ("tenant", "team-a"),
                ("route", "r1"),
                ("content-encoding", "identity"),
            ])
        );
        assert!(read.series().unwrap().is_none());
        let raw = b"\x0a\x13\x0a\x11\x0a\x08__name__\x12\x05up_up".repeat(20);
        let snappy = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(read.value(&snappy).unwrap(), &raw[..]);
    }

    #[test]
    fn a_series_ids_record_names_its_writer_and_decodes_to_a_plain_one() {
        let origin = SeriesOrigin {
            writer: 0xfe01,
            refresh_ms: 300_000,
        };
        let written = TaskMeta {
            route: "r1",
            encoding: Encoding::Identity,
            tenant: None,
            series: Some(origin),
        }
        .to_headers();
        assert_eq!(
            pairs(&written),
            owned(&[
                ("content-encoding", "identity"),
                ("protocol", "streamroute.SeriesIds"),
                ("route", "r1"),
                ("series-writer", "000000000000fe01"),
                ("series-refresh-ms", "300000"),
            ])
        );
        let read = TaskHeaders::read(Some(&written)).unwrap();
        assert_eq!(read.series().unwrap(), Some(origin));
        assert_eq!(pairs(&read.original), pairs(&written));
        assert_eq!(
            pairs(&read.decoded),
            owned(&[
                ("protocol", "prometheus.WriteRequest"),
                ("route", "r1"),
                ("content-encoding", "identity"),
            ])
        );
        // Without a usable writer header the record cannot be resolved.
        for (writer, refresh) in [("xyz", "1000"), ("00000000000000ff", "0")] {
            let broken = with_headers(
                OwnedHeaders::new(),
                [
                    (HEADER_PROTOCOL, Some(series::PROTOCOL)),
                    (series::HEADER_WRITER, Some(writer)),
                    (series::HEADER_REFRESH, Some(refresh)),
                ],
            );
            let err = TaskHeaders::read(Some(&broken))
                .unwrap()
                .series()
                .unwrap_err();
            assert!(err.to_string().contains(writer), "{err}");
        }
    }

    #[test]
    fn no_headers_mean_identity_and_no_tenant() {
        let read = TaskHeaders::read::<OwnedHeaders>(None).unwrap();
        assert_eq!(read.tenant, None);
        assert_eq!(read.original.count(), 0);
        assert_eq!(
            pairs(&read.decoded),
            owned(&[("content-encoding", "identity")])
        );
        assert_eq!(read.value(b"\x0a\x00").unwrap(), &b"\x0a\x00"[..]);
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
        assert!(err.to_string().contains("gzip"), "{err}");
        let err = task_value(&raw, Some(b"zstd")).unwrap_err();
        assert!(
            err.to_string().contains("zstd value does not decompress"),
            "{err}"
        );
        let err = task_value(&zstd, Some(b"snappy")).unwrap_err();
        assert!(err.to_string().contains("snappy"), "{err}");
    }
}
