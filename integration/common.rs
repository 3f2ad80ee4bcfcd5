//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// The broker the tests use.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("it.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// The streamroute binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_streamroute"))
}

/// Runs the binary with `args`, a clean environment as far as STREAMROUTE_*
/// goes, and the test broker.
pub fn streamroute(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("STREAMROUTE_") {
            command.env_remove(key);
        }
    }
    command.env("STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS", bootstrap()).env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    command.args(args).output().expect("the streamroute binary runs")
}

/// stdout and stderr of an output, for assertion messages.
pub fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An admin client on the test broker.
pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client")
}

/// Creates a topic and waits until metadata shows it.
pub async fn create_topic(name: &str, partitions: i32) {
    let admin = admin();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create_topics");
    for r in results {
        r.expect("topic created");
    }
    wait_for_partitions(name, partitions as usize).await;
}

/// Waits until metadata shows `partitions` partitions of `topic`.
pub async fn wait_for_partitions(topic: &str, partitions: usize) {
    let admin = admin();
    for _ in 0..100 {
        if let Ok(md) = admin.inner().fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if md.topics().first().is_some_and(|t| t.error().is_none() && t.partitions().len() == partitions) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {topic} never showed {partitions} partitions");
}

/// Writes a file and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
