//! Router hot path: snappy body → decode → validate → relabel → stream_task_id
//! → partition → encode into per-partition batches, in samples/s per core.
//! Criterion's throughput is the samples each case *writes* (its rules drop
//! some of the 2,000 ingested); the ingested and written counts of every
//! case are printed first. Also prints the bytes per sample of the
//! task-topic records it builds.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use streamroute::produce::generate;
use streamroute::relabel::RelabelConfig;
use streamroute::remote_write::{
    compress, decode_request, decompress_reusing, fast, validate_v1, Encoding, Limits, Protocol,
    WriteRequest,
};
use streamroute::router::config::RouteConfig;
use streamroute::router::route::{
    append_series, route_fast, route_request, FastRouting, Output, Route, RouteStats,
};

/// The router's default `router.relabel_cache_bytes`.
const CACHE: usize = 64 << 20;

const SERIES: u64 = 2_000;

fn route(rules: &str) -> Route {
    route_with(rules, None)
}

/// A typical stream aggregation file for the generator's metrics.
const AGGR: &str = r#"
- match: http_requests_total
  interval: 30s
  by: [job, code]
  outputs: [total]
- match: '{__name__=~"http_request_duration_seconds_bucket"}'
  interval: 30s
  without: [instance, pod, series_id]
  outputs: [total]
- match: '{__name__=~"process_.*|node_.*"}'
  interval: 1m
  by: [node]
  outputs: [sum_samples]
- match: 'rpc_latency_seconds{quantile="0.99"}'
  interval: 1m
  by: [job]
  outputs: [max]
"#;

fn route_with(rules: &str, stream_aggr_file: Option<std::path::PathBuf>) -> Route {
    let relabel_configs: Vec<RelabelConfig> = serde_yaml::from_str(rules).expect("rules");
    Route::compile(
        &RouteConfig {
            relabel_configs,
            stream_aggr_file,
            ..RouteConfig::new("bench", "t", 64)
        },
        streamroute::remote_write::NameValidation::default(),
    )
    .expect("route")
}

/// Typical write_relabel_configs: drop a family, rewrite a label, drop a label.
const RULES: &str = "\
- source_labels: [__name__]
  regex: 'go_memstats_.*'
  action: drop
- source_labels: [instance]
  regex: '([^:]+):\\d+'
  target_label: host
- action: labeldrop
  regex: container
";

/// The five rules of scripts/bench-vs-vmagent.sh.
const FIVE_RULES: &str = include_str!("five_rules.yml");

/// `request` with every sample's value and timestamp written even when
/// zero: valid protobuf prost itself would not write.
fn explicit_form(request: &WriteRequest) -> Vec<u8> {
    let mut out = Vec::new();
    for ts in &request.timeseries {
        let mut series = Vec::new();
        for l in &ts.labels {
            prost::encoding::message::encode(1, l, &mut series);
        }
        for s in &ts.samples {
            let mut sample = vec![1 << 3 | 1];
            sample.extend_from_slice(&s.value.to_le_bytes());
            sample.push(2 << 3);
            prost::encoding::encode_varint(s.timestamp as u64, &mut sample);
            prost::encoding::bytes::encode(2, &sample, &mut series);
        }
        prost::encoding::bytes::encode(1, &series, &mut out);
    }
    out
}

/// The router's path for 1.0: the zero-copy reader, labels borrowed from
/// the decompressed buffer (reused per thread, as in the router), and the
/// relabel cache of `routing` (kept from request to request as the
/// router's worker keeps it: the series it saw are not relabeled again).
fn hot_path(
    body: &[u8],
    routes: &[Route],
    routing: &mut FastRouting,
    batches: &mut HashMap<(usize, u32), Output>,
) -> usize {
    let raw = decompress_reusing(body, Encoding::Snappy, 64 << 20).expect("decompress");
    let request = fast::parse(&raw, &Limits::default()).expect("fast path");
    let mut stats = vec![RouteStats::default(); routes.len()];
    let mut written = 0;
    route_fast(
        &request,
        routes,
        &[8],
        routing,
        &mut stats,
        |r, p, _, entry| {
            let batch = batches.entry((r, p)).or_default();
            entry.append_to(batch);
            written += entry.samples;
        },
    );
    written
}

/// The prost path (2.0, and 1.0 the fast reader declines), for comparison.
fn hot_path_prost(
    body: &[u8],
    routes: &[Route],
    batches: &mut HashMap<(usize, u32), Output>,
) -> usize {
    let decoded = decode_request(body, Encoding::Snappy, Protocol::V1, 64 << 20).expect("decode");
    validate_v1(&decoded.request, &Limits::default()).expect("valid");
    let mut stats = vec![RouteStats::default(); routes.len()];
    let mut written = 0;
    route_request(
        decoded.request,
        routes,
        &[8],
        &mut stats,
        |r, p, _, series| {
            let batch = batches.entry((r, p)).or_default();
            append_series(batch, series);
            written += series.samples.len();
        },
    );
    written
}

