//! The dashboard and the alerts name only metrics that exist: every metric
//! name in `deploy/grafana/streamroute.json` and
//! `deploy/alerts/streamroute.rules.yml` must appear in `/metrics` of a
//! running `streamroute run` (gateway, router and egress on the real
//! broker, egress into the real vmagent).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;

use crate::common::{create_topic, http_get, http_post, unique, write_file, Process};
use crate::egress::{recent_ms, request, vmagent};

/// Metric names (`streamroute_*`, `process_*`) in a text of queries.
fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\b(?:streamroute|process)_[a-z0-9_]+").expect("regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// The dashboard, parsed.
fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/streamroute.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json")
}

/// One query of a dashboard panel.
pub struct Target {
    /// The panel's title.
    pub panel: String,
    pub expr: String,
    /// `legendFormat` (empty when absent).
    pub legend: String,
}

/// Every panel target of the dashboard.
pub fn dashboard_targets() -> Vec<Target> {
    let dashboard = dashboard();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title");
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(Target {
                panel: title.to_string(),
                expr: target["expr"].as_str().expect("expr").to_string(),
                legend: target["legendFormat"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    out
}

/// The query of the dashboard's `job` variable.
pub fn dashboard_job_query() -> String {
    dashboard()["templating"]["list"][1]["query"]
        .as_str()
        .expect("job variable")
        .to_string()
}

/// Every `expr` of the dashboard's panels and its `job` variable's query.
fn dashboard_queries() -> Vec<String> {
    let mut out: Vec<String> = dashboard_targets().into_iter().map(|t| t.expr).collect();
    out.push(dashboard_job_query());
    out
}

/// Every `expr` of the alerting rules.
fn alert_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/alerts/streamroute.rules.yml"
    );
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("rules")).expect("yaml");
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            out.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// Names that `/metrics` has a sample line for.
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_name_extraction_sees_what_a_query_names() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(streamroute_router_distribution_latency_seconds_bucket[5m]))) and process_open_fds{job=~"$job"}"#,
    );
    let want: BTreeSet<String> = [
        "streamroute_router_distribution_latency_seconds_bucket",
        "process_open_fds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_the_alerts_name_is_in_metrics_of_a_running_pipeline() {
    let queries: Vec<String> = dashboard_queries()
        .into_iter()
        .chain(alert_queries())
        .collect();
    let wanted: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(wanted.len() > 25, "{wanted:?}");

    let pipeline = start_pipeline(&vmagent()).await;
    let name = format!("sr_it_ops_{}", uuid::Uuid::new_v4().simple());
    // Two seconds apart, so the watermark (newest minus the 1 s delay)
    // lets the earlier ones through the windows.
    for k in 0..3 {
        pipeline
            .write(&name, k * 50, recent_ms() + k as i64 * 2_000)
            .await;
    }
    pipeline.refuse_and_dead_letter().await;
    let run = &pipeline.run;

    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let metrics = http_get(&format!("http://{}/metrics", run.addr))
            .await
            .expect("metrics")
            .body;
        let have = exported(&metrics);
        let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "named by the dashboard or the alerts but not in /metrics: {missing:?}\n{}",
        run.log()
    );
}

/// A `streamroute run` (gateway, router, egress) on topics of its own:
/// one route of 8 tasks onto 2 partitions, a dead-letter topic, egress
/// into `target` with the windows on (1 s delay, 500 ms default interval,
/// a staleness marker at each gap), librdkafka statistics every second.
pub struct Pipeline {
    pub run: Process,
    pub ingress: String,
    _dir: tempfile::TempDir,
}

pub async fn start_pipeline(target: &str) -> Pipeline {
    let (ingress, tasks, dead_letter, group) = (
        unique("ops-in"),
        unique("ops-tasks"),
        unique("ops-dlq"),
        unique("ops-router"),
    );
    create_topic(&ingress, 1).await;
    create_topic(&tasks, 2).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "run.toml",
        &format!(
            "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [kafka.properties]\n\"statistics.interval.ms\" = \"1000\"\n\
             [run]\nroles = [\"gateway\", \"router\", \"egress\"]\n\
             [router]\ngroup_id = \"{group}\"\ncommit_interval = \"200ms\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 8\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"{target}\"\nstate_dir = \"{}\"\nflush_interval = \"200ms\"\n\
             [egress.windows]\ndelay = \"1s\"\ndefault_interval = \"500ms\"\non_gap = \"stale_marker\"\n",
            dir.path().join("state").display()
        ),
    );
    let run = Process::start(
        &["run"],
        "STREAMROUTE_RUN__LISTEN",
        &[(
            "STREAMROUTE_CONFIG_FILE",
            config.to_str().expect("utf-8").to_string(),
        )],
    )
    .await;
    Pipeline {
        run,
        ingress,
        _dir: dir,
    }
}

impl Pipeline {
    /// Writes 50 series of metric `name` (ids `first..first+50`), one
    /// sample each at `ts`, through the gateway; 204 or the test fails.
    pub async fn write(&self, name: &str, first: usize, ts: i64) {
        let write = format!("http://{}/api/v1/write", self.run.addr);
        let body = crate::gateway::snappy(&request(name, first, 50, ts));
        let response = http_post(&write, &[("content-encoding", "snappy")], body)
            .await
            .expect("post");
        assert_eq!(response.status, 204, "{}", response.body);
    }

    /// A payload the gateway refuses (400), and a record only the router
    /// sees, which it dead-letters.
    pub async fn refuse_and_dead_letter(&self) {
        let write = format!("http://{}/api/v1/write", self.run.addr);
        let refused = http_post(
            &write,
            &[("content-encoding", "snappy")],
            b"not snappy".to_vec(),
        )
        .await
        .expect("post");
        assert_eq!(refused.status, 400, "{}", refused.body);
        crate::router::producer()
            .send(
                FutureRecord::<[u8], [u8]>::to(&self.ingress).payload(b"not a write request"),
                Duration::from_secs(10),
            )
            .await
            .expect("produce a bad record");
    }
}
