//! The traffic of the aggregation tests and how their output is judged:
//! the generated series (integer counters, so sums are exact in any order),
//! the counts and sums the truth must hold, and the comparison of a case's
//! stored cells (output series, window end) with the truth's.

use std::collections::BTreeMap;

use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

use super::{INTERVAL_MS, WINDOWS};
use crate::vm_modern::Exported;

const JOBS: [&str; 4] = ["api", "web", "db", "cache"];
const INSTANCES: [&str; 4] = ["host-0:9100", "host-1:9100", "host-2:9100", "host-3:9100"];
const PATHS: [&str; 3] = ["/", "/login", "/cart"];
const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds_sum";
const BYTES: &str = "http_response_size_bytes_total";

/// The rule families of the example file, by the output names they write.
pub const FAMILIES: [&str; 3] = [
    "requests_per_job",
    "duration_without_instance",
    "per_job_path",
];

/// The rule family an output series belongs to, by its name.
fn family(output_name: &str) -> &'static str {
    if output_name.contains(":10s_by_job_path_") {
        "per_job_path"
    } else if output_name.contains(":10s_without_instance_stream_task_id_") {
        "duration_without_instance"
    } else if output_name.contains(":10s_by_job_") {
        "requests_per_job"
    } else {
        panic!("output {output_name} belongs to no rule of the example file")
    }
}

/// Every input series, labels sorted, and its value in round `round`:
/// integers, so sums are exact in any order.
pub fn series() -> Vec<(Vec<(&'static str, &'static str)>, f64)> {
    let mut out = Vec::new();
    for (m, metric) in [REQUESTS, DURATION, BYTES].into_iter().enumerate() {
        for job in JOBS {
            for instance in INSTANCES {
                for path in PATHS {
                    let step = (out.len() % 17 + 1) as f64 * (m as f64 * 10.0 + 1.0);
                    out.push((
                        vec![
                            ("__name__", metric),
                            ("instance", instance),
                            ("job", job),
                            ("path", path),
                        ],
                        step,
                    ));
                }
            }
        }
    }
    out
}

pub fn value(step: f64, round: i64) -> f64 {
    step * (round + 1) as f64
}

pub fn round_request(round: i64, ts: i64) -> WriteRequest {
    WriteRequest {
        timeseries: series()
            .into_iter()
            .map(|(labels, step)| TimeSeries {
                labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
                samples: vec![Sample {
                    value: value(step, round),
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

/// The count_samples and sum_samples cells the truth must hold, computed
/// from the generated series and the example file's grouping.
pub fn expected_counts_and_sums(
    first_window: i64,
    offsets: &[i64],
) -> BTreeMap<(String, i64), f64> {
    let mut out = BTreeMap::new();
    for k in 0..WINDOWS {
        let ts = first_window + (k + 1) * INTERVAL_MS;
        for (labels, step) in series() {
            let get = |name: &str| labels.iter().find(|(k, _)| *k == name).expect("label").1;
            let (metric, job, path) = (get("__name__"), get("job"), get("path"));
            let mut groups = Vec::new();
            match metric {
                REQUESTS => groups.push((format!("{metric}:10s_by_job"), vec![("job", job)])),
                DURATION => groups.push((
                    format!("{metric}:10s_without_instance_stream_task_id"),
                    vec![("job", job), ("path", path)],
                )),
                _ => {}
            }
            if metric == BYTES || (metric == DURATION && path != "/") {
                groups.push((
                    format!("{metric}:10s_by_job_path"),
                    vec![("job", job), ("path", path)],
                ));
            }
            for (prefix, keep) in groups {
                for j in 0..offsets.len() {
                    let round = k * offsets.len() as i64 + j as i64;
                    for (output, add) in
                        [("count_samples", 1.0), ("sum_samples", value(step, round))]
                    {
                        let mut cell: BTreeMap<String, String> = keep
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        cell.insert("__name__".into(), format!("{prefix}_{output}"));
                        *out.entry((key(&cell), ts)).or_insert(0.0) += add;
                    }
                }
            }
        }
    }
    out
}

fn key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Output cells of the compared windows: (series, window end) to every
/// stored value.
pub fn cells(exported: &[Exported], windows: &[i64]) -> BTreeMap<(String, i64), Vec<f64>> {
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for series in exported {
        for &(ts, v) in &series.samples {
            if windows.contains(&ts) {
                out.entry((key(&series.labels), ts)).or_default().push(v);
            }
        }
    }
    out
}

/// How one family's stored output compares with the truth's.
#[derive(Debug, Default)]
pub struct Verdict {
    pub truth_cells: usize,
    pub equal: usize,
    /// Cells holding more than one sample: written by several vmagents.
    pub conflicts: usize,
    /// Single samples with another value than the truth's.
    pub wrong: usize,
    pub missing: usize,
    /// Cells the truth does not have (another label set, e.g. stream_task_id).
    pub extra: usize,
    pub example: Option<String>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exact={:<5} cells={} equal={} conflicts={} wrong={} missing={} extra={}",
            self.exact(),
            self.truth_cells,
            self.equal,
            self.conflicts,
            self.wrong,
            self.missing,
            self.extra
        )?;
        match &self.example {
            Some(e) => write!(f, "\n    e.g. {e}"),
            None => Ok(()),
        }
    }
}

impl Verdict {
    pub fn exact(&self) -> bool {
        self.truth_cells > 0 && self.equal == self.truth_cells && self.conflicts + self.extra == 0
    }
}

pub fn compare(
    truth: &BTreeMap<(String, i64), Vec<f64>>,
    got: &BTreeMap<(String, i64), Vec<f64>>,
) -> BTreeMap<&'static str, Verdict> {
    let fam = |cell: &(String, i64)| {
        let name = cell
            .0
            .split(',')
            .find_map(|kv| kv.strip_prefix("__name__="));
        family(name.expect("__name__").trim_matches('"'))
    };
    let mut out: BTreeMap<&'static str, Verdict> =
        FAMILIES.iter().map(|f| (*f, Verdict::default())).collect();
    for (cell, want) in truth {
        let v = out.get_mut(fam(cell)).expect("family");
        v.truth_cells += 1;
        match got.get(cell).map(Vec::as_slice) {
            None => v.missing += 1,
            Some([x]) if *x == want[0] => v.equal += 1,
            Some([x]) => {
                v.wrong += 1;
                v.example.get_or_insert_with(|| {
                    format!("{} @{}: stored {x}, truth {}", cell.0, cell.1, want[0])
                });
            }
            Some(xs) => {
                v.conflicts += 1;
                v.example.get_or_insert_with(|| {
                    format!("{} @{}: stored {xs:?}, truth {}", cell.0, cell.1, want[0])
                });
            }
        }
    }
    for (cell, xs) in got {
        if !truth.contains_key(cell) {
            let v = out.get_mut(fam(cell)).expect("family");
            v.extra += 1;
            if xs.len() > 1 {
                v.conflicts += 1;
            }
            v.example
                .get_or_insert_with(|| format!("{} @{}: {xs:?}, not in the truth", cell.0, cell.1));
        }
    }
    out
}