fn bench(c: &mut Criterion) {
    let request = generate::payload(0, SERIES, 0, 1_700_000_000_000);
    let body = compress(&request.encode_to_vec(), Encoding::Snappy).expect("snappy");
    let routes = [route(RULES)];

    // Bytes per sample of the task-topic records, before Kafka's compression.
    let mut batches = HashMap::new();
    let samples = hot_path(&body, &routes, &mut FastRouting::new(0), &mut batches);
    let mut prost_batches = HashMap::new();
    assert_eq!(hot_path_prost(&body, &routes, &mut prost_batches), samples);
    for (key, batch) in &batches {
        assert_eq!(
            batch.encoded, prost_batches[key].encoded,
            "the two paths disagree"
        );
    }
    // A cache that missed (first request) and one that hit (second) write
    // what no cache writes.
    let mut cache = FastRouting::new(CACHE);
    for _ in 0..2 {
        let mut cached = HashMap::new();
        assert_eq!(hot_path(&body, &routes, &mut cache, &mut cached), samples);
        for (key, batch) in &batches {
            assert_eq!(
                batch.encoded, cached[key].encoded,
                "the cache changed the output"
            );
        }
    }
    let bytes: usize = batches.values().map(|b| b.encoded.len()).sum();
    let zstd: usize = batches
        .values()
        .map(|b| {
            zstd::encode_all(b.encoded.as_slice(), 3)
                .expect("zstd")
                .len()
        })
        .sum();
    eprintln!(
        "task records: {samples} samples, {:.1} bytes/sample plain, {:.1} bytes/sample with zstd per record",
        bytes as f64 / samples as f64,
        zstd as f64 / samples as f64
    );

    // Samples written per request by each rule set, for the throughput.
    let written = |routes: &[Route], body: &[u8]| {
        let n = hot_path(body, routes, &mut FastRouting::new(0), &mut HashMap::new()) as u64;
        eprintln!("  {SERIES} samples ingested, {n} written");
        n
    };
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(written(&routes, &body)));
    let mut cache = FastRouting::new(CACHE);
    group.bench_function("decode_relabel_hash_encode_2000_series", |b| {
        b.iter(|| {
            let mut batches = HashMap::new();
            black_box(hot_path(
                black_box(&body),
                &routes,
                &mut cache,
                &mut batches,
            ))
        })
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let aggr_file = dir.path().join("aggr.yml");
    std::fs::write(&aggr_file, AGGR).expect("aggr file");
    let aggr_routes = [route_with(RULES, Some(aggr_file))];
    group.throughput(Throughput::Elements(written(&aggr_routes, &body)));
    let mut cache = FastRouting::new(CACHE);
    group.bench_function("decode_relabel_aggr_hash_encode_2000_series", |b| {
        b.iter(|| {
            let mut batches = HashMap::new();
            black_box(hot_path(
                black_box(&body),
                &aggr_routes,
                &mut cache,
                &mut batches,
            ))
        })
    });
    group.throughput(Throughput::Elements(written(&routes, &body)));
    group.bench_function("decode_relabel_hash_encode_2000_series_prost", |b| {
        b.iter(|| {
            let mut batches = HashMap::new();
            black_box(hot_path_prost(black_box(&body), &routes, &mut batches))
        })
    });
    // Both payload forms through the five rules of bench-vs-vmagent.sh; a
    // quarter of the values are 0, which the explicit form writes out.
    let mut zeros = request.clone();
    for (i, ts) in zeros.timeseries.iter_mut().enumerate() {
        if i % 4 == 0 {
            ts.samples[0].value = 0.0;
        }
    }
    let five = [route(FIVE_RULES)];
    for (form, raw) in [
        ("prost", zeros.encode_to_vec()),
        ("explicit", explicit_form(&zeros)),
    ] {
        let body = compress(&raw, Encoding::Snappy).expect("snappy");
        group.throughput(Throughput::Elements(written(&five, &body)));
        // The same series every request (a sender's scrapes): after the
        // first, every one is found in the relabel cache.
        let mut cache = FastRouting::new(CACHE);
        group.bench_function(format!("five_rules_{form}_form_2000_series"), |b| {
            b.iter(|| {
                let mut batches = HashMap::new();
                black_box(hot_path(black_box(&body), &five, &mut cache, &mut batches))
            })
        });
        // Every series new (or router.relabel_cache_bytes = 0).
        let mut uncached = FastRouting::new(0);
        group.bench_function(
            format!("five_rules_{form}_form_2000_series_uncached"),
            |b| {
                b.iter(|| {
                    let mut batches = HashMap::new();
                    black_box(hot_path(
                        black_box(&body),
                        &five,
                        &mut uncached,
                        &mut batches,
                    ))
                })
            },
        );
    }
    group.throughput(Throughput::Elements(written(&routes, &body)));
    group.bench_function("route_only_2000_series", |b| {
        b.iter_batched(
            || request.clone(),
            |request| {
                let mut stats = vec![RouteStats::default(); 1];
                let mut out = Output::default();
                route_request(request, &routes, &[8], &mut stats, |_, _, _, s| {
                    append_series(&mut out, s)
                });
                black_box(out.encoded.len())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
