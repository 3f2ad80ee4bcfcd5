//! The records router and egress set aside: the dead-letter record (both
//! roles, one format) and the late record of egress's windows.
//!
//! Dead-letter record: the original key and value, the original headers,
//! then `dead-letter-reason` (short snake_case, also the metric label),
//! `dead-letter-detail` (the message), for a request a receiver refused
//! `http-status` and `http-response-body` (the detail), for egress
//! `target-url`, and the [`Source`]: `source-topic`, `source-partition`,
//! `source-offset`.
//!
//! Late record: one WriteRequest of late samples, headers `late-reason`
//! and the [`Source`].
//!
//! Depends on rdkafka's header types and the header guard in `record`.

use rdkafka::message::{Headers, OwnedHeaders};

use super::{for_each_header, with_headers};

/// Header with the short reason a record was dead-lettered.
pub const HEADER_REASON: &str = "dead-letter-reason";
/// Header with the message saying why.
pub const HEADER_DETAIL: &str = "dead-letter-detail";
/// Header with the HTTP status a receiver refused the record's request with.
pub const HEADER_HTTP_STATUS: &str = "http-status";
/// Header with the refusing receiver's response body.
pub const HEADER_HTTP_BODY: &str = "http-response-body";
/// Header with the URL egress sent the record to.
pub const HEADER_TARGET_URL: &str = "target-url";
/// Header with the topic the record was read from.
pub const HEADER_SOURCE_TOPIC: &str = "source-topic";
/// Header with the partition the record was read from.
pub const HEADER_SOURCE_PARTITION: &str = "source-partition";
/// Header with the record's offset in its source partition.
pub const HEADER_SOURCE_OFFSET: &str = "source-offset";
/// Header with the reason samples were written to the late topic.
pub const HEADER_LATE_REASON: &str = "late-reason";

/// Where a set-aside record was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Source {
    fn append(&self, headers: OwnedHeaders) -> OwnedHeaders {
        let (partition, offset) = (self.partition.to_string(), self.offset.to_string());
        with_headers(
            headers,
            [
                (HEADER_SOURCE_TOPIC, Some(self.topic.as_str())),
                (HEADER_SOURCE_PARTITION, Some(partition.as_str())),
                (HEADER_SOURCE_OFFSET, Some(offset.as_str())),
            ],
        )
    }
}

/// Why and whence a record went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Short snake_case reason, also the metric label.
    pub reason: String,
    /// The message saying why.
    pub detail: String,
    /// The HTTP status of a receiver's refusal (its body is the detail).
    pub http_status: Option<u16>,
    /// Where egress sent the record.
    pub target_url: Option<String>,
    pub source: Source,
}

impl DeadLetter {
    /// A dead letter for the record read at `source`.
    pub fn new(reason: &str, detail: &str, source: Source) -> DeadLetter {
        DeadLetter {
            reason: reason.to_string(),
            detail: detail.to_string(),
            http_status: None,
            target_url: None,
            source,
        }
    }

    /// The dead-letter record's headers: the `original` ones (copied
    /// through the guard, so their keys are UTF-8), then ours.
    pub fn to_headers(&self, original: Option<&OwnedHeaders>) -> OwnedHeaders {
        let status = self.http_status.map(|s| s.to_string());
        let headers = with_headers(
            original.cloned().unwrap_or_default(),
            [
                (HEADER_REASON, Some(self.reason.as_str())),
                (HEADER_DETAIL, Some(self.detail.as_str())),
                (HEADER_HTTP_STATUS, status.as_deref()),
                (
                    HEADER_HTTP_BODY,
                    status.as_ref().map(|_| self.detail.as_str()),
                ),
                (HEADER_TARGET_URL, self.target_url.as_deref()),
            ],
        );
        self.source.append(headers)
    }

    /// Reads a dead-letter record's headers (the last of each name wins, so
    /// an original header of the same name does not mask ours); None when
    /// the reason or the source is missing or unreadable.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> Option<DeadLetter> {
        let (mut reason, mut detail, mut status, mut url) = (None, None, None, None);
        let (mut topic, mut partition, mut offset) = (None, None, None);
        for_each_header(headers, |h| {
            let value = h.value.and_then(|v| std::str::from_utf8(v).ok());
            let value = value.map(str::to_string);
            match h.key {
                HEADER_REASON => reason = value,
                HEADER_DETAIL => detail = value,
                HEADER_HTTP_STATUS => status = value.and_then(|v| v.parse().ok()),
                HEADER_TARGET_URL => url = value,
                HEADER_SOURCE_TOPIC => topic = value,
                HEADER_SOURCE_PARTITION => partition = value.and_then(|v| v.parse().ok()),
                HEADER_SOURCE_OFFSET => offset = value.and_then(|v| v.parse().ok()),
                _ => {}
            }
            Ok(())
        })
        .ok()?;
        Some(DeadLetter {
            reason: reason?,
            detail: detail.unwrap_or_default(),
            http_status: status,
            target_url: url,
            source: Source {
                topic: topic?,
                partition: partition?,
                offset: offset?,
            },
        })
    }
}

/// The headers of a late record: `late-reason`, then the source.
pub fn late_headers(reason: &str, source: &Source) -> OwnedHeaders {
    source.append(with_headers(
        OwnedHeaders::new_with_capacity(4),
        [(HEADER_LATE_REASON, Some(reason))],
    ))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Header;

    use super::*;

    fn keys(headers: &OwnedHeaders) -> Vec<&str> {
        headers.iter().map(|h| h.key).collect()
    }

    fn source() -> Source {
        Source {
            topic: "streamroute.ingress".into(),
            partition: 3,
            offset: 41,
        }
    }

    #[test]
    fn a_router_dead_letter_keeps_the_original_headers_first() {
        let original = OwnedHeaders::new().insert(Header {
            key: "tenant",
            value: Some("a"),
        });
        let dead = DeadLetter::new("bad_snappy", "snappy: corrupt input", source());
        let headers = dead.to_headers(Some(&original));
        assert_eq!(
            keys(&headers),
            [
                "tenant",
                "dead-letter-reason",
                "dead-letter-detail",
                "source-topic",
                "source-partition",
                "source-offset"
            ]
        );
        assert_eq!(DeadLetter::from_headers(Some(&headers)), Some(dead));
    }

    #[test]
    fn a_refused_request_names_its_status_body_and_target() {
        let dead = DeadLetter {
            http_status: Some(400),
            target_url: Some("http://vm:8428/api/v1/write".into()),
            ..DeadLetter::new("rejected_by_receiver", "out of order sample", source())
        };
        let headers = dead.to_headers(None);
        assert_eq!(
            keys(&headers),
            [
                "dead-letter-reason",
                "dead-letter-detail",
                "http-status",
                "http-response-body",
                "target-url",
                "source-topic",
                "source-partition",
                "source-offset"
            ]
        );
        let body = headers.iter().find(|h| h.key == "http-response-body");
        assert_eq!(
            body.and_then(|h| h.value),
            Some(&b"out of order sample"[..])
        );
        assert_eq!(DeadLetter::from_headers(Some(&headers)), Some(dead));
    }

    #[test]
    fn a_record_that_is_no_dead_letter_reads_as_none() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "tenant",
            value: Some("a"),
        });
        assert_eq!(DeadLetter::from_headers(Some(&headers)), None);
    }

    #[test]
    fn late_records_name_their_reason_and_source() {
        let headers = late_headers("at_or_before_last_sent", &source());
        assert_eq!(
            keys(&headers),
            [
                "late-reason",
                "source-topic",
                "source-partition",
                "source-offset"
            ]
        );
    }
}
