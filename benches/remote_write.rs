//! Remote-write receive path benchmark: decompress + protobuf decode +
//! validate a realistic request of 2,000 series (10–15 labels, 1 sample
//! each), reported in samples/s. Also prints the payload's size per sample
//! for each encoding. The 2.0 cases compare the zero-copy reader
//! (`fast::parse_v2`) with prost's decode and `into_v1`, also with
//! metadata on every series, as Prometheus 3 sends it.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streamroute::remote_write::proto::{v1, v2};
use streamroute::remote_write::{
    check_bounded, compress, decode_request, decompress, fast, validate_v1, Encoding, Label,
    Limits, Protocol, TimeSeries, WriteRequest,
};

const SERIES: usize = 2_000;
const MAX_DECODED: usize = 64 << 20;

/// Typical metric names, with the extra labels their families carry.
const METRICS: &[(&str, &[&str])] = &[
    ("http_requests_total", &["code", "method", "handler"]),
    (
        "http_request_duration_seconds_bucket",
        &["le", "method", "handler"],
    ),
    ("rpc_duration_seconds", &["quantile", "service"]),
    ("container_cpu_usage_seconds_total", &["cpu", "image", "id"]),
    ("container_memory_working_set_bytes", &["image", "id"]),
    ("node_cpu_seconds_total", &["cpu", "mode"]),
    ("kube_pod_status_phase", &["phase", "uid"]),
    ("go_gc_duration_seconds", &["quantile"]),
    ("process_resident_memory_bytes", &[]),
    ("up", &[]),
];

