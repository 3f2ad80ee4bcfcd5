//! Delay and gap windows in egress against the live broker: records are
//! written to a task topic directly and a capture receiver records what
//! arrives, per series in arrival order. Expected values follow from the
//! windows' rules (watermark = newest timestamp - delay, late = at or
//! before what the series sent, marker one interval after the last sample),
//! never from the code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message as _;
use rand::seq::SliceRandom;
use rand::Rng;
use rdkafka::message::{Headers, Message};
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use streamroute::remote_write::{decompress, Encoding};

use crate::common::{create_topic, read_topic, unique, Process};
use crate::egress::{produce_task, recent_ms, setup, start_egress};
use crate::router::producer;

/// Per series id: (timestamp, value bits) in arrival order.
pub type Arrived = Arc<Mutex<BTreeMap<String, Vec<(i64, u64)>>>>;

/// A receiver answering 204 that records every sample it gets.
pub async fn capture() -> (SocketAddr, Arrived) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let arrived: Arrived = Arc::default();
    let log = arrived.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let body = r.into_body().collect().await.expect("body").to_bytes();
                            let raw =
                                decompress(&body, Encoding::Snappy, 64 << 20).expect("snappy");
                            let req = WriteRequest::decode(raw.as_slice()).expect("protobuf");
                            let mut log = log.lock().expect("lock");
                            for ts in req.timeseries {
                                let id = ts
                                    .labels
                                    .iter()
                                    .find(|l| l.name == "id")
                                    .map(|l| l.value.clone())
                                    .unwrap_or_default();
                                let got = log.entry(id).or_default();
                                got.extend(
                                    ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())),
                                );
                            }
                            let mut response = hyper::Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, arrived)
}

/// One record: series `id` of metric `name` with one sample.
fn one(name: &str, id: &str, ts: i64, value: f64) -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", name), Label::new("id", id)],
            samples: vec![Sample {
                value,
                timestamp: ts,
            }],
            exemplars: vec![],
            histograms: vec![],
        }],
        metadata: vec![],
    }
}

fn windows(lines: &str) -> String {
    format!("max_samples_per_send = 50\n[egress.windows]\n{lines}\n")
}

