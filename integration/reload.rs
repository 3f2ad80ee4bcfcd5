//! Hot reload against the real broker and VictoriaMetrics: rules changed
//! under a flowing stream (SIGHUP), a config refused as a whole, a key that
//! needs a restart, gateway auth and an egress target changed by
//! `POST /-/reload`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::Message as _;
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use streamroute::remote_write::{compress, Encoding};

use crate::common::{create_topic, http_get, http_post, read_topic, unique, write_file, Process};

/// A route that stamps `rule="<tag>"` on every series.
fn run_config(
    ingress: &str,
    tasks: &str,
    dead_letter: &str,
    group: &str,
    route_extra: &str,
    tag: &str,
) -> String {
    format!(
        "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
         [run]\nroles = [\"gateway\", \"router\"]\n\
         [router]\ngroup_id = \"{group}\"\n\
         [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 4\n{route_extra}\
         relabel_configs = [{{ action = \"replace\", target_label = \"rule\", replacement = \"{tag}\" }}]\n"
    )
}

fn body(name: &str, first: usize, count: usize, ts: i64) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: (first..first + count)
            .map(|i| TimeSeries {
                labels: vec![
                    Label::new("__name__", name),
                    Label::new("id", i.to_string()),
                ],
                samples: vec![Sample {
                    value: i as f64,
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    compress(&request.encode_to_vec(), Encoding::Snappy).expect("snappy")
}

async fn metric(addr: std::net::SocketAddr, line_start: &str) -> Option<f64> {
    let metrics = http_get(&format!("http://{addr}/metrics")).await.ok()?.body;
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sends requests `from..to` of `SERIES` series each; every one must get 204.
async fn send(url: &str, name: &str, from: usize, to: usize, ts: i64) {
    for k in from..to {
        let r = http_post(
            url,
            &[("content-encoding", "snappy")],
            body(name, k * SERIES, SERIES, ts),
        )
        .await
        .expect("post");
        assert_eq!(r.status, 204, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SERIES: usize = 10;

/// `streamroute run` with the config file at `path` (the file it reloads).
async fn start_run(path: &std::path::Path) -> Process {
    Process::start(
        &["run"],
        "STREAMROUTE_RUN__LISTEN",
        &[(
            "STREAMROUTE_CONFIG_FILE",
            path.to_str().expect("utf-8").to_string(),
        )],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_reloaded_under_a_flowing_stream_switch_between_transactions() {
    let (ingress, tasks, dead_letter) = (unique("ingress"), unique("tasks"), unique("dlq"));
    create_topic(&ingress, 2).await;
    create_topic(&tasks, 2).await;
    create_topic(&dead_letter, 1).await;
    let group = unique("group");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(
        dir.path(),
        "run.toml",
        &run_config(&ingress, &tasks, &dead_letter, &group, "", "old"),
    );
    let mut run = start_run(&path).await;
    let (addr, url) = (run.addr, format!("http://{}/api/v1/write", run.addr));
    let name = format!("sr_it_reload_{}", uuid::Uuid::new_v4().simple());
    let ts = crate::egress::recent_ms();

    // Old rules while the stream flows, then SIGHUP with new rules, and the
    // stream keeps flowing through the reload.
    send(&url, &name, 0, 30, ts).await;
    write_file(
        dir.path(),
        "run.toml",
        &run_config(&ingress, &tasks, &dead_letter, &group, "", "new"),
    );
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &run.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let sender = {
        let (url, name) = (url.clone(), name.clone());
        tokio::spawn(async move { send(&url, &name, 30, 60, ts).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(addr, "streamroute_config_reloads_total{result=\"success\"}").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sender.await.expect("sender");

    // A rule that does not compile is refused as a whole; the new rules stay.
    write_file(
        dir.path(),
        "run.toml",
        &run_config(&ingress, &tasks, &dead_letter, &group, "", "new").replace(
            "relabel_configs = [",
            "relabel_configs = [{ action = \"keep\", source_labels = [\"id\"], regex = \"(\" }, ",
        ),
    );
    let refused = http_post(&format!("http://{addr}/-/reload"), &[], vec![])
        .await
        .expect("reload");
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(
        refused.body.contains("router.routes[0].relabel_configs"),
        "{}",
        refused.body
    );
    assert_eq!(
        metric(addr, "streamroute_config_last_reload_successful").await,
        Some(0.0)
    );
    // A key that needs a restart is reported and not applied.
    write_file(
        dir.path(),
        "run.toml",
        &run_config(&ingress, &tasks, &dead_letter, &group, "", "new")
            .replace("task_count = 4", "task_count = 8"),
    );
    let restart = http_post(&format!("http://{addr}/-/reload"), &[], vec![])
        .await
        .expect("reload");
    assert_eq!(restart.status, 200, "{}", restart.body);
    assert!(
        restart
            .body
            .contains("need a restart (not applied): router.routes[0].task_count"),
        "{}",
        restart.body
    );
    assert_eq!(
        metric(addr, "streamroute_config_last_reload_successful").await,
        Some(1.0)
    );

    // Well after the reload: every series gets the new rules.
    tokio::time::sleep(Duration::from_secs(2)).await;
    send(&url, &name, 60, 70, ts).await;
    let status = run.terminate();
    assert!(status.success(), "{}", run.log());

    // Every sample exactly once; per record one rule; per partition old
    // records, then new ones, never interleaved; the last ones new.
    let mut seen: BTreeMap<usize, String> = BTreeMap::new();
    let mut per_partition: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for record in read_topic(&tasks) {
        let request = WriteRequest::decode(record.payload().expect("value")).expect("protobuf");
        let mut rules: Vec<String> = Vec::new();
        for series in &request.timeseries {
            let label = |n: &str| {
                series
                    .labels
                    .iter()
                    .find(|l| l.name == n)
                    .map(|l| l.value.clone())
            };
            if label("__name__").as_deref() != Some(name.as_str()) {
                continue;
            }
            let id: usize = label("id").expect("id").parse().expect("number");
            let rule = label("rule").expect("every series has the rule label");
            assert!(seen.insert(id, rule.clone()).is_none(), "series {id} twice");
            rules.push(rule);
        }
        rules.dedup();
        assert!(rules.len() <= 1, "one record mixes rules: {rules:?}");
        per_partition
            .entry(record.partition())
            .or_default()
            .extend(rules);
    }
    assert_eq!(
        seen.len(),
        70 * SERIES,
        "every acknowledged series in the task topic"
    );
    for (partition, mut rules) in per_partition {
        rules.dedup();
        assert!(
            rules == ["old", "new"] || rules == ["new"] || rules == ["old"],
            "partition {partition} interleaves old and new rules: {rules:?}"
        );
    }
    assert!(seen.values().any(|r| r == "old"), "the old rules ran");
    assert!(
        (60 * SERIES..70 * SERIES).all(|id| seen[&id] == "new"),
        "series sent 2 s after the reload still had the old rules"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_auth_and_an_egress_target_change_on_reload() {
    let (ingress, tasks, dead_letter) = (unique("ingress"), unique("tasks"), unique("dlq"));
    create_topic(&ingress, 1).await;
    create_topic(&tasks, 1).await;
    create_topic(&dead_letter, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let group = unique("group");
    let vm = std::env::var("VM_URL").unwrap_or_else(|_| "http://127.0.0.1:8428".into());
    // Nothing listens there: egress retries until the reload points it at VictoriaMetrics.
    let nowhere = format!(
        "http://127.0.0.1:{}/api/v1/write",
        crate::common::free_port()
    );
    let config = |target: &str, auth: &str| {
        format!(
            "[topics]\ningress = \"{ingress}\"\ndead_letter = \"{dead_letter}\"\n\
             [run]\nroles = [\"gateway\", \"router\", \"egress\"]\n\
             [gateway]\n{auth}\n\
             [router]\ngroup_id = \"{group}\"\n\
             [[router.routes]]\nname = \"main\"\ntopic = \"{tasks}\"\ntask_count = 2\n\
             [egress]\ntopic = \"{tasks}\"\ntarget = \"{target}\"\nstate_dir = \"{state}\"\n\
             retry_initial_backoff = \"100ms\"\nretry_max_backoff = \"500ms\"\n",
            group = group,
            state = dir.path().join("state").display(),
        )
    };
    let path = write_file(dir.path(), "run.toml", &config(&nowhere, ""));
    let mut run = start_run(&path).await;
    let (addr, url) = (run.addr, format!("http://{}/api/v1/write", run.addr));
    let name = format!("sr_it_reload_target_{}", uuid::Uuid::new_v4().simple());
    let ts = crate::egress::recent_ms();
    send(&url, &name, 0, 5, ts).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        crate::egress::vm_samples(&name).await.is_empty(),
        "nothing can be delivered yet"
    );

    let token = "reload-token-0123456789";
    write_file(
        dir.path(),
        "run.toml",
        &config(
            &format!("{vm}/api/v1/write"),
            &format!("auth = [{{ type = \"bearer\", token = \"{token}\" }}]"),
        ),
    );
    let reloaded = http_post(&format!("http://{addr}/-/reload"), &[], vec![])
        .await
        .expect("reload");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert!(
        reloaded.body.contains("egress.target") && reloaded.body.contains("gateway.auth"),
        "{}",
        reloaded.body
    );
    // The gateway asks for the new token, also on /-/reload itself.
    let refused = http_post(
        &url,
        &[("content-encoding", "snappy")],
        body(&name, 50, SERIES, ts),
    )
    .await
    .expect("post");
    assert_eq!(refused.status, 401, "{}", refused.body);
    let again = http_post(&format!("http://{addr}/-/reload"), &[], vec![])
        .await
        .expect("reload");
    assert_eq!(again.status, 401, "{}", again.body);
    let bearer = format!("Bearer {token}");
    let accepted = http_post(
        &url,
        &[("content-encoding", "snappy"), ("authorization", &bearer)],
        body(&name, 50, SERIES, ts),
    )
    .await
    .expect("post");
    assert_eq!(accepted.status, 204, "{}", accepted.body);

    // Egress, retrying against nowhere, sends to VictoriaMetrics from the next attempt on.
    let want: std::collections::BTreeSet<(String, i64)> = (0..5 * SERIES)
        .chain(50..50 + SERIES)
        .map(|i| (i.to_string(), ts))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: std::collections::BTreeSet<(String, i64)> =
            crate::egress::vm_samples(&name).await.into_keys().collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} samples after the target reload:\n{}",
            got.len(),
            want.len(),
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = run.terminate();
    assert!(status.success(), "{}", run.log());
}
