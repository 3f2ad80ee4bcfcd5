//! The measuring half of `scripts/bench-e2e.sh`: a remote-write sender, a
//! capture receiver and a process watcher in one process, so every time it
//! compares comes from one clock.
//!
//! * **Sender.** Pushes `--series` synthetic series (the labels of
//!   `streamroute produce --generate`, plus `bench_run="<id>"`) ×
//!   `--samples-per-series` samples to the gateway, `--batch` series per
//!   request, paced at `--rate` samples/s, up to `--concurrency` requests in
//!   flight (like Prometheus' shards). Every sample's timestamp is the wall
//!   clock in ms when its request is built, just before it is POSTed, so
//!   `arrival - timestamp` is the end-to-end latency of that sample. 503 and
//!   connection errors are retried with the original timestamps, as
//!   Prometheus does; the retry time counts as latency.
//! * **Capture receiver.** The egress `target`. Each request is decoded and,
//!   with `--forward`, passed on unchanged to vmagent; the capture answers
//!   egress with vmagent's status, so backpressure is real. A sample
//!   "arrives" when vmagent accepted its request (or when the capture read
//!   it, without `--forward`). Each sample (series id, step) counts once;
//!   resent ones are counted as duplicates.
//! * **Watcher.** For each `--watch name=pid`: CPU seconds
//!   (`/proc/<pid>/stat` utime+stime) between the first send and the last
//!   arrival, and the peak `VmRSS` sampled every 0.5 s in that window.
//! * **VictoriaMetrics check** (`--vm`): after the last arrival, polls
//!   `sum(count_over_time({bench_run="<id>"}[1h]))` until it equals what
//!   was sent, and reports how long that took.
//!
//! Exits 1 when fewer samples arrived (or reached VictoriaMetrics) than
//! were sent. Linux only (`/proc`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use streamroute::produce::generate::series_labels;
use streamroute::remote_write::proto::v1::Sample;
use streamroute::remote_write::{compress, decompress, Encoding, Label, TimeSeries, WriteRequest};

#[derive(Debug, Parser)]
struct Args {
    /// The gateway's write URL.
    #[arg(long)]
    gateway: String,
    /// Address the capture receiver listens on (the egress target).
    #[arg(long)]
    listen: SocketAddr,
    /// Pass every captured request on to this remote-write URL (vmagent).
    #[arg(long)]
    forward: Option<String>,
    /// VictoriaMetrics base URL: check that every sample is queryable there.
    #[arg(long)]
    vm: Option<String>,
    #[arg(long, default_value_t = 20_000)]
    series: u64,
    #[arg(long, default_value_t = 30)]
    samples_per_series: u64,
    /// Samples per second (> 0).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Series per request.
    #[arg(long, default_value_t = 2_000)]
    batch: u64,
    /// Requests in flight to the gateway at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Value of the `bench_run` label, unique per run.
    #[arg(long)]
    run_id: String,
    /// A process to measure, as name=pid (repeatable).
    #[arg(long = "watch")]
    watch: Vec<String>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Seconds to wait, after the last send, for everything to arrive.
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the capture receiver has seen.
#[derive(Default)]
struct Capture {
    /// (series id, step) of every sample of this run that arrived.
    seen: HashSet<(u64, u64)>,
    /// Arrival minus sample timestamp, ms, first arrival of each sample.
    latencies_ms: Vec<i64>,
    duplicates: u64,
    warmup_arrived: bool,
    last_arrival: Option<Instant>,
    requests: u64,
}

type Shared = Arc<Mutex<Capture>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Capture> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn label<'a>(labels: &'a [Label], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// Decodes one captured request and books its samples as arrived at `at_ms`.
fn book(
    capture: &Shared,
    run_id: &str,
    body: &[u8],
    encoding: Encoding,
    at: Instant,
    at_ms: i64,
) -> Result<(), String> {
    let raw = decompress(body, encoding, 256 << 20).map_err(|e| e.to_string())?;
    let request = WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string())?;
    let warmup = format!("{run_id}-warmup");
    let mut c = lock(capture);
    c.requests += 1;
    c.last_arrival = Some(at);
    for series in &request.timeseries {
        let run = label(&series.labels, "bench_run");
        if run == Some(warmup.as_str()) {
            c.warmup_arrived = true;
            continue;
        }
        if run != Some(run_id) {
            continue;
        }
        let Some(id) = label(&series.labels, "series_id").and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        for sample in &series.samples {
            // The sample's value is its step (see `payload`).
            if c.seen.insert((id, sample.value as u64)) {
                c.latencies_ms.push(at_ms - sample.timestamp);
            } else {
                c.duplicates += 1;
            }
        }
    }
    Ok(())
}

