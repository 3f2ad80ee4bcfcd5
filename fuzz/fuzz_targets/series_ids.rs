//! Fuzzes the egress side of the `series_ids` task-record format
//! (`kafka::record::series::SeriesBook::resolve`) against a model built on
//! prost: for any records of a few writers, whenever prost decodes each
//! record as a `WriteRequest` whose series carry an optional id (field 5),
//! resolving them one after another gives, decoded, exactly the
//! `WriteRequest` the model makes (a series with an id and labels defines
//! the id for its writer; one with an id and no labels takes the labels
//! of the id's last definition; one without an id is as it is), or, when
//! the model meets an id its writer never defined, the same `Undefined`.
//! Records holding a group (which prost skips and the reader refuses) are
//! left out.
//!
//!   cd fuzz && cargo +nightly fuzz run series_ids -- -max_total_time=600
#![no_main]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::holds_group;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use streamroute::kafka::record::series::{SeriesBook, SeriesError, SeriesRecord};
use streamroute::remote_write::proto::v1::{
    Exemplar, Histogram, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

/// A `TimeSeries` of the format: its fields and the id.
#[derive(Clone, PartialEq, prost::Message)]
struct IdSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    histograms: Vec<Histogram>,
    #[prost(uint64, optional, tag = "5")]
    id: Option<u64>,
}

/// A `WriteRequest` of such series.
#[derive(Clone, PartialEq, prost::Message)]
struct IdRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<IdSeries>,
    #[prost(message, repeated, tag = "3")]
    metadata: Vec<MetricMetadata>,
}

/// The model's reading of one record: the plain request, or the first
/// (writer, id) referenced before any definition.
fn model(
    defined: &mut HashMap<(u64, u64), Vec<Label>>,
    writer: u64,
    request: IdRequest,
) -> Result<WriteRequest, (u64, u64)> {
    let mut timeseries = Vec::new();
    for series in request.timeseries {
        let labels = match series.id {
            None => series.labels,
            Some(id) if !series.labels.is_empty() => {
                defined.insert((writer, id), series.labels.clone());
                series.labels
            }
            Some(id) => defined.get(&(writer, id)).cloned().ok_or((writer, id))?,
        };
        timeseries.push(TimeSeries {
            labels,
            samples: series.samples,
            exemplars: series.exemplars,
            histograms: series.histograms,
        });
    }
    Ok(WriteRequest {
        timeseries,
        metadata: request.metadata,
    })
}

/// Splits the input into up to four records: a writer byte, a length
/// byte, the value (short records, so that the fuzzer makes several
/// often: a reference and its definition are in different records).
fn records(mut data: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    while out.len() < 4 && data.len() >= 2 {
        let writer = u64::from(data[0] % 3);
        let len = usize::from(data[1]).min(data.len() - 2);
        out.push((writer, &data[2..2 + len]));
        data = &data[2 + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut book = SeriesBook::default();
    let mut defined = HashMap::new();
    for (writer, value) in records(data) {
        let Ok(request) = IdRequest::decode(value) else {
            return;
        };
        if holds_group(value) {
            return;
        }
        let record = SeriesRecord {
            writer,
            refresh_ms: 60_000,
            timestamp_ms: 0,
            value,
        };
        let mut out = Vec::new();
        let resolved = book.resolve(&record, &mut out);
        match model(&mut defined, writer, request) {
            Ok(want) => {
                resolved.expect("the reader refused what the model reads");
                let got = WriteRequest::decode(out.as_slice()).expect("the output decodes");
                // Compared encoded: a NaN value is not equal to itself.
                assert!(
                    got.encode_to_vec() == want.encode_to_vec(),
                    "{got:?} != {want:?}"
                );
            }
            Err((writer, id)) => {
                assert_eq!(
                    resolved,
                    Err(SeriesError::Undefined {
                        writer,
                        id,
                        window: Duration::from_millis(120_000),
                    })
                );
                return;
            }
        }
    }
});
