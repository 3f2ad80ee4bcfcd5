//! UTF-8 metric and label names as Prometheus 3 and OpenTelemetry send them
//! (`service.name`, `http.server.request.duration`), through the gateway
//! into the ingress topic and through `streamroute run` into
//! VictoriaMetrics; legacy mode refusing them; and the remote-write 2.0
//! receiver rules (a `__name__` on every series, integer histogram counts
//! that add up) answered with 400 naming the series.

use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::Message as _;
use streamroute::remote_write::proto::v1::{
    histogram, Histogram, Label, Sample, TimeSeries, WriteRequest,
};
use streamroute::remote_write::proto::v2;
use streamroute::remote_write::{compress, Encoding};

use crate::common::{create_topic, http_get, http_post, read_topic, unique, write_file, Process};
use crate::egress::recent_ms;
use crate::gateway::{decode_record, snappy, start_gateway};

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

/// One series with a UTF-8 metric name and OpenTelemetry-style labels,
/// sorted by bytes as the spec requires.
fn utf8_request(name: &str, ts: i64) -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label::new("__name__", name),
                Label::new("deployment.environment", "prod"),
                Label::new("région", "île-de-France"),
                Label::new("service.name", "checkout"),
            ],
            samples: vec![Sample {
                value: 42.0,
                timestamp: ts,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
}

/// The same request as remote write 2.0.
fn to_v2(req: &WriteRequest) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut sym = |s: &str| {
        symbols.push(s.to_owned());
        (symbols.len() - 1) as u32
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
            histograms: ts.histograms.clone(),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

fn snappy_v2(req: &v2::Request) -> Vec<u8> {
    compress(&req.encode_to_vec(), Encoding::Snappy).expect("snappy")
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_accepts_utf8_names_over_1_0_and_2_0_and_stores_them_intact() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(&topic, &[]).await;
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let req = utf8_request("http.server.request.duration", 1_700_000_000_000);

    let r = http_post(&url, &V1, snappy(&req)).await.expect("post 1.0");
    assert_eq!(r.status, 204, "1.0: {}", r.body);
    let r = http_post(&url, &V2, snappy_v2(&to_v2(&req)))
        .await
        .expect("post 2.0");
    assert_eq!(r.status, 204, "2.0: {}", r.body);
    assert_eq!(
        r.headers
            .get("x-prometheus-remote-write-samples-written")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("1")
    );

    let records = read_topic(&topic);
    assert_eq!(records.len(), 2);
    let (_, got) = decode_record(&records[0]);
    assert_eq!(got, req, "the 1.0 body reaches the topic byte for byte");
    // The 2.0 record is stored as received; its strings are the same.
    let raw = streamroute::remote_write::decompress(
        records[1].payload().expect("value"),
        Encoding::Snappy,
        1 << 20,
    )
    .expect("snappy");
    let got = v2::Request::decode(raw.as_slice())
        .expect("2.0")
        .into_v1()
        .expect("refs");
    assert_eq!(got, req);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_name_validation_refuses_service_name_with_400_naming_the_label() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(
        &topic,
        &[(
            "STREAMROUTE_GATEWAY__LIMITS__NAME_VALIDATION",
            "legacy".into(),
        )],
    )
    .await;
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let mut req = utf8_request("checkout_latency", 1_700_000_000_000);
    req.timeseries[0]
        .labels
        .retain(|l| l.name == "__name__" || l.name == "service.name");
    let r = http_post(&url, &V1, snappy(&req)).await.expect("post");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("invalid label name \"service.name\""),
        "{}",
        r.body
    );
    assert!(r.body.contains("series 0"), "{}", r.body);
    // Legacy names still pass.
    let ok = crate::gateway::request(2, "legacy");
    let r = http_post(&url, &V1, snappy(&ok)).await.expect("post");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        read_topic(&topic).len(),
        1,
        "only the valid request reached Kafka"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn series_without_metric_name_or_with_bad_histogram_count_get_400_naming_the_series() {
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(&topic, &[]).await;
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let good = || TimeSeries {
        labels: vec![Label::new("__name__", "up"), Label::new("job", "a")],
        samples: vec![Sample {
            value: 1.0,
            timestamp: 1_700_000_000_000,
        }],
        ..Default::default()
    };
    // The compliance suite's bad-count histogram: buckets 1,3,4,7,8 hold 23.
    let hist = |count| Histogram {
        count: Some(histogram::Count::CountInt(count)),
        sum: 1.0,
        schema: 0,
        positive_spans: vec![
            streamroute::remote_write::proto::v1::BucketSpan {
                offset: 0,
                length: 3,
            },
            streamroute::remote_write::proto::v1::BucketSpan {
                offset: 2,
                length: 2,
            },
        ],
        positive_deltas: vec![1, 2, 1, 3, 1],
        timestamp: 1_700_000_000_000,
        ..Default::default()
    };
    let no_name = TimeSeries {
        labels: vec![Label::new("job", "nameless")],
        ..good()
    };
    let empty_name = TimeSeries {
        labels: vec![Label::new("__name__", ""), Label::new("job", "nameless")],
        ..good()
    };
    let exemplar_only = TimeSeries {
        samples: vec![],
        exemplars: vec![streamroute::remote_write::proto::v1::Exemplar {
            labels: vec![Label::new("trace_id", "t")],
            value: 1.0,
            timestamp: 1,
        }],
        ..no_name.clone()
    };
    let bad_hist = TimeSeries {
        samples: vec![],
        histograms: vec![hist(99)],
        ..good()
    };
    let cases = [
        ("no __name__", no_name, "missing or empty"),
        ("empty __name__", empty_name, "missing or empty"),
        (
            "exemplar without __name__",
            exemplar_only,
            "missing or empty",
        ),
        (
            "histogram count 99",
            bad_hist,
            "histogram 0 has count 99 but its zero bucket and buckets hold 23",
        ),
    ];
    for (what, bad, reason) in cases {
        let req = WriteRequest {
            timeseries: vec![good(), bad],
            metadata: vec![],
        };
        for (proto, body, headers) in [
            ("1.0", snappy(&req), V1),
            ("2.0", snappy_v2(&to_v2(&req)), V2),
        ] {
            let r = http_post(&url, &headers, body).await.expect("post");
            assert_eq!(r.status, 400, "{what} over {proto}: {}", r.body);
            assert!(
                r.body.contains("series 1"),
                "{what} over {proto}: {}",
                r.body
            );
            assert!(r.body.contains(reason), "{what} over {proto}: {}", r.body);
        }
    }
    // 2.0 metadata-only series without a name (the compliance metadata case).
    let req = v2::Request {
        symbols: vec!["".into(), "job".into(), "x".into(), "help".into()],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2],
            metadata: Some(v2::Metadata {
                r#type: 1,
                help_ref: 3,
                unit_ref: 0,
            }),
            ..Default::default()
        }],
    };
    let r = http_post(&url, &V2, snappy_v2(&req)).await.expect("post");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("series 0 {job=\"x\"}"), "{}", r.body);
    // A good histogram passes over 2.0.
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            samples: vec![],
            histograms: vec![hist(23)],
            ..good()
        }],
        metadata: vec![],
    };
    let r = http_post(&url, &V2, snappy_v2(&to_v2(&req)))
        .await
        .expect("post");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        read_topic(&topic).len(),
        1,
        "refused requests never reach Kafka"
    );
}

