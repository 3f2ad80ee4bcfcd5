//! Fuzzes `remote_write::fast::parse` against prost: for any bytes, the
//! fast reader accepts only what `WriteRequest::decode` and `validate_v1`
//! accept (without metadata), and then reads the same labels, stats and
//! prost re-encoding of every series' samples, exemplars and histograms;
//! and whatever prost accepts, re-encoded by prost, the fast reader reads.
//!
//!   cd fuzz && cargo +nightly fuzz run fast_reader -- -max_total_time=600
#![no_main]

mod common;

use common::holds_group;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use streamroute::remote_write::fast::parse;
use streamroute::remote_write::{validate_v1, Label, Limits, TimeSeries, WriteRequest};

/// Asserts the fast reader agrees with prost on `raw`; true if it read it.
fn agrees(raw: &[u8], limits: &Limits) -> bool {
    let Some(fast) = parse(raw, limits) else {
        return false;
    };
    let decoded = WriteRequest::decode(raw).expect("fast reader accepted what prost refuses");
    let stats = validate_v1(&decoded, limits).expect("fast reader accepted an invalid request");
    assert_eq!(fast.stats(), stats);
    assert!(decoded.metadata.is_empty());
    assert_eq!(fast.series.len(), decoded.timeseries.len());
    for (mine, theirs) in fast.series.iter().zip(&decoded.timeseries) {
        let labels: Vec<Label> = fast.labels[mine.labels.clone()]
            .iter()
            .map(|(n, v)| Label::new(*n, *v))
            .collect();
        assert_eq!(labels, theirs.labels);
        let rest = TimeSeries {
            labels: Vec::new(),
            ..theirs.clone()
        }
        .encode_to_vec();
        assert_eq!(fast.rest(mine), rest.as_slice());
    }
    true
}

fuzz_target!(|raw: &[u8]| {
    let limits = Limits::default();
    let read = agrees(raw, &limits);
    // Completeness: every valid request without metadata is read, in the
    // form the fuzzer wrote it (unless it holds a group, which the fast
    // reader leaves to prost) and in prost's own form.
    if let Ok(request) = WriteRequest::decode(raw) {
        if request.metadata.is_empty() && validate_v1(&request, &limits).is_ok() {
            assert!(
                agrees(&request.encode_to_vec(), &limits),
                "declined prost's own form"
            );
            if !read && !holds_group(raw) {
                panic!("declined a valid request");
            }
        }
    }
});
