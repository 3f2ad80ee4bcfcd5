//! Gateway guarantees the README states, shown against the broker: the
//! 413 when Kafka refuses a record for its size. (`max_in_flight` and
//! readiness during an outage are in gateway_outage.rs.)

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};

use crate::common::{admin, http_get, http_post, read_topic, unique};
use crate::gateway::{request, snappy, start_gateway};

/// Creates a one-partition topic with `config` (topic-level settings).
async fn create_topic_with(name: &str, config: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (key, value) in config {
        topic = topic.set(key, value);
    }
    for result in admin()
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create_topics")
    {
        result.expect("topic created");
    }
    crate::common::wait_for_partitions(name, 1).await;
}

const SNAPPY: [(&str, &str); 1] = [("content-encoding", "snappy")];

/// The `streamroute_gateway_rejected_requests_total` line for `reason`.
async fn rejected(addr: &std::net::SocketAddr, reason: &str) -> Option<String> {
    let metrics = http_get(&format!("http://{addr}/metrics"))
        .await
        .expect("metrics");
    let needle = format!("{{reason=\"{reason}\"}}");
    metrics
        .body
        .lines()
        .find(|l| l.contains("rejected") && l.contains(&needle))
        .map(str::to_owned)
}

/// Kafka refuses a record larger than the topic's max.message.bytes: that
/// request can never succeed, so it is 413, not 503.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_too_large_for_the_topic_is_413() {
    let topic = unique("small");
    create_topic_with(&topic, &[("max.message.bytes", "2000")]).await;
    let gateway = start_gateway(&topic, &[]).await;
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let small = http_post(&url, &SNAPPY, snappy(&request(1, "s")))
        .await
        .expect("post");
    assert_eq!(small.status, 204, "{}", small.body);
    // Random label values, so that no compression brings it under 2000 bytes.
    let mut big = request(300, "big");
    for series in &mut big.timeseries {
        series.labels[2].value = uuid::Uuid::new_v4().to_string();
    }
    let body = snappy(&big);
    assert!(body.len() > 8_000, "{} bytes", body.len());
    let refused = http_post(&url, &SNAPPY, body).await.expect("post");
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(
        rejected(&gateway.addr, "kafka_refused").await.is_some(),
        "{}",
        gateway.log()
    );
    assert_eq!(read_topic(&topic).len(), 1, "only the small record stored");
}
