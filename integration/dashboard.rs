//! Every panel of `deploy/grafana/streamroute.json` shows data: a
//! VictoriaMetrics of the test's own (v1.151.0, never the shared one)
//! scrapes `/metrics` of a running `streamroute run` every 5 s for a minute
//! while a steady stream flows through the pipeline into that same
//! VictoriaMetrics; then every panel target's query, with Grafana's
//! variables substituted as Grafana would, must return at least one series.
//! Egress runs with the windows on, and the stream makes a gap and sends
//! late samples, so the windows' counters count.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{http_get, write_file};
use crate::operability::{dashboard_job_query, dashboard_targets, start_pipeline};
use crate::vm_modern::{urlencode, victoria_metrics_with, Daemon};

/// The scrape job's name, which the dashboard's `$job` selects.
const JOB: &str = "streamroute";

/// What `$__rate_interval` and `$__interval` become: six scrapes.
const RATE_INTERVAL: &str = "30s";

/// How long VictoriaMetrics scrapes before the queries run.
const SCRAPE_FOR: Duration = Duration::from_secs(60);

/// The stream's write after which it pauses (a gap) and after which it
/// sends one late write.
const GAP_AFTER: usize = 20;
const LATE_AFTER: usize = 40;

/// Counters of the windows that must have counted in this run, not only
/// exist at 0 (samples synthesized stays 0: `on_gap = "stale_marker"`).
const WINDOWS_COUNTED: &[&str] = &[
    "streamroute_egress_gaps_total",
    "streamroute_egress_stale_markers_total",
    "streamroute_egress_late_samples_total",
];

/// Panels that cannot have data in this run, each with the reason. Keep it
/// short: a panel belongs here only when no simple change to the run gives
/// it data.
const NO_DATA: &[(&str, &str)] = &[];

/// `expr` as Grafana sends it: `$job` (multi-value, here the one job) and
/// the interval variables substituted. `$datasource` names no part of a
/// query.
fn substitute(expr: &str) -> String {
    expr.replace("${job}", JOB)
        .replace("$job", JOB)
        .replace("${__rate_interval}", RATE_INTERVAL)
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("${__interval}", RATE_INTERVAL)
        .replace("$__interval", RATE_INTERVAL)
}

/// Every metric selector of `expr` with its label matchers (`{…}` or
/// empty).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let re =
        regex::Regex::new(r"\b((?:streamroute|process)_[a-z0-9_]+)(\{[^}]*\})?").expect("regex");
    re.captures_iter(expr)
        .map(|c| {
            (
                c[1].to_string(),
                c.get(2).map_or("", |m| m.as_str()).to_string(),
            )
        })
        .collect()
}

