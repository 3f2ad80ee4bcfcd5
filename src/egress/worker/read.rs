//! A task record into a pending request entry: headers through the UTF-8
//! guard (`kafka::record::task`), the value decoded by its
//! `content-encoding` (a `series_ids` one resolved: `series.rs`), counted,
//! and checked for the windows when they are on (read by the zero-copy
//! reader, or else decoded by prost). A record
//! that fails any of it is dead-lettered alone, as it was read, and the
//! partition moves past it.
//!
//! Depends on the worker, `batch`, `scan` and the task record format.

use std::borrow::Cow;

use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};

use super::series::Unresolved;
use super::PartitionWorker;
use crate::egress::batch::{Batch, Pending, Record};
use crate::egress::events::MalformedTaskRecord;
use crate::egress::windows::codec;
use crate::egress::EgressError;
use crate::kafka::record::series::SeriesError;
use crate::kafka::record::{TaskHeaders, TaskValueError};
use crate::remote_write::scan::{count, Counts};
use crate::remote_write::{fast, WriteRequest};
use crate::state::next_offset_after;

impl PartitionWorker {
    /// Turns a message into a pending record. Records that cannot be
    /// counted (not a WriteRequest) are dead-lettered alone.
    pub(super) async fn read(
        &self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
        lanes: bool,
    ) -> Result<Option<Pending>, EgressError> {
        let raw = message.payload().unwrap_or_default();
        let key = message.key().map(<[u8]>::to_vec);
        // Read through the guard against rdkafka's panic on a header key
        // that is not UTF-8 (another producer may write one): such a record
        // is dead-lettered instead of crashing the partition.
        let headers = match TaskHeaders::read(message.headers()) {
            Ok(headers) => headers,
            Err(reason) => {
                let record = (OwnedHeaders::new(), key);
                return self
                    .malformed(message, record, &reason.to_string(), batch, lanes)
                    .await;
            }
        };
        let value = match self.plain_value(message, raw, &headers).await {
            Ok(value) => value,
            Err(Unresolved::Stopped) => return Ok(None),
            Err(Unresolved::Broken(reason)) => {
                let record = (headers.original, key);
                self.malformed(message, record, &reason.to_string(), batch, lanes)
                    .await?;
                return Ok(None);
            }
        };
        match self.decode(value) {
            Ok((value, counts, decoded)) => Ok(Some(Pending {
                offset: message.offset(),
                value,
                counts,
                key,
                headers: headers.decoded,
                tenant: headers.tenant,
                decoded,
            })),
            Err(reason) => {
                let record = (headers.original, key);
                self.malformed(message, record, &reason.to_string(), batch, lanes)
                    .await
            }
        }
    }

    /// The value as a plain protobuf WriteRequest: decompressed, and a
    /// `series_ids` one resolved (`series.rs`).
    async fn plain_value<'a>(
        &self,
        message: &BorrowedMessage<'_>,
        raw: &'a [u8],
        headers: &TaskHeaders,
    ) -> Result<Cow<'a, [u8]>, Unresolved<Malformed>> {
        let value = headers.value(raw).map_err(Malformed::from)?;
        let Some(origin) = headers.series().map_err(Malformed::from)? else {
            return Ok(value);
        };
        let plain = self.resolve(message, origin, &value).await;
        plain.map(Cow::Owned).map_err(|e| e.map(Malformed::Series))
    }

    /// The plain value, its counts, and for the windows the request
    /// decoded: counting and the windows see plain protobuf.
    fn decode(
        &self,
        value: Cow<'_, [u8]>,
    ) -> Result<(Vec<u8>, Counts, Option<WriteRequest>), Malformed> {
        let counts = count(&value).map_err(Malformed::Structure)?;
        let decoded = match self.windows {
            // The windows need the samples: the zero-copy reader takes
            // them out when the record is added (`codec::ingest_fast`).
            Some(_) if fast::parse(&value, &codec::READ_LIMITS).is_some() => None,
            // One it declines (metadata, say) is decoded by prost here;
            // count() accepted the structure, prost also checks the strings.
            Some(_) => Some(
                <WriteRequest as prost::Message>::decode(value.as_ref())
                    .map_err(|_| Malformed::Protobuf)?,
            ),
            None => None,
        };
        Ok((value.into_owned(), counts, decoded))
    }

    /// Dead-letters a record as it was read, with its `(headers, key)`
    /// (its own headers still describe it), and moves past it.
    async fn malformed(
        &self,
        message: &BorrowedMessage<'_>,
        (headers, key): (OwnedHeaders, Option<Vec<u8>>),
        reason: &str,
        batch: &mut Batch,
        lanes: bool,
    ) -> Result<Option<Pending>, EgressError> {
        MalformedTaskRecord {
            partition: self.partition,
            offset: message.offset(),
            reason,
        }
        .emit();
        let raw = message.payload().unwrap_or_default();
        let record = Record {
            offset: message.offset(),
            start: 0,
            end: raw.len(),
            key,
            headers,
        };
        self.delivery
            .dead_letter_records(raw, &[record], "malformed_record", reason, None)
            .await;
        // The batch now ends past it, so the position moves over it (with
        // lanes, in its turn, after what they hold).
        if batch.records.is_empty() && !lanes {
            self.store(next_offset_after(message.offset())).await;
        } else {
            batch.last_offset = Some(message.offset());
        }
        Ok(None)
    }
}

/// Why a task record's value cannot be sent (it is dead-lettered).
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error(transparent)]
    Value(#[from] TaskValueError),
    #[error("{0}")]
    Structure(&'static str),
    #[error("not a valid protobuf WriteRequest")]
    Protobuf,
    #[error(transparent)]
    Series(#[from] SeriesError),
}
