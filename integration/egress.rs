//! Egress against the live broker, vmagent 1.79 and VictoriaMetrics, and
//! against a small in-test receiver for answers vmagent cannot be made to
//! give (400, 429). Every test writes task-topic records directly (plain
//! protobuf WriteRequest values, as the router writes them) and uses its own
//! topics and metric names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message as _;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use streamroute::remote_write::{decompress, Encoding};

use crate::common::{create_topic, http_get, read_topic, streamroute, unique, write_file, Process};
use crate::router::producer;

/// vmagent's write URL (scripts/test.sh exports VMAGENT_URL).
pub fn vmagent() -> String {
    format!(
        "{}/api/v1/write",
        std::env::var("VMAGENT_URL").unwrap_or_else(|_| "http://127.0.0.1:8429".into())
    )
}

/// VictoriaMetrics' base URL (scripts/test.sh exports VM_URL).
fn victoria() -> String {
    std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into())
}

/// Topics, a state folder and a config file for one egress test.
pub struct Setup {
    pub tasks: String,
    pub dead_letter: String,
    pub config: std::path::PathBuf,
    pub state: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `extra` is appended to the `[egress]` section.
pub async fn setup(partitions: i32, target: &str, extra: &str) -> Setup {
    setup_in(partitions, target, extra, None).await
}

/// [`setup`] with the state folder at `state` (default: in the test's temporary folder).
pub async fn setup_in(
    partitions: i32,
    target: &str,
    extra: &str,
    state: Option<&std::path::Path>,
) -> Setup {
    let (tasks, dead_letter) = (unique("tasks"), unique("dlq"));
    create_topic(&tasks, partitions).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state.map_or_else(|| dir.path().join("state"), std::path::Path::to_path_buf);
    let config = write_file(
        dir.path(),
        "egress.toml",
        &format!(
            "[topics]\ndead_letter = \"{dead_letter}\"\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"{target}\"\nstate_dir = \"{}\"\n\
             flush_interval = \"200ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"1s\"\nrequest_timeout = \"5s\"\n{extra}",
            state.display()
        ),
    );
    Setup {
        tasks,
        dead_letter,
        config,
        state,
        _dir: dir,
    }
}

pub async fn start_egress(setup: &Setup) -> Process {
    Process::start(
        &["egress"],
        "STREAMROUTE_EGRESS__LISTEN",
        &[(
            "STREAMROUTE_CONFIG_FILE",
            setup.config.to_str().expect("utf-8").to_string(),
        )],
    )
    .await
}

/// Unix milliseconds a few minutes ago: inside VictoriaMetrics' retention.
pub fn recent_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    now - 10 * 60 * 1000
}

/// `count` series of metric `name`, ids `first..first+count`, one sample each at `ts`.
pub fn request(name: &str, first: usize, count: usize, ts: i64) -> WriteRequest {
    let timeseries = (first..first + count)
        .map(|i| TimeSeries {
            labels: vec![
                Label::new("__name__", name),
                Label::new("id", i.to_string()),
                Label::new("stream_task_id", (i % 7).to_string()),
            ],
            samples: vec![Sample {
                value: i as f64,
                timestamp: ts,
            }],
            ..Default::default()
        })
        .collect();
    WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

/// [`request`] with the shape of the other benchmarks' payloads: 12 labels
/// per series (a Kubernetes target's), for the throughput figure.
pub fn wide_request(name: &str, first: usize, count: usize, ts: i64) -> WriteRequest {
    let mut request = request(name, first, count, ts);
    for (i, series) in request.timeseries.iter_mut().enumerate() {
        let i = first + i;
        series.labels.extend([
            Label::new("cluster", "eu-west-1-prod"),
            Label::new("container", format!("app-{}", i % 5)),
            Label::new("env", "production"),
            Label::new(
                "instance",
                format!("10.0.{}.{}:9100", i / 250 % 250, i % 250),
            ),
            Label::new("job", "kubernetes-pods"),
            Label::new("namespace", format!("team-{}", i % 12)),
            Label::new("pod", format!("app-{}-7d9f8b6c5-{:05}", i % 5, i / 5)),
            Label::new("region", "eu-west-1"),
            Label::new("service", format!("svc-{}", i % 40)),
        ]);
        series.labels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    request
}

/// Writes a task-topic record as the router does.
pub async fn produce_task(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    request: &WriteRequest,
) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "content-encoding",
            value: Some("identity"),
        })
        .insert(Header {
            key: "protocol",
            value: Some("prometheus.WriteRequest"),
        })
        .insert(Header {
            key: "route",
            value: Some("main"),
        });
    let value = request.encode_to_vec();
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(&value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
}

/// A transactional producer, as the router's: every committed transaction
/// leaves a control marker in the partition after its records.
pub fn transactional_producer() -> FutureProducer {
    use rdkafka::producer::Producer as _;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::common::bootstrap())
        .set("transactional.id", unique("egress-tx"))
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    producer
}

/// Writes a task-topic record in a transaction of its own.
pub async fn produce_task_in_transaction(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    request: &WriteRequest,
) {
    use rdkafka::producer::Producer as _;
    producer.begin_transaction().expect("begin transaction");
    produce_task(producer, topic, partition, request).await;
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit transaction");
}

