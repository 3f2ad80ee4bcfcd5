//! Fuzzes `remote_write::fast::parse_v2` against prost's 2.0 path
//! (`v2::Request::decode`, `into_v1`, `validate_v1`): for any bytes, the
//! fast reader accepts only what that path accepts, and then reads the same
//! labels, metadata, stats and prost re-encoding of every series'
//! samples, exemplars and histograms; and whatever that path accepts, the
//! fast reader reads (unless it holds a group), also in prost's own form.
//!
//!   cd fuzz && cargo +nightly fuzz run fast_reader_v2 -- -max_total_time=600
#![no_main]

mod common;

use common::holds_group;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use streamroute::remote_write::fast::parse_v2;
use streamroute::remote_write::proto::v2;
use streamroute::remote_write::{validate_v1, Label, Limits, TimeSeries, WriteRequest};

/// prost's 2.0 path: the decoded request and its valid 1.0 conversion.
fn prost_path(raw: &[u8], limits: &Limits) -> Option<(v2::Request, WriteRequest)> {
    let request = v2::Request::decode(raw).ok()?;
    let converted = request.clone().into_v1().ok()?;
    validate_v1(&converted, limits).ok()?;
    Some((request, converted))
}

/// Asserts the fast reader agrees with prost on `raw`; true if it read it.
fn agrees(raw: &[u8], limits: &Limits) -> bool {
    let Some(fast) = parse_v2(raw, limits) else {
        return false;
    };
    let (_, converted) = prost_path(raw, limits).expect("fast reader accepted what prost refuses");
    let stats = validate_v1(&converted, limits).expect("valid");
    assert_eq!(fast.stats(), stats);
    assert_eq!(fast.metadata, converted.metadata);
    assert_eq!(fast.series.len(), converted.timeseries.len());
    for (mine, theirs) in fast.series.iter().zip(&converted.timeseries) {
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
    if let Some((request, _)) = prost_path(raw, &limits) {
        assert!(
            agrees(&request.encode_to_vec(), &limits),
            "declined prost's own form"
        );
        if !read && !holds_group(raw) {
            panic!("declined a valid request");
        }
    }
});
