//! Kafka with TLS and SASL: a private broker whose only client listener is
//! SASL_SSL (a test CA, SCRAM-SHA-512 and PLAIN), and `streamroute run`
//! with gateway, router and egress configured through `[kafka.properties]`.
//! Samples written to the gateway reach VictoriaMetrics over both
//! mechanisms; a wrong password leaves every role not ready with the
//! broker's reason in the log, and the gateway refuses writes with 503.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use streamroute::remote_write::{compress, Encoding};

use crate::common::{
    binary, free_port, http_get, http_post, unique, write_file, PrivateKafka, Process,
};
use crate::egress::{recent_ms, wait_in_vm};

const USER: &str = "streamroute";
const PASSWORD: &str = "streamroute-secret";

/// The `[kafka.properties]` lines for `mechanism` and `password`.
fn properties(kafka: &PrivateKafka, mechanism: &str, password: &str) -> String {
    format!(
        "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"{mechanism}\"\n\
         \"sasl.username\" = \"{USER}\"\n\"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n",
        kafka.ca_file().display()
    )
}

async fn create_topics(kafka: &PrivateKafka, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", USER)
        .set("sasl.password", PASSWORD)
        .set("ssl.ca.location", kafka.ca_file().to_str().expect("utf-8"))
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

/// A `run` config for all three roles on `kafka`.
fn run_config(
    dir: &std::path::Path,
    kafka: &PrivateKafka,
    topics: &(String, String, String),
    security: &str,
) -> std::path::PathBuf {
    let (ingress, tasks, dead_letter) = topics;
    let vm = std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into());
    write_file(
        dir,
        &format!("{}.toml", uuid::Uuid::new_v4().simple()),
        &format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n{security}\
             [topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [run]\nroles = [\"gateway\", \"router\", \"egress\"]\nshutdown_grace = \"5s\"\n\
             [gateway]\nproduce_timeout = \"3s\"\n\
             [router]\ngroup_id = \"{group}\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 4\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"{vm}/api/v1/write\"\nstate_dir = \"{state}\"\nflush_interval = \"200ms\"\n",
            bootstrap = kafka.bootstrap,
            group = unique("group"),
            state = dir.join(uuid::Uuid::new_v4().simple().to_string()).display(),
        ),
    )
}

fn body(name: &str, ts: i64) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: (0..10)
            .map(|i| TimeSeries {
                labels: vec![
                    Label::new("__name__", name),
                    Label::new("id", i.to_string()),
                ],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    compress(&request.encode_to_vec(), Encoding::Snappy).expect("snappy")
}

const SNAPPY: [(&str, &str); 2] = [
    ("content-encoding", "snappy"),
    ("content-type", "application/x-protobuf"),
];

#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_round_trip_with_scram_and_plain_and_a_wrong_password_is_refused() {
    let kafka = PrivateKafka::start_sasl_ssl();
    let topics = (unique("ingress"), unique("tasks"), unique("dlq"));
    create_topics(&kafka, &[&topics.0, &topics.1, &topics.2]).await;
    let dir = tempfile::tempdir().expect("tempdir");

    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let config = run_config(
            dir.path(),
            &kafka,
            &topics,
            &properties(&kafka, mechanism, PASSWORD),
        );
        let mut run = Process::start(
            &["run"],
            "STREAMROUTE_RUN__LISTEN",
            &[
                (
                    "STREAMROUTE_CONFIG_FILE",
                    config.to_str().expect("utf-8").to_string(),
                ),
                // The config file names the broker; no plaintext default.
                (
                    "STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS",
                    kafka.bootstrap.clone(),
                ),
            ],
        )
        .await;
        let name = format!("sr_it_sasl_{}", uuid::Uuid::new_v4().simple());
        let url = format!("http://{}/api/v1/write", run.addr);
        let mut want = BTreeSet::new();
        let ts = recent_ms();
        for k in 0..5 {
            let r = http_post(&url, &SNAPPY, body(&name, ts + k))
                .await
                .expect("post");
            assert_eq!(r.status, 204, "{mechanism}: {}\n{}", r.body, run.log());
            want.extend((0..10).map(|i| (i.to_string(), ts + k)));
        }
        let got = wait_in_vm(&name, &want, Duration::from_secs(60), &run).await;
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            want,
            "{mechanism}"
        );
        eprintln!(
            "{mechanism}: {} samples through gateway, router and egress over SASL_SSL",
            want.len()
        );
        assert!(run.terminate().success(), "{}", run.log());
    }

    // A wrong password: the process starts, says not ready with the
    // broker's reason in its log, and never acknowledges a write.
    let config = run_config(
        dir.path(),
        &kafka,
        &topics,
        &properties(&kafka, "SCRAM-SHA-512", "wrong-password"),
    );
    let port = free_port();
    let log = dir.path().join("wrong.log");
    let mut child = std::process::Command::new(binary())
        .env("STREAMROUTE_CONFIG_FILE", &config)
        .env("STREAMROUTE_RUN__LISTEN", format!("127.0.0.1:{port}"))
        .env("STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS", &kafka.bootstrap)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(
            std::fs::File::options()
                .append(true)
                .open(&log)
                .expect("log"),
        )
        .arg("run")
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answers = Vec::new();
    while Instant::now() < deadline {
        if let Ok(r) = http_get(&format!("http://127.0.0.1:{port}/-/ready")).await {
            answers.push(r.status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let post = http_post(
        &format!("http://127.0.0.1:{port}/api/v1/write"),
        &SNAPPY,
        body("sr_it_sasl_wrong", recent_ms()),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(!answers.is_empty(), "the listener never answered:\n{text}");
    assert!(
        answers.iter().all(|s| *s == 503),
        "ready with a wrong password: {answers:?}\n{text}"
    );
    assert!(
        text.contains("Authentication failed") || text.contains("invalid credentials"),
        "no clear reason in the log:\n{text}"
    );
    let post = post.expect("post");
    assert_eq!(post.status, 503, "a write was not refused: {}", post.body);
}
