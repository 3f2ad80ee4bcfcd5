//! Metric metadata (type, help, unit) through `streamroute run` (gateway →
//! ingress topic → router → task topic → egress) to a capture receiver, one
//! URL per task partition. Expected placement follows the documented rule,
//! checked against where the receiver itself saw the series arrive: a
//! family sent with its series is on exactly the partitions its series
//! reached, under the name relabeling gave them, and absent when relabeling
//! dropped them all; a metadata-only family (as Prometheus 2.x sends them)
//! is on every partition, under the name the route's rules give
//! `{__name__=<family>}` and nowhere when they drop it. 1.0 and 2.0 requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message as _;
use streamroute::remote_write::proto::v1::metric_metadata::MetricType;
use streamroute::remote_write::proto::v1::{
    Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};
use streamroute::remote_write::proto::v2;
use streamroute::remote_write::{compress, decompress, Encoding};

use crate::common::{create_topic, http_post, read_topic, unique, write_file, Process};
use crate::egress::recent_ms;
use crate::gateway::snappy;

/// What the receiver got, per partition (the URL path).
#[derive(Default)]
struct Received {
    /// Metric names of the series.
    series: BTreeMap<u32, Vec<String>>,
    metadata: BTreeMap<u32, Vec<MetricMetadata>>,
}

/// A receiver answering 204 that records series names and metadata per
/// partition, from URL paths `/<partition>`.
async fn capture() -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received: Arc<Mutex<Received>> = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let partition: u32 =
                                r.uri().path().trim_matches('/').parse().expect("partition");
                            let body = r.into_body().collect().await.expect("body").to_bytes();
                            let raw =
                                decompress(&body, Encoding::Snappy, 64 << 20).expect("snappy");
                            let req = WriteRequest::decode(raw.as_slice()).expect("protobuf");
                            let mut log = log.lock().expect("lock");
                            log.series.entry(partition).or_default().extend(
                                req.timeseries.iter().map(|ts| {
                                    ts.labels
                                        .iter()
                                        .find(|l| l.name == "__name__")
                                        .map(|l| l.value.clone())
                                        .unwrap_or_default()
                                }),
                            );
                            log.metadata
                                .entry(partition)
                                .or_default()
                                .extend(req.metadata);
                            let mut response = hyper::Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn series(name: &str, extra: &[(&str, &str)], ts: i64) -> TimeSeries {
    let mut labels = vec![Label::new("__name__", name)];
    labels.extend(extra.iter().map(|(n, v)| Label::new(*n, *v)));
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries {
        labels,
        samples: vec![Sample {
            value: 1.0,
            timestamp: ts,
        }],
        ..Default::default()
    }
}

fn md(name: &str, kind: MetricType, help: &str, unit: &str) -> MetricMetadata {
    MetricMetadata {
        r#type: kind as i32,
        metric_family_name: name.into(),
        help: help.into(),
        unit: unit.into(),
    }
}

const V1: [(&str, &str); 2] = [
    ("content-encoding", "snappy"),
    ("content-type", "application/x-protobuf"),
];
const PARTITIONS: u32 = 3;

