//! Routing by the downstream vmagents' stream aggregation file
//! (`stream_aggr_file`) through the real broker: every series of one
//! aggregation group lands on one partition with one task id, for a `by`
//! rule, a `without` rule and a series two rules select; the relabel
//! command reports rules that cannot keep their groups apart.

use std::collections::{BTreeMap, BTreeSet};

use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

use crate::common::{binary, http_get, write_file};
use crate::router::{produce, producer, setup, start_router, wait_for_samples};

const TASKS: u64 = 64;

const AGGR: &str = r#"
- name: requests-by-job
  match: 'http_requests_total'
  interval: 30s
  by: [job]
  outputs: [total, count_samples]
  dedup_interval: 10s
  staleness_interval: 2m
- name: latency-without-instance
  match: '{__name__=~"latency_seconds|latency_max"}'
  interval: 30s
  without: [instance]
  outputs: [sum_samples]
  enable_windows: true
- name: max-by-job-path
  match: latency_max
  interval: 1m
  by: [job, path]
  outputs: [max]
"#;

fn series(labels: &[(&str, &str)], ts: i64) -> TimeSeries {
    let mut labels: Vec<Label> = labels.iter().map(|(n, v)| Label::new(*n, *v)).collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries {
        labels,
        samples: vec![Sample {
            value: 1.0,
            timestamp: ts,
        }],
        ..Default::default()
    }
}

/// Prometheus' label hash of `labels` (sorted), modulo the task count,
/// written out from the spec, not with the crate.
fn hash_task(labels: &[(&str, &str)]) -> u64 {
    let mut bytes = Vec::new();
    for (n, v) in labels {
        bytes.extend_from_slice(n.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&bytes, 0) % TASKS
}

fn get<'a>(s: &'a TimeSeries, name: &str) -> &'a str {
    s.labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// The labels of `s` but `stream_task_id` and `drop`.
