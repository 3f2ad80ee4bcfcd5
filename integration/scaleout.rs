//! Scale-out: every role in its own process, as a cluster runs them. Two
//! gateways, three routers in one consumer group (distinct `instance_id`s)
//! and two egress processes owning disjoint task partitions ("0-1" and
//! "2-3"), all on the shared broker, with VictoriaMetrics receiving from
//! both egress processes. Two senders post to both gateways alternately
//! while the group grows (a third router joins) and shrinks (one of the
//! first two is killed with SIGKILL and never comes back, so its open
//! transaction is aborted by the coordinator when `transaction_timeout`
//! runs out). Every sample acknowledged with 204 must be in the task topic
//! exactly once (read_committed) and in VictoriaMetrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::Message as _;
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use streamroute::remote_write::{compress, Encoding};

use crate::common::{
    bootstrap, create_topic, http_post, last_assignment, read_topic, read_uncommitted, unique,
    write_file, Process,
};
use crate::egress::{recent_ms, vm_samples};

const INGRESS_PARTITIONS: i32 = 6;
const TASK_PARTITIONS: i32 = 4;
const SERIES_PER_REQUEST: usize = 20;
/// Concurrent senders, each alternating between the gateways.
const SENDERS: usize = 2;
/// How long the sender runs, and when the group changes.
const SENDING: Duration = Duration::from_secs(36);
const THIRD_ROUTER_AT: Duration = Duration::from_secs(8);
const KILL_AT: Duration = Duration::from_secs(20);
/// The routers' consumer session and transaction timeouts: how long the
/// group waits for a dead static member, and the coordinator for its
/// open transaction.
const SESSION_TIMEOUT_MS: u64 = 6000;
const TRANSACTION_TIMEOUT: &str = "10s";

/// One request the sender made: its timestamp (shared by its 20 samples),
/// when it was sent and when the gateway answered.
struct Attempt {
    ts: i64,
    gateway: usize,
    sent: Duration,
    answered: Duration,
    status: Option<u16>,
}

/// Topics and config files of the cluster.
struct Cluster {
    ingress: String,
    tasks: String,
    dir: tempfile::TempDir,
    group: String,
    dead_letter: String,
}

impl Cluster {
    async fn new() -> Cluster {
        let (ingress, tasks, dead_letter, group) = (
            unique("ingress"),
            unique("tasks"),
            unique("dlq"),
            unique("router"),
        );
        create_topic(&ingress, INGRESS_PARTITIONS).await;
        create_topic(&tasks, TASK_PARTITIONS).await;
        create_topic(&dead_letter, 1).await;
        Cluster {
            ingress,
            tasks,
            dir: tempfile::tempdir().expect("tempdir"),
            group,
            dead_letter,
        }
    }

    /// The part every process's config shares.
    fn common(&self) -> String {
        format!(
            "[kafka.properties]\n\"session.timeout.ms\" = \"{SESSION_TIMEOUT_MS}\"\n\
             [topics]\ningress = \"{}\"\ndead_letter = \"{}\"\n\
             [router]\ngroup_id = \"{}\"\ncommit_interval = \"1s\"\nbatch_max_samples = 40\ntransaction_timeout = \"{TRANSACTION_TIMEOUT}\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{}\"\ntask_count = 64\n",
            self.ingress, self.dead_letter, self.group, self.tasks
        )
    }

    fn config(&self, name: &str, text: &str) -> PathBuf {
        write_file(self.dir.path(), name, text)
    }

    async fn gateway(&self, n: usize) -> Process {
        let config = self.config(
            &format!("gateway-{n}.toml"),
            &format!(
                "{}[gateway]\nproduce_timeout = \"5s\"\nretry_after = \"1s\"\n",
                self.common()
            ),
        );
        start("gateway", &config, "STREAMROUTE_GATEWAY__LISTEN").await
    }

    /// A router of the group; `instance_id` must be unique in it.
    async fn router(&self, instance_id: &str) -> Process {
        let config = self.config(&format!("router-{instance_id}.toml"), &self.common());
        let path = config.to_str().expect("utf-8").to_string();
        Process::start(
            &["router"],
            "STREAMROUTE_ROUTER__LISTEN",
            &[
                ("STREAMROUTE_CONFIG_FILE", path),
                ("STREAMROUTE_ROUTER__INSTANCE_ID", instance_id.to_string()),
            ],
        )
        .await
    }

