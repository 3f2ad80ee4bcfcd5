//! The router worker's output: task records and dead letters written
//! into the open transaction, and the buffered-series gauge.
//!
//! Depends on: the record formats in `kafka::record`, the transaction
//! state (`txn.rs`, `batches.rs`) and the events (`events.rs`).

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use tracing::warn;

use super::Worker;
use crate::kafka::record::{encode_task_value, DeadLetter, Source, TaskMeta};
use crate::router::batches::BatchKey;
use crate::router::config::RecordFormat;
use crate::router::events::{Buffered, IngressDeadLettered};
use crate::router::process::Unroutable;
use crate::router::route::Output;
use crate::router::txn::Txn;

impl Worker {
    pub(super) fn report_buffered(&self, txn: &Txn) {
        Buffered {
            routes: &self.routes,
            series: txn.batches.buffered_series(self.routes.len()),
        }
        .emit();
    }

    /// Writes every batch (at the end of a transaction).
    pub(super) fn flush(&self, txn: &mut Txn) -> Result<(), KafkaError> {
        for (key, batch) in txn.batches.take_all() {
            self.write(&key, &batch, txn)?;
        }
        self.report_buffered(txn);
        Ok(())
    }

    /// Writes one batch as a task record.
    pub(super) fn write(
        &self,
        key: &BatchKey,
        batch: &Output,
        txn: &mut Txn,
    ) -> Result<(), KafkaError> {
        let route = &self.routes[key.route];
        let (encoding, value) = encode_task_value(&batch.encoded, route.record_encoding);
        if encoding != route.record_encoding {
            warn!(route = %route.name, "cannot compress a task record; writing it as identity");
        }
        let meta = TaskMeta {
            route: &route.name,
            encoding,
            tenant: key.tenant.as_deref(),
            series: (route.record_format == RecordFormat::SeriesIds).then(|| txn.series.origin()),
        };
        let record = BaseRecord::<(), [u8]>::to(&route.topic)
            .partition(key.partition as i32)
            .payload(value.as_ref())
            .headers(meta.to_headers());
        self.producer.send(record)?;
        txn.wrote(key, batch, value.len());
        Ok(())
    }

    /// Sends an ingress record that can never be routed to the dead-letter
    /// topic, inside the transaction, with headers saying why and whence.
    pub(super) fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        original: Option<&OwnedHeaders>,
        why: Unroutable,
        txn: &mut Txn,
    ) -> Result<(), KafkaError> {
        IngressDeadLettered {
            partition: message.partition(),
            offset: message.offset(),
            reason: why.reason,
            detail: &why.detail,
        }
        .emit();
        let source = Source {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let headers = DeadLetter::new(why.reason, &why.detail, source).to_headers(original);
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topics.dead_letter)
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.producer.send(record)?;
        txn.dead_lettered.push(why.reason);
        Ok(())
    }
}