fn key_without<'a>(s: &'a TimeSeries, drop: &[&str]) -> Vec<(&'a str, &'a str)> {
    s.labels
        .iter()
        .filter(|l| l.name != "stream_task_id" && !drop.contains(&l.name.as_str()))
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_aggregation_group_lands_whole_on_one_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aggr = write_file(dir.path(), "aggr.yml", AGGR);
    let extra = format!(
        "stream_aggr_file = \"{}\"\ntask_labels_without = [\"instance\"]\n",
        aggr.display()
    );
    let setup = setup(1, 3, TASKS as u32, &extra).await;
    let router = start_router(&setup).await;
    let producer = producer();
    let mut timeseries = Vec::new();
    for job in ["api", "web", "db", "auth", "cache", "queue"] {
        for instance in 0..8 {
            let instance = format!("host-{instance}:9100");
            for path in ["/a", "/b"] {
                let base = [
                    ("job", job),
                    ("instance", instance.as_str()),
                    ("path", path),
                ];
                for name in [
                    "http_requests_total",
                    "latency_seconds",
                    "latency_max",
                    "other",
                ] {
                    let mut labels = vec![("__name__", name)];
                    labels.extend_from_slice(&base);
                    timeseries.push(series(&labels, 1000));
                }
            }
        }
    }
    let sent = timeseries.len();
    produce(
        &producer,
        &setup.ingress,
        &WriteRequest {
            timeseries,
            metadata: vec![],
        },
    )
    .await;
    let got = wait_for_samples(&setup.tasks, sent, &router).await;
    assert_eq!(got.len(), sent, "every series once");

    // Group -> (partitions, task ids) it was found with.
    let mut groups: BTreeMap<String, (BTreeSet<i32>, BTreeSet<String>)> = BTreeMap::new();
    let mut by_partition: BTreeMap<i32, u64> = BTreeMap::new();
    for (partition, s) in &got {
        *by_partition.entry(*partition).or_default() += 1;
        let name = get(s, "__name__");
        let task = get(s, "stream_task_id").to_string();
        let task_n: u64 = task.parse().expect("numeric task id");
        let (rule_groups, want) = match name {
            // by: [job] -> group {__name__, job}; alone in its component.
            "http_requests_total" => {
                let key = vec![("__name__", name), ("job", get(s, "job"))];
                (vec![format!("by-job {key:?}")], hash_task(&key))
            }
            // Both latency rules can select latency_max, so both metrics
            // are routed by what the two share: {__name__, job, path}
            // (by [__name__, job, path] minus [instance]).
            "latency_seconds" | "latency_max" => {
                let key = vec![
                    ("__name__", name),
                    ("job", get(s, "job")),
                    ("path", get(s, "path")),
                ];
                let mut g = vec![format!(
                    "without-instance {:?}",
                    key_without(s, &["instance"])
                )];
                if name == "latency_max" {
                    g.push(format!("by-job-path {key:?}"));
                }
                (g, hash_task(&key))
            }
            // No rule: task_labels_without = ["instance"].
            _ => {
                let key = key_without(s, &["instance"]);
                (vec![], hash_task(&key))
            }
        };
        assert_eq!(task_n, want, "task id of {:?}", s.labels);
        for g in rule_groups {
            let entry = groups.entry(g).or_default();
            entry.0.insert(*partition);
            entry.1.insert(task.clone());
        }
    }
    // 6 by-job groups, 6*2*2 without-instance groups, 6*2 by-job-path groups.
    assert_eq!(groups.len(), 6 + 24 + 12, "{:#?}", groups.keys());
    for (group, (partitions, tasks)) in &groups {
        assert_eq!(
            partitions.len(),
            1,
            "group {group} split over {partitions:?}"
        );
        assert_eq!(tasks.len(), 1, "group {group} has task ids {tasks:?}");
    }

    // The router counts the samples per output partition (published right
    // after the commit, so allow it a moment).
    let want: Vec<String> = by_partition
        .iter()
        .map(|(partition, n)| {
            format!("streamroute_router_partition_samples_total{{route=\"main\",partition=\"{partition}\"}} {n}")
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let metrics = http_get(&format!("http://{}/metrics", router.addr))
            .await
            .expect("metrics")
            .body;
        if want.iter().all(|w| metrics.lines().any(|l| l == w)) {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing some of {want:#?} in\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // The start-up log names the rules routed together and their key.
    assert!(
        router.log().contains("rules #1 (latency-without-instance) (without [instance]), #2 (max-by-job-path) (by [__name__, job, path]) can select the same series, so they are routed together by [__name__, job, path]"),
        "{}",
        router.log()
    );
    assert!(
        metrics.contains("streamroute_router_aggregation_conflict_series_total{route=\"main\"} 0"),
        "{metrics}"
    );
}

/// `streamroute relabel --config FILE --route NAME` with an aggregation
/// file whose rules cannot all be kept together.
#[test]
fn relabel_reports_rules_that_share_no_grouping_label_and_the_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aggr = write_file(
        dir.path(),
        "aggr.yml",
        "- name: by-job\n  match: 'w'\n  interval: 1m\n  by: [job]\n  outputs: [total]\n\
         - name: drop-job-and-name\n  match: '{job=~\".+\"}'\n  interval: 1m\n  without: [job, __name__]\n  outputs: [total]\n\
         - name: z-by-instance\n  match: 'z'\n  interval: 1m\n  by: [instance]\n  outputs: [total]\n",
    );
    let config = write_file(
        dir.path(),
        "c.toml",
        &format!(
            "[[router.routes]]\nname = \"main\"\ntopic = \"t\"\ntask_count = 64\nstream_aggr_file = \"{}\"\n",
            aggr.display()
        ),
    );
    let mut input = String::new();
    for job in ["a", "b", "c"] {
        for i in 0..4 {
            input.push_str(&format!(
                "{{\"__name__\":\"w\",\"job\":\"{job}\",\"instance\":\"{i}\"}}\n"
            ));
        }
    }
    // Not selected by any rule (no job): routed by all labels.
    input.push_str("{\"__name__\":\"v\",\"instance\":\"1\"}\n");
    let mut child = std::process::Command::new(binary())
        .args(["-c", config.to_str().expect("utf-8")])
        .args(["relabel", "--route", "main", "--partitions", "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 13, "one line per input line");
    // Every rule can select some w series: all three are one component with
    // {__name__, job} ∩ {instance} minus {job, __name__} = nothing.
    assert!(
        stderr.contains("warning: rules #0 (by-job) (by [__name__, job]), #1 (drop-job-and-name) (without [__name__, job]), #2 (z-by-instance) (by [__name__, instance]) can select the same series")
            && stderr.contains("share no label"),
        "{stderr}"
    );
    // The 12 w series all go to one task; the spread shows it.
    let w_tasks: BTreeSet<String> = stdout
        .lines()
        .take(12)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["labels"]["stream_task_id"]
                .as_str()
                .expect("task")
                .to_string()
        })
        .collect();
    assert_eq!(w_tasks.len(), 1, "{stdout}");
    assert!(
        stderr.contains("aggregation: 12 series matched rules whose grouping keys share no label"),
        "{stderr}"
    );
    assert!(
        stderr.contains("load: 13 series kept, 0 dropped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("load: series per partition: p0 "),
        "{stderr}"
    );
    assert!(stderr.contains("12 series routed by the rules"), "{stderr}");
}
