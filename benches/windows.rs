//! One egress worker's per-record work, in samples/s per core: windows off
//! (the record's bytes are appended to the request, after counting them),
//! `delay` on (read, hold, release in order, re-encode), and `delay` +
//! `interpolate` with a gap every tenth scrape. 2,000 series of 12 labels
//! per record (the load generator's shape), one sample each, 30 s apart, a
//! delay of two intervals. Records are read as the worker reads them: the
//! zero-copy reader checks each at read time and reads it again when it is
//! added; `delay_prost` is the same with prost's decode instead, for
//! comparison.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use streamroute::egress::windows::{codec, Emit, OnGap, OnLate, Settings, Windows};
use streamroute::remote_write::fast;
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
                        Label::new("cluster", "eu-west-1"),
                        Label::new("code", ["200", "404", "500"][i % 3]),
                        Label::new("env", "production"),
                        Label::new("handler", format!("/api/v1/items/{}", i % 50)),
                        Label::new("instance", format!("host-{i}:9100")),
                        Label::new("job", "api"),
                        Label::new("method", ["GET", "POST"][i % 2]),
                        Label::new("namespace", "shop"),
                        Label::new("pod", format!("api-7d9f{}-x{}", i % 20, i)),
                        Label::new("region", "eu"),
                        Label::new("stream_task_id", format!("{}", i % 8)),
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

fn windowed(records: &[Vec<u8>], on_gap: OnGap, zero_copy: bool) -> usize {
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
        let mut emit = Emit::default();
        let offset = offset as i64;
        let passthrough = if zero_copy {
            assert!(fast::parse(r, &codec::READ_LIMITS).is_some());
            let req = fast::parse(r, &codec::READ_LIMITS).expect("reads");
            codec::ingest_fast(&mut w, offset, &req, &mut emit)
        } else {
            let req = WriteRequest::decode(r.as_slice()).expect("decodes");
            codec::ingest(&mut w, offset, req, &mut emit)
        };
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
        b.iter(|| black_box(windowed(&plain, OnGap::None, true)))
    });
    g.bench_function("delay_prost", |b| {
        b.iter(|| black_box(windowed(&plain, OnGap::None, false)))
    });
    g.bench_function("delay_interpolate", |b| {
        b.iter(|| black_box(windowed(&gappy, OnGap::Interpolate, true)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
