//! `streamroute produce`: pushes remote-write payloads into the ingress
//! topic without a gateway, in the same record format the gateway writes
//! (see `kafka::record`). Payload files are decoded and validated first, so
//! nothing the router would refuse is written. `--generate` sends the
//! synthetic load of `produce::generate` for demos and benchmarks.
//!
//! May depend on: `kafka` (config, producer, record format),
//! `remote_write`, `produce::generate`. Nothing depends on it but
//! `app`/`cli`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;

use crate::kafka::producer::{DurableProducer, SendError};
use crate::kafka::record::IngressMeta;
use crate::kafka::KafkaConfig;
use crate::produce::generate;
use crate::remote_write::{decode_request, sniff, validate_v1, Encoding, Protocol};

/// `streamroute produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Payload files (snappy, zstd or plain protobuf; one payload per file) or folders of them.
    #[arg(required_unless_present = "generate", conflicts_with = "generate")]
    pub paths: Vec<PathBuf>,
    /// Protobuf message of the files: v1 (prometheus.WriteRequest) or v2.
    #[arg(long, default_value = "v1", value_parser = ["v1", "v2"])]
    pub protocol: String,
    /// Generate synthetic load instead of reading files.
    #[arg(long)]
    pub generate: bool,
    /// Synthetic series.
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Samples per synthetic series.
    #[arg(long, default_value_t = 10)]
    pub samples_per_series: u64,
    /// Samples per second to aim for (0: as fast as Kafka takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Series per synthetic payload (Prometheus sends up to 2,000 by default).
    #[arg(long, default_value_t = 2_000)]
    pub batch: u64,
    /// Time between a synthetic series' samples; the last one is "now".
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Topic to write to (default: `topics.ingress`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Encoding of the record values: snappy (what the gateway stores for
    /// Prometheus), zstd or identity (plain protobuf).
    #[arg(long, default_value = "snappy", value_parser = ["identity", "snappy", "zstd"])]
    pub value_encoding: String,
    /// Payloads awaiting Kafka's acknowledgement at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// Errors of `produce`.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A payload file could not be read or is not valid remote write.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// Kafka did not take a payload.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The producer could not be created.
    #[error("cannot create the kafka producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
}

/// What was produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Records written.
    pub payloads: u64,
    /// Samples in them.
    pub samples: u64,
    /// Record value bytes.
    pub bytes: u64,
}

/// Runs `streamroute produce`: writes to `--topic`, else `ingress_topic`,
/// records of at most `max_record_bytes` (the gateway's
/// `gateway.max_decoded_bytes`, so the ingress topic takes them as it
/// takes the gateway's).
pub async fn run(
    kafka: &KafkaConfig,
    ingress_topic: &str,
    max_record_bytes: usize,
    args: &ProduceArgs,
) -> Result<Summary, ProduceError> {
    if args.concurrency == 0 || (args.generate && (args.batch == 0 || args.series == 0)) {
        return Err(ProduceError::Usage(
            "--concurrency, --batch and --series must be greater than zero".into(),
        ));
    }
    let topic = args.topic.as_deref().unwrap_or(ingress_topic).to_string();
    let producer =
        DurableProducer::new(kafka, "produce", Duration::from_secs(30), max_record_bytes)?;
    let started = Instant::now();
    let summary = if args.generate {
        generate(&producer, &topic, args).await?
    } else {
        files(&producer, &topic, args).await?
    };
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "produced {} payloads, {} samples, {} bytes to {topic} in {secs:.1} s: {:.0} samples/s, {:.1} bytes/sample",
        summary.payloads,
        summary.samples,
        summary.bytes,
        summary.samples as f64 / secs,
        summary.bytes as f64 / summary.samples.max(1) as f64,
    );
    Ok(summary)
}