/// Builds the request deterministically, with labels sorted as senders must.
fn payload() -> WriteRequest {
    let mut rng = StdRng::seed_from_u64(42);
    let namespaces = [
        "default",
        "kube-system",
        "monitoring",
        "payments",
        "checkout",
    ];
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
    ];
    let quantiles = ["0", "0.25", "0.5", "0.75", "0.9", "0.99", "1"];
    let timeseries = (0..SERIES)
        .map(|i| {
            let (name, extra) = METRICS[i % METRICS.len()];
            let ns = namespaces[rng.gen_range(0..namespaces.len())];
            let app = format!("app-{}", rng.gen_range(0..40));
            let pod = format!(
                "{app}-{:08x}-{:05x}",
                rng.gen::<u32>(),
                rng.gen_range(0..0xfffff)
            );
            let mut labels = vec![
                Label::new("__name__", name),
                Label::new("cluster", "prod-eu-west-1"),
                Label::new("container", app.clone()),
                Label::new("endpoint", "http-metrics"),
                Label::new(
                    "instance",
                    format!(
                        "10.{}.{}.{}:8080",
                        rng.gen::<u8>(),
                        rng.gen::<u8>(),
                        rng.gen::<u8>()
                    ),
                ),
                Label::new("job", format!("{ns}/{app}")),
                Label::new("namespace", ns),
                Label::new("pod", pod),
                Label::new("prometheus", "monitoring/k8s"),
                Label::new("service", app),
            ];
            for &label in extra {
                let value = match label {
                    "le" => les[rng.gen_range(0..les.len())].to_owned(),
                    "quantile" => quantiles[rng.gen_range(0..quantiles.len())].to_owned(),
                    "code" => ["200", "404", "500"][rng.gen_range(0..3)].to_owned(),
                    "method" => ["GET", "POST"][rng.gen_range(0..2)].to_owned(),
                    "handler" => format!("/api/v1/resource{}", rng.gen_range(0..20)),
                    "cpu" => rng.gen_range(0..16).to_string(),
                    "mode" => ["user", "system", "idle", "iowait"][rng.gen_range(0..4)].to_owned(),
                    "image" => "registry.example.com/team/app:v1.42.3".to_owned(),
                    "id" | "uid" => format!("{:032x}", rng.gen::<u128>()),
                    _ => "x".to_owned(),
                };
                // `service` is already present for some families.
                if !labels.iter().any(|l| l.name == label) {
                    labels.push(Label::new(label, value));
                }
            }
            if labels.len() < 12 && rng.gen_bool(0.5) {
                labels.push(Label::new(
                    "node",
                    format!("ip-10-0-{}-{}", rng.gen::<u8>(), rng.gen::<u8>()),
                ));
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            TimeSeries {
                labels,
                samples: vec![v1::Sample {
                    value: rng.gen::<f64>() * 1e6,
                    timestamp: 1_700_000_000_000 + rng.gen_range(0..15_000),
                }],
                ..Default::default()
            }
        })
        .collect();
    WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

/// The same request as remote write 2.0, with a de-duplicated symbol table,
/// and with `metadata` a type and help text on every series.
fn to_v2(req: &WriteRequest, metadata: bool) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut index: HashMap<String, u32> = HashMap::from([(String::new(), 0)]);
    let mut sym = |s: &str| -> u32 {
        if let Some(&i) = index.get(s) {
            return i;
        }
        let i = symbols.len() as u32;
        symbols.push(s.to_owned());
        index.insert(s.to_owned(), i);
        i
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| v2::TimeSeries {
            labels_refs: ts
                .labels
                .iter()
                .flat_map(|l| [sym(&l.name), sym(&l.value)])
                .collect(),
            samples: ts
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            metadata: metadata.then(|| v2::Metadata {
                r#type: 1,
                help_ref: sym("Help text of this family."),
                unit_ref: 0,
            }),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

fn bench(c: &mut Criterion) {
    let req = payload();
    let limits = Limits::default();
    let stats = validate_v1(&req, &limits).expect("benchmark payload must be valid");
    let samples = stats.samples as u64;
    let labels: usize = req.timeseries.iter().map(|t| t.labels.len()).sum();

    let raw = req.encode_to_vec();
    let snappy = compress(&raw, Encoding::Snappy).expect("snappy");
    let zstd = compress(&raw, Encoding::Zstd).expect("zstd");
    let raw_v2 = to_v2(&req, false).encode_to_vec();
    let snappy_v2_metadata =
        compress(&to_v2(&req, true).encode_to_vec(), Encoding::Snappy).expect("snappy");
    let snappy_v2 = compress(&raw_v2, Encoding::Snappy).expect("snappy");
    let zstd_v2 = compress(&raw_v2, Encoding::Zstd).expect("zstd");
    let per = |n: usize| n as f64 / samples as f64;
    eprintln!(
        "payload: {} series, {} samples, {:.1} labels/series",
        stats.series,
        samples,
        labels as f64 / stats.series as f64
    );
    eprintln!(
        "  v1 bytes/sample: raw {:.1}, snappy {:.1}, zstd {:.1}",
        per(raw.len()),
        per(snappy.len()),
        per(zstd.len())
    );
    eprintln!(
        "  v2 bytes/sample: raw {:.1}, snappy {:.1}, zstd {:.1}",
        per(raw_v2.len()),
        per(snappy_v2.len()),
        per(zstd_v2.len())
    );

    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements(samples));
    let cases = [
        (
            "v1_snappy_decode_validate",
            &snappy,
            Encoding::Snappy,
            Protocol::V1,
        ),
        (
            "v1_zstd_decode_validate",
            &zstd,
            Encoding::Zstd,
            Protocol::V1,
        ),
        (
            "v2_snappy_decode_validate",
            &snappy_v2,
            Encoding::Snappy,
            Protocol::V2,
        ),
        (
            "v2_metadata_snappy_decode_validate",
            &snappy_v2_metadata,
            Encoding::Snappy,
            Protocol::V2,
        ),
    ];
    for (name, body, enc, protocol) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let decoded =
                    decode_request(black_box(body), enc, protocol, MAX_DECODED).expect("decode");
                validate_v1(&decoded.request, &limits).expect("valid")
            })
        });
    }
    // The same 2.0 bodies through the zero-copy reader.
    for (name, body) in [
        ("v2_snappy_fast_read", &snappy_v2),
        ("v2_metadata_snappy_fast_read", &snappy_v2_metadata),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let raw =
                    decompress(black_box(body), Encoding::Snappy, MAX_DECODED).expect("decompress");
                let read = fast::parse_v2(&raw, &limits).expect("valid");
                read.stats()
            })
        });
    }
    // The gateway's check of a 1.0 body (zero-copy reader, default budget).
    group.bench_function("v1_snappy_gateway_check", |b| {
        b.iter(|| {
            check_bounded(
                black_box(&snappy),
                Encoding::Snappy,
                Protocol::V1,
                MAX_DECODED,
                &limits,
                256 << 20,
            )
            .expect("valid")
            .stats
        })
    });
    // Breakdown of the v1 snappy path.
    group.bench_function("v1_snappy_decompress_only", |b| {
        b.iter(|| {
            decompress(black_box(&snappy), Encoding::Snappy, MAX_DECODED).expect("decompress")
        })
    });
    group.bench_function("v1_protobuf_decode_only", |b| {
        b.iter(|| WriteRequest::decode(black_box(raw.as_slice())).expect("decode"))
    });
    group.bench_function("v1_validate_only", |b| {
        b.iter(|| validate_v1(black_box(&req), &limits).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