/// `streamroute run` (gateway, router with one route of `relabel` rules
/// into a task topic of [`PARTITIONS`], egress to `receiver`/<partition>),
/// its dead-letter topic and its folder.
async fn start_run(receiver: SocketAddr, relabel: &str) -> (Process, String, tempfile::TempDir) {
    let (ingress, tasks, dead_letter) = (unique("ingress"), unique("tasks"), unique("dlq"));
    create_topic(&ingress, 1).await;
    create_topic(&tasks, PARTITIONS as i32).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "run.toml",
        &format!(
            "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [run]\nroles = [\"gateway\", \"router\", \"egress\"]\nshutdown_grace = \"5s\"\n\
             [router]\ngroup_id = \"{group}\"\ncommit_interval = \"200ms\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 16\n\
             relabel_configs = [{relabel}]\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"http://{receiver}/{{partition}}\"\nstate_dir = \"{state}\"\n\
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
    (run, dead_letter, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_reaches_the_receiver_with_its_series_and_not_for_dropped_families() {
    let (receiver, received) = capture().await;
    let relabel = "{ source_labels = [\"__name__\"], regex = \"sr_dropped_total\", action = \"drop\" }, \
        { source_labels = [\"__name__\"], regex = \"sr_old_total\", target_label = \"__name__\", replacement = \"sr_new_total\" }";
    let (run, dead_letter, _dir) = start_run(receiver, relabel).await;
    let url = format!("http://{}/api/v1/write", run.addr);
    let ts = recent_ms();

    // 1.0: a histogram family over many series (spread over partitions by
    // their task ids), a family the rules drop, one they rename.
    let mut timeseries = Vec::new();
    for instance in ["a:1", "b:1", "c:1", "d:1"] {
        for le in ["0.1", "1", "+Inf"] {
            let labels = [("instance", instance), ("le", le)];
            timeseries.push(series("sr_latency_seconds_bucket", &labels, ts));
        }
        timeseries.push(series(
            "sr_latency_seconds_sum",
            &[("instance", instance)],
            ts,
        ));
        timeseries.push(series(
            "sr_latency_seconds_count",
            &[("instance", instance)],
            ts,
        ));
        timeseries.push(series("sr_dropped_total", &[("instance", instance)], ts));
    }
    timeseries.push(series("sr_old_total", &[("instance", "a:1")], ts));
    let latency = md(
        "sr_latency_seconds",
        MetricType::Histogram,
        "Request latency.",
        "seconds",
    );
    let old = md("sr_old_total", MetricType::Counter, "Old requests.", "");
    let with_series = WriteRequest {
        timeseries,
        metadata: vec![
            latency.clone(),
            md("sr_dropped_total", MetricType::Counter, "Dropped.", ""),
            old.clone(),
        ],
    };
    // 1.0 metadata only, as Prometheus 2.x sends it.
    let alone = md("sr_alone_bytes", MetricType::Gauge, "Alone.", "bytes");
    let metadata_only = WriteRequest {
        timeseries: vec![],
        metadata: vec![alone.clone()],
    };
    for req in [&with_series, &metadata_only] {
        let r = http_post(&url, &V1, snappy(req)).await.expect("post");
        assert_eq!(r.status, 204, "{}", r.body);
    }
    // 2.0: metadata per series, symbol references.
    let v2_request = v2::Request {
        symbols: ["", "__name__", "sr_v2_requests_total", "Requests.", "1"]
            .map(String::from)
            .to_vec(),
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2],
            samples: vec![v2::Sample {
                value: 3.0,
                timestamp: ts,
                start_timestamp: 0,
            }],
            metadata: Some(v2::Metadata {
                r#type: MetricType::Counter as i32,
                help_ref: 3,
                unit_ref: 4,
            }),
            ..Default::default()
        }],
    };
    let v2_headers = [
        ("content-encoding", "snappy"),
        (
            "content-type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        ),
    ];
    let body = compress(&v2_request.encode_to_vec(), Encoding::Snappy).expect("snappy");
    let r = http_post(&url, &v2_headers, body).await.expect("post");
    assert_eq!(r.status, 204, "{}", r.body);

    // Every kept series (4 × 5 histogram series, the renamed one, the 2.0
    // one) and the metadata-only family on every partition.
    let kept = 4 * 5 + 2;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let got = received.lock().expect("lock");
            let series: usize = got.series.values().map(Vec::len).sum();
            let alone_on = (0..PARTITIONS)
                .filter(|p| got.metadata.get(p).is_some_and(|m| m.contains(&alone)))
                .count();
            series >= kept && alone_on == PARTITIONS as usize
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything arrived within 30 s:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Anything still in flight lands too.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let got = received.lock().expect("lock");
    let partitions_of = |family: &str| -> BTreeSet<u32> {
        got.series
            .iter()
            .filter(|(_, names)| {
                names.iter().any(|n| {
                    n == family || n.strip_prefix(family).is_some_and(|s| s.starts_with('_'))
                })
            })
            .map(|(p, _)| *p)
            .collect()
    };
    let metadata_on = |family: &str| -> BTreeMap<u32, Vec<&MetricMetadata>> {
        got.metadata
            .iter()
            .map(|(p, m)| {
                (
                    *p,
                    m.iter()
                        .filter(|m| m.metric_family_name == family)
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, m)| !m.is_empty())
            .collect()
    };
    let all_names: Vec<&String> = got.series.values().flatten().collect();
    assert!(
        !all_names.iter().any(|n| n.starts_with("sr_dropped")),
        "{all_names:?}"
    );
    assert!(
        !all_names.iter().any(|n| *n == "sr_old_total"),
        "{all_names:?}"
    );

    // The histogram family: on exactly the partitions its series reached
    // (more than one), once per partition, type, help and unit intact.
    let latency_partitions = partitions_of("sr_latency_seconds");
    assert!(latency_partitions.len() > 1, "{latency_partitions:?}");
    let on = metadata_on("sr_latency_seconds");
    assert_eq!(
        on.keys().copied().collect::<BTreeSet<_>>(),
        latency_partitions
    );
    assert!(on.values().all(|m| m == &vec![&latency]), "{on:?}");
    // Renamed: under the new name, where the renamed series went.
    let renamed = metadata_on("sr_new_total");
    assert_eq!(
        renamed.keys().copied().collect::<BTreeSet<_>>(),
        partitions_of("sr_new_total")
    );
    let want = MetricMetadata {
        metric_family_name: "sr_new_total".into(),
        ..old
    };
    assert!(renamed.values().all(|m| m == &vec![&want]), "{renamed:?}");
    assert!(metadata_on("sr_old_total").is_empty());
    // Dropped by relabeling: nowhere.
    assert!(
        metadata_on("sr_dropped_total").is_empty(),
        "{:?}",
        got.metadata
    );
    // 2.0: the family of its one series, on that series' partition.
    let v2_on = metadata_on("sr_v2_requests_total");
    assert_eq!(
        v2_on.keys().copied().collect::<BTreeSet<_>>(),
        partitions_of("sr_v2_requests_total")
    );
    let want = md(
        "sr_v2_requests_total",
        MetricType::Counter,
        "Requests.",
        "1",
    );
    assert!(v2_on.values().all(|m| m == &vec![&want]), "{v2_on:?}");
    // Metadata only: every partition, once.
    let alone_on = metadata_on("sr_alone_bytes");
    assert_eq!(alone_on.len(), PARTITIONS as usize, "{alone_on:?}");
    assert!(
        alone_on.values().all(|m| m == &vec![&alone]),
        "{alone_on:?}"
    );
    assert!(read_topic(&dead_letter).is_empty(), "nothing dead-lettered");
}

/// `streamroute_router_metadata_forwarded_total{route="main"}` of `run`.
async fn metadata_forwarded(run: &Process) -> f64 {
    let r = crate::common::http_get(&format!("http://{}/metrics", run.addr))
        .await
        .expect("metrics");
    r.body
        .lines()
        .find(|l| {
            l.starts_with("streamroute_router_metadata_forwarded_total")
                && l.contains("route=\"main\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Metadata sent alone (as Prometheus 2.x sends it) follows the route's
/// rules applied to `{__name__=<family>}`: a family the rules drop by name
/// reaches no partition, a renamed one arrives under its new name only, an
/// untouched one unchanged, each on every partition; the router counts the
/// entries it wrote.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_only_families_are_dropped_and_renamed_by_the_route_rules() {
    let (receiver, received) = capture().await;
    let relabel = "{ source_labels = [\"__name__\"], regex = \"sr_gone_total\", action = \"drop\" }, \
        { source_labels = [\"__name__\"], regex = \"sr_before_total\", target_label = \"__name__\", replacement = \"sr_after_total\" }";
    let (run, dead_letter, _dir) = start_run(receiver, relabel).await;
    let url = format!("http://{}/api/v1/write", run.addr);
    let gone = md("sr_gone_total", MetricType::Counter, "Gone.", "");
    let before = md("sr_before_total", MetricType::Counter, "Renamed.", "");
    let kept = md("sr_kept_bytes", MetricType::Gauge, "Kept.", "bytes");
    let req = WriteRequest {
        timeseries: vec![],
        metadata: vec![gone, before.clone(), kept.clone()],
    };
    let r = http_post(&url, &V1, snappy(&req)).await.expect("post");
    assert_eq!(r.status, 204, "{}", r.body);

    let after = MetricMetadata {
        metric_family_name: "sr_after_total".into(),
        ..before
    };
    let on_every_partition = |got: &Received, want: &MetricMetadata| {
        (0..PARTITIONS).all(|p| got.metadata.get(&p).is_some_and(|m| m.contains(want)))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let got = received.lock().expect("lock");
            on_every_partition(&got, &kept) && on_every_partition(&got, &after)
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metadata did not arrive within 30 s:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Anything still in flight lands too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (names, all): (BTreeMap<u32, Vec<String>>, Vec<MetricMetadata>) = {
        let got = received.lock().expect("lock");
        let names = got
            .metadata
            .iter()
            .map(|(p, entries)| {
                let mut on: Vec<String> = entries
                    .iter()
                    .map(|m| m.metric_family_name.clone())
                    .collect();
                on.sort();
                (*p, on)
            })
            .collect();
        (names, got.metadata.values().flatten().cloned().collect())
    };
    let want: BTreeMap<u32, Vec<String>> = (0..PARTITIONS)
        .map(|p| {
            (
                p,
                vec!["sr_after_total".to_string(), "sr_kept_bytes".to_string()],
            )
        })
        .collect();
    assert_eq!(
        names, want,
        "exactly the kept and renamed families, once per partition"
    );
    assert!(all.iter().all(|m| m == &kept || m == &after), "{all:?}");
    // 2 families × 3 partitions.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metadata_forwarded(&run).await != 2.0 * PARTITIONS as f64 {
        assert!(
            Instant::now() < deadline,
            "metadata_forwarded_total is {}",
            metadata_forwarded(&run).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(read_topic(&dead_letter).is_empty(), "nothing dead-lettered");
}

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `# TYPE` and `# HELP` of `family` in a text exposition.
fn exposition_metadata(text: &str, family: &str) -> (MetricType, String) {
    let line = |kind: &str| {
        let prefix = format!("# {kind} {family} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in the exposition"))
            .to_string()
    };
    let kind = match line("TYPE").as_str() {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        other => panic!("unexpected type {other}"),
    };
    (kind, line("HELP"))
}

/// A real Prometheus 2.42 (Debian) scraping itself sends its metadata in
/// requests of their own (`metadata_config.send_interval`, shortened to
/// 2 s): each family reaches every partition's receiver with the type and
/// help Prometheus' own /metrics exposition states.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metadata_reaches_every_partition_with_its_exposition_type_and_help() {
    let (receiver, received) = capture().await;
    let (run, _dead_letter, dir) = start_run(receiver, "").await;
    let port = crate::common::free_port();
    let config = write_file(
        dir.path(),
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n      max_shards: 1\n\
             \x20   metadata_config:\n      send_interval: 2s\n",
            run.addr
        ),
    );
    let _prometheus = Prometheus(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus is installed (Debian package prometheus)"),
    );
    let families = ["go_gc_duration_seconds", "prometheus_http_requests_total"];
    let deadline = Instant::now() + Duration::from_secs(90);
    let exposition = loop {
        if let Ok(r) = crate::common::http_get(&format!("http://127.0.0.1:{port}/metrics")).await {
            if r.status == 200 && families.iter().all(|f| r.body.contains(f)) {
                break r.body;
            }
        }
        assert!(Instant::now() < deadline, "prometheus did not start");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for family in families {
        let (kind, help) = exposition_metadata(&exposition, family);
        loop {
            let on: Vec<u32> = {
                let got = received.lock().expect("lock");
                (0..PARTITIONS)
                    .filter(|p| {
                        got.metadata.get(p).is_some_and(|m| {
                            m.iter().any(|m| {
                                m.metric_family_name == family
                                    && m.r#type == kind as i32
                                    && m.help == help
                            })
                        })
                    })
                    .collect()
            };
            if on.len() == PARTITIONS as usize {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{family} ({kind:?}, {help:?}) on partitions {on:?} only after 90 s\nprometheus log:\n{}\nstreamroute log:\n{}",
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default(),
                run.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
