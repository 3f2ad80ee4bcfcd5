//! The gateway against the live broker: remote write in, ingress records out.

use std::collections::BTreeSet;
use std::time::Duration;

use prost::Message as _;
use rdkafka::message::{Headers, Message};
use streamroute::kafka::record::IngressMeta;
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use streamroute::remote_write::{compress, decompress, Encoding};

use crate::common::{create_topic, http_post, read_topic, unique, Process};

/// A gateway writing to a fresh ingress topic.
pub async fn start_gateway(topic: &str, env: &[(&str, String)]) -> Process {
    let mut all = vec![
        ("STREAMROUTE_TOPICS__INGRESS", topic.to_string()),
        ("STREAMROUTE_GATEWAY__PRODUCE_TIMEOUT", "3s".to_string()),
        ("STREAMROUTE_GATEWAY__RETRY_AFTER", "2s".to_string()),
    ];
    all.extend(env.iter().cloned());
    Process::start(&["gateway"], "STREAMROUTE_GATEWAY__LISTEN", &all).await
}

/// `n` series named `test_metric` with a `series` label, one sample each.
pub fn request(n: usize, tag: &str) -> WriteRequest {
    let timeseries = (0..n)
        .map(|i| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "test_metric".into(),
                },
                Label {
                    name: "job".into(),
                    value: tag.into(),
                },
                Label {
                    name: "series".into(),
                    value: i.to_string(),
                },
            ],
            samples: vec![Sample {
                value: i as f64,
                timestamp: 1_700_000_000_000 + i as i64,
            }],
            ..Default::default()
        })
        .collect();
    WriteRequest {
        timeseries,
        ..Default::default()
    }
}

pub fn snappy(req: &WriteRequest) -> Vec<u8> {
    compress(&req.encode_to_vec(), Encoding::Snappy).expect("snappy")
}

const SNAPPY: [(&str, &str); 2] = [
    ("content-encoding", "snappy"),
    ("content-type", "application/x-protobuf"),
];