/// The capture receiver: decode, optionally forward, book on success.
async fn serve_capture(
    listener: tokio::net::TcpListener,
    capture: Shared,
    client: HttpClient,
    args: Arc<Args>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (capture, client, args) = (capture.clone(), client.clone(), args.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let (capture, client, args) = (capture.clone(), client.clone(), args.clone());
                    async move {
                        let headers = request.headers().clone();
                        let body = match request.into_body().collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(e) => {
                                return Ok::<_, std::convert::Infallible>(answer(
                                    400,
                                    e.to_string(),
                                ))
                            }
                        };
                        let encoding_header = headers
                            .get("content-encoding")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("snappy");
                        let Ok(encoding) = Encoding::parse(encoding_header) else {
                            return Ok(answer(415, format!("unknown encoding {encoding_header}")));
                        };
                        if let Some(url) = &args.forward {
                            let mut forward = hyper::Request::post(url.as_str());
                            for name in [
                                "content-encoding",
                                "content-type",
                                "x-prometheus-remote-write-version",
                                "user-agent",
                            ] {
                                if let Some(v) = headers.get(name) {
                                    forward = forward.header(name, v);
                                }
                            }
                            let Ok(forward) = forward.body(Full::new(body.clone())) else {
                                return Ok(answer(500, "bad forward request".into()));
                            };
                            match client.request(forward).await {
                                Ok(r) if r.status().is_success() => {}
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let text = r
                                        .into_body()
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    return Ok(answer(
                                        status,
                                        String::from_utf8_lossy(&text).into_owned(),
                                    ));
                                }
                                Err(e) => return Ok(answer(503, format!("forward: {e}"))),
                            }
                        }
                        let (at, at_ms) = (Instant::now(), now_ms());
                        match book(&capture, &args.run_id, &body, encoding, at, at_ms) {
                            Ok(()) => Ok(answer(204, String::new())),
                            Err(e) => Ok(answer(400, e)),
                        }
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(status: u16, text: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// One request: series `first..first+count`, one sample each at `ts`, value = step.
fn payload(run_id: &str, first: u64, count: u64, step: u64, ts: i64) -> Bytes {
    let timeseries = (first..first + count)
        .map(|id| {
            let mut labels = series_labels(id);
            labels.push(Label {
                name: "bench_run".into(),
                value: run_id.into(),
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            TimeSeries {
                labels,
                samples: vec![Sample {
                    value: step as f64,
                    timestamp: ts,
                }],
                ..Default::default()
            }
        })
        .collect();
    let raw = WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    Bytes::from(compress(&raw, Encoding::Snappy).unwrap_or_default())
}

/// POSTs a remote-write body until the gateway answers 2xx. Returns the retries.
async fn post(client: &HttpClient, url: &str, body: Bytes) -> Result<u64, String> {
    let mut retries = 0;
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = hyper::Request::post(url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let retry = match client.request(request).await {
            Ok(r) if r.status().is_success() => return Ok(retries),
            Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
                format!("{}", r.status())
            }
            Ok(r) => {
                let status = r.status();
                let text = r
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                return Err(format!(
                    "gateway answered {status}: {}",
                    String::from_utf8_lossy(&text)
                ));
            }
            Err(e) => e.to_string(),
        };
        retries += 1;
        if retries == 1 || retries % 20 == 0 {
            eprintln!("gateway: {retry}, retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// CPU ticks (utime + stime) and current RSS (kB) of a process.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Watched {
    name: String,
    pid: u32,
    ticks_at_start: u64,
    peak_rss_kb: Arc<Mutex<u64>>,
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Polls VictoriaMetrics until it holds `want` samples of the run; the count and the wait.
async fn vm_count(client: &HttpClient, base: &str, run_id: &str, want: u64) -> (u64, Duration) {
    let started = Instant::now();
    let query = format!("sum(count_over_time({{bench_run=\"{run_id}\"}}[1h]))");
    let encoded: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let url = format!("{base}/api/v1/query?nocache=1&query={encoded}");
    let mut got = 0;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(request) = hyper::Request::get(url.as_str()).body(Full::new(Bytes::new())) {
            if let Ok(response) = client.request(request).await {
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                    got = json["data"]["result"][0]["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0) as u64;
                }
            }
        }
        if got >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (got, started.elapsed())
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    if let Err(e) = run(args).await {
        eprintln!("e2e_bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Arc<Args>) -> Result<(), String> {
    if args.rate == 0
        || args.batch == 0
        || args.series == 0
        || args.samples_per_series == 0
        || args.concurrency == 0
    {
        return Err(
            "--rate, --batch, --series, --samples-per-series and --concurrency must be > 0".into(),
        );
    }
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let capture: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen {}: {e}", args.listen))?;
    tokio::spawn(serve_capture(
        listener,
        capture.clone(),
        client.clone(),
        args.clone(),
    ));

    // Warm-up: one series, sent until it comes out the other end, so the
    // measured load does not include consumer-group joins and connection set-up.
    let warm_started = Instant::now();
    let mut warm_labels = vec![
        Label {
            name: "__name__".into(),
            value: "bench_e2e_warmup".into(),
        },
        Label {
            name: "bench_run".into(),
            value: format!("{}-warmup", args.run_id),
        },
    ];
    warm_labels.sort_by(|a, b| a.name.cmp(&b.name));
    let mut warm_sent = false;
    while !lock(&capture).warmup_arrived {
        if warm_started.elapsed() > Duration::from_secs(120) {
            return Err("the warm-up sample did not arrive within 120 s".into());
        }
        if !warm_sent {
            let ts = TimeSeries {
                labels: warm_labels.clone(),
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: now_ms(),
                }],
                ..Default::default()
            };
            let raw = WriteRequest {
                timeseries: vec![ts],
                metadata: Vec::new(),
            }
            .encode_to_vec();
            let body = Bytes::from(compress(&raw, Encoding::Snappy).map_err(|e| e.to_string())?);
            warm_sent = post(&client, &args.gateway, body).await.is_ok();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "warm-up sample arrived after {:.1} s; sending the load",
        warm_started.elapsed().as_secs_f64()
    );

    // Processes to watch, CPU counted from here.
    let mut watched = Vec::new();
    for spec in &args.watch {
        let (name, pid) = spec
            .split_once('=')
            .ok_or_else(|| format!("--watch {spec}: want name=pid"))?;
        let pid: u32 = pid
            .parse()
            .map_err(|_| format!("--watch {spec}: bad pid"))?;
        let ticks =
            proc_cpu_ticks(pid).ok_or_else(|| format!("--watch {spec}: no such process"))?;
        watched.push(Watched {
            name: name.into(),
            pid,
            ticks_at_start: ticks,
            peak_rss_kb: Arc::default(),
        });
    }
    let self_pid = std::process::id();
    watched.push(Watched {
        name: "e2e_bench (sender+capture)".into(),
        pid: self_pid,
        ticks_at_start: proc_cpu_ticks(self_pid).unwrap_or(0),
        peak_rss_kb: Arc::default(),
    });
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    for w in &watched {
        let (pid, peak, sampling) = (w.pid, w.peak_rss_kb.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kb) = proc_status_kb(pid, "VmRSS:") {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (*p).max(kb);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    // The load, paced by samples handed over so far.
    let total = args.series * args.samples_per_series;
    let started = Instant::now();
    let acks: Arc<Mutex<Vec<u64>>> = Arc::default();
    let retries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut requests = tokio::task::JoinSet::new();
    let (mut handed, mut last_ts) = (0u64, 0i64);
    for step in 0..args.samples_per_series {
        // Timestamps of one series must rise from step to step.
        let step_floor = last_ts + 1;
        let mut first = 0;
        while first < args.series {
            let count = args.batch.min(args.series - first);
            let due = Duration::from_secs_f64(handed as f64 / args.rate as f64);
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + due)).await;
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let ts = now_ms().max(step_floor);
            last_ts = last_ts.max(ts);
            let body = payload(&args.run_id, first, count, step, ts);
            let (client, url, acks, retries) = (
                client.clone(),
                args.gateway.clone(),
                acks.clone(),
                retries.clone(),
            );
            requests.spawn(async move {
                let sent = Instant::now();
                let result = post(&client, &url, body).await;
                drop(permit);
                let r = result?;
                retries.fetch_add(r, std::sync::atomic::Ordering::Relaxed);
                acks.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(sent.elapsed().as_micros() as u64);
                Ok::<(), String>(())
            });
            handed += count;
            first += count;
        }
    }
    while let Some(done) = requests.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let sent_for = started.elapsed();

    // Drain: wait for every sample at the capture.
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    loop {
        let arrived = lock(&capture).seen.len() as u64;
        if arrived >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (arrived, duplicates, captured_requests, last_arrival, mut latencies) = {
        let mut c = lock(&capture);
        (
            c.seen.len() as u64,
            c.duplicates,
            c.requests,
            c.last_arrival,
            std::mem::take(&mut c.latencies_ms),
        )
    };
    let window = last_arrival
        .map(|t| t.saturating_duration_since(started))
        .unwrap_or_default()
        .max(sent_for);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let cpu: Vec<(String, f64, u64, u64)> = watched
        .iter()
        .map(|w| {
            let ticks = proc_cpu_ticks(w.pid)
                .unwrap_or(w.ticks_at_start)
                .saturating_sub(w.ticks_at_start);
            let peak = *w.peak_rss_kb.lock().unwrap_or_else(|e| e.into_inner());
            (
                w.name.clone(),
                ticks as f64 / args.clk_tck as f64,
                peak,
                proc_status_kb(w.pid, "VmHWM:").unwrap_or(0),
            )
        })
        .collect();

    let vm = match &args.vm {
        Some(base) if arrived >= total => Some(vm_count(&client, base, &args.run_id, total).await),
        _ => None,
    };

    // Report.
    latencies.sort_unstable();
    let mut acks = std::mem::take(&mut *acks.lock().unwrap_or_else(|e| e.into_inner()));
    acks.sort_unstable();
    let acks_ms: Vec<i64> = acks.iter().map(|us| (*us / 1000) as i64).collect();
    let secs = window.as_secs_f64();
    println!();
    println!(
        "load       {} series x {} samples = {total} samples, {} per request, paced at {} samples/s, {} in flight",
        args.series, args.samples_per_series, args.batch, args.rate, args.concurrency
    );
    println!(
        "sent       in {:.2} s = {:.0} samples/s offered; gateway 503/errors retried: {}",
        sent_for.as_secs_f64(),
        total as f64 / sent_for.as_secs_f64(),
        retries.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("arrived    {arrived} of {total} distinct samples ({duplicates} duplicates) in {captured_requests} egress requests");
    println!(
        "sustained  {:.0} samples/s end to end (first send to last arrival: {secs:.2} s)",
        arrived as f64 / secs
    );
    println!(
        "latency    send -> arrival{}: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        if args.forward.is_some() {
            " (vmagent accepted)"
        } else {
            " (capture)"
        },
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0)
    );
    println!(
        "gateway    send -> 204 (durable in Kafka) per request: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        percentile(&acks_ms, 50.0),
        percentile(&acks_ms, 90.0),
        percentile(&acks_ms, 99.0),
        acks_ms.last().copied().unwrap_or(0)
    );
    if let Some((got, waited)) = vm {
        println!(
            "victoria   {got} of {total} samples queryable {:.1} s after the last arrival",
            waited.as_secs_f64()
        );
    }
    println!();
    println!(
        "{:<28} {:>8} {:>14} {:>14} {:>10}",
        "process", "CPU s", "% of 1 core", "peak RSS MB", "VmHWM MB"
    );
    for (name, cpu_s, peak, hwm) in &cpu {
        println!(
            "{:<28} {:>8.2} {:>14.0} {:>14.0} {:>10.0}",
            name,
            cpu_s,
            100.0 * cpu_s / secs,
            *peak as f64 / 1024.0,
            *hwm as f64 / 1024.0
        );
    }
    println!("(CPU and peak RSS over the {secs:.2} s from the first send to the last arrival; VmHWM is the process' lifetime peak)");

    if arrived < total {
        return Err(format!(
            "only {arrived} of {total} samples arrived within {} s",
            args.drain_timeout
        ));
    }
    if let Some((got, _)) = vm {
        if got < total {
            return Err(format!("VictoriaMetrics holds {got} of {total} samples"));
        }
    }
    Ok(())
}
