//! `streamroute relabel`: the user-facing rule debugger, through the binary.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{binary, write_file};
use crate::spec::{paper_jump, prometheus_hash, task_of};

fn relabel(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .arg("relabel")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn one_json_line_out_per_line_in_with_null_for_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = write_file(
        dir.path(),
        "rules.yml",
        "- source_labels: [__name__]\n  regex: 'go_.*'\n  action: drop\n\
         - source_labels: [instance]\n  regex: '(.+):\\d+'\n  target_label: host\n\
         - action: labeldrop\n  regex: instance\n",
    );
    let input = "{\"__name__\":\"up\",\"instance\":\"a:9100\"}\n{\"__name__\":\"go_gc\"}\n{\"__name__\":\"x\"}\n";
    let (ok, out, err) = relabel(&["--rules", rules.to_str().expect("utf-8")], input);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "{\"__name__\":\"up\",\"host\":\"a\"}\nnull\n{\"__name__\":\"x\"}\n"
    );
}

#[test]
fn task_count_and_partitions_wrap_the_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = write_file(dir.path(), "rules.yml", "[]\n");
    let (ok, out, err) = relabel(
        &[
            "--rules",
            rules.to_str().expect("utf-8"),
            "--task-count",
            "8",
            "--task-labels",
            "job",
            "--task-label-name",
            "shard",
            "--partitions",
            "4",
        ],
        "{\"__name__\":\"a\",\"job\":\"api\"}\n{\"__name__\":\"b\",\"job\":\"api\"}\n",
    );
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2);
    // Same job, same task: the task comes from the job label alone.
    assert_eq!(lines[0]["labels"]["shard"], lines[1]["labels"]["shard"]);
    assert_eq!(lines[0]["partition"], lines[1]["partition"]);
    let shard: u32 = lines[0]["labels"]["shard"]
        .as_str()
        .expect("string")
        .parse()
        .expect("decimal");
    // Independently: the hash of {job="api"} alone, and its jump partition.
    let want = (prometheus_hash([("job", "api")]) % 8) as u32;
    assert_eq!(shard, want, "task of job=api");
    assert_eq!(
        lines[0]["partition"].as_u64(),
        Some(u64::from(paper_jump(u64::from(want), 4)))
    );
}

#[test]
fn every_task_id_and_partition_matches_an_independent_computation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = write_file(
        dir.path(),
        "rules.yml",
        "- target_label: env\n  replacement: prod\n",
    );
    let input: String = (0..200)
        .map(|i| {
            format!(
                "{{\"__name__\":\"m{}\",\"pod\":\"p-{i}\",\"stream_task_id\":\"9\"}}\n",
                i % 7
            )
        })
        .collect();
    let rules = rules.to_str().expect("utf-8");
    let run = |extra: &[&str]| {
        let mut args = vec!["--rules", rules, "--task-count", "32", "--partitions", "5"];
        args.extend_from_slice(extra);
        let (ok, out, err) = relabel(&args, &input);
        assert!(ok, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .collect::<Vec<_>>()
    };
    let by_task = run(&[]);
    let by_pod = run(&["--partition-labels", "pod"]);
    assert_eq!(by_task.len(), 200);
    let mut partitions = std::collections::BTreeSet::new();
    for (i, (line, pod_line)) in by_task.iter().zip(&by_pod).enumerate() {
        let (name, pod) = (format!("m{}", i % 7), format!("p-{i}"));
        // After the rule: env added, the incoming task label replaced.
        let labels = [
            ("__name__", name.as_str()),
            ("env", "prod"),
            ("pod", pod.as_str()),
        ];
        let task = task_of(labels, "stream_task_id", 32);
        assert_eq!(
            line["labels"]["stream_task_id"].as_str(),
            Some(task.to_string().as_str()),
            "{line}"
        );
        assert_eq!(line["labels"]["env"].as_str(), Some("prod"));
        let partition = paper_jump(u64::from(task), 5);
        assert_eq!(
            line["partition"].as_u64(),
            Some(u64::from(partition)),
            "{line}"
        );
        partitions.insert(partition);
        let by_label = paper_jump(prometheus_hash([("pod", pod.as_str())]), 5);
        assert_eq!(
            pod_line["partition"].as_u64(),
            Some(u64::from(by_label)),
            "{pod_line}"
        );
        assert_eq!(pod_line["labels"], line["labels"]);
    }
    assert_eq!(partitions.len(), 5, "tasks spread over every partition");
}

#[test]
fn an_invalid_rule_names_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = write_file(dir.path(), "rules.yml", "- action: keep\n  source_labels: [a]\n- action: replace\n  regex: '('\n  target_label: x\n");
    let (ok, _, err) = relabel(&["--rules", rules.to_str().expect("utf-8")], "");
    assert!(!ok);
    assert!(err.contains("relabel rule 1"), "{err}");
}

#[test]
fn a_configured_route_relabels_and_stamps_like_the_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "c.toml",
        "[[router.routes]]\nname = \"r\"\ntopic = \"t\"\ntask_count = 4\n\
         [[router.routes.relabel_configs]]\nsource_labels = [\"__name__\"]\nregex = \"x\"\naction = \"drop\"\n",
    );
    let rules = write_file(
        dir.path(),
        "rules.yml",
        "- source_labels: [__name__]\n  regex: x\n  action: drop\n",
    );
    let input = "{\"__name__\":\"x\"}\n{\"__name__\":\"y\",\"a\":\"b\"}\n";
    let (ok, by_route, err) = relabel(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--route",
            "r",
            "--partitions",
            "3",
        ],
        input,
    );
    assert!(ok, "{err}");
    let (ok, by_rules, err) = relabel(
        &[
            "--rules",
            rules.to_str().expect("utf-8"),
            "--task-count",
            "4",
            "--partitions",
            "3",
        ],
        input,
    );
    assert!(ok, "{err}");
    assert_eq!(by_route, by_rules);
    let task = task_of([("__name__", "y"), ("a", "b")], "stream_task_id", 4);
    let partition = paper_jump(u64::from(task), 3);
    assert_eq!(
        by_route,
        format!("null\n{{\"labels\":{{\"__name__\":\"y\",\"a\":\"b\",\"stream_task_id\":\"{task}\"}},\"partition\":{partition}}}\n"),
    );
    let (ok, _, err) = relabel(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--route",
            "nope",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("no route \"nope\""), "{err}");
}
