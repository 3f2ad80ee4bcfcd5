//! The router against the live broker: routing, stream_task_id, dead
//! letters and exactly-once under kill -9.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use streamroute::remote_write::{compress, Encoding};

use crate::common::{bootstrap, create_topic, read_topic, unique, write_file, Process};
use crate::spec::{paper_jump, prometheus_hash, task_of};

/// Topics and a config file for one router test.
pub struct Setup {
    pub ingress: String,
    pub tasks: String,
    pub dead_letter: String,
    pub config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn setup(
    ingress_partitions: i32,
    task_partitions: i32,
    task_count: u32,
    extra: &str,
) -> Setup {
    let (ingress, tasks, dead_letter, group) = (
        unique("ingress"),
        unique("tasks"),
        unique("dlq"),
        unique("router"),
    );
    create_topic(&ingress, ingress_partitions).await;
    create_topic(&tasks, task_partitions).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "router.toml",
        &format!(
            "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
             [topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [router]\ngroup_id = \"{group}\"\ninstance_id = \"a\"\ncommit_interval = \"200ms\"\ntransaction_timeout = \"10s\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = {task_count}\n{extra}"
        ),
    );
    Setup {
        ingress,
        tasks,
        dead_letter,
        config,
        _dir: dir,
    }
}

pub async fn start_router(setup: &Setup) -> Process {
    Process::start(
        &["router"],
        "STREAMROUTE_ROUTER__LISTEN",
        &[(
            "STREAMROUTE_CONFIG_FILE",
            setup.config.to_str().expect("utf-8").to_string(),
        )],
    )
    .await
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Writes `request` to `topic` as the gateway would (snappy body).
pub async fn produce(producer: &FutureProducer, topic: &str, request: &WriteRequest) {
    let value = compress(&request.encode_to_vec(), Encoding::Snappy).expect("snappy");
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-encoding",
        value: Some("snappy"),
    });
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic)
                .payload(&value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
}

fn series(labels: &[(&str, &str)], value: f64, ts: i64) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        samples: vec![Sample {
            value,
            timestamp: ts,
        }],
        ..Default::default()
    }
}

/// Every series in the task topic, with the partition it was found in.
pub fn task_series(topic: &str) -> Vec<(i32, TimeSeries)> {
    read_topic(topic)
        .iter()
        .flat_map(|m| {
            let request = WriteRequest::decode(m.payload().expect("value"))
                .expect("task records are plain protobuf");
            request
                .timeseries
                .into_iter()
                .map(move |s| (m.partition(), s))
        })
        .collect()
}

/// Waits until the task topic holds `samples` samples.
pub async fn wait_for_samples(
    topic: &str,
    samples: usize,
    router: &Process,
) -> Vec<(i32, TimeSeries)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = task_series(topic);
        let n: usize = got.iter().map(|(_, s)| s.samples.len()).sum();
        if n >= samples {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {samples} samples routed after 90 s:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn series_land_in_the_right_partition_with_the_right_task_id() {
    let rules = "[[router.routes.relabel_configs]]\nsource_labels = [\"__name__\"]\nregex = \"drop_me\"\naction = \"drop\"\n\
                 [[router.routes.relabel_configs]]\ntarget_label = \"env\"\nreplacement = \"test\"\n";
    let setup = setup(2, 3, 16, rules).await;
    let producer = producer();
    let mut want = BTreeMap::new();
    for k in 0..4 {
        let mut timeseries = Vec::new();
        for i in 0..50 {
            let id = (k * 50 + i).to_string();
            timeseries.push(series(
                &[("__name__", "m"), ("id", &id), ("job", "j")],
                f64::from(k * 50 + i),
                1000,
            ));
            want.insert(id, f64::from(k * 50 + i));
        }
        // Dropped by the rules.
        timeseries.push(series(&[("__name__", "drop_me"), ("id", "x")], 0.0, 1000));
        // Brings a stale task id, which must be overwritten.
        timeseries.push(series(
            &[
                ("__name__", "m"),
                ("id", &format!("stale{k}")),
                ("stream_task_id", "999"),
            ],
            1.0,
            1000,
        ));
        want.insert(format!("stale{k}"), 1.0);
        produce(
            &producer,
            &setup.ingress,
            &WriteRequest {
                timeseries,
                metadata: vec![],
            },
        )
        .await;
    }
    let router = start_router(&setup).await;
    let got = wait_for_samples(&setup.tasks, want.len(), &router).await;

    let mut seen = BTreeMap::new();
    for (partition, s) in &got {
        let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "labels sorted by name");
        let label = |n: &str| {
            s.labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.clone())
        };
        assert_ne!(label("__name__").as_deref(), Some("drop_me"));
        assert_eq!(
            label("env").as_deref(),
            Some("test"),
            "relabel rules applied"
        );
        let task: u64 = label("stream_task_id")
            .expect("task label")
            .parse()
            .expect("decimal");
        assert_eq!(
            task,
            u64::from(task_of(pairs(&s.labels), "stream_task_id", 16)),
            "stream_task_id of {:?}",
            s.labels
        );
        assert_eq!(
            *partition as u32,
            paper_jump(task, 3),
            "partition of task {task}"
        );
        seen.insert(label("id").expect("id"), s.samples[0].value);
    }
    assert_eq!(seen, want, "every kept series exactly once");
    assert_eq!(got.len(), want.len());
}

