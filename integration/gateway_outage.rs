//! The gateway while Kafka is down: 503 with Retry-After, never 2xx, and
//! back to 204 once Kafka returns, without a restart of the gateway.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{create_topic_on, http_post, read_topic_on, unique, PrivateKafka};
use crate::gateway::{decode_record, request, snappy, start_gateway};

#[tokio::test(flavor = "multi_thread")]
async fn kafka_outage_gives_503_then_204_and_every_acknowledged_payload_is_stored() {
    let kafka = PrivateKafka::start();
    let topic = unique("outage");
    create_topic_on(&kafka.bootstrap, &topic, 1).await;
    let gateway = start_gateway(
        &topic,
        &[(
            "STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS",
            kafka.bootstrap.clone(),
        )],
    )
    .await;
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let headers = [("content-encoding", "snappy")];
    let mut acknowledged = BTreeSet::new();
    let mut next = 0usize;
    let send = |tag: usize| {
        let url = url.clone();
        async move {
            (
                tag,
                http_post(&url, &headers, snappy(&request(5, &format!("p{tag}")))).await,
            )
        }
    };

    // Kafka up: accepted.
    for _ in 0..5 {
        let (tag, r) = send(next).await;
        next += 1;
        let r = r.expect("post");
        assert_eq!(r.status, 204, "{}", r.body);
        acknowledged.insert(tag);
    }

    kafka.script("stop");
    // Kafka down: every answer is 503 with Retry-After, never 2xx.
    let mut unavailable = 0;
    for _ in 0..3 {
        let (tag, r) = send(next).await;
        next += 1;
        let r = r.expect("post");
        assert_ne!(
            r.status / 100,
            2,
            "payload {tag} acknowledged while kafka was down"
        );
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(
            r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
        unavailable += 1;
    }
    assert_eq!(unavailable, 3);

    kafka.script("start");
    // Kafka back: the same gateway process accepts again within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut recovered = 0;
    while recovered < 5 {
        assert!(
            Instant::now() < deadline,
            "gateway did not recover within 90 s:\n{}",
            gateway.log()
        );
        let (tag, r) = send(next).await;
        next += 1;
        match r.expect("post").status {
            204 => {
                acknowledged.insert(tag);
                recovered += 1;
            }
            503 => tokio::time::sleep(Duration::from_millis(500)).await,
            other => panic!("unexpected status {other}:\n{}", gateway.log()),
        }
    }

    // Every acknowledged payload is in the topic (payloads answered 503 may
    // be there too: the sender retries those and VictoriaMetrics deduplicates).
    let stored: BTreeSet<usize> = read_topic_on(&kafka.bootstrap, &topic)
        .iter()
        .map(|m| {
            let (_, req) = decode_record(m);
            let job = &req.timeseries[0].labels[1].value;
            job.trim_start_matches('p').parse().expect("tag")
        })
        .collect();
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
}
