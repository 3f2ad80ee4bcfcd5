//! One egress worker's per-record work, in samples/s per core: windows off
//! (the record's bytes are appended to the request, after counting them),
//! `delay` on (decode, hold, release in order, re-encode), and `delay` +
//! `interpolate` with a gap every tenth scrape. 2,000 series per record,
//! one sample each, 30 s apart, a delay of two intervals.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use streamroute::egress::windows::{codec, Emit, OnGap, OnLate, Settings, Windows};
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

const SERIES: usize = 2_000;
const RECORDS: usize = 50;

fn records(gaps: bool) -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|k| {
            let timeseries = (0..SERIES)
                .filter(|i| !gaps || (k + i) % 10 != 0)
                .map(|i| TimeSeries {
                    labels: vec![
                        Label::new("__name__", "http_requests_total"),
                        Label::new("instance", format!("host-{i}:9100")),
                        Label::new("job", "api"),
                    ],
                    samples: vec![Sample {
                        value: (k * 10 + i) as f64,
                        timestamp: 1_700_000_000_000 + k as i64 * 30_000,
                    }],
                    exemplars: vec![],
                    histograms: vec![],
                })
                .collect();
            WriteRequest {
                timeseries,
                metadata: vec![],
            }
            .encode_to_vec()
        })
        .collect()
}

fn windowed(records: &[Vec<u8>], on_gap: OnGap) -> usize {
    let mut w = Windows::new(Settings {
        delay: 60_000,
        on_late: OnLate::Drop,
        gap_factor: 1.5,
        default_interval: 30_000,
        on_gap,
        expire_after: 3_600_000,
    });
    let mut sent = 0;
    for (offset, r) in records.iter().enumerate() {
        let req = WriteRequest::decode(r.as_slice()).expect("decodes");
        let mut emit = Emit::default();
        let passthrough = codec::ingest(&mut w, offset as i64, req, &mut emit);
        w.release(&mut emit);
        let mut body = passthrough;
        codec::encode(&emit.send, &mut body);
        let _ = w.take_changes();
        sent += body.len();
    }
    sent
}

fn bench(c: &mut Criterion) {
    let plain = records(false);
    let gappy = records(true);
    let mut g = c.benchmark_group("egress_windows");
    g.throughput(Throughput::Elements((SERIES * RECORDS) as u64));
    g.bench_function("off", |b| {
        b.iter(|| {
            let mut body = Vec::new();
            for r in &plain {
                // What the worker does without windows: count, then copy.
                black_box(streamroute::remote_write::scan::count(r).expect("counts"));
                body.extend_from_slice(r);
            }
            black_box(body.len())
        })
    });
    g.bench_function("delay", |b| {
        b.iter(|| black_box(windowed(&plain, OnGap::None)))
    });
    g.bench_function("delay_interpolate", |b| {
        b.iter(|| black_box(windowed(&gappy, OnGap::Interpolate)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