fn progress(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template =
        format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}) {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn meta(protocol: Protocol, encoding: Encoding) -> IngressMeta {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .ok();
    IngressMeta {
        encoding: Some(encoding),
        protocol,
        tenant: None,
        received_at_ms: now,
    }
}

/// Encodes a record value as asked.
fn encode(raw: Vec<u8>, encoding: Encoding) -> Result<Vec<u8>, ProduceError> {
    match encoding {
        Encoding::Identity => Ok(raw),
        other => crate::remote_write::compress(&raw, other)
            .map_err(|e| ProduceError::Usage(e.to_string())),
    }
}

async fn generate(
    producer: &DurableProducer,
    topic: &str,
    args: &ProduceArgs,
) -> Result<Summary, ProduceError> {
    let total_samples = args.series * args.samples_per_series;
    let bar = progress(total_samples, "samples");
    let interval_ms = args.interval.as_millis() as i64;
    let encoding: Encoding = args
        .value_encoding
        .parse()
        .map_err(|e| ProduceError::Usage(format!("{e}")))?;
    let now_ms = meta(Protocol::V1, encoding).received_at_ms.unwrap_or(0);
    let first_ts = now_ms - interval_ms * (args.samples_per_series as i64 - 1);
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut pending = FuturesUnordered::new();
    for step in 0..args.samples_per_series {
        let mut first = 0;
        while first < args.series {
            let count = args.batch.min(args.series - first);
            let raw = generate::payload(first, count, step, first_ts + interval_ms * step as i64)
                .encode_to_vec();
            let value = encode(raw, encoding)?;
            first += count;
            if args.rate > 0 {
                // Pace by samples handed over so far.
                let due =
                    Duration::from_secs_f64((summary.samples + count) as f64 / args.rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            summary.payloads += 1;
            summary.samples += count;
            summary.bytes += value.len() as u64;
            pending.push(async move {
                producer
                    .send(
                        topic,
                        None,
                        &value,
                        meta(Protocol::V1, encoding).to_headers(),
                    )
                    .await
                    .map(|()| count)
            });
            while pending.len() >= args.concurrency {
                if let Some(done) = pending.next().await {
                    bar.inc(done?);
                }
            }
        }
    }
    while let Some(done) = pending.next().await {
        bar.inc(done?);
    }
    bar.finish_and_clear();
    Ok(summary)
}

fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ProduceError> {
    let mut files = Vec::new();
    for path in paths {
        let bad = |reason: String| ProduceError::BadFile {
            path: path.clone(),
            reason,
        };
        if path.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| bad(e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            inner.sort();
            files.extend(inner);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(bad("no such file or folder".into()));
        }
    }
    Ok(files)
}

fn read_payload(
    path: &Path,
    protocol: Protocol,
    max: usize,
) -> Result<(Vec<u8>, u64), ProduceError> {
    let bad = |reason: String| ProduceError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let body = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let decoded =
        decode_request(&body, sniff(&body), protocol, max).map_err(|e| bad(e.to_string()))?;
    let stats = validate_v1(&decoded.request, &crate::remote_write::Limits::default())
        .map_err(|e| bad(e.to_string()))?;
    Ok((decoded.raw, stats.samples as u64))
}

async fn files(
    producer: &DurableProducer,
    topic: &str,
    args: &ProduceArgs,
) -> Result<Summary, ProduceError> {
    let protocol = if args.protocol == "v2" {
        Protocol::V2
    } else {
        Protocol::V1
    };
    let encoding: Encoding = args
        .value_encoding
        .parse()
        .map_err(|e| ProduceError::Usage(format!("{e}")))?;
    let files = list_files(&args.paths)?;
    if files.is_empty() {
        return Err(ProduceError::Usage("no payload files found".into()));
    }
    let bar = progress(files.len() as u64, "payloads");
    let mut summary = Summary::default();
    // One at a time keeps the files' order in the topic.
    for path in files {
        let (raw, samples) = read_payload(&path, protocol, 256 << 20)?;
        let value = encode(raw, encoding)?;
        producer
            .send(topic, None, &value, meta(protocol, encoding).to_headers())
            .await?;
        summary.payloads += 1;
        summary.samples += samples;
        summary.bytes += value.len() as u64;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summary)
}
