//! `record_format = "series_ids"` against the live broker and
//! VictoriaMetrics: the router writes each series' labels once per
//! `series_refresh` and references afterwards; an egress restarted between
//! a definition and its references reads the partition back and delivers
//! every sample under its own labels; a restarted router (a new writer)
//! defines its series again.
//!
//! The task records are read here with prost alone (which skips field 5,
//! the id): an entry without labels is a reference.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::message::{Headers, Message};
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

use crate::common::{create_topic, http_get, read_topic, unique, write_file, Process};
use crate::egress::recent_ms;
use crate::router::{produce, producer, setup, Setup};

const SERIES: usize = 300;

/// One sample of each of `SERIES` series of `name` at `ts`, value
/// `id * 1000 + round` (so a sample under the wrong labels shows).
fn request(name: &str, ts: i64, round: usize) -> WriteRequest {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| TimeSeries {
                labels: vec![
                    Label::new("__name__", name),
                    Label::new("id", i.to_string()),
                    Label::new("pod", format!("checkout-{}", i % 17)),
                ],
                samples: vec![Sample {
                    value: (i * 1000 + round) as f64,
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

async fn start_router(setup: &Setup) -> Process {
    let mut router = Process::start(
        &["router"],
        "STREAMROUTE_ROUTER__LISTEN",
        &[
            (
                "STREAMROUTE_CONFIG_FILE",
                setup.config.to_str().expect("utf-8").to_string(),
            ),
            ("STREAMROUTE_ROUTER__SERIES_REFRESH", "30s".to_string()),
        ],
    )
    .await;
    router.wait_ready(Duration::from_secs(30)).await;
    router
}

async fn start_egress(topic: &str, dir: &std::path::Path) -> Process {
    let dead_letter = unique("dlq");
    create_topic(&dead_letter, 1).await;
    let vm = std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into());
    let config = write_file(
        dir,
        "egress.toml",
        &format!(
            "[topics]\ndead_letter = \"{dead_letter}\"\n\
             [egress]\ntopic = \"{topic}\"\ntarget = \"{vm}/api/v1/write\"\nstate_dir = \"{}\"\n\
             flush_interval = \"200ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"1s\"\n",
            dir.join("state").display()
        ),
    );
    let mut egress = Process::start(
        &["egress"],
        "STREAMROUTE_EGRESS__LISTEN",
        &[(
            "STREAMROUTE_CONFIG_FILE",
            config.to_str().expect("utf-8").to_string(),
        )],
    )
    .await;
    egress.wait_ready(Duration::from_secs(30)).await;
    egress
}

async fn metrics(process: &Process) -> String {
    http_get(&format!("http://{}/metrics", process.addr))
        .await
        .expect("metrics")
        .body
}

/// The sum of the samples of `name` whose labels include `label`.
fn sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (id, timestamp) -> values VictoriaMetrics holds for `name`.
async fn vm_values(name: &str) -> BTreeMap<(String, i64), Vec<f64>> {
    let vm = std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into());
    let url = format!("{vm}/api/v1/export?match%5B%5D=%7B__name__%3D%22{name}%22%7D");
    let response = http_get(&url).await.expect("export");
    assert_eq!(response.status, 200, "{}", response.body);
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for line in response.body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let id = v["metric"]["id"].as_str().unwrap_or_default().to_string();
        let pod = v["metric"]["pod"].as_str().unwrap_or_default();
        let expected_pod = format!("checkout-{}", id.parse::<usize>().unwrap_or(0) % 17);
        assert_eq!(pod, expected_pod, "series {id} keeps its labels: {line}");
        let timestamps = v["timestamps"].as_array().expect("timestamps");
        let values = v["values"].as_array().expect("values");
        for (ts, value) in timestamps.iter().zip(values) {
            out.entry((id.clone(), ts.as_i64().expect("ms")))
                .or_default()
                .push(value.as_f64().expect("a number"));
        }
    }
    out
}

/// Waits until VictoriaMetrics holds exactly one sample of every series
/// for each of `rounds` (round, ts), each with its own value.
async fn wait_delivered(name: &str, rounds: &[(usize, i64)], egress: &Process) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let want: BTreeMap<(String, i64), Vec<f64>> = rounds
        .iter()
        .flat_map(|&(round, ts)| {
            (0..SERIES).map(move |i| ((i.to_string(), ts), vec![(i * 1000 + round) as f64]))
        })
        .collect();
    loop {
        let got = vm_values(name).await;
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        if missing == 0 {
            assert_eq!(got, want, "every sample once, under its own series");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} samples not in VictoriaMetrics:\n{}",
            want.len(),
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Per writer (in the order they first appear in a partition): series entries with labels
/// (definitions) and without (references), read with prost alone; and the
/// value bytes of the topic.
fn task_entries(topic: &str) -> (Vec<(String, usize, usize)>, usize) {
    let mut writers: Vec<(String, usize, usize)> = Vec::new();
    let mut bytes = 0;
    for m in read_topic(topic) {
        let header = |key: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == key))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("protocol").as_deref(), Some("streamroute.SeriesIds"));
        let writer = header("series-writer").expect("a series-writer header");
        assert_eq!(header("series-refresh-ms").as_deref(), Some("30000"));
        let value = m.payload().expect("value");
        bytes += value.len();
        let request = WriteRequest::decode(value).expect("a WriteRequest");
        if !writers.iter().any(|w| w.0 == writer) {
            writers.push((writer.clone(), 0, 0));
        }
        let entry = writers.iter_mut().find(|w| w.0 == writer).expect("listed");
        for series in &request.timeseries {
            if series.labels.is_empty() {
                entry.2 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    (writers, bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_egress_resolves_series_ids_by_reading_back_and_a_new_writer_defines_again() {
    let name = format!("sr_it_ids_{}", uuid::Uuid::new_v4().simple());
    let setup = setup(1, 2, 8, "record_format = \"series_ids\"\n").await;
    let mut router = start_router(&setup).await;
    let producer = producer();
    let dir = tempfile::tempdir().expect("tempdir");
    let ts = recent_ms();

    // Round 0 defines every series; egress delivers it and stops.
    let mut egress = start_egress(&setup.tasks, dir.path()).await;
    produce(&producer, &setup.ingress, &request(&name, ts, 0)).await;
    wait_delivered(&name, &[(0, ts)], &egress).await;
    assert!(egress.terminate().success(), "{}", egress.log());

    // Rounds 1 and 2, within the refresh: references only, written while
    // no egress runs. The one started next knows no definition.
    for round in 1..=2 {
        produce(
            &producer,
            &setup.ingress,
            &request(&name, ts + round as i64, round),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while task_entries(&setup.tasks)
        .0
        .iter()
        .map(|w| w.2)
        .sum::<usize>()
        < 2 * SERIES
    {
        assert!(Instant::now() < deadline, "{}", router.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut egress = start_egress(&setup.tasks, dir.path()).await;
    let rounds: Vec<(usize, i64)> = (0..=2).map(|r| (r, ts + r as i64)).collect();
    wait_delivered(&name, &rounds, &egress).await;
    assert!(
        egress.log().contains("read the partition back"),
        "{}",
        egress.log()
    );
    // The same, as metrics: the egress read back (once per partition with
    // references), the router wrote each series' labels once and then
    // referenced it twice.
    let egress_metrics = metrics(&egress).await;
    assert!(
        sum(
            &egress_metrics,
            "streamroute_egress_series_readbacks_total",
            "outcome=\"done\""
        ) >= 1.0,
        "{egress_metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let router_metrics = metrics(&router).await;
        let entries = |kind: &str| {
            let label = format!("kind=\"{kind}\"");
            sum(
                &router_metrics,
                "streamroute_router_series_id_entries_total",
                &label,
            )
        };
        if (entries("definition"), entries("reference")) == (SERIES as f64, 2.0 * SERIES as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "{router_metrics}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A restarted router is a new writer: it defines every series again.
    assert!(router.terminate().success(), "{}", router.log());
    let router = start_router(&setup).await;
    produce(&producer, &setup.ingress, &request(&name, ts + 3, 3)).await;
    let rounds: Vec<(usize, i64)> = (0..=3).map(|r| (r, ts + r as i64)).collect();
    wait_delivered(&name, &rounds, &egress).await;

    let (writers, bytes) = task_entries(&setup.tasks);
    let counts: Vec<(usize, usize)> = writers.iter().map(|w| (w.1, w.2)).collect();
    assert_eq!(
        counts,
        [(SERIES, 2 * SERIES), (SERIES, 0)],
        "defined once per writer, referenced within the refresh"
    );
    println!(
        "series_ids task topic: {bytes} value bytes for {} samples ({:.1} B/sample, uncompressed)",
        4 * SERIES,
        bytes as f64 / (4 * SERIES) as f64
    );
    let mut router = router;
    assert!(egress.terminate().success(), "{}", egress.log());
    assert!(router.terminate().success(), "{}", router.log());
}