/// Every (id, timestamp) VictoriaMetrics holds for metric `name`, with multiplicity.
pub async fn vm_samples(name: &str) -> BTreeMap<(String, i64), usize> {
    let url = format!(
        "{}/api/v1/export?match%5B%5D=%7B__name__%3D%22{name}%22%7D",
        victoria()
    );
    let response = http_get(&url).await.expect("export");
    assert_eq!(response.status, 200, "{}", response.body);
    let mut out = BTreeMap::new();
    for line in response.body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let id = v["metric"]["id"].as_str().unwrap_or_default().to_string();
        for ts in v["timestamps"].as_array().expect("timestamps") {
            *out.entry((id.clone(), ts.as_i64().expect("ms")))
                .or_default() += 1;
        }
    }
    out
}

/// Waits until VictoriaMetrics holds every one of `want`; returns what it holds.
pub async fn wait_in_vm(
    name: &str,
    want: &BTreeSet<(String, i64)>,
    within: Duration,
    egress: &Process,
) -> BTreeMap<(String, i64), usize> {
    let deadline = Instant::now() + within;
    loop {
        let got = vm_samples(name).await;
        let missing = want.iter().filter(|k| !got.contains_key(*k)).count();
        if missing == 0 {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} samples not in VictoriaMetrics after {within:?}:\n{}",
            want.len(),
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn metric_value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_reaches_victoria_metrics_through_vmagent() {
    let setup = setup(2, &vmagent(), "max_samples_per_send = 300\n").await;
    let name = format!("sr_it_e2e_{}", uuid::Uuid::new_v4().simple());
    let producer = producer();
    let ts = recent_ms();
    let mut want = BTreeSet::new();
    for k in 0..10 {
        for p in 0..2 {
            let first = (k * 2 + p) * 100;
            produce_task(
                &producer,
                &setup.tasks,
                p as i32,
                &request(&name, first, 100, ts + k as i64),
            )
            .await;
            want.extend((first..first + 100).map(|i| (i.to_string(), ts + k as i64)));
        }
    }
    let mut egress = start_egress(&setup).await;
    let got = wait_in_vm(&name, &want, Duration::from_secs(60), &egress).await;
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "exactly the samples written"
    );
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_samples_total{"),
        2000.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("streamroute_egress_state_write_seconds"),
        "{metrics}"
    );
    assert!(egress.terminate().success(), "{}", egress.log());

    // The positions are the ends of both partitions (10 records each).
    let state = setup.state.to_str().expect("utf-8");
    let output = streamroute(&["inspect", "offsets", "--state", state], &[]);
    assert!(output.status.success(), "{}", crate::common::show(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for p in 0..2 {
        assert!(
            text.contains(&format!("{}\t{p}\t10", setup.tasks)),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_falls_back_to_snappy_against_vmagent_1_79() {
    let setup = setup(1, &vmagent(), "encoding = \"zstd\"\n").await;
    let name = format!("sr_it_zstd_{}", uuid::Uuid::new_v4().simple());
    let ts = recent_ms();
    produce_task(&producer(), &setup.tasks, 0, &request(&name, 0, 50, ts)).await;
    let want = (0..50).map(|i| (i.to_string(), ts)).collect();
    let egress = start_egress(&setup).await;
    wait_in_vm(&name, &want, Duration::from_secs(60), &egress).await;
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(
            &metrics,
            "streamroute_egress_retries_total{reason=\"encoding\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert!(
        egress.log().contains("falling back to snappy"),
        "{}",
        egress.log()
    );
}

/// What the in-test receiver accepted: arrival time, request headers and the decoded request.
pub type Received = Arc<Mutex<Vec<(Instant, hyper::HeaderMap, WriteRequest)>>>;

/// An in-test remote-write receiver; `answer(n, request)` gives the status,
/// extra headers and body of the n-th request (0-based).
async fn receiver<F>(answer: F) -> (SocketAddr, Received)
where
    F: Fn(usize, &WriteRequest) -> (u16, Vec<(&'static str, String)>, String)
        + Send
        + Sync
        + 'static,
{
    let (addr, received, _) = slow_receiver(Duration::ZERO, answer).await;
    (addr, received)
}

/// [`receiver`] that takes `latency` to answer each request, and counts
/// the most requests it was answering at once.
pub async fn slow_receiver<F>(
    latency: Duration,
    answer: F,
) -> (SocketAddr, Received, Arc<AtomicUsize>)
where
    F: Fn(usize, &WriteRequest) -> (u16, Vec<(&'static str, String)>, String)
        + Send
        + Sync
        + 'static,
{
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let most_seen = most.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received: Received = Arc::default();
    let (answer, log) = (Arc::new(answer), received.clone());
    let count = Arc::new(Mutex::new(0usize));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (answer, log, count) = (answer.clone(), log.clone(), count.clone());
            let (open, most) = (open.clone(), most.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let (answer, log, count) = (answer.clone(), log.clone(), count.clone());
                        let (open, most) = (open.clone(), most.clone());
                        async move {
                            let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now_open, Ordering::SeqCst);
                            tokio::time::sleep(latency).await;
                            assert_eq!(request.headers()["content-encoding"], "snappy");
                            assert_eq!(
                                request.headers()["x-prometheus-remote-write-version"],
                                "0.1.0"
                            );
                            assert!(request.headers()["user-agent"]
                                .to_str()
                                .expect("ascii")
                                .starts_with("streamroute/"));
                            let request_headers = request.headers().clone();
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .expect("body")
                                .to_bytes();
                            let raw =
                                decompress(&body, Encoding::Snappy, 64 << 20).expect("snappy");
                            let decoded = WriteRequest::decode(raw.as_slice()).expect("protobuf");
                            let n = {
                                let mut c = count.lock().expect("lock");
                                *c += 1;
                                *c - 1
                            };
                            let (status, headers, text) = answer(n, &decoded);
                            if (200..300).contains(&status) {
                                log.lock().expect("lock").push((
                                    Instant::now(),
                                    request_headers,
                                    decoded,
                                ));
                            }
                            open.fetch_sub(1, Ordering::SeqCst);
                            let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            for (k, v) in headers {
                                response
                                    .headers_mut()
                                    .insert(k, v.parse().expect("header value"));
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received, most_seen)
}

fn ids(received: &Received) -> Vec<String> {
    let got = received.lock().expect("lock");
    got.iter()
        .flat_map(|(_, _, r)| r.timeseries.iter().map(|s| s.labels[1].value.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_refused_with_400_is_dead_lettered_and_later_ones_arrive() {
    let (addr, received) = receiver(|_, request| {
        let poisoned = request
            .timeseries
            .iter()
            .any(|s| s.labels.iter().any(|l| l.value == "poison"));
        if poisoned {
            (400, vec![], "label poison is not allowed".into())
        } else {
            (204, vec![], String::new())
        }
    })
    .await;
    // One record per request: each record holds 10 samples.
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_samples_per_send = 10\n",
    )
    .await;
    let producer = producer();
    let ts = recent_ms();
    produce_task(&producer, &setup.tasks, 0, &request("m", 0, 10, ts)).await;
    produce_task(&producer, &setup.tasks, 0, &request("poison", 10, 10, ts)).await;
    produce_task(&producer, &setup.tasks, 0, &request("m", 20, 10, ts)).await;
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&received).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "later batches did not arrive:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want: Vec<String> = (0..10).chain(20..30).map(|i| i.to_string()).collect();
    assert_eq!(ids(&received), want, "the accepted batches, in order");

    let dead = read_topic(&setup.dead_letter);
    assert_eq!(dead.len(), 1, "the refused record is dead-lettered");
    let header = |n: &str| {
        dead[0]
            .headers()
            .expect("headers")
            .iter()
            .find(|h| h.key == n)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("http-status").as_deref(), Some("400"));
    assert_eq!(
        header("http-response-body").as_deref(),
        Some("label poison is not allowed")
    );
    assert_eq!(
        header("dead-letter-reason").as_deref(),
        Some("rejected_by_receiver")
    );
    assert_eq!(header("source-offset").as_deref(), Some("1"));
    assert_eq!(
        header("route").as_deref(),
        Some("main"),
        "the original headers are kept"
    );
    let value =
        WriteRequest::decode(dead[0].payload().expect("value")).expect("the original record");
    assert_eq!(value.timeseries.len(), 10);
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_dead_letter_batches_total{"),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_answering_429_is_waited_for_as_told_and_nothing_is_dropped() {
    // The first three answers are 429 with Retry-After: 2 (seconds).
    let attempts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = attempts.clone();
    let (addr, received) = receiver(move |n, _| {
        seen.lock().expect("lock").push(Instant::now());
        if n < 3 {
            (429, vec![("retry-after", "2".into())], "slow down".into())
        } else {
            (204, vec![], String::new())
        }
    })
    .await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_samples_per_send = 100\n",
    )
    .await;
    let producer = producer();
    let ts = recent_ms();
    for k in 0..5 {
        produce_task(&producer, &setup.tasks, 0, &request("m", k * 100, 100, ts)).await;
    }
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while ids(&received).len() < 500 {
        assert!(
            Instant::now() < deadline,
            "only {} of 500 series arrived:\n{}",
            ids(&received).len(),
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    assert_eq!(ids(&received), want, "every series once, in order");
    let times = attempts.lock().expect("lock").clone();
    for pair in times.windows(2).take(3) {
        let waited = pair[1] - pair[0];
        assert!(
            waited >= Duration::from_millis(1900),
            "waited only {waited:?} after a 429 with Retry-After: 2"
        );
        assert!(
            waited < Duration::from_secs(4),
            "waited {waited:?}, far longer than told"
        );
    }
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_429_total{"),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_retries_total{reason=\"429\"}"),
        3.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_answering_503_is_retried_and_every_sample_arrives_once() {
    let (addr, received) = receiver(move |n, _| {
        if n < 3 {
            (503, vec![], "overloaded".into())
        } else {
            (204, vec![], String::new())
        }
    })
    .await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_samples_per_send = 100\n",
    )
    .await;
    let producer = producer();
    let ts = recent_ms();
    for k in 0..3 {
        produce_task(&producer, &setup.tasks, 0, &request("m", k * 100, 100, ts)).await;
    }
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while ids(&received).len() < 300 {
        assert!(
            Instant::now() < deadline,
            "only {} of 300 series arrived:\n{}",
            ids(&received).len(),
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a wrongly repeated request time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let want: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(ids(&received), want, "every series once, in order");
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_retries_total{reason=\"5xx\"}"),
        3.0,
        "{metrics}"
    );
}

/// The default `state_flush_every` writes the position after every
/// request: a kill right after a delivery (well within a second) resends
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_default_flush_a_kill_right_after_a_delivery_resends_nothing() {
    let (addr, received) = receiver(|_, _| (204, vec![], String::new())).await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_samples_per_send = 100\n",
    )
    .await;
    let producer = producer();
    let ts = recent_ms();
    for k in 0..3 {
        produce_task(&producer, &setup.tasks, 0, &request("m", k * 100, 100, ts)).await;
    }
    let mut egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&received).len() < 300 {
        assert!(
            Instant::now() < deadline,
            "not delivered:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = received.lock().expect("lock").last().map(|(at, _, _)| *at);
    // The position is stored (fsync) right after the receiver's 2xx: give
    // that a moment, far less than a 1 s flush period would need (a kill
    // 8 ms after the answer once came before the store, which the
    // one-request bound allows).
    tokio::time::sleep(Duration::from_millis(200)).await;
    egress.kill9();
    let killed_after = delivered.map(|at| at.elapsed());
    let restarted = start_egress(&setup).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let want: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(
        ids(&received),
        want,
        "resent after a kill {killed_after:?} after the last delivery:\n{}",
        restarted.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_repeatedly_resumes_from_sled_and_loses_nothing() {
    // The default state_flush_every (0s: positions flushed after every
    // request): a kill resends at most the request whose acknowledgement
    // was not yet on disk, per partition.
    // Requests of 50 samples (one record each), about 20 per second per
    // partition: a flush every second would resend many per kill.
    let setup = setup(2, &vmagent(), "max_samples_per_send = 50\n").await;
    let name = format!("sr_it_kill_{}", uuid::Uuid::new_v4().simple());
    let ts = recent_ms();
    // A stream of 2 × 60 records of 50 series, written while egress is killed.
    let (tasks, stream_name) = (setup.tasks.clone(), name.clone());
    let writer = tokio::spawn(async move {
        let producer = producer();
        for k in 0..60 {
            for p in 0..2 {
                produce_task(
                    &producer,
                    &tasks,
                    p,
                    &request(&stream_name, (k * 2 + p as usize) * 50, 50, ts + k as i64),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let want: BTreeSet<(String, i64)> = (0..60)
        .flat_map(|k| (k * 2 * 50..(k * 2 + 2) * 50).map(move |i| (i.to_string(), ts + k as i64)))
        .collect();
    let mut kills = 0;
    for _ in 0..4 {
        let mut egress = start_egress(&setup).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        egress.kill9();
        kills += 1;
    }
    writer.await.expect("writer");
    let egress = start_egress(&setup).await;
    let got = wait_in_vm(&name, &want, Duration::from_secs(60), &egress).await;
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let keys: BTreeSet<_> = got.keys().cloned().collect();
    assert_eq!(keys, want, "every sample, nothing else");
    assert!(
        duplicates <= kills * 2 * 50,
        "{duplicates} duplicates: more than one request per partition per kill"
    );
    eprintln!(
        "kill -9 x{kills}: {} samples, {duplicates} duplicate(s) in VictoriaMetrics",
        want.len()
    );
}

/// A vmagent of this test's own on a free port, forwarding to VictoriaMetrics.
struct Vmagent {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Vmagent {
    fn new() -> Vmagent {
        Vmagent {
            port: crate::common::free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        }
    }

    async fn start(&mut self) {
        let child = std::process::Command::new("vmagent")
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-remoteWrite.url={}/api/v1/write", victoria()))
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                self.dir.path().display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("vmagent runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&format!("http://127.0.0.1:{}/health", self.port))
            .await
            .map(|r| r.status)
            != Ok(200)
        {
            assert!(Instant::now() < deadline, "vmagent did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM: vmagent writes what it acknowledged but has not forwarded
    /// to its on-disk queue (SIGKILL would lose that, on vmagent's side).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Vmagent {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_grows_while_vmagent_is_down_and_drains_after_it_returns() {
    let mut vmagent = Vmagent::new();
    vmagent.start().await;
    let target = format!("http://127.0.0.1:{}/api/v1/write", vmagent.port);
    let setup = setup(1, &target, "max_samples_per_send = 500\n").await;
    let name = format!("sr_it_outage_{}", uuid::Uuid::new_v4().simple());
    let ts = recent_ms();
    let egress = start_egress(&setup).await;
    let metrics_url = format!("http://{}/metrics", egress.addr);
    let lag = || async {
        metric_value(
            &http_get(&metrics_url).await.expect("metrics").body,
            "streamroute_egress_lag_records{",
        )
    };

    // Load throughout: 100 records of 100 series, 10 per second, each in a
    // transaction of its own as the router writes them (so each is followed
    // by a transaction marker).
    let (tasks, stream_name) = (setup.tasks.clone(), name.clone());
    let writer = tokio::spawn(async move {
        let producer = transactional_producer();
        for k in 0..100 {
            produce_task_in_transaction(
                &producer,
                &tasks,
                0,
                &request(&stream_name, k * 100, 100, ts + k as i64),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let want: BTreeSet<(String, i64)> = (0..100)
        .flat_map(|k| (k * 100..k * 100 + 100).map(move |i| (i.to_string(), ts + k as i64)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    vmagent.stop();
    // The lag gauge is refreshed every 5 s; records keep arriving meanwhile.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut peak = 0.0;
    while Instant::now() < deadline {
        peak = lag().await.max(peak);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        peak >= 20.0,
        "lag did not grow while vmagent was down (peak {peak}):\n{}",
        egress.log()
    );
    vmagent.start().await;
    writer.await.expect("writer");
    wait_in_vm(&name, &want, Duration::from_secs(60), &egress).await;
    // Drained means exactly 0: the marker after the last record is no lag.
    let deadline = Instant::now() + Duration::from_secs(15);
    while lag().await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "lag did not drain to 0 (it is {}):\n{}",
            lag().await,
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = http_get(&metrics_url).await.expect("metrics").body;
    assert!(
        metric_value(
            &metrics,
            "streamroute_egress_retries_total{reason=\"connect\"}"
        ) >= 1.0,
        "{metrics}"
    );
    let mut egress = egress;
    assert!(egress.terminate().success(), "{}", egress.log());

    // The stored position is the partition's end, past the last marker:
    // 100 records and 100 markers.
    let state = setup.state.to_str().expect("utf-8");
    let output = streamroute(&["inspect", "offsets", "--state", state], &[]);
    assert!(output.status.success(), "{}", crate::common::show(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("{}\t0\t200", setup.tasks)), "{text}");
    eprintln!(
        "vmagent outage: lag peaked at {peak} records; all {} samples arrived",
        want.len()
    );
}

/// Prometheus' label hash modulo the task count, written out independently.
fn independent_task(labels: &[(String, String)], task_count: u64) -> u64 {
    let mut sorted: Vec<_> = labels
        .iter()
        .filter(|(n, _)| n != "stream_task_id")
        .collect();
    sorted.sort();
    let mut bytes = Vec::new();
    for (n, v) in sorted {
        bytes.extend_from_slice(n.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&bytes, 0) % task_count
}

#[tokio::test(flavor = "multi_thread")]
async fn run_carries_samples_from_the_gateway_through_router_and_egress_into_victoria_metrics() {
    let (ingress, tasks, dead_letter, group) = (
        unique("ingress"),
        unique("tasks"),
        unique("dlq"),
        unique("router"),
    );
    create_topic(&ingress, 2).await;
    create_topic(&tasks, 3).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "run.toml",
        &format!(
            "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [run]\nroles = [\"gateway\", \"router\", \"egress\"]\n\
             [router]\ngroup_id = \"{group}\"\ncommit_interval = \"200ms\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 16\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"{}\"\nstate_dir = \"{}\"\nflush_interval = \"200ms\"\n",
            vmagent(),
            dir.path().join("state").display()
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
    let name = format!("sr_it_run_{}", uuid::Uuid::new_v4().simple());
    let ts = recent_ms();
    let mut want = BTreeSet::new();
    for k in 0..5 {
        let mut request = request(&name, k * 200, 200, ts + k as i64);
        for s in &mut request.timeseries {
            s.labels.retain(|l| l.name != "stream_task_id");
        }
        want.extend((k * 200..k * 200 + 200).map(|i| (i.to_string(), ts + k as i64)));
        let body = crate::gateway::snappy(&request);
        let url = format!("http://{}/api/v1/write", run.addr);
        let response = crate::common::http_post(&url, &[("content-encoding", "snappy")], body)
            .await
            .expect("post");
        assert_eq!(response.status, 204, "{}", response.body);
    }
    wait_in_vm(&name, &want, Duration::from_secs(60), &run).await;

    // Every series carries the task id of its labels.
    let url = format!(
        "{}/api/v1/export?match%5B%5D=%7B__name__%3D%22{name}%22%7D",
        victoria()
    );
    let body = http_get(&url).await.expect("export").body;
    let mut series = 0;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let labels: Vec<(String, String)> = v["metric"]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let task = labels
            .iter()
            .find(|(n, _)| n == "stream_task_id")
            .map(|(_, v)| v.clone())
            .expect("stream_task_id");
        assert_eq!(
            task,
            independent_task(&labels, 16).to_string(),
            "{labels:?}"
        );
        series += 1;
    }
    assert_eq!(series, 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_position_removed_by_retention_is_reported_counted_and_skipped_to_the_log_start() {
    let (addr, received) = receiver(|_, _| (204, vec![], String::new())).await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_samples_per_send = 10\n",
    )
    .await;
    let producer = producer();
    let ts = recent_ms();
    for k in 0..3 {
        produce_task(&producer, &setup.tasks, 0, &request("m", k * 10, 10, ts)).await;
    }
    let mut egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&received).len() < 30 {
        assert!(
            Instant::now() < deadline,
            "first records did not arrive:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(egress.terminate().success());
    // While egress is away: 5 more records, then "retention" removes all below offset 6.
    for k in 3..8 {
        produce_task(&producer, &setup.tasks, 0, &request("m", k * 10, 10, ts)).await;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&setup.tasks, 0, rdkafka::Offset::Offset(6))
        .expect("tpl");
    let admin = crate::common::admin();
    admin
        .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
        .await
        .expect("delete records");

    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&received).len() < 50 {
        assert!(
            Instant::now() < deadline,
            "records after the log start did not arrive:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want: Vec<String> = (0..30).chain(60..80).map(|i| i.to_string()).collect();
    assert_eq!(
        ids(&received),
        want,
        "offsets 3..6 were removed; everything else arrived once"
    );
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_skipped_records_total{"),
        3.0,
        "{metrics}"
    );
    assert!(
        egress.log().contains("removed by retention"),
        "{}",
        egress.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: cargo test --release --test integration egress::throughput -- --ignored --nocapture"]
async fn throughput_into_vmagent() {
    let (records, per_record) = (500usize, 2_000usize);
    // SR_BENCH_STATE_FLUSH_EVERY=0s measures the cost of an fsync per request.
    let flush = std::env::var("SR_BENCH_STATE_FLUSH_EVERY").ok();
    let flush_line = flush
        .as_ref()
        .map(|f| format!("state_flush_every = \"{f}\"\n"))
        .unwrap_or_default();
    let setup = setup(
        2,
        &vmagent(),
        &format!("max_samples_per_send = 5000\n{flush_line}"),
    )
    .await;
    let name = format!("sr_bench_{}", uuid::Uuid::new_v4().simple());
    let producer = producer();
    let ts = recent_ms();
    for k in 0..records {
        produce_task(
            &producer,
            &setup.tasks,
            (k % 2) as i32,
            &wide_request(&name, k * per_record, per_record, ts),
        )
        .await;
    }
    let total = (records * per_record) as f64;
    let started = Instant::now();
    let egress = start_egress(&setup).await;
    let url = format!("http://{}/metrics", egress.addr);
    loop {
        let sent = metric_value(
            &http_get(&url).await.expect("metrics").body,
            "streamroute_egress_samples_total{",
        );
        if sent >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {sent} of {total} sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    eprint!(
        "state_flush_every {}: ",
        flush.as_deref().unwrap_or("default")
    );
    eprintln!(
        "egress → vmagent: {total} samples (12 labels per series) in {secs:.2} s (start-up included) = {:.0} samples/s",
        total / secs
    );
}

/// Writes a task-topic record carrying a tenant, as the router does for ingress records with one.
async fn produce_tenant(
    producer: &FutureProducer,
    topic: &str,
    request: &WriteRequest,
    tenant: &str,
) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "content-encoding",
            value: Some("identity"),
        })
        .insert(Header {
            key: "tenant",
            value: Some(tenant),
        });
    let value = request.encode_to_vec();
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(&value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_extra_headers_and_the_tenant_are_sent_and_tenants_are_never_mixed() {
    let (addr, received) = receiver(|_, _| (204, vec![], String::new())).await;
    let extra = "forward_tenant_header = \"X-Scope-OrgID\"\nbearer_token = \"t0ken\"\n[egress.headers]\n\"X-Env\" = \"test\"\n";
    let setup = setup(1, &format!("http://{addr}/api/v1/write"), extra).await;
    let producer = producer();
    let ts = recent_ms();
    produce_tenant(&producer, &setup.tasks, &request("m", 0, 5, ts), "team-a").await;
    produce_tenant(&producer, &setup.tasks, &request("m", 5, 5, ts), "team-a").await;
    produce_tenant(&producer, &setup.tasks, &request("m", 10, 5, ts), "team-b").await;
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&received).len() < 15 {
        assert!(
            Instant::now() < deadline,
            "not everything arrived:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received.lock().expect("lock").clone();
    let per_request: Vec<(String, usize)> = got
        .iter()
        .map(|(_, h, r)| {
            (
                h["x-scope-orgid"].to_str().expect("ascii").to_string(),
                r.timeseries.len(),
            )
        })
        .collect();
    assert_eq!(
        per_request,
        [("team-a".to_string(), 10), ("team-b".to_string(), 5)],
        "one request per tenant, in order"
    );
    for (_, headers, _) in &got {
        assert_eq!(headers["authorization"], "Bearer t0ken");
        assert_eq!(headers["x-env"], "test");
        assert_eq!(headers["content-type"], "application/x-protobuf");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_receiver_with_a_private_ca_gets_the_samples() {
    // The receiver: streamroute's own gateway serving HTTPS with a
    // self-signed certificate; it answers 204 and keeps each request in its
    // ingress topic, where the test reads what arrived.
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let cert = write_file(dir.path(), "server.crt", &generated.cert.pem());
    let key = write_file(
        dir.path(),
        "server.key",
        &generated.signing_key.serialize_pem(),
    );
    let ingress = unique("ingress");
    create_topic(&ingress, 1).await;
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let gateway = crate::gateway::start_gateway(
        &ingress,
        &[
            ("STREAMROUTE_GATEWAY__TLS__CERT_FILE", path(&cert)),
            ("STREAMROUTE_GATEWAY__TLS__KEY_FILE", path(&key)),
        ],
    )
    .await;

    let target = format!("https://{}/api/v1/write", gateway.addr);
    let ts = recent_ms();
    let sent = request("sr_it_https", 0, 20, ts);

    // A CA that did not sign the gateway's certificate: the handshake fails,
    // the request is retried and nothing arrives.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("another certificate");
    let other_ca = write_file(dir.path(), "other-ca.crt", &other.cert.pem());
    let untrusted = setup(
        1,
        &target,
        &format!("tls_ca_file = \"{}\"\n", other_ca.display()),
    )
    .await;
    produce_task(&producer(), &untrusted.tasks, 0, &sent).await;
    let mut refused = start_egress(&untrusted).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        read_topic(&ingress).is_empty(),
        "an unverified receiver got the samples:\n{}",
        refused.log()
    );
    assert!(refused.log().contains("certificate"), "{}", refused.log());
    assert!(refused.terminate().success(), "{}", refused.log());

    let setup = setup(
        1,
        &target,
        &format!("tls_ca_file = \"{}\"\n", cert.display()),
    )
    .await;
    produce_task(&producer(), &setup.tasks, 0, &sent).await;
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = read_topic(&ingress);
        if !records.is_empty() {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the https receiver:\n{}\n--- gateway\n{}",
            egress.log(),
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(records.len(), 1, "one request");
    assert_eq!(
        crate::gateway::decode_record(&records[0]).1,
        sent,
        "the samples as written"
    );
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_samples_total{"),
        20.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_ca_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("absent-ca.pem");
    let output = streamroute(
        &["egress"],
        &[
            (
                "STREAMROUTE_EGRESS__TARGET",
                "https://127.0.0.1:1/api/v1/write",
            ),
            (
                "STREAMROUTE_EGRESS__TLS_CA_FILE",
                absent.to_str().expect("utf-8"),
            ),
            (
                "STREAMROUTE_EGRESS__STATE_DIR",
                dir.path().join("state").to_str().expect("utf-8"),
            ),
        ],
    );
    let out = crate::common::show(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "egress.tls_ca_file: cannot read {}",
            absent.display()
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_is_not_ready_while_kafka_is_down_and_ready_again_after() {
    use crate::common::{create_topic_on, PrivateKafka};
    let kafka = PrivateKafka::start();
    let (tasks, dead_letter) = (unique("tasks"), unique("dlq"));
    create_topic_on(&kafka.bootstrap, &tasks, 2).await;
    create_topic_on(&kafka.bootstrap, &dead_letter, 1).await;
    let (addr, _) = receiver(|_, _| (204, vec![], String::new())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "egress.toml",
        &format!(
            "[kafka]\nrequest_timeout = \"2s\"\n[topics]\ndead_letter = \"{dead_letter}\"\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"http://{addr}/api/v1/write\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    );
    let egress = Process::start(
        &["egress"],
        "STREAMROUTE_EGRESS__LISTEN",
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
    let ready_url = format!("http://{}/-/ready", egress.addr);
    let wait_for = |status: u16, within: Duration| {
        let (url, log) = (ready_url.clone(), &egress);
        async move {
            let deadline = Instant::now() + within;
            loop {
                if http_get(&url).await.expect("ready endpoint").status == status {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "/-/ready never answered {status} within {within:?}:\n{}",
                    log.log()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };

    kafka.script("stop");
    // The lag tick (5 s) plus one fetch timeout (2 s).
    wait_for(503, Duration::from_secs(20)).await;
    assert!(
        egress.log().contains("egress not ready"),
        "{}",
        egress.log()
    );
    kafka.script("start");
    wait_for(200, Duration::from_secs(90)).await;
    assert!(egress.log().contains("egress ready"), "{}", egress.log());
}

/// A target list is one URL per partition: a list of 2 for a 3-partition
/// topic is refused when egress starts (not once partition 2 is assigned),
/// naming the key and both counts, and egress stays not ready.
#[tokio::test]
async fn a_target_list_that_does_not_match_the_partitions_is_refused_at_start() {
    let setup = setup(3, "unused", "").await;
    let text = std::fs::read_to_string(&setup.config)
        .expect("config")
        .replace(
            "target = \"unused\"",
            "target = [\"http://127.0.0.1:1/a\", \"http://127.0.0.1:1/b\"]",
        );
    std::fs::write(&setup.config, text).expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("egress.log");
    let listen = format!("127.0.0.1:{}", crate::common::free_port());
    let mut child = std::process::Command::new(crate::common::binary())
        .args(["-c", setup.config.to_str().expect("utf-8"), "egress"])
        .env(
            "STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS",
            crate::common::bootstrap(),
        )
        .env("STREAMROUTE_EGRESS__LISTEN", &listen)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let want = format!(
        "egress.target lists 2 URL(s) but {} has 3 partition(s)",
        setup.tasks
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&want) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ready = http_get(&format!("http://{listen}/-/ready")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains(&want), "{text}");
    assert!(matches!(ready, Ok(r) if r.status == 503), "{text}");
}

/// A record another producer wrote with a header key that is not UTF-8
/// (rdkafka 0.38 panics reading such a key) is dead-lettered, and the
/// partition moves on to the next record instead of crashing and reading
/// the same record again after every restart.
#[tokio::test]
async fn a_record_with_a_non_utf8_header_key_is_dead_lettered_and_the_partition_moves_on() {
    use std::os::unix::ffi::OsStrExt;
    let (addr, received) = receiver(|_, _| (204, vec![], String::new())).await;
    let setup = setup(1, &format!("http://{addr}/api/v1/write"), "").await;
    let ts = recent_ms();
    // kcat writes the header key's bytes as given (0xff is not UTF-8) and
    // sends a file given as an argument as one record.
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("record.bin");
    std::fs::write(&body, request("m", 0, 5, ts).encode_to_vec()).expect("write");
    let status = std::process::Command::new("kcat")
        .args([
            "-b",
            &crate::common::bootstrap(),
            "-P",
            "-t",
            &setup.tasks,
            "-p",
            "0",
            "-H",
        ])
        .arg(std::ffi::OsStr::from_bytes(b"\xffkey=v"))
        .arg(&body)
        .status()
        .expect("kcat (Debian package kafkacat, installed by scripts/setup.sh)");
    assert!(status.success());
    let producer = producer();
    produce_task(&producer, &setup.tasks, 0, &request("m", 5, 5, ts)).await;
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&received).len() < 5 {
        assert!(
            Instant::now() < deadline,
            "the record after the foreign one did not arrive:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want: Vec<String> = (5..10).map(|i| i.to_string()).collect();
    assert_eq!(ids(&received), want, "only the well-formed record is sent");
    let dead = read_topic(&setup.dead_letter);
    assert_eq!(
        dead.len(),
        1,
        "the foreign record is dead-lettered once:\n{}",
        egress.log()
    );
    // rdkafka's panic is caught (the panic hook still prints it); the
    // partition was not restarted, so the foreign record was read once.
}

/// The same foreign record (a header key that is not UTF-8, as another
/// producer may write one) against VictoriaMetrics: it is dead-lettered
/// with the reason and where it was read, and the record after it is
/// delivered; the partition task is never restarted.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_utf8_header_key_is_dead_lettered_and_the_next_record_reaches_victoria_metrics() {
    use std::os::unix::ffi::OsStrExt;
    use streamroute::kafka::record::{DeadLetter, NOT_UTF8_KEY};
    let setup = setup(1, &format!("{}/api/v1/write", victoria()), "").await;
    let name = format!("sr_it_utf8_{}", uuid::Uuid::new_v4().simple());
    let ts = recent_ms();
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("record.bin");
    let foreign = request(&name, 0, 5, ts).encode_to_vec();
    std::fs::write(&body, &foreign).expect("write");
    let status = std::process::Command::new("kcat")
        .args([
            "-b",
            &crate::common::bootstrap(),
            "-P",
            "-t",
            &setup.tasks,
            "-p",
            "0",
            "-H",
        ])
        .arg(std::ffi::OsStr::from_bytes(b"\xfeorigin=other"))
        .arg(&body)
        .status()
        .expect("kcat (Debian package kafkacat, installed by scripts/setup.sh)");
    assert!(status.success());
    produce_task(&producer(), &setup.tasks, 0, &request(&name, 5, 5, ts)).await;
    let mut egress = start_egress(&setup).await;
    let want: BTreeSet<(String, i64)> = (5..10).map(|i| (i.to_string(), ts)).collect();
    let got = wait_in_vm(&name, &want, Duration::from_secs(60), &egress).await;
    assert_eq!(
        got.into_keys().collect::<BTreeSet<_>>(),
        want,
        "only the record after the foreign one"
    );
    let dead = read_topic(&setup.dead_letter);
    assert_eq!(dead.len(), 1, "dead-lettered once:\n{}", egress.log());
    let letter = DeadLetter::from_headers(dead[0].headers()).expect("dead-letter headers");
    assert_eq!(letter.reason, "malformed_record");
    assert_eq!(letter.detail, NOT_UTF8_KEY);
    assert_eq!(
        (
            letter.source.topic.as_str(),
            letter.source.partition,
            letter.source.offset
        ),
        (setup.tasks.as_str(), 0, 0)
    );
    assert_eq!(dead[0].payload(), Some(&foreign[..]), "the value as read");
    let metrics = http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_samples_total{"),
        5.0,
        "{metrics}"
    );
    assert!(egress.terminate().success(), "{}", egress.log());
    let log = egress.log();
    assert_eq!(
        log.matches("egress partition assigned").count(),
        1,
        "the partition was not restarted:\n{log}"
    );
    // The position is past both records.
    let state = setup.state.to_str().expect("utf-8");
    let output = streamroute(&["inspect", "offsets", "--state", state], &[]);
    assert!(output.status.success(), "{}", crate::common::show(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("{}\t0\t2", setup.tasks)), "{text}");
}