    /// An egress process owning `partitions`, with its own state folder.
    async fn egress(&self, n: usize, partitions: &str, target: &str) -> Process {
        let state = self.dir.path().join(format!("egress-state-{n}"));
        let config = self.config(
            &format!("egress-{n}.toml"),
            &format!(
                "{}[egress]\ntopic = \"{}\"\npartitions = \"{partitions}\"\ntarget = \"{target}\"\nstate_dir = \"{}\"\n\
                 flush_interval = \"200ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"2s\"\nrequest_timeout = \"10s\"\n",
                self.common(),
                self.tasks,
                state.display()
            ),
        );
        start("egress", &config, "STREAMROUTE_EGRESS__LISTEN").await
    }
}

async fn start(role: &str, config: &Path, listen_env: &str) -> Process {
    Process::start(
        &[role],
        listen_env,
        &[(
            "STREAMROUTE_CONFIG_FILE",
            config.to_str().expect("utf-8").to_string(),
        )],
    )
    .await
}

fn request(name: &str, k: i64, ts: i64) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: (0..SERIES_PER_REQUEST)
            .map(|i| TimeSeries {
                labels: vec![
                    Label::new("__name__", name),
                    Label::new("id", i.to_string()),
                ],
                samples: vec![Sample {
                    value: k as f64,
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    compress(&request.encode_to_vec(), Encoding::Snappy).expect("snappy")
}

/// Posts to the gateways in turn, one request every ~8 ms, until `stop`;
/// sender `index` of `SENDERS` uses the timestamps `base + k * SENDERS + index`.
fn start_sender(
    index: usize,
    base: i64,
    gateways: Vec<String>,
    name: String,
    started: Instant,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut k = 0i64;
        while !stop.load(Ordering::Acquire) {
            let ts = base + k * SENDERS as i64 + index as i64;
            let gateway = (k as usize + index) % gateways.len();
            let headers = [
                ("content-encoding", "snappy"),
                ("content-type", "application/x-protobuf"),
            ];
            let sent = started.elapsed();
            let status = http_post(&gateways[gateway], &headers, request(&name, k, ts))
                .await
                .ok()
                .map(|r| r.status);
            attempts.lock().expect("lock").push(Attempt {
                ts,
                gateway,
                sent,
                answered: started.elapsed(),
                status,
            });
            k += 1;
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
    })
}

/// (id, timestamp) → count of the samples of metric `name` in `messages`.
fn count_samples(
    messages: &[rdkafka::message::OwnedMessage],
    name: &str,
) -> BTreeMap<(String, i64), usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        let request = WriteRequest::decode(m.payload().expect("value"))
            .expect("task records are plain protobuf");
        for s in request.timeseries {
            let label = |n: &str| {
                s.labels
                    .iter()
                    .find(|l| l.name == n)
                    .map(|l| l.value.clone())
            };
            if label("__name__").as_deref() != Some(name) {
                continue;
            }
            let id = label("id").expect("id label");
            assert!(
                label("stream_task_id").is_some(),
                "no task label on {:?}",
                s.labels
            );
            for sample in &s.samples {
                *counts.entry((id.clone(), sample.timestamp)).or_default() += 1;
            }
        }
    }
    counts
}

