//! `egress.max_in_flight` against the live broker and an in-test receiver
//! that takes 50 ms per request: requests overlap up to the limit and no
//! further, every sample arrives once, each series' samples arrive in
//! timestamp order even while requests are retried, the stored position
//! reaches the end, and throughput grows with the limit.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::http_get;
use crate::egress::{
    metric_value, produce_task, recent_ms, request, setup, slow_receiver, start_egress, Received,
};
use crate::router::producer;

/// How long the receiver takes per request.
const LATENCY: Duration = Duration::from_millis(50);

/// Every (series id, timestamp) the receiver accepted, in arrival order per series.
fn arrivals(received: &Received) -> BTreeMap<String, Vec<i64>> {
    let mut by_series: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, _, request) in received.lock().expect("lock").iter() {
        for s in &request.timeseries {
            let id = s.labels[1].value.clone();
            by_series
                .entry(id)
                .or_default()
                .extend(s.samples.iter().map(|x| x.timestamp));
        }
    }
    by_series
}

fn samples(received: &Received) -> usize {
    arrivals(received).values().map(Vec::len).sum()
}

/// Writes `scrapes` records of `series` series to partition 0, scrape k
/// at `ts + k` seconds, and returns the timestamps in order.
async fn produce_scrapes(topic: &str, series: usize, scrapes: usize) -> Vec<i64> {
    let producer = producer();
    let ts = recent_ms();
    let mut stamps = Vec::new();
    for k in 0..scrapes {
        let at = ts + k as i64 * 1000;
        produce_task(&producer, topic, 0, &request("inflight", 0, series, at)).await;
        stamps.push(at);
    }
    stamps
}

#[tokio::test(flavor = "multi_thread")]
async fn four_in_flight_overlap_keep_every_series_in_order_through_retries_and_store_the_end() {
    // Every seventh request is refused with 503 once, so lanes retry
    // while the others go on.
    let (addr, received, most) = slow_receiver(LATENCY, |n, _| {
        if n % 7 == 3 {
            (503, vec![], "busy".into())
        } else {
            (204, vec![], String::new())
        }
    })
    .await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_in_flight = 4\nmax_samples_per_send = 200\n",
    )
    .await;
    let (series, scrapes) = (200, 30);
    let stamps = produce_scrapes(&setup.tasks, series, scrapes).await;
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while samples(&received) < series * scrapes {
        assert!(
            Instant::now() < deadline,
            "only {} of {} samples arrived:\n{}",
            samples(&received),
            series * scrapes,
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a wrongly repeated request time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = arrivals(&received);
    assert_eq!(got.len(), series);
    for (id, ts) in &got {
        assert_eq!(ts, &stamps, "series {id}: every scrape once, in order");
    }
    let overlapped = most.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&overlapped),
        "at most 4 requests at once, and more than 1: {overlapped}"
    );
    // The position reaches the end: lag 0, with retries counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(&format!("http://{}/metrics", egress.addr))
            .await
            .expect("metrics")
            .body;
        let lag = metric_value(&metrics, "streamroute_egress_lag_records{partition=\"0\"}");
        let retries = metric_value(&metrics, "streamroute_egress_retries_total{reason=\"5xx\"}");
        if lag == 0.0 {
            assert!(retries >= 1.0, "{metrics}");
            break;
        }
        assert!(Instant::now() < deadline, "lag {lag}:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Time to drain the same records with `in_flight` requests in flight.
async fn drain_time(in_flight: usize, series: usize, scrapes: usize) -> Duration {
    let (addr, received, _) = slow_receiver(LATENCY, |_, _| (204, vec![], String::new())).await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        &format!("max_in_flight = {in_flight}\nmax_samples_per_send = 1000\n"),
    )
    .await;
    produce_scrapes(&setup.tasks, series, scrapes).await;
    let egress = start_egress(&setup).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    while samples(&received) < series * scrapes {
        assert!(
            Instant::now() < deadline,
            "{in_flight} in flight: stuck\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn more_in_flight_drain_a_50ms_receiver_faster() {
    let (series, scrapes) = (1000, 100);
    let total = (series * scrapes) as f64;
    let mut rates = Vec::new();
    for in_flight in [1, 4, 16] {
        let took = drain_time(in_flight, series, scrapes).await;
        let rate = total / took.as_secs_f64();
        println!(
            "max_in_flight = {in_flight:2}: {total} samples in {:.2} s, {rate:.0} samples/s (requests of 1,000 samples, receiver 50 ms)",
            took.as_secs_f64()
        );
        rates.push(rate);
    }
    // One at a time is bound by the latency: 1,000 samples per 50 ms at most.
    assert!(rates[0] < 20_000.0 * 1.1, "{rates:?}");
    assert!(
        rates[1] > 2.0 * rates[0],
        "4 in flight at least twice 1: {rates:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_four_in_flight_loses_nothing() {
    let (addr, received, _) = slow_receiver(LATENCY, |_, _| (204, vec![], String::new())).await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_in_flight = 4\nmax_samples_per_send = 100\n",
    )
    .await;
    let (series, scrapes) = (100, 60);
    // Written while egress is killed, a scrape every 100 ms.
    let tasks = setup.tasks.clone();
    let writer = tokio::spawn(async move {
        let producer = producer();
        let ts = recent_ms();
        let mut stamps = Vec::new();
        for k in 0..scrapes {
            let at = ts + k as i64 * 1000;
            produce_task(&producer, &tasks, 0, &request("inflight", 0, series, at)).await;
            stamps.push(at);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stamps
    });
    let kills = 4;
    for _ in 0..kills {
        let mut egress = start_egress(&setup).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        egress.kill9();
    }
    let stamps = writer.await.expect("writer");
    let egress = start_egress(&setup).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = arrivals(&received);
        let missing: usize = (0..series)
            .map(|i| {
                let ts = got.get(&i.to_string()).cloned().unwrap_or_default();
                stamps.iter().filter(|t| !ts.contains(t)).count()
            })
            .sum();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} samples never arrived after {kills} kills:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let duplicates = samples(&received) - series * scrapes;
    // A kill resends at most what waited for the lanes: 2 × 4 requests.
    assert!(
        duplicates <= kills * 8 * 100,
        "{duplicates} duplicates after {kills} kills"
    );
    println!(
        "kill -9 x{kills} with 4 in flight: {duplicates} duplicate samples of {}",
        series * scrapes
    );
}
