//! The gateway while Kafka is down: 503 with Retry-After, never 2xx, not
//! ready, at most `max_in_flight` requests waiting for Kafka (the next is
//! 503 at once), and back to 204 and ready once Kafka returns, without a
//! restart of the gateway.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{create_topic_on, http_get, http_post, read_topic_on, unique, PrivateKafka};
use crate::gateway::{decode_record, request, snappy, start_gateway};

#[tokio::test(flavor = "multi_thread")]
async fn kafka_outage_gives_503_then_204_and_every_acknowledged_payload_is_stored() {
    let kafka = PrivateKafka::start();
    let topic = unique("outage");
    create_topic_on(&kafka.bootstrap, &topic, 1).await;
    let gateway = start_gateway(
        &topic,
        &[
            (
                "STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS",
                kafka.bootstrap.clone(),
            ),
            ("STREAMROUTE_GATEWAY__MAX_IN_FLIGHT", "1".to_string()),
        ],
    )
    .await;
    let url = format!("http://{}/api/v1/write", gateway.addr);
    let ready = format!("http://{}/-/ready", gateway.addr);
    wait_ready_status(&ready, 200, &gateway).await;
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

    // One request waits for Kafka (up to produce_timeout, 3 s) in the only
    // in-flight slot: the next one is turned away at once.
    let waiting = tokio::spawn(send(next));
    next += 1;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (_, busy) = send(next).await;
    next += 1;
    let busy = busy.expect("post");
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(
        busy.body.contains("too many requests in flight"),
        "{}",
        busy.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (_, waited) = waiting.await.expect("task");
    let waited = waited.expect("post");
    assert_eq!(waited.status, 503, "{}", waited.body);
    assert!(
        !waited.body.contains("too many requests in flight"),
        "the first request did not hold the slot: {}",
        waited.body
    );

    // Not ready while the ingress topic cannot be reached.
    wait_ready_status(&ready, 503, &gateway).await;

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

    wait_ready_status(&ready, 200, &gateway).await;

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

/// Polls `url` (the readiness endpoint) until it answers `status`; the
/// gateway probes every 10 s while ready, every second while not.
async fn wait_ready_status(url: &str, status: u16, gateway: &crate::common::Process) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = http_get(url).await.map(|r| r.status);
        if got == Ok(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {status} (last {got:?}):\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