/// Reads the task topic read_committed while the test runs and records,
/// per request timestamp, when its last sample became visible.
fn start_watcher(
    topic: String,
    name: String,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<HashMap<i64, Duration>> {
    std::thread::spawn(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("watcher"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..TASK_PARTITIONS {
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut seen: HashMap<i64, usize> = HashMap::new();
        let mut complete = HashMap::new();
        while !stop.load(Ordering::Acquire) {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.expect("consume").detach();
            for ((_, ts), n) in count_samples(std::slice::from_ref(&message), &name) {
                let count = seen.entry(ts).or_default();
                *count += n;
                if *count >= SERIES_PER_REQUEST {
                    complete.entry(ts).or_insert_with(|| started.elapsed());
                }
            }
        }
        complete
    })
}

/// Prints a router's log lines about assignments and rebalances, and its
/// first warnings and errors, for the report.
fn assignments(name: &str, router: &Process) {
    let log = router.log();
    let group = log.lines().filter(|l| {
        l.contains("partitions assigned") || l.contains("revoked") || l.contains("rebalance")
    });
    let problems = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(10);
    for line in group.chain(problems) {
        eprintln!("  router {name}: {line}");
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn routers_joining_and_dying_keep_task_topics_exactly_once_across_a_cluster() {
    let vm = std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into());
    let cluster = Cluster::new().await;
    let target = format!("{vm}/api/v1/write");
    let (gateway_0, gateway_1, router_a, router_b, egress_0, egress_1) = tokio::join!(
        cluster.gateway(0),
        cluster.gateway(1),
        cluster.router("a"),
        cluster.router("b"),
        cluster.egress(0, "0-1", &target),
        cluster.egress(1, "2-3", &target),
    );
    let mut routers = vec![("a", router_a), ("b", router_b)];

    let name = format!("sr_it_scaleout_{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    let stop_watcher = Arc::new(AtomicBool::new(false));
    let watcher = start_watcher(
        cluster.tasks.clone(),
        name.clone(),
        started,
        stop_watcher.clone(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let gateways: Vec<String> = [&gateway_0, &gateway_1]
        .iter()
        .map(|g| format!("http://{}/api/v1/write", g.addr))
        .collect();
    let base = recent_ms();
    let senders: Vec<_> = (0..SENDERS)
        .map(|index| {
            let (gateways, name) = (gateways.clone(), name.clone());
            start_sender(
                index,
                base,
                gateways,
                name,
                started,
                stop.clone(),
                attempts.clone(),
            )
        })
        .collect();

    tokio::time::sleep(THIRD_ROUTER_AT.saturating_sub(started.elapsed())).await;
    let joined = started.elapsed();
    routers.push(("c", cluster.router("c").await));
    eprintln!(
        "router c started at {joined:?}, ready at {:?}",
        started.elapsed()
    );

    tokio::time::sleep(KILL_AT.saturating_sub(started.elapsed())).await;
    let killed = started.elapsed();
    let (_, mut dead) = routers.remove(0);
    dead.kill9();
    eprintln!("router a killed with SIGKILL at {killed:?}");

    tokio::time::sleep(SENDING.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Release);
    for sender in senders {
        sender.await.expect("sender");
    }
    // Both rebalances happened: the killed router and the new one had
    // partitions, and the survivors own every ingress partition.
    assert!(
        !last_assignment(&dead).is_empty(),
        "router a had no partitions when killed:\n{}",
        dead.log()
    );
    let assigned: BTreeSet<i32> = routers
        .iter()
        .flat_map(|(_, r)| last_assignment(r))
        .collect();
    assert!(
        !last_assignment(&routers[1].1).is_empty(),
        "router c never got partitions:\n{}",
        routers[1].1.log()
    );
    assert_eq!(
        assigned,
        (0..INGRESS_PARTITIONS).collect(),
        "the routers left do not own every ingress partition"
    );
    let attempts = std::mem::take(&mut *attempts.lock().expect("lock"));
    let acknowledged: Vec<&Attempt> = attempts.iter().filter(|a| a.status == Some(204)).collect();
    let want: BTreeSet<(String, i64)> = acknowledged
        .iter()
        .flat_map(|a| (0..SERIES_PER_REQUEST).map(move |i| (i.to_string(), a.ts)))
        .collect();
    let attempted: BTreeSet<i64> = attempts.iter().map(|a| a.ts).collect();
    let mut statuses: BTreeMap<Option<u16>, usize> = BTreeMap::new();
    for a in &attempts {
        *statuses.entry(a.status).or_default() += 1;
    }
    let per_gateway: Vec<usize> = (0..2)
        .map(|g| acknowledged.iter().filter(|a| a.gateway == g).count())
        .collect();
    eprintln!(
        "sent {} requests in {:?} ({} samples acknowledged, answers {statuses:?}, acknowledged per gateway {per_gateway:?})",
        attempts.len(),
        SENDING,
        want.len()
    );
    assert!(
        acknowledged.len() >= 1000,
        "only {} requests acknowledged:\n{}",
        acknowledged.len(),
        gateway_0.log()
    );
    for g in 0..2 {
        assert!(
            per_gateway[g] * 3 >= acknowledged.len(),
            "gateway {g} acknowledged too few: {per_gateway:?}"
        );
    }

    // (a) The task topic, read_committed: every acknowledged sample exactly
    // once. Samples of requests not answered 204 may be there (Kafka may
    // have taken the record), but once at most, and nothing else.
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let tasks = cluster.tasks.clone();
        let n = name.clone();
        let counts = tokio::task::spawn_blocking(move || count_samples(&read_topic(&tasks), &n))
            .await
            .expect("reader");
        let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(
            duplicated.is_empty(),
            "samples in the task topic more than once, e.g. {duplicated:?} ({} duplicated in all)",
            counts.values().filter(|n| **n > 1).count()
        );
        let missing = want.iter().filter(|k| !counts.contains_key(*k)).count();
        if missing == 0 {
            break counts;
        }
        if Instant::now() > deadline {
            for (name, router) in &routers {
                eprintln!("--- router {name}\n{}", router.log());
            }
            eprintln!("--- router a (killed)\n{}", dead.log());
            panic!("{missing} of {} acknowledged samples not in the task topic 60 s after sending stopped", want.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let unknown: Vec<_> = counts
        .keys()
        .filter(|(id, ts)| {
            !attempted.contains(ts)
                || id
                    .parse::<usize>()
                    .map_or(true, |i| i >= SERIES_PER_REQUEST)
        })
        .take(5)
        .collect();
    assert!(unknown.is_empty(), "samples nobody sent: {unknown:?}");
    let extra = counts.len() - want.len();
    let routed_all = started.elapsed();
    eprintln!("task topic: {} distinct samples, each once ({extra} of unacknowledged requests); complete at {routed_all:?}", counts.len());

    // (b) Both egress processes deliver their partitions to VictoriaMetrics.
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_vm = loop {
        let got = vm_samples(&name).await;
        let missing = want.iter().filter(|k| !got.contains_key(*k)).count();
        if missing == 0 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged samples not in VictoriaMetrics after 60 s:\n--- egress 0\n{}\n--- egress 1\n{}",
            want.len(),
            egress_0.log(),
            egress_1.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let vm_duplicates: usize = in_vm.values().map(|n| n - 1).sum();
    eprintln!(
        "VictoriaMetrics: all {} acknowledged samples at {:?} ({} distinct, {vm_duplicates} duplicate rows)",
        want.len(),
        started.elapsed(),
        in_vm.len()
    );
    for (n, egress) in [(0, &egress_0), (1, &egress_1)] {
        let metrics = crate::common::http_get(&format!("http://{}/metrics", egress.addr))
            .await
            .expect("metrics")
            .body;
        let samples: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("streamroute_egress_samples_total{"))
            .collect();
        assert!(!samples.is_empty(), "egress {n} sent nothing: {metrics}");
        eprintln!("egress {n}: {samples:?}");
    }

    // What read_committed hid: records of aborted transactions (the dead
    // router's open one, and those aborted by rebalances) are in the log.
    let tasks = cluster.tasks.clone();
    let n = name.clone();
    let uncommitted =
        tokio::task::spawn_blocking(move || count_samples(&read_uncommitted(&tasks), &n))
            .await
            .expect("reader");
    let aborted: usize = uncommitted.values().sum::<usize>() - counts.values().sum::<usize>();
    eprintln!(
        "read_uncommitted: {aborted} more samples (of aborted transactions) than read_committed"
    );

    // Figures: how long acknowledged requests took to be fully visible
    // (read_committed) in the task topic, by phase.
    stop_watcher.store(true, Ordering::Release);
    let visible = tokio::task::spawn_blocking(move || watcher.join().expect("watcher"))
        .await
        .expect("join");
    let phases = [
        ("two routers", Duration::ZERO, joined),
        (
            "router c joining (10 s)",
            joined,
            joined + Duration::from_secs(10),
        ),
        ("three routers", joined + Duration::from_secs(10), killed),
        (
            "after the kill (10 s)",
            killed,
            killed + Duration::from_secs(10),
        ),
        (
            "two routers again",
            killed + Duration::from_secs(10),
            SENDING,
        ),
    ];
    for (phase, from, to) in phases {
        let mut delays: Vec<Duration> = acknowledged
            .iter()
            .filter(|a| a.sent >= from && a.sent < to)
            .filter_map(|a| visible.get(&a.ts).map(|v| v.saturating_sub(a.answered)))
            .collect();
        delays.sort_unstable();
        let slow = delays
            .iter()
            .filter(|d| **d > Duration::from_secs(2))
            .count();
        eprintln!(
            "{phase}: {} requests, 204 → in task topic p50 {:?}, p99 {:?}, max {:?}, {slow} over 2 s",
            delays.len(),
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            percentile(&delays, 1.0)
        );
    }
    let mut answers: Vec<Duration> = acknowledged.iter().map(|a| a.answered - a.sent).collect();
    answers.sort_unstable();
    eprintln!(
        "gateway 204: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&answers, 0.5),
        percentile(&answers, 0.99),
        percentile(&answers, 1.0)
    );
    assignments("a (killed)", &dead);
    for (name, router) in &routers {
        assignments(name, router);
    }
}
