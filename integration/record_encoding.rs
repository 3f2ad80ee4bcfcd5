//! `record_encoding` against the live broker and VictoriaMetrics: a router
//! with a snappy route and a zstd route writes task records whose
//! `content-encoding` header names their encoding and whose values, undone
//! with the snap and zstd crates directly, are WriteRequests; an egress per
//! task topic delivers every sample of each to VictoriaMetrics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::message::{Headers, Message};
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

use crate::common::{create_topic, read_topic, unique, write_file, Process};
use crate::egress::{recent_ms, wait_in_vm};
use crate::router::{produce, producer, setup, start_router};

const SERIES: usize = 150;
const REQUESTS: usize = 4;

/// Requests of `SERIES` series of metric `name` (label `id`), one sample
/// each, request `r` at `ts + r` ms.
fn requests(names: &[&str], ts: i64) -> Vec<WriteRequest> {
    (0..REQUESTS)
        .map(|r| WriteRequest {
            timeseries: names
                .iter()
                .flat_map(|name| {
                    (0..SERIES).map(move |i| TimeSeries {
                        labels: vec![
                            Label::new("__name__", *name),
                            Label::new("id", i.to_string()),
                        ],
                        samples: vec![Sample {
                            value: i as f64,
                            timestamp: ts + r as i64,
                        }],
                        ..Default::default()
                    })
                })
                .collect(),
            metadata: vec![],
        })
        .collect()
}

/// The `content-encoding` header of every record of `topic` and the
/// (id, timestamp) of every sample in it, decoded independently of
/// streamroute's codec; waits until `samples` samples are there.
async fn task_records(topic: &str, samples: usize, router: &Process) -> (BTreeSet<String>, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut encodings = BTreeSet::new();
        let mut n = 0;
        for m in read_topic(topic) {
            let header = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "content-encoding"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| "<none>".into());
            let value = m.payload().expect("value");
            let raw = match header.as_str() {
                "snappy" => snap::raw::Decoder::new()
                    .decompress_vec(value)
                    .expect("a snappy block"),
                "zstd" => zstd::stream::decode_all(value).expect("a zstd frame"),
                _ => value.to_vec(),
            };
            let request = WriteRequest::decode(raw.as_slice()).expect("a WriteRequest");
            n += request
                .timeseries
                .iter()
                .map(|s| s.samples.len())
                .sum::<usize>();
            encodings.insert(header);
        }
        if n >= samples {
            return (encodings, n);
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {samples} samples in {topic}:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An egress of `topic` into VictoriaMetrics, state in `dir`.
async fn start_egress(topic: &str, dir: &std::path::Path) -> Process {
    let dead_letter = unique("dlq");
    create_topic(&dead_letter, 1).await;
    let vm = std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into());
    let config = write_file(
        dir,
        &format!("{topic}.toml"),
        &format!(
            "[topics]\ndead_letter = \"{dead_letter}\"\n\
             [egress]\ntopic = \"{topic}\"\ntarget = \"{vm}/api/v1/write\"\nstate_dir = \"{}\"\n\
             flush_interval = \"200ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"1s\"\n",
            dir.join(topic).display()
        ),
    );
    Process::start(
        &["egress"],
        "STREAMROUTE_EGRESS__LISTEN",
        &[(
            "STREAMROUTE_CONFIG_FILE",
            config.to_str().expect("utf-8").to_string(),
        )],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn snappy_and_zstd_task_records_carry_their_header_and_reach_victoriametrics() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (snappy_name, zstd_name) = (format!("sr_it_rec_s_{id}"), format!("sr_it_rec_z_{id}"));
    let zstd_topic = unique("tasks-zstd");
    create_topic(&zstd_topic, 2).await;
    let keep = |name: &str| {
        format!(
            "relabel_configs = [{{ source_labels = [\"__name__\"], regex = \"{name}\", action = \"keep\" }}]\n"
        )
    };
    let extra = format!(
        "record_encoding = \"snappy\"\n{}\
         [[router.routes]]\nname = \"z\"\ntopic = \"{zstd_topic}\"\ntask_count = 8\n\
         record_encoding = \"zstd\"\n{}",
        keep(&snappy_name),
        keep(&zstd_name)
    );
    let setup = setup(1, 2, 8, &extra).await;
    let mut router = start_router(&setup).await;
    router.wait_ready(Duration::from_secs(30)).await;

    let ts = recent_ms();
    let producer = producer();
    for request in requests(&[&snappy_name, &zstd_name], ts) {
        produce(&producer, &setup.ingress, &request).await;
    }
    let samples = SERIES * REQUESTS;
    for (topic, encoding) in [(&setup.tasks, "snappy"), (&zstd_topic, "zstd")] {
        let (encodings, n) = task_records(topic, samples, &router).await;
        assert_eq!(
            encodings,
            BTreeSet::from([encoding.to_string()]),
            "{topic}: every record says {encoding}"
        );
        assert_eq!(n, samples, "{topic}: each sample once");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut egresses = vec![
        start_egress(&setup.tasks, dir.path()).await,
        start_egress(&zstd_topic, dir.path()).await,
    ];
    let want: BTreeSet<(String, i64)> = (0..SERIES)
        .flat_map(|i| (0..REQUESTS).map(move |r| (i.to_string(), ts + r as i64)))
        .collect();
    for (name, egress) in [(&snappy_name, &egresses[0]), (&zstd_name, &egresses[1])] {
        let got = wait_in_vm(name, &want, Duration::from_secs(60), egress).await;
        let keys: BTreeSet<_> = got.keys().cloned().collect();
        assert_eq!(keys, want, "{name}: every sample, nothing else");
        let counts: BTreeMap<usize, usize> = got.values().fold(BTreeMap::new(), |mut m, c| {
            *m.entry(*c).or_default() += 1;
            m
        });
        assert_eq!(
            counts,
            BTreeMap::from([(1, want.len())]),
            "{name}: once each"
        );
    }
    for egress in &mut egresses {
        assert!(egress.terminate().success(), "{}", egress.log());
    }
    assert!(router.terminate().success(), "{}", router.log());
}
