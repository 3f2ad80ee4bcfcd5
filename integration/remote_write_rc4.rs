//! Remote write 2.0-rc.4 bodies and float native histograms through the
//! real gateway (and, for rc.4, the router) on the real broker.
//!
//! The 2.0 bodies are written field by field with the small protobuf
//! writer below (varints and keys from the encoding rules, field numbers
//! from upstream `io/prometheus/write/v2/types.proto` rc.4), not with the
//! crate's prost types, so a wrong field number in those types shows here.
//! Expected float-histogram verdicts are Prometheus' (`FloatHistogram.
//! Validate`, model/histogram).

use std::time::{Duration, Instant};

use prost::Message as _;
use streamroute::remote_write::proto::v1::histogram::{Count, ZeroCount};
use streamroute::remote_write::proto::v1::{
    BucketSpan, Histogram, Label, Sample, TimeSeries, WriteRequest,
};
use streamroute::remote_write::proto::v2;
use streamroute::remote_write::{compress, Encoding};

use crate::common::{create_topic, http_get, http_post, read_topic, unique, write_file, Process};
use crate::gateway::{snappy, start_gateway};

const V1: [(&str, &str); 2] = [
    ("content-encoding", "snappy"),
    ("content-type", "application/x-protobuf"),
];
const V2: [(&str, &str); 2] = [
    ("content-encoding", "snappy"),
    (
        "content-type",
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    ),
];

/// A protobuf writer from the encoding rules (base-128 varints, key =
/// field << 3 | wire type).
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn key(&mut self, field: u64, wire: u64) -> &mut Self {
        self.varint(field << 3 | wire)
    }
    /// An int64/uint64/uint32 field (wire type 0).
    fn int(&mut self, field: u64, v: i64) -> &mut Self {
        self.key(field, 0).varint(v as u64)
    }
    /// A double field (wire type 1, little-endian).
    fn double(&mut self, field: u64, v: f64) -> &mut Self {
        self.key(field, 1);
        self.0.extend(v.to_le_bytes());
        self
    }
    /// A length-delimited field (wire type 2).
    fn bytes(&mut self, field: u64, b: &[u8]) -> &mut Self {
        self.key(field, 2).varint(b.len() as u64);
        self.0.extend(b);
        self
    }
    /// A packed repeated varint field.
    fn packed(&mut self, field: u64, values: &[u64]) -> &mut Self {
        let mut p = Pb::default();
        for &v in values {
            p.varint(v);
        }
        self.bytes(field, &p.0)
    }
}

const T: i64 = 1_700_000_000_000;
const START: i64 = T - 60_000;

/// symbols: "", "__name__", "sr_rc4_requests_total", "sr_rc4_latency_seconds", "job", "rc4".
fn symbols(body: &mut Pb) {
    for s in [
        "",
        "__name__",
        "sr_rc4_requests_total",
        "sr_rc4_latency_seconds",
        "job",
        "rc4",
    ] {
        body.bytes(4, s.as_bytes());
    }
}

/// rc.4: a counter series with one sample carrying `start_timestamp`
/// (Sample field 3) and a histogram series whose integer histogram (count
/// 3, buckets 1 and 2) carries `start_timestamp` (Histogram field 17).
fn rc4_body() -> Vec<u8> {
    let mut body = Pb::default();
    symbols(&mut body);
    let mut sample = Pb::default();
    sample.double(1, 3.0).int(2, T).int(3, START);
    let mut counter = Pb::default();
    counter.packed(1, &[1, 2, 4, 5]).bytes(2, &sample.0);
    body.bytes(5, &counter.0);

    let mut span = Pb::default();
    span.int(2, 2); // offset 0 (unset), length 2
    let mut h = Pb::default();
    h.int(1, 3) // count_int
        .double(3, 1.5) // sum
        .bytes(11, &span.0) // positive_spans
        .packed(12, &[2, 2]) // positive_deltas 1, 1 (zigzag)
        .int(15, T) // timestamp
        .int(17, START); // start_timestamp
    let mut hist = Pb::default();
    hist.packed(1, &[1, 3, 4, 5]).bytes(3, &h.0);
    body.bytes(5, &hist.0);
    body.0
}

/// rc.3: one sample, and the series' `created_timestamp` as TimeSeries
/// field 6 (reserved in rc.4).
fn rc3_body() -> Vec<u8> {
    let mut body = Pb::default();
    symbols(&mut body);
    let mut sample = Pb::default();
    sample.double(1, 4.0).int(2, T + 1000);
    let mut series = Pb::default();
    series
        .packed(1, &[1, 2, 4, 5])
        .bytes(2, &sample.0)
        .int(6, START);
    body.bytes(5, &series.0);
    body.0
}

fn header(r: &crate::common::HttpResponse, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string()
}