/// Waits until `done` holds for what arrived (or panics after `within`).
async fn wait_for(
    arrived: &Arrived,
    within: Duration,
    egress: &Process,
    done: impl Fn(&BTreeMap<String, Vec<(i64, u64)>>) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        if done(&arrived.lock().expect("lock")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not arrived: {:?}\n{}",
            arrived.lock().expect("lock"),
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn times(arrived: &Arrived, id: &str) -> Vec<i64> {
    arrived
        .lock()
        .expect("lock")
        .get(id)
        .map(|v| v.iter().map(|s| s.0).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn samples_shuffled_within_the_delay_arrive_in_timestamp_order_per_series() {
    let (addr, arrived) = capture().await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        &windows("delay = \"5s\""),
    )
    .await;
    let egress = start_egress(&setup).await;
    let (name, base) = (unique("sr_win_order"), recent_ms());
    // 3 series × 40 samples 1 s apart, each sample's record moved by up to
    // 4 s (less than the delay): none of them is late.
    let mut records: Vec<(i64, String, i64)> = Vec::new();
    let mut rng = rand::thread_rng();
    for id in ["a", "b", "c"] {
        for k in 0..40 {
            let ts = base + k * 1_000;
            records.push((ts + rng.gen_range(0..4_000), id.to_string(), ts));
        }
    }
    records.shuffle(&mut rng);
    records.sort_by_key(|r| r.0);
    let producer = producer();
    for (_, id, ts) in &records {
        produce_task(&producer, &setup.tasks, 0, &one(&name, id, *ts, *ts as f64)).await;
    }
    let want: Vec<i64> = (0..40).map(|k| base + k * 1_000).collect();
    assert!(
        records.windows(2).any(|w| w[0].2 > w[1].2),
        "the records are out of timestamp order"
    );
    wait_for(&arrived, Duration::from_secs(30), &egress, |got| {
        ["a", "b", "c"]
            .iter()
            .all(|id| got.get(*id).map_or(0, Vec::len) >= 40)
    })
    .await;
    for id in ["a", "b", "c"] {
        assert_eq!(
            times(&arrived, id),
            want,
            "series {id}: every sample once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_on_late_policy_does_what_it_says() {
    for policy in ["drop", "send", "topic"] {
        let (addr, arrived) = capture().await;
        let late_topic = unique("late");
        create_topic(&late_topic, 1).await;
        let setup = setup(
            1,
            &format!("http://{addr}/api/v1/write"),
            &windows(&format!(
                "delay = \"5s\"\non_late = \"{policy}\"\nlate_topic = \"{late_topic}\""
            )),
        )
        .await;
        let egress = start_egress(&setup).await;
        let (name, t) = (unique("sr_win_late"), recent_ms());
        let producer = producer();
        // a@0 and a@10 s leave when b@100 s moves the watermark to 95 s;
        // a@5 s comes after that: at or before what a sent, so late.
        for (id, ts) in [
            ("a", t),
            ("a", t + 10_000),
            ("b", t + 100_000),
            ("a", t + 5_000),
        ] {
            produce_task(&producer, &setup.tasks, 0, &one(&name, id, ts, 1.0)).await;
        }
        wait_for(&arrived, Duration::from_secs(30), &egress, |got| {
            got.contains_key("b")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let a = times(&arrived, "a");
        let late_records = read_topic(&late_topic);
        match policy {
            "drop" => assert_eq!((a, late_records.len()), (vec![t, t + 10_000], 0)),
            "send" => assert_eq!((a, late_records.len()), (vec![t, t + 10_000, t + 5_000], 0)),
            _ => {
                assert_eq!(a, [t, t + 10_000]);
                assert_eq!(late_records.len(), 1, "one record of late samples");
                let r = &late_records[0];
                let req = WriteRequest::decode(r.payload().expect("payload")).expect("protobuf");
                assert_eq!(req.timeseries[0].samples[0].timestamp, t + 5_000);
                let reason = r
                    .headers()
                    .expect("headers")
                    .iter()
                    .find(|h| h.key == "late-reason")
                    .and_then(|h| h.value);
                assert_eq!(reason, Some(&b"at_or_before_last_sent"[..]));
            }
        }
        let metrics = crate::common::http_get(&format!("http://{}/metrics", egress.addr))
            .await
            .expect("metrics")
            .body;
        assert!(
            metrics.contains(&format!(
                "streamroute_egress_late_samples_total{{partition=\"0\",policy=\"{policy}\"}} 1"
            )),
            "{policy}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_marker_follows_a_quiet_series_by_one_interval() {
    let (addr, arrived) = capture().await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        &windows("delay = \"2s\"\non_gap = \"stale_marker\"\ndefault_interval = \"10s\"\ngap_factor = 2.0"),
    )
    .await;
    let egress = start_egress(&setup).await;
    let (name, t) = (unique("sr_win_stale"), recent_ms());
    let producer = producer();
    // a every 10 s up to 20 s, then quiet; b goes on to 60 s.
    for k in 0..7 {
        if k <= 2 {
            produce_task(
                &producer,
                &setup.tasks,
                0,
                &one(&name, "a", t + k * 10_000, k as f64),
            )
            .await;
        }
        produce_task(
            &producer,
            &setup.tasks,
            0,
            &one(&name, "b", t + k * 10_000, k as f64),
        )
        .await;
    }
    wait_for(&arrived, Duration::from_secs(30), &egress, |got| {
        got.get("a").map_or(0, Vec::len) >= 4
    })
    .await;
    let a = arrived.lock().expect("lock")["a"].clone();
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(
        a[3],
        (t + 30_000, 0x7ff0000000000002),
        "StaleNaN at 20 s + one 10 s interval"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_samples_are_held_loses_nothing_and_resends_at_most_one_batch() {
    let (addr, arrived) = capture().await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        &windows("delay = \"8s\""),
    )
    .await;
    let (name, t) = (unique("sr_win_kill"), recent_ms());
    let producer = producer();
    // 3 series × 30 samples 1 s apart: with 8 s of delay, the last ~8 of
    // each series are held until the partition is idle for 8 s.
    for k in 0..30 {
        for id in ["a", "b", "c"] {
            produce_task(
                &producer,
                &setup.tasks,
                0,
                &one(&name, id, t + k * 1_000, k as f64),
            )
            .await;
        }
    }
    let mut egress = start_egress(&setup).await;
    wait_for(&arrived, Duration::from_secs(30), &egress, |got| {
        got.get("c").map_or(0, Vec::len) >= 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: usize = arrived.lock().expect("lock").values().map(Vec::len).sum();
    assert!(
        before < 90,
        "samples are still held at the kill ({before} arrived)"
    );
    egress.kill9();
    let egress = start_egress(&setup).await;
    assert!(
        egress.log().contains("egress windows restored"),
        "{}",
        egress.log()
    );
    wait_for(&arrived, Duration::from_secs(40), &egress, |got| {
        ["a", "b", "c"].iter().all(|id| {
            let mut ts: Vec<i64> = got
                .get(*id)
                .map(|v| v.iter().map(|s| s.0).collect())
                .unwrap_or_default();
            ts.sort_unstable();
            ts.dedup();
            ts.len() == 30
        })
    })
    .await;
    let total: usize = arrived.lock().expect("lock").values().map(Vec::len).sum();
    assert!(
        total - 90 <= 50,
        "{} duplicates: more than one batch (50 samples)",
        total - 90
    );
    eprintln!(
        "kill -9 with {} held: {} duplicate(s)",
        90 - before,
        total - 90
    );
}
