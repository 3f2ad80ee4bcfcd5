//! Synthetic remote-write load shaped like what Prometheus sends: series of
//! 10 to 15 labels (a metric name, target labels, Kubernetes labels, and
//! `le`/`quantile` on some), one sample per series per payload.

use crate::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

const METRICS: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "process_cpu_seconds_total",
    "go_memstats_alloc_bytes",
    "node_network_receive_bytes_total",
    "container_memory_working_set_bytes",
    "rpc_latency_seconds",
    "kube_pod_status_ready",
];
const BUCKETS: &[&str] = &["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"];

/// The labels of synthetic series number `id`, sorted by name.
pub fn series_labels(id: u64) -> Vec<Label> {
    let metric = METRICS[(id % METRICS.len() as u64) as usize];
    let pod = id / 40;
    let mut labels = vec![
        ("__name__", metric.to_string()),
        ("app", format!("app-{}", pod % 50)),
        ("cluster", "eu-west-1".to_string()),
        ("container", format!("c-{}", id % 3)),
        (
            "instance",
            format!("10.0.{}.{}:9100", (pod / 250) % 256, pod % 250),
        ),
        ("job", format!("job-{}", pod % 20)),
        ("namespace", format!("ns-{}", pod % 10)),
        ("node", format!("node-{}", pod % 64)),
        (
            "pod",
            format!("pod-{pod}-{:x}", pod.wrapping_mul(2_654_435_761) % 0xfffff),
        ),
        ("series_id", id.to_string()),
    ];
    match metric {
        "http_request_duration_seconds_bucket" => {
            labels.push((
                "le",
                BUCKETS[(id / 8 % BUCKETS.len() as u64) as usize].to_string(),
            ));
            labels.push(("method", "GET".to_string()));
            labels.push(("path", format!("/api/v1/items/{}", id % 7)));
        }
        "rpc_latency_seconds" => labels.push((
            "quantile",
            ["0.5", "0.9", "0.99"][(id % 3) as usize].to_string(),
        )),
        "http_requests_total" => {
            labels.push(("code", ["200", "404", "500"][(id % 3) as usize].to_string()));
            labels.push(("method", "POST".to_string()));
        }
        _ => {}
    }
    labels.sort_by(|a, b| a.0.cmp(b.0));
    labels
        .into_iter()
        .map(|(name, value)| Label {
            name: name.to_string(),
            value,
        })
        .collect()
}

/// A deterministic sample value for series `id` at step `step`.
pub fn sample_value(id: u64, step: u64) -> f64 {
    (id * 1000 + step) as f64
}

/// One payload: series `first..first+count`, one sample each at `timestamp_ms`.
pub fn payload(first: u64, count: u64, step: u64, timestamp_ms: i64) -> WriteRequest {
    let timeseries = (first..first + count)
        .map(|id| TimeSeries {
            labels: series_labels(id),
            samples: vec![Sample {
                value: sample_value(id, step),
                timestamp: timestamp_ms,
            }],
            ..Default::default()
        })
        .collect();
    WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{validate_v1, Limits};

    #[test]
    fn generated_payloads_are_valid_and_realistic() {
        let request = payload(0, 2000, 0, 1_700_000_000_000);
        let stats = validate_v1(&request, &Limits::default()).expect("valid");
        assert_eq!(stats.series, 2000);
        for ts in &request.timeseries {
            assert!(
                (10..=15).contains(&ts.labels.len()),
                "{} labels",
                ts.labels.len()
            );
        }
    }

    #[test]
    fn series_are_distinct() {
        let a = series_labels(1);
        let b = series_labels(2);
        assert_ne!(a, b);
        assert_eq!(series_labels(7), series_labels(7));
    }
}
