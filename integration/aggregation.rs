//! Exact distributed stream aggregation (issue 10), end to end: one
//! `streamroute run` (gateway, router, egress) routes the same traffic
//! through one route per routing choice, each into its own 3-partition task
//! topic; each partition goes to its own vmagent v1.151.0 running
//! examples/aggregation/stream_aggr.yml, and the three vmagents of a route
//! write to one VictoriaMetrics. A fourth vmagent with the same file,
//! fed the same payloads directly, writes to its own VictoriaMetrics: the
//! ground truth, itself checked against counts and sums computed here.
//!
//! For every output series and window the stored aggregate must equal the
//! truth, with one sample per series and window (VictoriaMetrics runs
//! without deduplication, so an output series written by two vmagents
//! leaves two samples at the window's timestamp). Route defaults must show
//! the conflict: that is how this test can fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

use crate::common::{create_topic, http_post, unique, write_file, Process};
use crate::gateway::snappy;
use crate::vm_modern::{export, victoria_metrics, vmagent, Daemon, Exported};

/// The aggregation interval the example file sets.
const INTERVAL_MS: i64 = 10_000;
/// Windows that get traffic; the output of each is compared.
const WINDOWS: i64 = 3;
/// Where in its window each round's samples are stamped (and sent): well
/// inside, so even without `enable_windows` no sample could change window.
const ROUND_OFFSETS_MS: [i64; 2] = [1_500, 4_500];
const PARTITIONS: usize = 3;

const JOBS: [&str; 4] = ["api", "web", "db", "cache"];
const INSTANCES: [&str; 4] = ["host-0:9100", "host-1:9100", "host-2:9100", "host-3:9100"];
const PATHS: [&str; 3] = ["/", "/login", "/cart"];
const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds_sum";
const BYTES: &str = "http_response_size_bytes_total";

/// The rule families of the example file, by the output names they write.
const FAMILIES: [&str; 3] = [
    "requests_per_job",
    "duration_without_instance",
    "per_job_path",
];

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

/// One routing choice under test: its route keys and what it must give.
struct Case {
    name: &'static str,
    route_keys: String,
    /// The families whose output must equal the truth; the others must not.
    exact: &'static [&'static str],
}

fn cases(aggr_file: &Path) -> Vec<Case> {
    vec![
        Case {
            name: "defaults",
            route_keys: String::new(),
            exact: &[],
        },
        Case {
            name: "task_labels_job",
            route_keys: "task_labels = [\"job\"]\n".into(),
            exact: &FAMILIES,
        },
        Case {
            name: "stream_aggr_file",
            route_keys: format!("stream_aggr_file = \"{}\"\n", aggr_file.display()),
            exact: &FAMILIES,
        },
        Case {
            // All but instance: the duration and per-path groups stay
            // whole, requests per job (over all paths) do not.
            name: "task_labels_without_instance",
            route_keys: "task_labels_without = [\"instance\"]\n".into(),
            exact: &["duration_without_instance", "per_job_path"],
        },
    ]
}

