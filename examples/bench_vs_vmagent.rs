//! The load and measuring half of `scripts/bench-vs-vmagent.sh`: streamroute
//! and vmagent side by side on the same remote-write traffic.
//!
//! * `blackhole --listen ADDR`: a remote-write receiver that answers 204 and
//!   counts the samples it decoded per first path segment (each contender
//!   writes to `http://ADDR/<contender>/api/v1/write`); `GET /stats` returns
//!   them as JSON lines `{"path":..,"samples":..,"requests":..,"errors":..}`.
//! * `run --blackhole http://ADDR --contender name=url=pid[+pid...][,pid...]`: for
//!   every round, payload form and contender (the order rotates each round),
//!   sends the same load (`--rate` samples/s for `--seconds`, `--batch`
//!   series per request, snappy, `--concurrency` in flight), waits until the
//!   blackhole has every sample the rules keep (drained), and measures the
//!   CPU (utime+stime of `/proc/<pid>/stat`) of each pid of the contender
//!   over load + drain. Prints one line per run and a summary with the
//!   ratios to the first contender: "own" is the first pid, or the sum of
//!   the first pids joined by `+`; "others" the rest.
//!
//! Payloads: `--series` synthetic series of 12 to 15 labels (the labels of
//! `streamroute produce --generate` plus `bench_run` and `tmp_shard`), one
//! sample each per request, a quarter of them with value 0. Two forms of
//! the very same requests:
//! * `prost`: as prost (and Prometheus) write them; checked at start-up
//!   against `prost::Message::encode_to_vec`;
//! * `explicit`: every default value written out (a `value` of 0.0, every
//!   field present), which is just as valid protobuf.
//!
//! Samples "out" are those the blackhole decoded, which the relabel rules
//! of the script reduce (they drop `go_.*|process_.*`, a quarter of the
//! series). Linux only (`/proc`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The receiver every contender writes to.
    Blackhole {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Load, drain and measure every contender.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The blackhole's base URL.
    #[arg(long)]
    blackhole: String,
    /// name=write-url=pid[+pid...][,pid...]: the first pid (or those joined
    /// by `+`) the contender's own processes, the others charged to it as
    /// well (the Kafka broker).
    #[arg(long = "contender", required = true)]
    contenders: Vec<String>,
    #[arg(long, default_value_t = 20_000)]
    series: u64,
    #[arg(long, default_value_t = 2_000)]
    batch: u64,
    /// Samples per second offered to each contender.
    #[arg(long, default_value_t = 40_000)]
    rate: u64,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Payload forms to run: prost, explicit.
    #[arg(long, value_delimiter = ',', default_value = "prost,explicit")]
    forms: Vec<String>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Seconds to wait after the load for every kept sample to arrive.
    #[arg(long, default_value_t = 90)]
    drain_timeout: u64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let result = match args.command {
        Command::Blackhole { listen } => blackhole(listen).await,
        Command::Run(run_args) => run(run_args).await,
    };
    if let Err(e) = result {
        eprintln!("bench_vs_vmagent: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- blackhole

#[derive(Default, Clone, Copy)]
struct Counts {
    samples: u64,
    requests: u64,
    errors: u64,
}

type Books = Arc<Mutex<HashMap<String, Counts>>>;

async fn blackhole(listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen {listen}: {e}"))?;
    let books: Books = Arc::default();
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let books = books.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let books = books.clone();
                async move { Ok::<_, std::convert::Infallible>(receive(request, &books).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn receive(
    request: hyper::Request<hyper::body::Incoming>,
    books: &Books,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    if path == "/stats" {
        let books = books.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, c) in books.iter() {
            out.push_str(&format!(
                "{{\"path\":{name:?},\"samples\":{},\"requests\":{},\"errors\":{}}}\n",
                c.samples, c.requests, c.errors
            ));
        }
        return answer(200, out);
    }
    let name = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let encoding = request
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Encoding::parse(v).ok())
        .unwrap_or(Encoding::Snappy);
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return answer(400, e.to_string()),
    };
    let samples = decompress(&body, encoding, 256 << 20)
        .map_err(|e| e.to_string())
        .and_then(|raw| WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string()))
        .map(|r| {
            r.timeseries
                .iter()
                .map(|s| s.samples.len() as u64)
                .sum::<u64>()
        });
    let mut books = books.lock().unwrap_or_else(|e| e.into_inner());
    let c = books.entry(name).or_default();
    c.requests += 1;
    match samples {
        Ok(n) => {
            c.samples += n;
            answer(204, String::new())
        }
        Err(e) => {
            c.errors += 1;
            answer(400, e)
        }
    }
}

fn answer(status: u16, text: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

// ---------------------------------------------------------------- payloads

/// The labels of one series, pre-encoded as `TimeSeries.labels` entries.
struct Series {
    labels: Vec<Label>,
    encoded: Vec<u8>,
    /// Kept by the rules (not `go_.*|process_.*`).
    kept: bool,
    zero: bool,
}

fn make_series(id: u64, run_id: &str) -> Series {
    let mut labels = series_labels(id);
    labels.push(Label {
        name: "bench_run".into(),
        value: run_id.into(),
    });
    labels.push(Label {
        name: "tmp_shard".into(),
        value: format!("s{}", id % 16),
    });
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    let name = labels
        .iter()
        .find(|l| l.name == "__name__")
        .map(|l| l.value.clone())
        .unwrap_or_default();
    let mut encoded = Vec::new();
    for l in &labels {
        let len = field_len(1, l.name.len()) + field_len(2, l.value.len());
        put_key(&mut encoded, 1, 2);
        put_varint(&mut encoded, len as u64);
        put_bytes(&mut encoded, 1, l.name.as_bytes());
        put_bytes(&mut encoded, 2, l.value.as_bytes());
    }
    Series {
        labels,
        encoded,
        kept: !(name.starts_with("go_") || name.starts_with("process_")),
        zero: id % 4 == 0,
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, u64::from(field) << 3 | u64::from(wire));
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

fn field_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field) << 3) + varint_len(len as u64) + len
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// As prost writes it: default values left out.
    Prost,
    /// Every field written, defaults included.
    Explicit,
}

impl Form {
    fn parse(s: &str) -> Result<Form, String> {
        match s {
            "prost" => Ok(Form::Prost),
            "explicit" => Ok(Form::Explicit),
            _ => Err(format!("unknown form {s:?} (want prost or explicit)")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Form::Prost => "prost",
            Form::Explicit => "explicit",
        }
    }
}

fn value_of(series: &Series, step: u64) -> f64 {
    if series.zero {
        0.0
    } else {
        step as f64 + 1.0
    }
}

/// The encoded (uncompressed) WriteRequest of `series` at one step.
fn encode(series: &[Series], step: u64, ts: i64, form: Form) -> Vec<u8> {
    let mut out = Vec::with_capacity(series.len() * 256);
    let mut sample = Vec::with_capacity(24);
    for s in series {
        let value = value_of(s, step);
        sample.clear();
        if form == Form::Explicit || value != 0.0 {
            put_key(&mut sample, 1, 1);
            sample.extend_from_slice(&value.to_le_bytes());
        }
        if form == Form::Explicit || ts != 0 {
            put_key(&mut sample, 2, 0);
            put_varint(&mut sample, ts as u64);
        }
        let body = s.encoded.len() + field_len(2, sample.len());
        put_key(&mut out, 1, 2);
        put_varint(&mut out, body as u64);
        out.extend_from_slice(&s.encoded);
        put_bytes(&mut out, 2, &sample);
    }
    out
}

/// The hand-written prost form must be exactly what prost writes.
fn check_prost_form(series: &[Series]) -> Result<(), String> {
    let ts = 1_700_000_000_123;
    let request = WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: s.labels.clone(),
                samples: vec![Sample {
                    value: value_of(s, 3),
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: Vec::new(),
    };
    if request.encode_to_vec() != encode(series, 3, ts, Form::Prost) {
        return Err("the prost form differs from prost's encoding".into());
    }
    let explicit = encode(series, 3, ts, Form::Explicit);
    let decoded = WriteRequest::decode(explicit.as_slice()).map_err(|e| e.to_string())?;
    if decoded != request {
        return Err("the explicit form does not decode to the same request".into());
    }
    Ok(())
}

// ---------------------------------------------------------------- measuring

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

struct Contender {
    name: String,
    url: String,
    pids: Vec<u32>,
    /// How many of `pids`, from the first, are the contender's own
    /// processes (`pid+pid,...`: streamroute's roles as processes of their own).
    own: usize,
}

fn parse_contender(spec: &str) -> Result<Contender, String> {
    let mut parts = spec.splitn(3, '=');
    let (Some(name), Some(url), Some(pids)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "--contender {spec}: want name=url=pid[+pid...][,pid...]"
        ));
    };
    let own = pids.split(',').next().unwrap_or("").split('+').count();
    let pids = pids
        .split([',', '+'])
        .map(|p| {
            p.parse::<u32>()
                .map_err(|_| format!("--contender {spec}: bad pid {p:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Contender {
        name: name.into(),
        url: url.into(),
        pids,
        own,
    })
}

async fn get_text(client: &HttpClient, url: &str) -> Result<String, String> {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// Samples and errors the blackhole has booked for `name`.
async fn arrived(client: &HttpClient, base: &str, name: &str) -> Result<(u64, u64), String> {
    let text = get_text(client, &format!("{base}/stats")).await?;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if v["path"] == name {
            return Ok((
                v["samples"].as_u64().unwrap_or(0),
                v["errors"].as_u64().unwrap_or(0),
            ));
        }
    }
    Ok((0, 0))
}

/// POSTs until 2xx; 503/429 and connection errors are retried.
async fn post(client: &HttpClient, url: &str, body: Bytes) -> Result<(), String> {
    let mut backoff = Duration::from_millis(50);
    for _ in 0..200 {
        let request = hyper::Request::post(url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        match client.request(request).await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {}
            Ok(r) => {
                let status = r.status();
                let text = r.into_body().collect().await.map(|b| b.to_bytes());
                return Err(format!(
                    "{url} answered {status}: {}",
                    String::from_utf8_lossy(&text.unwrap_or_default())
                ));
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    Err(format!("{url}: no 2xx after 200 attempts"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What one run measured.
struct Measured {
    contender: String,
    form: Form,
    samples_in: u64,
    samples_out: u64,
    expected_out: u64,
    /// Load plus drain.
    secs: f64,
    /// CPU seconds per pid of the contender.
    cpu_s: Vec<f64>,
}

impl Measured {
    fn us_per_sample(&self, i: usize) -> f64 {
        1e6 * self.cpu_s[i] / self.samples_in.max(1) as f64
    }
}

/// Sends one warm-up request and waits until something arrives.
async fn warm_up(client: &HttpClient, args: &RunArgs, c: &Contender) -> Result<(), String> {
    let (before, _) = arrived(client, &args.blackhole, &c.name).await?;
    let series = [make_series(0, "warm-up")];
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut step = 0;
    loop {
        let raw = encode(&series, step, now_ms(), Form::Prost);
        let body = Bytes::from(compress(&raw, Encoding::Snappy).map_err(|e| e.to_string())?);
        post(client, &c.url, body).await?;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if arrived(client, &args.blackhole, &c.name).await?.0 > before {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{}: the warm-up sample never arrived", c.name));
        }
        step += 1;
    }
}

/// Waits until `name`'s count stops changing at the blackhole.
async fn settle(client: &HttpClient, base: &str, name: &str) -> Result<u64, String> {
    let mut last = arrived(client, base, name).await?.0;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = arrived(client, base, name).await?.0;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
}

async fn measure(
    client: &HttpClient,
    args: &RunArgs,
    c: &Contender,
    series: &Arc<Vec<Series>>,
    form: Form,
) -> Result<Measured, String> {
    let c0 = settle(client, &args.blackhole, &c.name).await?;
    let ticks0: Vec<u64> = c
        .pids
        .iter()
        .map(|&p| proc_cpu_ticks(p).ok_or_else(|| format!("{}: pid {p} is gone", c.name)))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let total = args.rate * args.seconds;
    let kept_per_step = series.iter().filter(|s| s.kept).count() as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(0));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut requests = tokio::task::JoinSet::new();
    let (mut handed, mut step, mut last_ts) = (0u64, 0u64, 0i64);
    'load: loop {
        let ts = now_ms().max(last_ts + 1);
        last_ts = ts;
        let mut first = 0usize;
        while first < series.len() {
            if handed >= total {
                break 'load;
            }
            let count = (args.batch as usize).min(series.len() - first);
            let due = Duration::from_secs_f64(handed as f64 / args.rate as f64);
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + due)).await;
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let (series, client, url) = (series.clone(), client.clone(), c.url.clone());
            let (sent, expected) = (sent.clone(), expected.clone());
            requests.spawn(async move {
                let chunk = &series[first..first + count];
                let raw = encode(chunk, step, ts, form);
                let body =
                    Bytes::from(compress(&raw, Encoding::Snappy).map_err(|e| e.to_string())?);
                let result = post(&client, &url, body).await;
                drop(permit);
                result?;
                sent.fetch_add(count as u64, Ordering::Relaxed);
                let kept = chunk.iter().filter(|s| s.kept).count() as u64;
                expected.fetch_add(kept, Ordering::Relaxed);
                Ok::<(), String>(())
            });
            handed += count as u64;
            first += count;
        }
        step += 1;
    }
    while let Some(done) = requests.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let expected_out = expected.load(Ordering::Relaxed);
    debug_assert!(kept_per_step > 0);
    // Drained: every kept sample arrived (or the timeout).
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    let mut out;
    loop {
        out = arrived(client, &args.blackhole, &c.name).await?.0 - c0;
        if out >= expected_out || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_s = c
        .pids
        .iter()
        .zip(&ticks0)
        .map(|(&p, &t0)| {
            proc_cpu_ticks(p).unwrap_or(t0).saturating_sub(t0) as f64 / args.clk_tck as f64
        })
        .collect();
    Ok(Measured {
        contender: c.name.clone(),
        form,
        samples_in: sent.load(Ordering::Relaxed),
        samples_out: out,
        expected_out,
        secs,
        cpu_s,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    if args.rate == 0 || args.batch == 0 || args.series == 0 || args.seconds == 0 {
        return Err("--rate, --batch, --series and --seconds must be > 0".into());
    }
    let forms = args
        .forms
        .iter()
        .map(|f| Form::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let contenders = args
        .contenders
        .iter()
        .map(|s| parse_contender(s))
        .collect::<Result<Vec<_>, _>>()?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let run_id = format!("vs{}", now_ms());
    let series: Arc<Vec<Series>> = Arc::new(
        (0..args.series)
            .map(|id| make_series(id, &run_id))
            .collect(),
    );
    check_prost_form(&series[..args.batch.min(args.series) as usize])?;
    let labels: Vec<usize> = series.iter().map(|s| s.labels.len()).collect();
    eprintln!(
        "payloads: {} series of {}-{} labels, {} per request, {} kept by the rules",
        series.len(),
        labels.iter().min().unwrap_or(&0),
        labels.iter().max().unwrap_or(&0),
        args.batch,
        series.iter().filter(|s| s.kept).count()
    );
    for c in &contenders {
        warm_up(&client, &args, c).await?;
        eprintln!("{}: warm", c.name);
    }

    let mut results: Vec<Measured> = Vec::new();
    println!(
        "{:<12} {:<9} {:>9} {:>9} {:>7} {:>8} {:>12}  cpu µs/sample of each pid",
        "contender", "form", "in", "out", "secs", "in/s", "µs/sample"
    );
    for round in 0..args.rounds {
        for &form in &forms {
            for i in 0..contenders.len() {
                let c = &contenders[(i + round) % contenders.len()];
                let m = measure(&client, &args, c, &series, form).await?;
                let per_pid: Vec<String> = (0..m.cpu_s.len())
                    .map(|i| format!("{:.2}", m.us_per_sample(i)))
                    .collect();
                println!(
                    "{:<12} {:<9} {:>9} {:>9} {:>7.1} {:>8.0} {:>12.2}  {}",
                    m.contender,
                    form.name(),
                    m.samples_in,
                    m.samples_out,
                    m.secs,
                    m.samples_in as f64 / m.secs,
                    m.us_per_sample(0),
                    per_pid.join(" + ")
                );
                if m.samples_out != m.expected_out {
                    eprintln!(
                        "{}: {} samples out, the rules keep {} (drain timeout?)",
                        m.contender, m.samples_out, m.expected_out
                    );
                }
                results.push(m);
            }
        }
    }

    // Summary: medians over rounds, ratios to the first contender.
    println!();
    println!(
        "median over {} round(s), CPU µs per ingested sample; ratio = / {}",
        args.rounds, contenders[0].name
    );
    for &form in &forms {
        let own = |name: &str, pid: usize| {
            median(
                results
                    .iter()
                    .filter(|m| m.contender == name && m.form == form && pid < m.cpu_s.len())
                    .map(|m| m.us_per_sample(pid))
                    .collect(),
            )
        };
        let base = own(&contenders[0].name, 0);
        for c in &contenders {
            let mine: f64 = (0..c.own).map(|p| own(&c.name, p)).sum();
            let mut line = format!(
                "{:<9} {:<12} own {:>6.2} ({:.2}x)",
                form.name(),
                c.name,
                mine,
                mine / base
            );
            if c.own > 1 {
                let each: Vec<String> = (0..c.own)
                    .map(|p| format!("{:.2}", own(&c.name, p)))
                    .collect();
                line.push_str(&format!(" = {}", each.join(" + ")));
            }
            if c.pids.len() > c.own {
                let extra: f64 = (c.own..c.pids.len()).map(|p| own(&c.name, p)).sum();
                line.push_str(&format!(
                    "   others {:>6.2}   own+others {:>6.2} ({:.2}x)",
                    extra,
                    mine + extra,
                    (mine + extra) / base
                ));
            }
            println!("{line}");
        }
    }
    let short = results.iter().any(|m| m.samples_out < m.expected_out);
    if short {
        return Err("some contender did not deliver every kept sample".into());
    }
    Ok(())
}