/// VictoriaMetrics' export of series whose metric name is `name`, as JSON
/// lines.
async fn vm_export(vm: &str, name: &str) -> Vec<serde_json::Value> {
    let selector = format!("{{__name__=\"{name}\"}}");
    let url = format!("{vm}/api/v1/export?match%5B%5D={}", urlencode(&selector));
    let r = http_get(&url).await.expect("export");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// VictoriaMetrics 1.79 (Debian's, the test bed's VM_URL).
#[tokio::test(flavor = "multi_thread")]
async fn run_delivers_utf8_names_to_victoriametrics_1_79_intact() {
    let vm = std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into());
    delivers_utf8_names_intact_to(&vm, "1.79").await;
}

/// The current VictoriaMetrics (v1.151.0, scripts/vm-modern.sh).
#[tokio::test(flavor = "multi_thread")]
async fn run_delivers_utf8_names_to_victoriametrics_1_151_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vm = crate::vm_modern::victoria_metrics(dir.path(), "vm-utf8");
    vm.wait_healthy().await;
    delivers_utf8_names_intact_to(&vm.url(), "1.151").await;
}

/// `streamroute run` → VictoriaMetrics at `vm`: every UTF-8 name as sent.
async fn delivers_utf8_names_intact_to(vm: &str, version: &str) {
    let (ingress, tasks, dead_letter) = (unique("ingress"), unique("tasks"), unique("dlq"));
    create_topic(&ingress, 1).await;
    create_topic(&tasks, 2).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "run.toml",
        &format!(
            "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [run]\nroles = [\"gateway\", \"router\", \"egress\"]\nshutdown_grace = \"5s\"\n\
             [router]\ngroup_id = \"{group}\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 8\n\
             relabel_configs = [{{ source_labels = [\"service.name\"], target_label = \"otel.service\" }}]\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"{vm}/api/v1/write\"\nstate_dir = \"{state}\"\n\
             flush_interval = \"200ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"2s\"\n",
            group = unique("group"),
            state = dir.path().join("state").display(),
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
    let name = format!("sr.it.utf8.{}", uuid::Uuid::new_v4().simple());
    let ts = recent_ms();
    let r = http_post(
        &format!("http://{}/api/v1/write", run.addr),
        &V1,
        snappy(&utf8_request(&name, ts)),
    )
    .await
    .expect("post");
    assert_eq!(r.status, 204, "{}", r.body);

    let deadline = Instant::now() + Duration::from_secs(30);
    let series = loop {
        let series = vm_export(vm, &name).await;
        if !series.is_empty() {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "nothing named {name} in VictoriaMetrics {version} after 30 s:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // VictoriaMetrics (1.79 and 1.151) stores UTF-8 names as they were
    // sent: the dotted metric name, the dotted and accented labels, and
    // the label the router's relabel rule wrote under a UTF-8 target.
    assert_eq!(series.len(), 1, "{series:?}");
    let metric = &series[0]["metric"];
    assert_eq!(metric["__name__"], name.as_str(), "{metric}");
    assert_eq!(metric["service.name"], "checkout", "{metric}");
    assert_eq!(metric["otel.service"], "checkout", "{metric}");
    assert_eq!(metric["deployment.environment"], "prod", "{metric}");
    assert_eq!(metric["région"], "île-de-France", "{metric}");
    assert!(metric["stream_task_id"].is_string(), "{metric}");
    assert_eq!(series[0]["values"][0], 42.0, "{series:?}");
    assert_eq!(series[0]["timestamps"][0], ts, "{series:?}");
    assert!(read_topic(&dead_letter).is_empty(), "nothing dead-lettered");
}