/// Every input series, labels sorted, and its value in round `round`:
/// integers, so sums are exact in any order.
fn series() -> Vec<(Vec<(&'static str, &'static str)>, f64)> {
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

fn value(step: f64, round: i64) -> f64 {
    step * (round + 1) as f64
}

fn round_request(round: i64, ts: i64) -> WriteRequest {
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
fn expected_counts_and_sums(first_window: i64) -> BTreeMap<(String, i64), f64> {
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
                for (j, _) in ROUND_OFFSETS_MS.iter().enumerate() {
                    let round = k * ROUND_OFFSETS_MS.len() as i64 + j as i64;
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
fn cells(exported: &[Exported], windows: &[i64]) -> BTreeMap<(String, i64), Vec<f64>> {
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
struct Verdict {
    truth_cells: usize,
    equal: usize,
    /// Cells holding more than one sample: written by several vmagents.
    conflicts: usize,
    /// Single samples with another value than the truth's.
    wrong: usize,
    missing: usize,
    /// Cells the truth does not have (another label set, e.g. stream_task_id).
    extra: usize,
    example: Option<String>,
}

impl Verdict {
    fn exact(&self) -> bool {
        self.truth_cells > 0 && self.equal == self.truth_cells && self.conflicts + self.extra == 0
    }
}

fn compare(
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

async fn sleep_until(ms: i64) {
    let wait = ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

fn example_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/aggregation/stream_aggr.yml")
}

/// The vmagents and VictoriaMetrics of one case.
struct Shards {
    vm: Daemon,
    agents: Vec<Daemon>,
    topic: String,
}

const OUTPUTS: &str = "{__name__=~\"http_.*:10s_.*\"}";

#[tokio::test(flavor = "multi_thread")]
async fn sharded_vmagents_aggregate_exactly_when_routing_follows_their_rules() {
    let started = std::time::Instant::now();
    let aggr = example_file();
    let text = std::fs::read_to_string(&aggr).expect("example file");
    assert!(
        text.contains("interval: 10s"),
        "the test assumes 10 s windows"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = cases(&aggr);

    // VictoriaMetrics and vmagents: the truth, then three per case.
    let mut truth_vm = victoria_metrics(dir.path(), "vm-truth");
    let mut shards: Vec<Shards> = cases
        .iter()
        .map(|c| Shards {
            vm: victoria_metrics(dir.path(), &format!("vm-{}", c.name)),
            agents: Vec::new(),
            topic: unique(&format!("tasks-{}", c.name)),
        })
        .collect();
    truth_vm.wait_healthy().await;
    let mut truth_agent = vmagent(dir.path(), "vmagent-truth", &aggr, &truth_vm.write_url());
    for (case, s) in cases.iter().zip(shards.iter_mut()) {
        s.vm.wait_healthy().await;
        for p in 0..PARTITIONS {
            let name = format!("vmagent-{}-{p}", case.name);
            s.agents
                .push(vmagent(dir.path(), &name, &aggr, &s.vm.write_url()));
        }
    }
    truth_agent.wait_healthy().await;
    for s in &mut shards {
        for agent in &mut s.agents {
            agent.wait_healthy().await;
        }
    }

    // streamroute: one gateway and router, one route per case, the first
    // case's egress in the same process and one egress process per other case.
    let (ingress, dead_letter) = (unique("ingress"), unique("dlq"));
    create_topic(&ingress, 1).await;
    create_topic(&dead_letter, 1).await;
    for s in &shards {
        create_topic(&s.topic, PARTITIONS as i32).await;
    }
    let mut common = format!(
        "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
         [run]\nroles = [\"gateway\", \"router\", \"egress\"]\nshutdown_grace = \"5s\"\n\
         [router]\ngroup_id = \"{}\"\ncommit_interval = \"200ms\"\n",
        unique("router")
    );
    for (case, s) in cases.iter().zip(&shards) {
        common.push_str(&format!(
            "[[router.routes]]\nname = \"{}\"\ntopic = \"{}\"\ntask_count = 64\n{}",
            case.name, s.topic, case.route_keys
        ));
    }
    let egress = |i: usize| {
        let targets: Vec<String> = shards[i]
            .agents
            .iter()
            .map(|a| format!("\"{}\"", a.write_url()))
            .collect();
        let config = write_file(
            dir.path(),
            &format!("streamroute-{i}.toml"),
            &format!(
                "{common}[egress]\ntopic = \"{}\"\ntarget = [{}]\nstate_dir = \"{}\"\ngroup_id = \"{}\"\n\
                 flush_interval = \"200ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"1s\"\n",
                shards[i].topic,
                targets.join(", "),
                dir.path().join(format!("egress-state-{i}")).display(),
                unique("egress"),
            ),
        );
        vec![(
            "STREAMROUTE_CONFIG_FILE",
            config.to_str().expect("utf-8").to_string(),
        )]
    };
    let mut processes = vec![Process::start(&["run"], "STREAMROUTE_RUN__LISTEN", &egress(0)).await];
    for i in 1..shards.len() {
        processes.push(Process::start(&["egress"], "STREAMROUTE_EGRESS__LISTEN", &egress(i)).await);
    }
    let gateway = format!("http://{}/api/v1/write", processes[0].addr);
    let truth_url = truth_agent.write_url();
    let ready = started.elapsed();

    // Traffic: two rounds in each of WINDOWS windows, the first window
    // starting after every vmagent's start (a vmagent ignores samples
    // before its first aligned window).
    let first_window = (now_ms() / INTERVAL_MS + 1) * INTERVAL_MS;
    let headers = [
        ("content-encoding", "snappy"),
        ("content-type", "application/x-protobuf"),
    ];
    for k in 0..WINDOWS {
        for (j, offset) in ROUND_OFFSETS_MS.iter().enumerate() {
            let ts = first_window + k * INTERVAL_MS + offset;
            sleep_until(ts).await;
            let body = snappy(&round_request(
                k * ROUND_OFFSETS_MS.len() as i64 + j as i64,
                ts,
            ));
            let (to_gateway, to_truth) = tokio::join!(
                http_post(&gateway, &headers, body.clone()),
                http_post(&truth_url, &headers, body)
            );
            let r = to_gateway.expect("post to the gateway");
            assert_eq!(r.status, 204, "gateway: {}", r.body);
            let r = to_truth.expect("post to the truth vmagent");
            assert_eq!(r.status, 204, "truth vmagent: {}", r.body);
        }
    }
    let windows: Vec<i64> = (1..=WINDOWS)
        .map(|k| first_window + k * INTERVAL_MS)
        .collect();

    // The truth: every count and sum as computed here.
    let expected = expected_counts_and_sums(first_window);
    let last = *windows.last().expect("windows");
    let deadline = last + 30_000;
    sleep_until(last + 3_000).await;
    let truth = loop {
        let truth = cells(&export(&truth_vm, OUTPUTS).await, &windows);
        let have = expected.keys().filter(|c| truth.contains_key(c)).count();
        if have == expected.len() || now_ms() > deadline {
            break truth;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (cell, want) in &expected {
        assert_eq!(
            truth.get(cell).map(Vec::as_slice),
            Some(&[*want][..]),
            "truth {cell:?}:\n{}",
            truth_agent.log()
        );
    }

    // Each case against the truth, once its VictoriaMetrics holds a value
    // for every cell of the truth or the deadline passed.
    let mut failures = Vec::new();
    for (case, s) in cases.iter().zip(&shards) {
        let got = loop {
            let got = cells(&export(&s.vm, OUTPUTS).await, &windows);
            if truth.keys().all(|c| got.contains_key(c)) || now_ms() > deadline {
                // One more second for the slowest of the three vmagents.
                tokio::time::sleep(Duration::from_secs(1)).await;
                break cells(&export(&s.vm, OUTPUTS).await, &windows);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        for (fam, v) in compare(&truth, &got) {
            let should = case.exact.contains(&fam);
            println!(
                "{:<30} {fam:<26} exact={:<5} cells={} equal={} conflicts={} wrong={} missing={} extra={}{}",
                case.name,
                v.exact(),
                v.truth_cells,
                v.equal,
                v.conflicts,
                v.wrong,
                v.missing,
                v.extra,
                v.example.as_ref().map(|e| format!("\n    e.g. {e}")).unwrap_or_default()
            );
            // A family that is not exact here is one whose groups the route
            // splits: several vmagents then write the same output series.
            if v.exact() != should || (!should && v.conflicts == 0) {
                failures.push(format!(
                    "{}/{fam}: exact={} (should be {should}), conflicts={}: {v:?}",
                    case.name,
                    v.exact(),
                    v.conflicts
                ));
            }
        }
    }
    println!(
        "ready after {:.1} s, whole test {:.1} s",
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{}\n--- streamroute run log\n{}",
        failures.join("\n"),
        processes[0].log()
    );
}