fn pairs(labels: &[Label]) -> impl Iterator<Item = (&str, &str)> {
    labels.iter().map(|l| (l.name.as_str(), l.value.as_str()))
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_labels_put_series_with_equal_values_on_one_partition() {
    let setup = setup(1, 4, 64, "partition_labels = [\"job\"]\n").await;
    let jobs: Vec<String> = (0..8).map(|j| format!("job-{j}")).collect();
    let timeseries = jobs
        .iter()
        .flat_map(|job| {
            (0..12).map(move |i| {
                series(
                    &[("__name__", "pl"), ("i", &i.to_string()), ("job", job)],
                    f64::from(i),
                    1000,
                )
            })
        })
        .collect::<Vec<_>>();
    let total = timeseries.len();
    produce(
        &producer(),
        &setup.ingress,
        &WriteRequest {
            timeseries,
            metadata: vec![],
        },
    )
    .await;
    let router = start_router(&setup).await;
    let got = wait_for_samples(&setup.tasks, total, &router).await;
    assert_eq!(got.len(), total, "every series once");
    let mut partitions_of_job: BTreeMap<String, std::collections::BTreeSet<i32>> = BTreeMap::new();
    let mut tasks_of_job: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (partition, s) in &got {
        let job = s.labels.iter().find(|l| l.name == "job").expect("job");
        let task = s
            .labels
            .iter()
            .find(|l| l.name == "stream_task_id")
            .expect("task label");
        let want = paper_jump(prometheus_hash([("job", job.value.as_str())]), 4);
        assert_eq!(*partition as u32, want, "partition of {:?}", s.labels);
        partitions_of_job
            .entry(job.value.clone())
            .or_default()
            .insert(*partition);
        tasks_of_job
            .entry(job.value.clone())
            .or_default()
            .insert(task.value.clone());
    }
    for (job, partitions) in &partitions_of_job {
        assert_eq!(partitions.len(), 1, "{job} on {partitions:?}");
        // The tasks of a job differ, so routing by task would have spread it.
        assert!(
            tasks_of_job[job].len() > 1,
            "{job}: {:?}",
            tasks_of_job[job]
        );
    }
    let used: std::collections::BTreeSet<i32> =
        partitions_of_job.values().flatten().copied().collect();
    assert!(used.len() >= 3, "jobs spread over {used:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_record_is_dead_lettered_and_the_partition_moves_on() {
    let setup = setup(1, 1, 4, "").await;
    let producer = producer();
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-encoding",
        value: Some("snappy"),
    });
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&setup.ingress)
                .key("sender-1")
                .payload(&b"\x0anot snappy at all"[..])
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
    produce(
        &producer,
        &setup.ingress,
        &WriteRequest {
            timeseries: vec![series(&[("__name__", "after")], 1.0, 1)],
            metadata: vec![],
        },
    )
    .await;
    let router = start_router(&setup).await;
    let got = wait_for_samples(&setup.tasks, 1, &router).await;
    assert_eq!(
        got[0].1.labels[0].value, "after",
        "the record after the poison one was routed"
    );

    let dead = read_topic(&setup.dead_letter);
    assert_eq!(dead.len(), 1);
    let header = |n: &str| {
        dead[0]
            .headers()
            .expect("headers")
            .iter()
            .find(|h| h.key == n)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("dead-letter-reason").as_deref(), Some("bad_snappy"));
    assert_eq!(
        header("source-topic").as_deref(),
        Some(setup.ingress.as_str())
    );
    assert_eq!(header("source-partition").as_deref(), Some("0"));
    assert_eq!(header("source-offset").as_deref(), Some("0"));
    assert_eq!(dead[0].key(), Some(&b"sender-1"[..]));
    assert_eq!(dead[0].payload(), Some(&b"\x0anot snappy at all"[..]));
    let metrics = crate::common::http_get(&format!("http://{}/metrics", router.addr))
        .await
        .expect("metrics");
    assert!(
        metrics
            .body
            .contains("streamroute_router_dead_letter_records_total{reason=\"bad_snappy\"} 1"),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_repeatedly_neither_loses_nor_duplicates_a_sample() {
    let setup = setup(2, 3, 32, "").await;
    let producer = producer();
    let ingress = setup.ingress.clone();
    // A stream of 300 payloads of 20 series over ~12 s, each sample unique.
    let feeder = tokio::spawn(async move {
        for k in 0..300u32 {
            let timeseries = (0..20u32)
                .map(|i| {
                    series(
                        &[("__name__", "eo"), ("i", &i.to_string())],
                        f64::from(k),
                        i64::from(k) * 1000,
                    )
                })
                .collect();
            produce(
                &producer,
                &ingress,
                &WriteRequest {
                    timeseries,
                    metadata: vec![],
                },
            )
            .await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let mut router = start_router(&setup).await;
    for kill in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(1300 + kill * 300)).await;
        router.kill9();
        router = start_router(&setup).await;
    }
    feeder.await.expect("feeder");
    let got = wait_for_samples(&setup.tasks, 300 * 20, &router).await;
    let mut counts: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (_, s) in &got {
        let i = s
            .labels
            .iter()
            .find(|l| l.name == "i")
            .expect("i")
            .value
            .clone();
        for sample in &s.samples {
            *counts.entry((i.clone(), sample.timestamp)).or_default() += 1;
        }
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(duplicated.is_empty(), "duplicated samples: {duplicated:?}");
    assert_eq!(counts.len(), 300 * 20, "every sample exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_commits_and_exits_zero() {
    let setup = setup(1, 1, 4, "").await;
    let producer = producer();
    produce(
        &producer,
        &setup.ingress,
        &WriteRequest {
            timeseries: vec![series(&[("__name__", "t")], 1.0, 1)],
            metadata: vec![],
        },
    )
    .await;
    let mut router = start_router(&setup).await;
    wait_for_samples(&setup.tasks, 1, &router).await;
    let started = Instant::now();
    let status = router.terminate();
    assert!(status.success(), "exit status {status}:\n{}", router.log());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_router_recovers_from_a_kafka_outage_without_loss_or_duplicates() {
    use crate::common::{create_topic_on, read_topic_on, PrivateKafka};
    let kafka = PrivateKafka::start();
    let (ingress, tasks, dead_letter) = (unique("ingress"), unique("tasks"), unique("dlq"));
    for (topic, partitions) in [(&ingress, 2), (&tasks, 2), (&dead_letter, 1)] {
        create_topic_on(&kafka.bootstrap, topic, partitions).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "router.toml",
        &format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
             [topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [router]\ngroup_id = \"{}\"\ncommit_interval = \"200ms\"\ntransaction_timeout = \"10s\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 8\n",
            kafka.bootstrap,
            unique("router")
        ),
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer");
    let batch = |k: u32| WriteRequest {
        timeseries: (0..10u32)
            .map(|i| {
                series(
                    &[("__name__", "outage"), ("i", &i.to_string())],
                    f64::from(k),
                    i64::from(k),
                )
            })
            .collect(),
        metadata: vec![],
    };
    let router = Process::start(
        &["router"],
        "STREAMROUTE_ROUTER__LISTEN",
        &[
            (
                "STREAMROUTE_CONFIG_FILE",
                config.to_str().expect("utf-8").to_string(),
            ),
            (
                "STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS",
                kafka.bootstrap.clone(),
            ),
        ],
    )
    .await;
    for k in 0..20 {
        produce(&producer, &ingress, &batch(k)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.script("stop");
    // Longer than session.timeout.ms (6 s): the group session expires and
    // the router must come back from a lost assignment too.
    tokio::time::sleep(Duration::from_secs(10)).await;
    kafka.script("start");
    for k in 20..40 {
        produce(&producer, &ingress, &batch(k)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut counts: BTreeMap<(String, i64), usize> = BTreeMap::new();
        for m in read_topic_on(&kafka.bootstrap, &tasks) {
            let request = WriteRequest::decode(m.payload().expect("value")).expect("protobuf");
            for s in request.timeseries {
                let i = s
                    .labels
                    .iter()
                    .find(|l| l.name == "i")
                    .expect("i")
                    .value
                    .clone();
                for sample in s.samples {
                    *counts.entry((i.clone(), sample.timestamp)).or_default() += 1;
                }
            }
        }
        assert!(
            counts.values().all(|n| *n == 1),
            "duplicates after the outage: {:?}",
            counts
                .iter()
                .filter(|(_, n)| **n > 1)
                .take(5)
                .collect::<Vec<_>>()
        );
        if counts.len() == 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 400 samples after the outage:\n{}",
            counts.len(),
            router.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Router `instance_id` of the group, with transactions that write their
/// batches as they go (5 samples each) and stay open for 3 s, so that a
/// kill lands inside an open transaction that has written records, and the
/// rebalance reaches the survivor mid-transaction rather than while it
/// commits (then its next transaction has nothing to abort).
async fn start_member(setup: &Setup, instance_id: &str) -> Process {
    Process::start(
        &["router"],
        "STREAMROUTE_ROUTER__LISTEN",
        &[
            (
                "STREAMROUTE_CONFIG_FILE",
                setup.config.to_str().expect("utf-8").to_string(),
            ),
            ("STREAMROUTE_ROUTER__INSTANCE_ID", instance_id.to_string()),
            ("STREAMROUTE_ROUTER__COMMIT_INTERVAL", "3s".to_string()),
            ("STREAMROUTE_ROUTER__BATCH_MAX_SAMPLES", "5".to_string()),
        ],
    )
    .await
}

/// `streamroute_router_transactions_total{outcome="aborted"}` of a router.
async fn aborted_transactions(router: &Process) -> u64 {
    let metrics = crate::common::http_get(&format!("http://{}/metrics", router.addr))
        .await
        .expect("metrics");
    metrics
        .body
        .lines()
        .find(|l| l.starts_with("streamroute_router_transactions_total{outcome=\"aborted\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples per (series `i`, timestamp) in `series`.
fn sample_counts(series: &[(i32, TimeSeries)]) -> BTreeMap<(String, i64), usize> {
    let mut counts = BTreeMap::new();
    for (_, s) in series {
        let i = s.labels.iter().find(|l| l.name == "i").expect("i");
        for sample in &s.samples {
            *counts
                .entry((i.value.clone(), sample.timestamp))
                .or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_killed_mid_transaction_leaves_every_sample_once_and_aborts_happened() {
    use crate::common::{last_assignment, read_uncommitted};
    const PAYLOADS: u32 = 250;
    const SERIES: u32 = 12;
    let setup = setup(4, 3, 32, "").await;
    let (mut a, b) = tokio::join!(start_member(&setup, "a"), start_member(&setup, "b"));
    // Both members own ingress partitions before the stream starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_assignment(&a).is_empty() || last_assignment(&b).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the group never split the partitions:\n{}\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ingress = setup.ingress.clone();
    let feeder = tokio::spawn(async move {
        let producer = producer();
        for k in 0..PAYLOADS {
            let timeseries = (0..SERIES)
                .map(|i| {
                    series(
                        &[("__name__", "ko"), ("i", &i.to_string())],
                        f64::from(k),
                        i64::from(k) * 1000,
                    )
                })
                .collect();
            produce(
                &producer,
                &ingress,
                &WriteRequest {
                    timeseries,
                    metadata: vec![],
                },
            )
            .await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let killed_with = last_assignment(&a);
    a.kill9();
    feeder.await.expect("feeder");
    let total = (PAYLOADS * SERIES) as usize;
    let got = wait_for_samples(&setup.tasks, total, &b).await;
    assert_eq!(
        last_assignment(&b),
        (0..4).collect(),
        "b took over a's partitions {killed_with:?}:\n{}",
        b.log()
    );
    let counts = sample_counts(&got);
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(duplicated.is_empty(), "duplicated samples: {duplicated:?}");
    assert_eq!(counts.len(), total, "every sample exactly once");
    // The dangerous path ran: b aborted a transaction when the group took
    // its partitions away, and the topic holds records of aborted
    // transactions (a's, left open by the kill, and b's), which
    // read_committed hides.
    let aborted = aborted_transactions(&b).await;
    assert!(aborted > 0, "no transaction aborted:\n{}", b.log());
    let tasks = setup.tasks.clone();
    let uncommitted = tokio::task::spawn_blocking(move || read_uncommitted(&tasks))
        .await
        .expect("reader");
    let written: usize = uncommitted
        .iter()
        .map(|m| {
            WriteRequest::decode(m.payload().unwrap_or_default())
                .map_or(0, |r| r.timeseries.iter().map(|s| s.samples.len()).sum())
        })
        .sum();
    eprintln!("aborted transactions in b: {aborted}; samples written {written}, committed {total}");
    assert!(
        written > total,
        "no aborted record in the task topic: {written} samples written, {total} committed"
    );
}