/// rc.4 and rc.3 bodies are both accepted with the written counts the spec
/// asks for; the ingress topic keeps each body byte for byte (start
/// timestamps included); the router turns them into 1.0 task records with
/// every sample and histogram, less the start timestamps 1.0 cannot carry.
#[tokio::test(flavor = "multi_thread")]
async fn rc4_and_rc3_bodies_are_accepted_stored_as_sent_and_routed() {
    let (ingress, tasks, dead_letter) = (unique("ingress"), unique("tasks"), unique("dlq"));
    create_topic(&ingress, 1).await;
    create_topic(&tasks, 1).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "run.toml",
        &format!(
            "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [run]\nroles = [\"gateway\", \"router\"]\nshutdown_grace = \"5s\"\n\
             [router]\ngroup_id = \"{group}\"\ncommit_interval = \"200ms\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 4\n",
            group = unique("group"),
        ),
    );
    let run = Process::start(
        &["run"],
        "STREAMROUTE_RUN__LISTEN",
        &[(
            "STREAMROUTE_CONFIG_FILE",
            config.to_str().expect("utf-8").to_string(),
        )],
    )
    .await;
    let url = format!("http://{}/api/v1/write", run.addr);

    let rc4 = compress(&rc4_body(), Encoding::Snappy).expect("snappy");
    let r = http_post(&url, &V2, rc4.clone()).await.expect("post");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(header(&r, "x-prometheus-remote-write-samples-written"), "1");
    assert_eq!(
        header(&r, "x-prometheus-remote-write-histograms-written"),
        "1"
    );
    let rc3 = compress(&rc3_body(), Encoding::Snappy).expect("snappy");
    let r = http_post(&url, &V2, rc3.clone()).await.expect("post");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(header(&r, "x-prometheus-remote-write-samples-written"), "1");

    let stored: Vec<Vec<u8>> = read_topic(&ingress)
        .iter()
        .map(|m| rdkafka::Message::payload(m).unwrap_or_default().to_vec())
        .collect();
    assert_eq!(stored, vec![rc4, rc3], "bodies stored as sent");

    let deadline = Instant::now() + Duration::from_secs(30);
    let routed = loop {
        let mut routed = Vec::new();
        for m in read_topic(&tasks) {
            let value = rdkafka::Message::payload(&m).unwrap_or_default();
            routed.extend(WriteRequest::decode(value).expect("1.0").timeseries);
        }
        if routed.iter().map(|ts| ts.samples.len()).sum::<usize>() == 2 {
            break routed;
        }
        assert!(
            Instant::now() < deadline,
            "not routed within 30 s:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let named = |name: &str| -> Vec<&TimeSeries> {
        routed
            .iter()
            .filter(|ts| {
                ts.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
            })
            .collect()
    };
    let mut samples: Vec<Sample> = named("sr_rc4_requests_total")
        .iter()
        .flat_map(|ts| ts.samples.clone())
        .collect();
    samples.sort_by_key(|s| s.timestamp);
    assert_eq!(
        samples,
        vec![
            Sample {
                value: 3.0,
                timestamp: T
            },
            Sample {
                value: 4.0,
                timestamp: T + 1000
            }
        ]
    );
    let hist = named("sr_rc4_latency_seconds");
    assert_eq!(hist.len(), 1, "{routed:?}");
    assert_eq!(
        hist[0].histograms,
        vec![Histogram {
            count: Some(Count::CountInt(3)),
            sum: 1.5,
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 2
            }],
            positive_deltas: vec![1, 1],
            timestamp: T,
            start_timestamp: 0,
            ..Default::default()
        }]
    );
    assert!(read_topic(&dead_letter).is_empty(), "nothing dead-lettered");
}

fn span(offset: i32, length: u32) -> BucketSpan {
    BucketSpan { offset, length }
}

/// Prometheus' valid float example: counts 1, 2, 1, 1 on each side, zero
/// bucket 2, count 12.
fn float_histogram() -> Histogram {
    Histogram {
        count: Some(Count::CountFloat(12.0)),
        zero_count: Some(ZeroCount::ZeroCountFloat(2.0)),
        zero_threshold: 0.001,
        sum: 19.4,
        schema: 1,
        positive_spans: vec![span(0, 2), span(1, 2)],
        positive_counts: vec![1.0, 2.0, 1.0, 1.0],
        negative_spans: vec![span(0, 2), span(1, 2)],
        negative_counts: vec![1.0, 2.0, 1.0, 1.0],
        timestamp: T,
        ..Default::default()
    }
}

fn series(name: &str, histograms: Vec<Histogram>) -> TimeSeries {
    TimeSeries {
        labels: vec![Label::new("__name__", name), Label::new("job", "float")],
        histograms,
        ..Default::default()
    }
}

