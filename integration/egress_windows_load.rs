//! One egress worker under load with the windows off, `delay` on, and
//! `delay` + `interpolate`: throughput through Kafka to a receiver that
//! counts samples, the worker's peak RSS and the sled folder's size, with
//! up to a million series. Ignored by default (a benchmark):
//!
//! ```text
//! SR_BENCH_WINDOWS=off|delay|interpolate SR_BENCH_SERIES=1000000 \
//!   cargo test --release --test integration egress_windows_load -- --ignored --nocapture
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use streamroute::remote_write::{decompress, Encoding};

use crate::egress::{produce_task, recent_ms, request, setup, start_egress};
use crate::router::producer;

/// A receiver answering 204 that counts the samples it gets.
async fn counter() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicU64::new(0));
    let total = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let total = total.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                        let total = total.clone();
                        async move {
                            let body = r.into_body().collect().await.expect("body").to_bytes();
                            let raw =
                                decompress(&body, Encoding::Snappy, 256 << 20).expect("snappy");
                            let n = streamroute::remote_write::scan::count(&raw).expect("request");
                            total.fetch_add(n.samples, Ordering::Relaxed);
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
    (addr, count)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: SR_BENCH_WINDOWS=off|delay|interpolate cargo test --release --test integration egress_windows_load -- --ignored --nocapture"]
async fn one_worker_many_series_throughput_rss_and_sled_size() {
    let mode = env_or("SR_BENCH_WINDOWS", "delay");
    let series: usize = env_or("SR_BENCH_SERIES", "1000000")
        .parse()
        .expect("series");
    let rounds: usize = env_or("SR_BENCH_ROUNDS", "3").parse().expect("rounds");
    let per_record = 2_000usize;
    let windows = match mode.as_str() {
        "off" => String::new(),
        "delay" => "[egress.windows]\ndelay = \"5s\"\n".into(),
        "interpolate" => {
            "[egress.windows]\ndelay = \"5s\"\non_gap = \"interpolate\"\ndefault_interval = \"10s\"\n"
                .into()
        }
        other => panic!("SR_BENCH_WINDOWS: {other:?} is not off, delay or interpolate"),
    };
    let (addr, received) = counter().await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        &format!("max_samples_per_send = 5000\nstate_flush_every = \"1s\"\n{windows}"),
    )
    .await;
    let name = format!("sr_bench_win_{}", uuid::Uuid::new_v4().simple());
    let producer = producer();
    let t0 = recent_ms();
    // Every series once per round, rounds 10 s apart in event time.
    for round in 0..rounds {
        for first in (0..series).step_by(per_record) {
            let n = per_record.min(series - first);
            let ts = t0 + round as i64 * 10_000;
            produce_task(&producer, &setup.tasks, 0, &request(&name, first, n, ts)).await;
        }
    }
    let total = (series * rounds) as u64;
    let started = Instant::now();
    let egress = start_egress(&setup).await;
    let mut all_at = None;
    loop {
        let got = received.load(Ordering::Relaxed);
        if got >= total && all_at.is_none() {
            all_at = Some(started.elapsed());
        }
        // After everything arrived, one more state write (1 s) for the sled size.
        if all_at.is_some_and(|at| started.elapsed() > at + Duration::from_secs(3)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {got} of {total} arrived\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secs = all_at.expect("all arrived").as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    assert_eq!(got, total, "every sample once");
    let sled = dir_bytes(&setup.state);
    // The kernel's high-water mark of the worker's resident set.
    let status = std::fs::read_to_string(format!("/proc/{}/status", egress.pid())).expect("status");
    let peak_rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .expect("VmHWM")
        * 1024.0;
    eprintln!(
        "windows {mode}: {series} series x {rounds} rounds = {total} samples in {secs:.2} s \
         (start-up included) = {:.0} samples/s; peak RSS {:.0} MiB ({:.0} bytes/series); \
         sled {:.0} MiB ({:.0} bytes/series)",
        total as f64 / secs,
        peak_rss / 1048576.0,
        peak_rss / series as f64,
        sled as f64 / 1048576.0,
        sled as f64 / series as f64,
    );
}
