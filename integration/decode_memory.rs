//! The heap the zero-copy reader takes for hostile 1.0 bodies stays within
//! `fast::MAX_HEAP_PER_DECODED_BYTE` per decoded byte: the gateway relies
//! on it to read small bodies without walking them first (`check_bounded`).
//! A test binary of its own, with one test, because the counting allocator
//! sees every thread of the process.

use std::alloc::System;

use prost::encoding::encode_varint;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use streamroute::remote_write::{fast, Limits};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// About this many bytes per body.
const BODY: usize = 1 << 20;

/// A length-delimited field: key, length, body.
fn field(number: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_varint(number << 3 | 2, &mut out);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// `body` repeated to about [`BODY`] bytes.
fn repeated(body: &[u8]) -> Vec<u8> {
    body.repeat(BODY / body.len())
}

/// One series: the label `__name__="m"`, then `rest`.
fn series(rest: &[u8]) -> Vec<u8> {
    let name = [field(1, b"__name__"), field(2, b"m")].concat();
    field(1, &[field(1, &name), rest.to_vec()].concat())
}

/// The shapes that make the reader keep the most per byte: empty series
/// and empty labels (two bytes each), samples it must re-encode, and
/// exemplars and histograms it decodes with prost.
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let empty_label = field(1, b"");
    let zero_sample = field(2, &[0x09, 0, 0, 0, 0, 0, 0, 0, 0]);
    let labelled_exemplar = field(3, &repeated(&empty_label));
    // Field 9 of Histogram: positive_deltas, packed sint64, a byte each.
    let deltas = field(4, &field(9, &vec![2u8; BODY]));
    vec![
        ("empty series", repeated(&field(1, b""))),
        (
            "one series of empty labels",
            field(1, &repeated(&empty_label)),
        ),
        (
            "series of one empty label",
            repeated(&field(1, &empty_label)),
        ),
        // Samples before the labels, with explicit zero values: re-encoded
        // into the arena.
        ("samples to re-encode", {
            let samples = repeated(&zero_sample);
            let name = [field(1, b"__name__"), field(2, b"m")].concat();
            field(1, &[samples, field(1, &name)].concat())
        }),
        ("an exemplar of empty labels", series(&labelled_exemplar)),
        ("many empty exemplars", series(&repeated(&field(3, b"")))),
        ("a histogram of long deltas", series(&deltas)),
    ]
}

#[test]
fn the_fast_reader_holds_at_most_its_bound_per_decoded_byte() {
    // Each body is read on a fresh thread, which has no buffers kept from
    // an earlier request.
    for (what, body) in hostile_bodies() {
        let len = body.len();
        let (allocated, read) = std::thread::spawn(move || {
            let region = Region::new(GLOBAL);
            let read = fast::parse(&body, &Limits::default()).is_some();
            let change = region.change();
            // Every byte ever allocated, growth included, and nothing freed
            // taken off: at least the most it held at any moment, but for
            // the old and the new buffer of a growing vector side by side.
            let grown = change.bytes_reallocated.max(0) as usize;
            (change.bytes_allocated + grown, read)
        })
        .join()
        .expect("the reader does not panic");
        let per_byte = allocated as f64 / len as f64;
        eprintln!("{what}: {len} bytes, {allocated} allocated ({per_byte:.1}/byte), read: {read}");
        // Two thirds of the bound: a growing vector holds its old buffer
        // beside the new one, half as large, for a moment.
        assert!(
            allocated <= len * fast::MAX_HEAP_PER_DECODED_BYTE * 2 / 3,
            "{what}: {allocated} bytes for {len}"
        );
    }
}