/// The same request as 2.0, through the crate's 2.0 types.
fn to_v2(req: &WriteRequest) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut refs = |s: &str| match symbols.iter().position(|x| x == s) {
        Some(i) => i as u32,
        None => {
            symbols.push(s.to_string());
            symbols.len() as u32 - 1
        }
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| v2::TimeSeries {
            labels_refs: ts
                .labels
                .iter()
                .flat_map(|l| [refs(&l.name), refs(&l.value)])
                .collect(),
            histograms: ts.histograms.clone(),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

/// `streamroute_gateway_rejected_requests_total{reason="invalid_float_histogram"}`.
async fn rejected(gateway: &Process) -> f64 {
    let r = http_get(&format!("http://{}/metrics", gateway.addr))
        .await
        .expect("metrics");
    r.body
        .lines()
        .find(|l| {
            l.starts_with("streamroute_gateway_rejected_requests_total")
                && l.contains("reason=\"invalid_float_histogram\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Float histograms Prometheus' `FloatHistogram.Validate` refuses get 400
/// naming the series, the histogram and the problem, over 1.0 and 2.0, and
/// never reach Kafka; valid ones (including a count that does not equal
/// its buckets, which Prometheus does not check for floats) are stored.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_float_histograms_get_400_with_the_reason_over_both_protocols() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(&topic, &[]).await;
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let good = || series("sr_float_ok", vec![float_histogram()]);

    let cases = [
        (
            Histogram {
                count: Some(Count::CountFloat(-3493.3)),
                ..float_histogram()
            },
            "observation count is -3493.3",
        ),
        (
            Histogram {
                positive_counts: vec![1.0, 3.3, -4.2, 0.1],
                ..float_histogram()
            },
            "positive side: bucket 3 has observation count -4.2",
        ),
        (
            Histogram {
                zero_count: Some(ZeroCount::ZeroCountFloat(-5.5)),
                ..float_histogram()
            },
            "zero bucket has observation count -5.5",
        ),
        (
            Histogram {
                negative_spans: vec![span(0, 1)],
                ..float_histogram()
            },
            "negative side: spans need 1 buckets, have 4",
        ),
        (
            Histogram {
                positive_spans: vec![span(0, 2), span(-1, 2)],
                ..float_histogram()
            },
            "positive side: span 2 has negative offset -1",
        ),
        (
            Histogram {
                schema: -53,
                zero_count: None,
                zero_threshold: 0.0,
                negative_spans: vec![],
                negative_counts: vec![],
                custom_values: vec![1.0, 2.0, 3.0],
                ..float_histogram()
            },
            "custom buckets: 3 bounds are too few for spans covering 5 buckets",
        ),
        (
            Histogram {
                schema: -10,
                ..float_histogram()
            },
            "schema -10 is invalid",
        ),
    ];
    let mut refused = 0.0;
    for (bad, problem) in cases {
        let req = WriteRequest {
            timeseries: vec![good(), series("sr_float_bad", vec![float_histogram(), bad])],
            metadata: vec![],
        };
        let v2_body = compress(&to_v2(&req).encode_to_vec(), Encoding::Snappy).expect("snappy");
        for (proto, headers, body) in [("1.0", V1, snappy(&req)), ("2.0", V2, v2_body)] {
            let r = http_post(&url, &headers, body).await.expect("post");
            assert_eq!(r.status, 400, "{problem} over {proto}: {}", r.body);
            let want = format!(
                "series 1 {{__name__=\"sr_float_bad\", job=\"float\"}}: float histogram 1 is invalid: {problem}"
            );
            assert!(r.body.contains(&want), "over {proto}: {}", r.body);
            refused += 1.0;
        }
    }
    assert_eq!(rejected(&gateway).await, refused);

    // Valid: the example, a count of 99.5 over buckets holding 12, and a
    // custom-bucket histogram.
    let custom = Histogram {
        count: Some(Count::CountFloat(5.0)),
        sum: 19.4,
        schema: -53,
        positive_spans: vec![span(0, 2), span(1, 2)],
        positive_counts: vec![1.0, 2.0, 1.0, 1.0],
        custom_values: vec![1.0, 2.0, 3.0, 4.0],
        timestamp: T,
        ..Default::default()
    };
    let req = WriteRequest {
        timeseries: vec![
            good(),
            series(
                "sr_float_loose",
                vec![Histogram {
                    count: Some(Count::CountFloat(99.5)),
                    ..float_histogram()
                }],
            ),
            series("sr_float_custom", vec![custom]),
        ],
        metadata: vec![],
    };
    let v2_body = compress(&to_v2(&req).encode_to_vec(), Encoding::Snappy).expect("snappy");
    for (proto, headers, body) in [("1.0", V1, snappy(&req)), ("2.0", V2, v2_body)] {
        let r = http_post(&url, &headers, body).await.expect("post");
        assert_eq!(r.status, 204, "over {proto}: {}", r.body);
    }
    let r = http_post(
        &url,
        &V2,
        compress(&to_v2(&req).encode_to_vec(), Encoding::Snappy).expect("snappy"),
    )
    .await
    .expect("post");
    assert_eq!(
        header(&r, "x-prometheus-remote-write-histograms-written"),
        "3"
    );
    assert_eq!(
        read_topic(&topic).len(),
        3,
        "only the valid requests reached Kafka"
    );
}