/// Decodes an ingress record's value into a WriteRequest, honouring its headers.
pub fn decode_record(message: &rdkafka::message::OwnedMessage) -> (IngressMeta, WriteRequest) {
    let meta = IngressMeta::from_headers(message.headers()).expect("valid headers");
    let value = message.payload().expect("value");
    let raw =
        decompress(value, meta.encoding.unwrap_or(Encoding::Identity), 64 << 20).expect("decodes");
    (
        meta,
        WriteRequest::decode(raw.as_slice()).expect("protobuf"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_payload_is_in_the_ingress_topic_with_headers() {
    let topic = unique("ingress");
    create_topic(&topic, 2).await;
    let gateway = start_gateway(
        &topic,
        &[("STREAMROUTE_GATEWAY__KEY_HEADER", "x-sender".into())],
    )
    .await;
    let req = request(20, "accepted");
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let mut headers = SNAPPY.to_vec();
    headers.push(("x-scope-orgid", "team-a"));
    headers.push(("x-sender", "prom-1"));
    let response = http_post(&url, &headers, snappy(&req)).await.expect("post");
    assert_eq!(response.status, 204, "{}", response.body);

    let records = read_topic(&topic);
    assert_eq!(records.len(), 1);
    let (meta, got) = decode_record(&records[0]);
    assert_eq!(got, req);
    assert_eq!(meta.tenant.as_deref(), Some("team-a"));
    assert_eq!(
        meta.encoding,
        Some(Encoding::Snappy),
        "the body is stored as received"
    );
    assert!(meta.received_at_ms.is_some());
    assert_eq!(records[0].key(), Some(&b"prom-1"[..]));
    // The record headers are the documented ones.
    let names: BTreeSet<&str> = records[0]
        .headers()
        .expect("headers")
        .iter()
        .map(|h| h.key)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["content-encoding", "protocol", "received-at", "tenant"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_and_snappy_bodies_give_equivalent_records() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(&topic, &[]).await;
    let req = request(50, "codecs");
    let raw = req.encode_to_vec();
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let zstd = compress(&raw, Encoding::Zstd).expect("zstd");
    for (encoding, body) in [("snappy", snappy(&req)), ("zstd", zstd)] {
        let r = http_post(&url, &[("content-encoding", encoding)], body)
            .await
            .expect("post");
        assert_eq!(r.status, 204, "{encoding}: {}", r.body);
    }
    let records = read_topic(&topic);
    assert_eq!(records.len(), 2);
    let (snappy_meta, from_snappy) = decode_record(&records[0]);
    let (zstd_meta, from_zstd) = decode_record(&records[1]);
    assert_eq!(snappy_meta.encoding, Some(Encoding::Snappy));
    assert_eq!(zstd_meta.encoding, Some(Encoding::Zstd));
    assert_eq!(from_snappy, req);
    assert_eq!(from_zstd, req, "both records decode to the same series");
    assert_eq!(
        (snappy_meta.protocol, snappy_meta.tenant),
        (zstd_meta.protocol, zstd_meta.tenant)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_other_receivers_paths_are_accepted() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(&topic, &[]).await;
    for path in ["/api/v1/push", "/receive"] {
        let r = http_post(
            &format!("http://{}{path}", gateway.addr),
            &SNAPPY,
            snappy(&request(1, path)),
        )
        .await
        .expect("post");
        assert_eq!(r.status, 204, "{path}: {}", r.body);
    }
    assert_eq!(read_topic(&topic).len(), 2);
}

/// Builds a snappy body claiming `claimed` decoded bytes but holding almost nothing.
fn snappy_bomb(claimed: u64) -> Vec<u8> {
    let mut body = Vec::new();
    let mut n = claimed;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    body.extend_from_slice(&[0u8; 45]);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_own_4xx_and_the_gateway_keeps_serving() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(
        &topic,
        &[("STREAMROUTE_GATEWAY__MAX_BODY_BYTES", "100000".into())],
    )
    .await;
    let url = format!("http://{}/api/v1/write", gateway.addr);

    let good = snappy(&request(3, "good"));
    let mut unsorted = request(1, "unsorted");
    unsorted.timeseries[0].labels.swap(1, 2);
    let mut duplicate = request(1, "duplicate");
    duplicate.timeseries[0].labels[2].name = "job".into();
    let mut bad_name = request(1, "bad-name");
    // Only an empty name is invalid under the default UTF-8 rule.
    bad_name.timeseries[0].labels[2].name = String::new();
    let truncated = good[..good.len() / 2].to_vec();
    let garbage_protobuf = compress(&[0xff; 64], Encoding::Snappy).expect("snappy");

    // (case, headers, body, expected status, what the reason must mention)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "truncated snappy",
            SNAPPY.to_vec(),
            truncated,
            400,
            "snappy",
        ),
        (
            "wrong content-encoding",
            vec![("content-encoding", "gzip")],
            good.clone(),
            415,
            "gzip",
        ),
        (
            "wrong content-type",
            vec![("content-type", "application/json")],
            good.clone(),
            415,
            "application/json",
        ),
        (
            "garbage protobuf",
            SNAPPY.to_vec(),
            garbage_protobuf,
            400,
            "protobuf",
        ),
        (
            "unsorted labels",
            SNAPPY.to_vec(),
            snappy(&unsorted),
            400,
            "sorted",
        ),
        (
            "duplicate labels",
            SNAPPY.to_vec(),
            snappy(&duplicate),
            400,
            "duplicate",
        ),
        (
            "invalid label name",
            SNAPPY.to_vec(),
            snappy(&bad_name),
            400,
            "invalid label name \"\"",
        ),
        (
            "oversize body",
            SNAPPY.to_vec(),
            vec![0u8; 200_000],
            413,
            "exceeds the limit of 100000 bytes",
        ),
        (
            "decompression bomb",
            SNAPPY.to_vec(),
            snappy_bomb(4 << 30),
            413,
            "exceeds the limit",
        ),
        ("empty body", SNAPPY.to_vec(), Vec::new(), 400, "empty"),
    ];
    for (name, headers, body, status, reason) in cases {
        let r = http_post(&url, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status, status, "{name}: {}", r.body);
        assert!(
            r.body.contains(reason),
            "{name}: body {:?} should mention {reason:?}",
            r.body
        );
        // Still serving after each bad request.
        let ok = http_post(&url, &SNAPPY, good.clone()).await.expect("post");
        assert_eq!(ok.status, 204, "after {name}: {}", ok.body);
    }
    assert_eq!(
        read_topic(&topic).len(),
        10,
        "only the good requests were stored"
    );
    let metrics = crate::common::http_get(&format!("http://{}/metrics", gateway.addr))
        .await
        .expect("metrics");
    assert!(
        metrics
            .body
            .contains("streamroute_gateway_rejected_requests_total{reason=\"unsorted_labels\"} 1"),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_zero() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let mut gateway = start_gateway(&topic, &[]).await;
    let r = http_post(
        &format!("http://{}/api/v1/write", gateway.addr),
        &SNAPPY,
        snappy(&request(1, "t")),
    )
    .await
    .expect("post");
    assert_eq!(r.status, 204);
    let started = std::time::Instant::now();
    let status = gateway.terminate();
    assert!(status.success(), "exit status {status}:\n{}", gateway.log());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_2_is_carried_through_with_the_written_headers() {
    use streamroute::remote_write::proto::v2;
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(&topic, &[]).await;
    let req = v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "rw2_metric".into(),
            "job".into(),
            "v2".into(),
        ],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![
                v2::Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                    start_timestamp: 0,
                },
                v2::Sample {
                    value: 2.0,
                    timestamp: 1_700_000_001_000,
                    start_timestamp: 0,
                },
            ],
            exemplars: vec![v2::Exemplar {
                labels_refs: vec![3, 4],
                value: 1.5,
                timestamp: 1_700_000_000_500,
            }],
            ..Default::default()
        }],
    };
    let body = compress(&req.encode_to_vec(), Encoding::Snappy).expect("snappy");
    let headers = [
        ("content-encoding", "snappy"),
        (
            "content-type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        ),
        ("x-prometheus-remote-write-version", "2.0.0"),
    ];
    let r = http_post(
        &format!("http://{}/api/v1/write", gateway.addr),
        &headers,
        body,
    )
    .await
    .expect("post");
    assert_eq!(r.status, 204, "{}", r.body);
    let header = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("x-prometheus-remote-write-samples-written").as_deref(),
        Some("2")
    );
    assert_eq!(
        header("x-prometheus-remote-write-histograms-written").as_deref(),
        Some("0")
    );
    assert_eq!(
        header("x-prometheus-remote-write-exemplars-written").as_deref(),
        Some("1")
    );

    let records = read_topic(&topic);
    assert_eq!(records.len(), 1);
    let meta = IngressMeta::from_headers(records[0].headers()).expect("headers");
    assert_eq!(meta.protocol, streamroute::remote_write::Protocol::V2);
    let raw = decompress(
        records[0].payload().expect("value"),
        Encoding::Snappy,
        1 << 20,
    )
    .expect("snappy");
    let stored = v2::Request::decode(raw.as_slice()).expect("v2 protobuf");
    assert_eq!(
        stored, req,
        "the 2.0 payload is kept as sent, exemplars included"
    );
}