/// The label sets of the series `query` returns at the present moment (or
/// why not).
async fn instant_query(vm: &Daemon, query: &str) -> Result<Vec<BTreeSet<String>>, String> {
    let url = format!("{}/api/v1/query?query={}", vm.url(), urlencode(query));
    let r = http_get(&url).await?;
    if r.status != 200 {
        return Err(format!("HTTP {}: {}", r.status, r.body));
    }
    let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
    let result = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result in {}", r.body))?;
    Ok(result
        .iter()
        .map(|series| {
            series["metric"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        })
        .collect())
}

/// The labels a legend shows (`{{instance}} {{role}}`).
fn legend_labels(legend: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}").expect("regex");
    re.captures_iter(legend).map(|c| c[1].to_string()).collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn a_legend_names_its_labels() {
    assert_eq!(
        legend_labels("{{route}} p{{ partition }}"),
        ["route", "partition"]
    );
    assert!(legend_labels("writes/s").is_empty());
}

#[test]
fn grafana_variables_are_substituted() {
    assert_eq!(
        substitute(r#"rate(x{job=~"$job"}[$__rate_interval]) + y{job=~"${job}"}"#),
        r#"rate(x{job=~"streamroute"}[30s]) + y{job=~"streamroute"}"#
    );
}

#[test]
fn every_panel_query_selects_by_the_job_variable() {
    let unfiltered: Vec<String> = dashboard_targets()
        .iter()
        .flat_map(|t| {
            selectors(&t.expr)
                .into_iter()
                .filter(|(_, matchers)| !matchers.contains(r#"job=~"$job""#))
                .map(move |(name, _)| format!("{}: {name}", t.panel))
        })
        .collect();
    assert!(unfiltered.is_empty(), "no job=~\"$job\": {unfiltered:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_query_returns_data_after_a_minute_of_scraping_a_running_pipeline() {
    let targets = dashboard_targets();
    assert!(targets.len() >= 34, "{} panel targets", targets.len());
    for (title, why) in NO_DATA {
        assert!(
            targets.iter().any(|t| t.panel == *title),
            "NO_DATA names {title:?} ({why}), which is not a panel"
        );
    }

    // VictoriaMetrics first (egress writes to it), scraping nothing until
    // the pipeline's address is known; it re-reads the file every second.
    let dir = tempfile::tempdir().expect("tempdir");
    let scrape = dir.path().join("scrape.yml");
    write_file(dir.path(), "scrape.yml", "scrape_configs: []\n");
    let mut vm = victoria_metrics_with(
        dir.path(),
        "vm-dashboard",
        &[
            format!("-promscrape.config={}", scrape.display()),
            "-promscrape.configCheckInterval=1s".into(),
        ],
    );
    vm.wait_healthy().await;

    let pipeline = start_pipeline(&vm.write_url()).await;
    write_file(
        dir.path(),
        "scrape.yml",
        &format!(
            "scrape_configs:\n  - job_name: {JOB}\n    scrape_interval: 5s\n    \
             static_configs:\n      - targets: [\"{}\"]\n",
            pipeline.run.addr
        ),
    );

    // A steady stream: 50 series every 500 ms, stamped now. What the
    // refusal and dead-letter panels count happens once. For the windows'
    // panels, the stream pauses once for 5 s (a gap in every series, more
    // than gap_factor 2 x the 500 ms interval, which the windows close with
    // a staleness marker), and one write is stamped 30 s back (late
    // samples, dropped).
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (stop, pipeline) = (stop.clone(), &pipeline);
        let name = format!("sr_it_dash_{}", uuid::Uuid::new_v4().simple());
        async move {
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                pipeline.write(&name, 0, now_ms()).await;
                sent += 1;
                match sent {
                    GAP_AFTER => tokio::time::sleep(Duration::from_secs(5)).await,
                    LATE_AFTER => pipeline.write(&name, 0, now_ms() - 30_000).await,
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            sent
        }
    };
    let wait = async {
        pipeline.refuse_and_dead_letter().await;
        tokio::time::sleep(SCRAPE_FOR).await;
        stop.store(true, Ordering::Relaxed);
    };
    let (sent, ()) = tokio::join!(stream, wait);
    assert!(sent > 90, "{sent} writes");

    // Each query has series, and each series the labels its legend shows.
    let mut problems = Vec::new();
    for target in &targets {
        let (title, query) = (&target.panel, substitute(&target.expr));
        let expected_empty = NO_DATA.iter().any(|(t, _)| t == title);
        match instant_query(&vm, &query).await {
            Err(e) => problems.push(format!("{title}: {query}: {e}")),
            Ok(series) if series.is_empty() => {
                if !expected_empty {
                    problems.push(format!("{title}: {query} returned no series"));
                }
            }
            Ok(_) if expected_empty => problems.push(format!(
                "{title}: in NO_DATA but {query} returned data; take it out of the list"
            )),
            Ok(series) => {
                for label in legend_labels(&target.legend) {
                    if let Some(s) = series.iter().find(|s| !s.contains(&label)) {
                        problems.push(format!(
                            "{title}: legend {:?} shows {label}, which {query} leaves out ({s:?})",
                            target.legend
                        ));
                    }
                }
            }
        }
    }
    for counter in WINDOWS_COUNTED {
        let query = format!("sum({counter}{{job=\"{JOB}\"}}) > 0");
        match instant_query(&vm, &query).await {
            Ok(series) if series.len() == 1 => {}
            other => problems.push(format!("{query}: {other:?} (the windows counted nothing)")),
        }
    }
    // The `job` variable's values, as Grafana asks for label_values(m, job).
    let job_query = dashboard_job_query();
    let metric = job_query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(", job)"))
        .expect("label_values(<metric>, job)");
    let url = format!(
        "{}/api/v1/label/job/values?match%5B%5D={}",
        vm.url(),
        urlencode(metric)
    );
    let jobs = http_get(&url).await.expect("label values").body;
    if !jobs.contains(&format!("\"{JOB}\"")) {
        problems.push(format!("variable job: {job_query} gave {jobs}"));
    }
    assert!(
        problems.is_empty(),
        "{} problems in {} dashboard queries:\n{}\n\nvictoria-metrics:\n{}\nstreamroute:\n{}",
        problems.len(),
        targets.len(),
        problems.join("\n"),
        vm.log(),
        pipeline.run.log()
    );
}
